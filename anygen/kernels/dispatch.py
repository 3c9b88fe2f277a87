"""Which implementation of a kernel runs: Triton or its PyTorch reference.

Rules (DESIGN.md, "Kernels"):

* ``auto`` (default): Triton for CUDA tensors when Triton imports and the GPU is
  sm_80 or newer (bf16 ``tl.dot`` and our block sizes assume Ampere); the
  PyTorch reference otherwise, e.g. on CPU.
* ``torch``: always the reference.
* ``triton``: always Triton. On CPU tensors this runs Triton's interpreter, and
  only when ``TRITON_INTERPRET=1`` is set (it is ~1000x slower than the
  reference, so it is for tests, never a silent fallback); otherwise it raises
  :class:`KernelUnavailableError` saying so.

The mode comes from :func:`force_kernels` when active, else from the
``ANYGEN_KERNELS`` environment variable, read at every call so a test or a CLI
flag can change it without re-importing anything.

Triton is never imported at ``import anygen.kernels``: each kernel module keeps
its ``@triton.jit`` functions as plain functions with a module global ``tl``
that :func:`jit_kernels` binds on the first launch. Whether a kernel is
compiled or interpreted is decided by ``triton.jit`` from ``TRITON_INTERPRET``
at that moment, so the cache of jitted kernels is keyed by
:func:`interpret_enabled`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Callable, Iterator

import torch

from ..errors import AnyGenInputError

ENV_VAR = "ANYGEN_KERNELS"
MODES = ("auto", "torch", "triton")

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("anygen_kernels_mode", default=None)


class KernelUnavailableError(RuntimeError):
    """``ANYGEN_KERNELS=triton`` was asked for, but Triton cannot run these tensors."""


def _check_mode(mode: str, where: str) -> str:
    mode = mode.strip().lower()
    if mode not in MODES:
        raise AnyGenInputError(f"{where} must be one of {MODES}, got {mode!r}")
    return mode


def kernels_option(value: str | bool | None) -> str | None:
    """Parse the ``kernels`` switch of a recipe (``kernels = "auto"``) or of the CLI (``--kernels auto``).

    Args:
        value: ``"off"``, ``False`` or ``None`` (leave the models unpatched); ``True`` (same as ``"auto"``);
            or a mode, ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        None when the kernels stay off, else the mode to run them in.
    """
    if value is None or value is False:
        return None
    if value is True:
        return "auto"
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    if not isinstance(value, str):
        raise AnyGenInputError(f"`kernels` must be 'off', 'auto', 'torch', 'triton' or a bool, got {value!r}")
    return _check_mode(value, "`kernels`")


def kernels_mode() -> str:
    """The active mode: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        The mode set by :func:`force_kernels` if one is active, else ``$ANYGEN_KERNELS`` (default ``"auto"``).
    """
    forced = _forced.get()
    if forced is not None:
        return forced
    return _check_mode(os.environ.get(ENV_VAR, "auto") or "auto", f"${ENV_VAR}")


def apply_kernels_option(value: str | bool | None) -> str | None:
    """Act on a recipe's ``kernels`` key: parse it and make its mode the process default.

    ``$ANYGEN_KERNELS`` is the process-wide mode switch (the CLI's ``--kernels`` sets it too); a recipe's mode
    fills it only when it is unset, so an explicit environment variable or CLI flag wins over the recipe.

    Args:
        value: the recipe's ``kernels`` value (see :func:`kernels_option`).

    Returns:
        None when the kernels stay off, else the mode now in effect.
    """
    mode = kernels_option(value)
    if mode is not None:
        os.environ.setdefault(ENV_VAR, mode)
        mode = kernels_mode()
    return mode


@contextlib.contextmanager
def force_kernels(mode: str) -> Iterator[None]:
    """Run a block with a given kernels mode, overriding ``$ANYGEN_KERNELS``.

    Args:
        mode: ``"auto"``, ``"torch"`` or ``"triton"``.
    """
    token = _forced.set(_check_mode(mode, "`mode`"))
    try:
        yield
    finally:
        _forced.reset(token)


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works (torch's Linux wheels ship it)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising anything else
        return False
    return True


def interpret_enabled() -> bool:
    """True when Triton will interpret (not compile) kernels jitted now: ``TRITON_INTERPRET`` is set."""
    if not triton_available():
        return False
    from triton import knobs

    return bool(knobs.runtime.interpret)


@functools.cache
def _cuda_capability_ok(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (8, 0)


def use_triton(op: str, *tensors: torch.Tensor) -> bool:
    """Decide, for one call of ``op`` on ``tensors``, whether the Triton kernel runs.

    Args:
        op: kernel name, only used in error messages.
        tensors: the call's tensor inputs (all on one device).

    Returns:
        True for the Triton kernel, False for the PyTorch reference.

    Raises:
        KernelUnavailableError: in ``triton`` mode when Triton cannot run these tensors.
    """
    mode = kernels_mode()
    if mode == "torch":
        return False
    device = tensors[0].device
    if mode == "auto":
        return device.type == "cuda" and triton_available() and _cuda_capability_ok(device.index or 0)
    # mode == "triton": run Triton or say precisely why it cannot.
    if not triton_available():
        raise KernelUnavailableError(
            f"{ENV_VAR}=triton but Triton does not import; install torch's Linux build (it ships Triton) "
            f"or use {ENV_VAR}=auto"
        )
    if device.type == "cuda":
        return True
    if device.type == "cpu" and interpret_enabled():
        return True
    raise KernelUnavailableError(
        f"{ENV_VAR}=triton but `{op}` got {device.type} tensors: Triton kernels run on CUDA. "
        f"Set TRITON_INTERPRET=1 (before the first kernel launch) to run them through Triton's interpreter on CPU "
        f"(slow, for testing), or use {ENV_VAR}=auto to fall back to the PyTorch reference"
    )


def jit_kernels(module_globals: dict, *fns: Callable) -> list:
    """``triton.jit`` the kernels of one module, binding its ``tl`` global first.

    Kernel modules define their kernels as plain functions (with
    ``from __future__ import annotations`` so ``BLOCK: tl.constexpr`` stays a
    string until Triton reads it) and a module global ``tl = None``. Triton looks
    ``tl`` up in the function's globals both when compiling and when the
    interpreter patches ``triton.language``, so binding it here is enough.

    Args:
        module_globals: the kernel module's ``globals()``.
        fns: its kernel functions.

    Returns:
        The jitted kernels, in order (``InterpretedFunction`` under ``TRITON_INTERPRET=1``).
    """
    import triton
    import triton.language as language
    from triton.runtime.interpreter import InterpretedFunction

    # triton.language's own @jit helpers (tl.sum, tl.max, ...) were decorated when triton was first imported,
    # compiled or interpreted by TRITON_INTERPRET *then*; a kernel of the other kind cannot call them.
    stdlib_interpreted = isinstance(language.standard.sum, InterpretedFunction)
    if stdlib_interpreted != bool(interpret_enabled()):
        raise KernelUnavailableError(
            f"TRITON_INTERPRET is {'set' if interpret_enabled() else 'unset'} now but was "
            f"{'set' if stdlib_interpreted else 'unset'} when triton was first imported (diffusers and transformers "
            "import it): set TRITON_INTERPRET=1 before anything imports triton, e.g. at the top of conftest.py"
        )
    module_globals["tl"] = language
    return [triton.jit(fn) for fn in fns]


def num_programs(device: torch.device) -> int:
    """How many persistent programs to launch for row-looping kernels: one per SM on CUDA, 4 in the interpreter."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def cdiv(a: int, b: int) -> int:
    """Ceiling division (``triton.cdiv`` without importing Triton)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (``triton.next_power_of_2`` without importing Triton)."""
    return 1 << max(int(n) - 1, 0).bit_length()
