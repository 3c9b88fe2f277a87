"""Helpers shared by the training stages: accelerator set-up, optimisers, judged validation."""

from __future__ import annotations

import random

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler


def make_accelerator(seed: int, **kwargs) -> Accelerator:
    """An ``Accelerator`` for one stage (``kwargs`` go to it); seeds python, numpy and torch on every process."""
    accelerator = Accelerator(**kwargs)
    set_seed(seed, device_specific=True)
    if accelerator.device.type == "cpu":
        # One process per core at most: oversubscribed threads make torch (and GriffinLim) crawl.
        torch.set_num_threads(max(1, (torch.get_num_threads() or 1) // max(1, accelerator.num_processes)))
    return accelerator


def adamw_with_schedule(params, lr: float, steps: int, warmup: int, weight_decay: float = 0.0):
    """AdamW with linear warm-up and cosine decay (diffusers' ``get_scheduler``)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=warmup, num_training_steps=steps)
    return opt, sched


def step_rng(seed: int, step: int, salt: int = 0) -> random.Random:
    """The random stream of one training step: a resumed run redraws exactly the same batch."""
    return random.Random((seed * 1_000_003 + step) * 7919 + salt)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] → (..., H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
