"""Install the kernels into any module tree, and take them out again.

Like Liger's ``apply_liger_kernel_to_llama``, but per instance, so one
generator can run with kernels while another does not, and
``remove_kernels`` restores the exact original modules:

* diffusers ``ResnetBlock2D`` (every ResNet block of the UNets, the VAE's
  encoder, mid and up blocks, AnimateDiff's UNetMotionModel): ``norm1`` and
  ``norm2`` run fused GroupNorm + SiLU, and the block's ``nonlinearity``
  becomes a gate that passes their (already activated) outputs through and
  applies SiLU to anything else (the block also sends the time embedding
  through it). ``norm2`` is left alone under ``time_embedding_norm="scale_shift"``,
  where a scale and shift sit between it and the SiLU. The same pairing is
  applied to ``conv_norm_out`` -> ``conv_act`` of the UNets and of the VAE's
  Encoder and Decoder.
* diffusers ``Attention`` whose processor is the stock ``AttnProcessor2_0`` or
  ``AttnProcessor``: :class:`~anygen.kernels.attention.AnyGenAttnProcessor`.
  Other processors (IP-Adapter, LoRA, added-KV, ...) are left in place.
* transformers RMSNorm and MLP modules whose ``forward`` is byte-for-byte
  ``LlamaRMSNorm.forward`` / ``LlamaMLP.forward`` (Llama, Mistral, Qwen2/3,
  Phi-3's norm, ...): :func:`~anygen.kernels.rms_norm.rms_norm` and, when the
  activation is SiLU, :func:`~anygen.kernels.swiglu.swiglu`.

Forwards are patched on the instance (``module.forward = ...``), so
parameters, buffers and ``state_dict`` keys never change and saving a patched
model saves the original layout. Each op still dispatches per call
(``ANYGEN_KERNELS``), so on CPU an enabled model runs the PyTorch references.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .attention import AnyGenAttnProcessor
from .group_norm_silu import group_norm_silu as _group_norm_silu
from .rms_norm import rms_norm as _rms_norm
from .swiglu import swiglu as _swiglu

_HANDLE_ATTR = "_anygen_kernels_handle"
_PATCHED_ATTR = "_anygen_kernel"  # set on every module we changed, so a second apply skips it
_SILU_DONE = "_anygen_silu_applied"  # set on tensors the fused norm returns, read by the gate


@dataclass
class KernelHandle:
    """What :func:`apply_kernels` changed in one module tree.

    Attributes:
        module: the root it was applied to.
        counts: number of patched sites per op, e.g. ``{"group_norm_silu": 12, "attention": 4, ...}``.
    """

    module: nn.Module
    counts: dict[str, int] = field(default_factory=dict)
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        """Restore every patched module, in reverse order of patching."""
        while self._undo:
            self._undo.pop()()
        self.counts = {}
        if self.module.__dict__.get(_HANDLE_ATTR) is self:
            del self.module.__dict__[_HANDLE_ATTR]

    def _add(self, op: str, undo: Callable[[], None]) -> None:
        self.counts[op] = self.counts.get(op, 0) + 1
        self._undo.append(undo)


class SiLUAfterFusedNorm(nn.Module):
    """Stands in for a block's SiLU: identity on fused-norm outputs (already activated), SiLU otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(x, _SILU_DONE, False):
            return x
        return torch.nn.functional.silu(x)


def _group_norm_silu_forward(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    y = _group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps)
    setattr(y, _SILU_DONE, True)
    return y


def _rms_norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return _rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _swiglu_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(_swiglu(self.gate_proj(x), self.up_proj(x)))


def _patchable(module: nn.Module) -> bool:
    # Skip modules already patched by us, or whose forward someone else replaced (e.g. accelerate's offload hooks).
    return not getattr(module, _PATCHED_ATTR, False) and "forward" not in module.__dict__


def _patch_forward(handle: KernelHandle, op: str, module: nn.Module, fn: Callable) -> None:
    module.forward = types.MethodType(fn, module)
    setattr(module, _PATCHED_ATTR, True)

    def undo() -> None:
        del module.__dict__["forward"]
        del module.__dict__[_PATCHED_ATTR]

    handle._add(op, undo)


def _fuse_norm_act(handle: KernelHandle, owner: nn.Module, norms: list[str], act: str) -> None:
    """Fuse ``owner.<norm>`` (GroupNorm) with the SiLU ``owner.<act>`` that directly follows each of them."""
    activation = getattr(owner, act)
    if not isinstance(activation, nn.SiLU):
        return
    fused = [n for n in norms if type(getattr(owner, n, None)) is nn.GroupNorm and _patchable(getattr(owner, n))]
    if not fused:
        return
    for name in fused:
        _patch_forward(handle, "group_norm_silu", getattr(owner, name), _group_norm_silu_forward)
    setattr(owner, act, SiLUAfterFusedNorm())
    handle._undo.append(lambda: setattr(owner, act, activation))


def _same_forward(cls: type, reference: type) -> bool:
    a, b = getattr(cls.forward, "__code__", None), getattr(reference.forward, "__code__", None)
    if a is None or b is None:
        return False
    return (a.co_code, a.co_names, a.co_consts) == (b.co_code, b.co_names, b.co_consts)


def apply_kernels(
    module: nn.Module,
    *,
    group_norm_silu: bool = True,
    attention: bool = True,
    rms_norm: bool = True,
    swiglu: bool = True,
) -> KernelHandle:
    """Install the fused kernels into every matching sub-module of ``module``.

    Applying twice returns the existing handle; sub-modules already patched through another root are skipped.

    Args:
        module: any ``nn.Module`` tree: a UNet, a VAE, a causal LM, or a container of them.
        group_norm_silu: fuse GroupNorm + SiLU in diffusers ResNet blocks and output heads.
        attention: install :class:`~anygen.kernels.attention.AnyGenAttnProcessor` on diffusers ``Attention``.
        rms_norm: patch Llama-style RMSNorm forwards.
        swiglu: patch Llama-style MLP forwards (SiLU-gated only).

    Returns:
        A :class:`KernelHandle`; ``handle.remove()`` or :func:`remove_kernels` undoes everything.
    """
    existing = module.__dict__.get(_HANDLE_ATTR)
    if existing is not None:
        return existing
    handle = KernelHandle(module)
    mods = list(module.modules())

    # A tree can only hold diffusers (transformers) modules if diffusers (transformers) is imported already:
    # checking sys.modules keeps this free of a multi-second import, and of a hard dependency on either.
    if (group_norm_silu or attention) and "diffusers" in sys.modules:
        from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
        from diffusers.models.autoencoders.vae import Decoder, Encoder
        from diffusers.models.resnet import ResnetBlock2D
        from diffusers.models.unets.unet_2d import UNet2DModel
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
        from diffusers.models.unets.unet_motion_model import UNetMotionModel

        # Classes whose forward runs `conv_act(conv_norm_out(x))` back to back (read in diffusers' source).
        norm_out_owners = (UNet2DConditionModel, UNetMotionModel, UNet2DModel, Encoder, Decoder)
        for m in mods:
            if group_norm_silu and isinstance(m, ResnetBlock2D) and type(m).forward is ResnetBlock2D.forward:
                # forward: norm1 -> nonlinearity; norm2 -> nonlinearity unless scale_shift puts an affine between.
                norms = ["norm1"] if m.time_embedding_norm == "scale_shift" else ["norm1", "norm2"]
                _fuse_norm_act(handle, m, norms, "nonlinearity")
            elif group_norm_silu and isinstance(m, norm_out_owners) and getattr(m, "conv_act", None) is not None:
                _fuse_norm_act(handle, m, ["conv_norm_out"], "conv_act")
            elif (
                attention
                and isinstance(m, Attention)
                and type(m.processor) in (AttnProcessor2_0, AttnProcessor)
                and m.scale_qk
                and not getattr(m, _PATCHED_ATTR, False)
            ):
                previous = m.processor
                m.set_processor(AnyGenAttnProcessor())
                setattr(m, _PATCHED_ATTR, True)

                def undo(m=m, previous=previous) -> None:
                    m.set_processor(previous)
                    del m.__dict__[_PATCHED_ATTR]

                handle._add("attention", undo)

    if (rms_norm or swiglu) and "transformers" in sys.modules:
        from transformers.activations import SiLUActivation
        from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

        for m in mods:
            if rms_norm and _same_forward(type(m), LlamaRMSNorm) and _patchable(m):
                _patch_forward(handle, "rms_norm", m, _rms_norm_forward)
            elif (
                swiglu
                and _same_forward(type(m), LlamaMLP)
                and isinstance(getattr(m, "act_fn", None), (nn.SiLU, SiLUActivation))
                and _patchable(m)
            ):
                _patch_forward(handle, "swiglu", m, _swiglu_mlp_forward)

    module.__dict__[_HANDLE_ATTR] = handle
    return handle


def remove_kernels(module: nn.Module) -> None:
    """Undo :func:`apply_kernels` on ``module`` (no-op if it was never applied)."""
    handle = module.__dict__.get(_HANDLE_ATTR)
    if handle is not None:
        handle.remove()


def kernels_applied(module: nn.Module) -> bool:
    """True while ``module`` carries a handle from :func:`apply_kernels`."""
    return _HANDLE_ATTR in module.__dict__


def enable_kernels(*modules: nn.Module, **ops: bool) -> list[KernelHandle]:
    """:func:`apply_kernels` on each module (``None`` entries skipped); ``ops`` as in :func:`apply_kernels`."""
    return [apply_kernels(m, **ops) for m in modules if m is not None]


def disable_kernels(*modules: nn.Module) -> None:
    """:func:`remove_kernels` on each module (``None`` entries skipped)."""
    for m in modules:
        if m is not None:
            remove_kernels(m)
