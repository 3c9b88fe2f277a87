"""Loading the pipeline the apps serve."""

from __future__ import annotations

from pathlib import Path


def load_pipeline(source: str | Path | None = None, device=None, kernels: str | None = None, compile: bool = False):
    """Load an :class:`~anygen.AnyGenPipeline` for serving.

    Args:
        source: a folder saved with ``save_pretrained`` (or a hub id); ``None`` for the embedded anygen-tiny.
        device: where to run it (``None``: leave it on CPU).
        kernels: ``None``/``"off"`` leaves the models unpatched; ``"auto"``, ``"torch"`` or ``"triton"`` installs
            AnyGen's fused kernels (the mode itself is read from ``$ANYGEN_KERNELS``, which the CLI sets).
        compile: ``torch.compile`` every generator's denoiser (:meth:`AnyGenPipeline.compile_generators`).

    Returns:
        The pipeline, progress bars off.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .. import AnyGenPipeline

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # no per-component loading bars in an app's output
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = AnyGenPipeline.from_pretrained(source)
    finally:
        diffusers_logging.set_verbosity(verbosity)
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if kernels not in (None, "off"):
        pipe.enable_kernels()
    if compile:
        pipe.compile_generators()
    return pipe
