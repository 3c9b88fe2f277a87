"""A small resumable training loop on top of accelerate.

Every stage of every recipe runs through :func:`train`: accelerate owns
devices, mixed precision and distributed data parallel; this loop adds what
each stage needs on top: a deterministic per-step data stream (so a resumed run
sees exactly the batches it would have seen), periodic checkpoints through
``accelerator.save_state``, a progress bar and periodic validation.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm


@dataclass
class LoopState:
    """Counters saved with every checkpoint."""

    step: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict:
        return {"step": self.step, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seconds = int(state["step"]), float(state["seconds"])


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if ckpt_dir.exists() else []
    return found[-1] if found else None


def train(
    *,
    name: str,
    accelerator: Accelerator,
    models: list[torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[int], tuple[torch.Tensor, dict]],
    steps: int,
    ckpt_dir: Path,
    checkpoint_every: int,
    scheduler=None,
    extra_state: list | None = None,
    after_step: Callable[[int], None] | None = None,
    validate: Callable[[int], dict] | None = None,
    validate_every: int = 0,
    resume: bool = True,
    keep_checkpoints: int = 2,
) -> LoopState:
    """Run ``steps`` optimisation steps, resuming from the newest checkpoint in ``ckpt_dir``.

    Args:
        name: label of the progress bar and log.
        accelerator: the run's ``Accelerator``; models/optimizer must already be prepared.
        models: modules put in train mode.
        optimizer: the prepared optimizer.
        loss_fn: ``loss_fn(step) -> (loss, logs)``; draws its own deterministic batch for ``step``.
        steps: total optimisation steps of the stage.
        ckpt_dir: where ``step_N`` checkpoints go.
        checkpoint_every: steps between checkpoints (the last step always checkpoints).
        scheduler: optional prepared LR scheduler (stepped every step).
        extra_state: objects with ``state_dict``/``load_state_dict`` saved in checkpoints (e.g. EMA).
        after_step: called after each optimiser step (e.g. EMA update).
        validate: ``validate(step) -> dict`` of figures, run every ``validate_every`` steps and at the end.
        resume: load the newest checkpoint if there is one.
        keep_checkpoints: how many checkpoints to keep on disk.

    Returns:
        The final :class:`LoopState` (steps done, training seconds including earlier runs).
    """
    state = LoopState()
    accelerator.register_for_checkpointing(state)
    for obj in extra_state or []:
        accelerator.register_for_checkpointing(obj)
    ckpt = latest_checkpoint(ckpt_dir) if resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        accelerator.print(f"[{name}] resumed from {ckpt} (step {state.step})")
    log_path = ckpt_dir / "log.jsonl"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    for m in models:
        m.train()
    bar = tqdm(total=steps, initial=state.step, desc=name, disable=not accelerator.is_main_process, dynamic_ncols=True)
    t0 = time.time() - state.seconds
    while state.step < steps:
        with accelerator.accumulate(*models):
            loss, logs = loss_fn(state.step)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_([p for m in models for p in m.parameters()], 1.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(state.step)
        state.step += 1
        state.seconds = time.time() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"step": state.step, "loss": round(loss.item(), 6), **logs}
        is_last = state.step == steps
        if validate is not None and validate_every and (state.step % validate_every == 0 or is_last):
            for m in models:
                m.eval()
            record.update(validate(state.step))
            for m in models:
                m.train()
            accelerator.print(f"[{name}] step {state.step}: " + json.dumps({k: v for k, v in record.items() if k != "step"}))
        if accelerator.is_main_process and (state.step % 10 == 0 or is_last or "val" in " ".join(record)):
            with log_path.open("a") as f:
                f.write(json.dumps({**record, "seconds": round(state.seconds, 1)}) + "\n")
        if state.step % checkpoint_every == 0 or is_last:
            _save(accelerator, ckpt_dir, state.step, keep_checkpoints)
    bar.close()
    return state


def _save(accelerator: Accelerator, ckpt_dir: Path, step: int, keep: int) -> None:
    # Write to a temporary folder and rename: an interrupted save never leaves a half checkpoint.
    final = ckpt_dir / f"step_{step}"
    tmp = ckpt_dir / f".tmp_step_{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(ckpt_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
            shutil.rmtree(old)
