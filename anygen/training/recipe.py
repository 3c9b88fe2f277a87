"""Recipes: one TOML file per assembled system (``pipelines/*.toml``).

A recipe says *what* is built and trained; ``anygen.training`` says *how*.
Sections are kept as plain dicts and read by the stage that owns them, which
validates its own keys, so adding a stage never touches this file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AnyGenInputError


@dataclass
class Recipe:
    """A parsed recipe.

    Args:
        name: system name, e.g. ``"anygen-tiny"``.
        seed: global seed of every stage.
        output_dir: where trained components are exported (diffusers folder layout).
        run_dir: checkpoints and logs, resumable, never committed.
        sections: every other table of the TOML, by name.
        path: the file it was read from.
    """

    name: str
    seed: int
    output_dir: Path
    run_dir: Path
    sections: dict = field(default_factory=dict)
    path: Path | None = None

    def section(self, *keys: str) -> dict:
        """A nested table, e.g. ``section("generators", "image_vae")``; a clear error if missing."""
        node = self.sections
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                raise AnyGenInputError(f"Recipe {self.path} has no [{'.'.join(keys[: i + 1])}] table")
            node = node[k]
        return dict(node)


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe TOML; paths inside it are relative to the repository root (the recipe's parent's parent)."""
    path = Path(path)
    if not path.is_file():
        raise AnyGenInputError(f"`recipe`: no such file {path}; pass e.g. pipelines/anygen-tiny.toml")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise AnyGenInputError(f"`recipe`: {path} is not valid TOML: {e}") from None
    missing = [k for k in ("name", "output_dir", "run_dir") if k not in data]
    if missing:
        raise AnyGenInputError(f"`recipe`: {path} lacks the keys {missing}")
    root = path.resolve().parent.parent
    return Recipe(
        name=data.pop("name"),
        seed=int(data.pop("seed", 0)),
        output_dir=root / data.pop("output_dir"),
        run_dir=root / data.pop("run_dir"),
        sections=data,
        path=path,
    )


def take(config: dict, defaults: dict, where: str) -> dict:
    """Merge ``config`` over ``defaults``, refusing unknown keys (typos fail loudly)."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise AnyGenInputError(f"Unknown keys in [{where}]: {unknown}; known: {sorted(defaults)}")
    return {**defaults, **config}
