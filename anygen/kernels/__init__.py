"""Triton kernels on AnyGen's hot paths, each with its PyTorch reference.

| op | where | passes |
|---|---|---|
| :func:`group_norm_silu` | every ResNet block of the UNets and VAEs | forward |
| :func:`attention` (:class:`AnyGenAttnProcessor`) | UNet self- and cross-attention | forward |
| :func:`rms_norm` | every layer of the Llama backbone | forward + backward |
| :func:`swiglu` | the backbone's MLP | forward + backward |
| :func:`cfg_combine` | every denoising step | forward |

Each op runs Triton on CUDA tensors and its reference elsewhere; ``ANYGEN_KERNELS=torch|triton|auto``
overrides (see :mod:`anygen.kernels.dispatch`). :func:`apply_kernels` / :func:`remove_kernels` install them
into model trees. Importing this package never imports Triton.

Example:
    ```py
    >>> from anygen.kernels import cfg_combine, disable_kernels, enable_kernels
    >>> enable_kernels(pipe.unet, pipe.vae, backbone)      # patch in place; state_dict keys unchanged
    >>> noise = cfg_combine(noise_uncond, noise_cond, guidance_scale, guidance_rescale)
    >>> disable_kernels(pipe.unet, pipe.vae, backbone)     # the original modules and processors again
    ```
"""

from .attention import AnyGenAttnProcessor, attention, attention_torch
from .cfg import cfg_combine, cfg_combine_torch
from .dispatch import (
    MODES,
    KernelUnavailableError,
    apply_kernels_option,
    force_kernels,
    kernels_mode,
    kernels_option,
)
from .group_norm_silu import group_norm_silu, group_norm_silu_torch
from .patching import (
    KernelHandle,
    apply_kernels,
    disable_kernels,
    enable_kernels,
    kernels_applied,
    remove_kernels,
)
from .rms_norm import rms_norm, rms_norm_torch
from .swiglu import swiglu, swiglu_torch

__all__ = [
    "MODES",
    "AnyGenAttnProcessor",
    "KernelHandle",
    "KernelUnavailableError",
    "apply_kernels",
    "apply_kernels_option",
    "attention",
    "attention_torch",
    "cfg_combine",
    "cfg_combine_torch",
    "disable_kernels",
    "enable_kernels",
    "force_kernels",
    "group_norm_silu",
    "group_norm_silu_torch",
    "kernels_applied",
    "kernels_mode",
    "kernels_option",
    "remove_kernels",
    "rms_norm",
    "rms_norm_torch",
    "swiglu",
    "swiglu_torch",
]
