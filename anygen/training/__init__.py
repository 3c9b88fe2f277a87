"""Training stages, run through accelerate: ``anygen train RECIPE --stage NAME``."""

from __future__ import annotations

from ..errors import AnyGenInputError
from .recipe import Recipe, load_recipe

STAGES = ("generators", "align-in", "align-out", "instruct")


def run_training(recipe_path: str, stage: str = "generators", resume: bool = True, max_steps: int | None = None) -> int:
    """Run one stage of a recipe (the ``anygen train`` command).

    Args:
        recipe_path: recipe TOML, e.g. ``pipelines/anygen-tiny.toml``.
        stage: ``generators`` (optionally ``generators:vae,image,...``), ``align-in``, ``align-out`` or ``instruct``.
        resume: continue from the newest checkpoint of each sub-stage.
        max_steps: cap every sub-stage's steps (smoke runs and tests).

    Returns:
        Process exit code (0 on success).
    """
    recipe = load_recipe(recipe_path)
    base = stage.split(":", 1)[0]
    if base not in STAGES:
        raise AnyGenInputError(f"`--stage` must be one of {STAGES} (generators may name sub-stages), got {stage!r}")
    if base == "generators":
        from .generators import train_generators

        train_generators(recipe, stage, resume=resume, max_steps=max_steps)
        return 0
    if ":" in stage:
        raise AnyGenInputError(f"`--stage {base}` has no sub-stages, got {stage!r}")
    from .backbone import train_stage

    train_stage(recipe, base, resume=resume, max_steps=max_steps)
    return 0


__all__ = ["Recipe", "STAGES", "load_recipe", "run_training"]
