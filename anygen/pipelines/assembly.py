"""Assemble an :class:`AnyGenPipeline` from parts: one code path for ``anygen-tiny``, full scale and tests.

:func:`assemble` takes a tokenizer, a backbone and any generator pipelines and builds the projectors that
fit them (widths read from the components' configs, never hard-coded). :func:`pipeline_from_recipe` reads a
recipe's assembly tables, builds or loads each part, and calls :func:`assemble`:

```toml
kernels = "off"        # top-level: "auto" | "torch" | "triton" patches every component with AnyGen's kernels
[tokenizer]            # type = "bpe" (trained on the world) | "pretrained" (name_or_path)
[signal_tokens]        # K per output modality: image = 4, video = 4, audio = 4
[backbone]             # type = "llama" (sizes) | "pretrained" (name_or_path)
[encoders]             # type = "generator_vae"
[projectors.input]     # type = "resampler" | "mlp" | "conv_abstractor", num_queries, hidden_size, num_layers,
                       #   num_heads (resampler), conv_channels (mlp); sub-tables [projectors.input.image]
                       #   (.video, .audio) override any of these for one modality
[projectors.output]    # type = "transformer", hidden_size, num_layers, num_heads
[components.image_generator]   # type = "diffusers" (path) | "stable_diffusion" (name_or_path)
[components.video_generator]   # type = "diffusers" (path) | "animatediff" (motion_adapter, on the image generator)
[components.audio_generator]   # type = "diffusers" (path) | "audio_ldm_parts" (vae, unet, vocoder, text_encoder, tokenizer)
[pipeline]             # num_frames, fps, max_new_tokens
```
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import AnyGenInputError
from ..models.encoders import check_encoder_type, vae_grid
from ..models.projectors import build_input_projector, build_output_projector
from ..models.tokenizer import MODALITIES, signal_groups
from ..world import spec
from .pipeline_anygen import AnyGenPipeline, _conditioning_shape, encode_caption

INPUT_PROJECTOR_DEFAULTS = dict(
    type="resampler", num_queries=8, hidden_size=128, num_layers=2, num_heads=4, dropout=0.0, conv_channels=[]
)
OUTPUT_PROJECTOR_DEFAULTS = dict(type="transformer", hidden_size=128, num_layers=2, num_heads=4, dropout=0.0)
PIPELINE_DEFAULTS = dict(num_frames=spec.NUM_FRAMES, fps=spec.FPS, max_new_tokens=96)


def _take(cfg: dict | None, defaults: dict, where: str) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise AnyGenInputError(f"Unknown keys in [{where}]: {unknown}; known: {sorted(defaults)}")
    return {**defaults, **cfg}


def assemble(
    tokenizer,
    backbone,
    image_generator=None,
    video_generator=None,
    audio_generator=None,
    input_projector: dict | None = None,
    output_projector: dict | None = None,
    encoder_type: str = "generator_vae",
    num_frames: int = spec.NUM_FRAMES,
    fps: int = spec.FPS,
    max_new_tokens: int = 96,
    seed: int = 0,
) -> AnyGenPipeline:
    """Build the projectors that fit the given parts and return the whole pipeline (projectors untrained).

    Output projectors map ``backbone.config.hidden_size`` × K (from the tokenizer's groups) to each generator's
    ``(Lc, Dc)`` (its caption tokenizer's ``model_max_length`` × its text encoder's ``hidden_size``). Input
    projectors read each VAE's latent grid (``latent_channels`` × positions) into the backbone's width; video
    reads the image generator's VAE (AnimateDiff shares it) and up to ``num_frames`` frames.

    Args:
        tokenizer: backbone tokenizer with placeholders and signal groups.
        backbone: a transformers causal LM whose embeddings cover ``len(tokenizer)``.
        image_generator, video_generator, audio_generator: diffusers pipelines (any may be ``None``).
        input_projector: ``[projectors.input]`` table (see :data:`INPUT_PROJECTOR_DEFAULTS`); a key named
            after a modality holds a table of overrides for that modality's projector only.
        output_projector: ``[projectors.output]`` table (see :data:`OUTPUT_PROJECTOR_DEFAULTS`).
        encoder_type: modality encoder family (``"generator_vae"``).
        num_frames: frames of generated videos and most frames of attached ones.
        fps: video frame rate.
        max_new_tokens: default reply length limit.
        seed: seeds the projectors' initialisation.

    Returns:
        An :class:`AnyGenPipeline`.

    Example:
        ```py
        >>> pipe = assemble(tokenizer, build_llama(tokenizer), image_generator=StableDiffusionPipeline(...))
        >>> pipe.output_modalities
        ('image',)
        ```
    """
    check_encoder_type(encoder_type)
    cfg_in = dict(input_projector or {})
    overrides = {m: cfg_in.pop(m) for m in MODALITIES if m in cfg_in}
    base_in = _take(cfg_in, INPUT_PROJECTOR_DEFAULTS, "projectors.input")
    for m, table in overrides.items():
        if not isinstance(table, dict):
            raise AnyGenInputError(f"[projectors.input] {m} must be a table of overrides, got {table!r}")
        _take(table, INPUT_PROJECTOR_DEFAULTS, f"projectors.input.{m}")  # unknown keys are an error here too
    cfg_in = {m: {**base_in, **overrides.get(m, {})} for m in MODALITIES}
    cfg_out = _take(output_projector, OUTPUT_PROJECTOR_DEFAULTS, "projectors.output")
    hidden = int(backbone.config.hidden_size)
    if backbone.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(f"The backbone's embeddings ({backbone.get_input_embeddings().num_embeddings}) do not cover the tokenizer ({len(tokenizer)})")
    groups = signal_groups(tokenizer)
    gens = {"image": image_generator, "video": video_generator, "audio": audio_generator}
    torch.manual_seed(seed)
    parts: dict = {}
    for m in MODALITIES:
        g = gens[m]
        if g is None:
            continue
        if m not in groups:
            raise ValueError(f"The tokenizer has no {m} signal tokens; add them ([signal_tokens] {m} = K)")
        lc, dc = _conditioning_shape(g)
        proj = build_output_projector(
            **cfg_out, in_dim=hidden, num_signal_tokens=len(groups[m]), num_queries=lc, out_dim=dc, modality=m
        ).eval()
        # The null starts as the generator's own unconditional input (the empty caption it was trained to see
        # under caption dropout), so guidance is meaningful before stage 2; training keeps it learnable.
        with torch.no_grad():
            proj.null_embedding.copy_(encode_caption(g, [""])[0].to(proj.null_embedding))
        parts[f"{m}_output_projector"] = proj
    vaes = {
        "image": getattr(image_generator, "vae", None),
        "video": getattr(video_generator or image_generator, "vae", None),
        "audio": getattr(audio_generator, "vae", None),
    }
    for m in MODALITIES:
        vae = vaes[m]
        if vae is None:
            continue
        size = spec.MEL_FRAMES if m == "audio" else None  # the audio encoder reads the world's 64 × 64 log-mel
        parts[f"{m}_input_projector"] = build_input_projector(
            **cfg_in[m], in_channels=int(vae.config.latent_channels), num_positions=vae_grid(vae, size),
            max_frames=num_frames if m == "video" else 1, out_dim=hidden, modality=m, encoder_type=encoder_type,
        ).eval()
    # Inference-ready: train and eval paths of some modules differ in the last bits (and dropout, if any).
    for g in gens.values():
        for c in (g.components.values() if g is not None else ()):
            if isinstance(c, torch.nn.Module):
                c.eval()
    backbone.eval()
    return AnyGenPipeline(
        tokenizer=tokenizer, backbone=backbone, **{f"{m}_generator": g for m, g in gens.items()}, **parts,
        num_frames=num_frames, fps=fps, max_new_tokens=max_new_tokens,
    )


# ----------------------------------------------------------------------------- recipes


def _resolve(root: Path, path: str) -> str:
    """Recipe paths are relative to the repository root; hub ids (``org/name``) that are not local folders pass through."""
    p = root / path
    return str(p) if p.exists() or path.startswith(("weights/", "./", "../")) else path


def build_generator(modality: str, cfg: dict, root: Path, built: dict):
    """The generator pipeline named by ``[components.<modality>_generator]``."""
    from diffusers import DiffusionPipeline

    cfg = dict(cfg)
    t = cfg.pop("type", "diffusers")
    dtype = cfg.pop("torch_dtype", None)
    kw = {"torch_dtype": getattr(torch, dtype)} if dtype else {}
    if t == "diffusers":
        path = _resolve(root, cfg.pop("path"))
        if modality == "audio":
            from .pipeline_audio import AnyGenAudioPipeline

            return AnyGenAudioPipeline.from_pretrained(path, **kw)
        return DiffusionPipeline.from_pretrained(path, **kw)
    if t == "stable_diffusion" and modality == "image":
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline.from_pretrained(
            cfg.pop("name_or_path"), safety_checker=None, feature_extractor=None, requires_safety_checker=False, **kw
        )
    if t == "animatediff" and modality == "video":
        from diffusers import AnimateDiffPipeline, MotionAdapter

        base = built.get("image")
        if base is None:
            raise AnyGenInputError("[components.video_generator] type = 'animatediff' builds on the image generator: define it first")
        adapter = MotionAdapter.from_pretrained(_resolve(root, cfg.pop("motion_adapter")), **kw)
        return AnimateDiffPipeline.from_pipe(base, motion_adapter=adapter)
    if t == "audio_ldm_parts" and modality == "audio":
        from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
        from transformers import AutoConfig, AutoModel, AutoTokenizer, SpeechT5HifiGan, T5EncoderModel

        from .pipeline_audio import AnyGenAudioPipeline

        def src(key):
            ref = cfg.pop(key)
            repo, _, sub = ref.partition("::")
            return _resolve(root, repo), {"subfolder": sub} if sub else {}

        vae_repo, vae_sub = src("vae")
        unet_repo, unet_sub = src("unet")
        voc_repo, voc_sub = src("vocoder")
        te_repo, te_sub = src("text_encoder")
        tok_repo, tok_sub = src("tokenizer")
        return AnyGenAudioPipeline(
            vae=AutoencoderKL.from_pretrained(vae_repo, **vae_sub, **kw),
            unet=UNet2DConditionModel.from_pretrained(unet_repo, **unet_sub, **kw),
            vocoder=SpeechT5HifiGan.from_pretrained(voc_repo, **voc_sub),
            # Per-token states: an encoder-decoder (T5) contributes its encoder only.
            text_encoder=(T5EncoderModel if AutoConfig.from_pretrained(te_repo, **te_sub).model_type == "t5" else AutoModel)
            .from_pretrained(te_repo, **te_sub),
            tokenizer=AutoTokenizer.from_pretrained(tok_repo, **tok_sub),
            scheduler=DPMSolverMultistepScheduler.from_pretrained(unet_repo, subfolder="scheduler"),
        )
    raise ValueError(f"Unknown {modality} generator type: {t!r}")


def build_generators(recipe, overrides: dict | None = None) -> dict:
    """The generator pipelines of a recipe's ``[components.*_generator]`` tables, by modality.

    Args:
        recipe: a loaded :class:`~anygen.training.recipe.Recipe`.
        overrides: ready pipelines (``image_generator``, ...) used instead of the recipe's.
    """
    overrides = overrides or {}
    root = recipe.path.resolve().parent.parent if recipe.path else Path.cwd()
    built: dict = {}
    components = recipe.sections.get("components", {})
    for m in MODALITIES:
        if f"{m}_generator" in overrides:
            built[m] = overrides[f"{m}_generator"]
        elif f"{m}_generator" in components:
            built[m] = build_generator(m, components[f"{m}_generator"], root, built)
    return built


def pipeline_from_recipe(recipe, **overrides) -> AnyGenPipeline:
    """Assemble the system of a recipe (see the module docstring for the tables).

    Args:
        recipe: a path to ``pipelines/<name>.toml`` or a loaded :class:`~anygen.training.recipe.Recipe`.
        **overrides: ready components that replace the recipe's (``tokenizer``, ``backbone``,
            ``image_generator``, ``video_generator``, ``audio_generator``); the rest is built from the recipe.

    Returns:
        The assembled :class:`AnyGenPipeline` with freshly initialised projectors (seeded by the recipe's
        ``seed``); the training stages train them, and a trained system is loaded with ``from_pretrained``.
    """
    from ..models.backbone import build_backbone
    from ..models.tokenizer import add_signal_tokens, build_tokenizer
    from ..training.recipe import Recipe, load_recipe

    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    root = rec.path.resolve().parent.parent if rec.path else Path.cwd()
    known = {"tokenizer", "backbone", "image_generator", "video_generator", "audio_generator"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise AnyGenInputError(f"from_recipe: unknown overrides {unknown}; known: {sorted(known)}")
    s = rec.sections
    k = {m: int(n) for m, n in s.get("signal_tokens", {m: 4 for m in MODALITIES}).items()}
    bad = sorted(set(k) - set(MODALITIES))
    if bad:
        raise AnyGenInputError(f"[signal_tokens]: unknown modalities {bad}; known: {list(MODALITIES)}")

    tokenizer = overrides.get("tokenizer")
    if tokenizer is None:
        tcfg = dict(s.get("tokenizer", {}))
        t = tcfg.pop("type", "bpe")
        if t == "bpe":
            tokenizer = build_tokenizer(k, seed=rec.seed, **tcfg)
        elif t == "pretrained":
            from transformers import AutoTokenizer

            tokenizer = add_signal_tokens(AutoTokenizer.from_pretrained(_resolve(root, tcfg.pop("name_or_path"))), k)
        else:
            raise ValueError(f"Unknown tokenizer type: {t!r}; expected 'bpe' or 'pretrained'")

    backbone = overrides.get("backbone")
    if backbone is None:
        bcfg = dict(s.get("backbone", {}))
        if "name_or_path" in bcfg:
            bcfg["name_or_path"] = _resolve(root, bcfg["name_or_path"])
        torch.manual_seed(rec.seed)
        backbone = build_backbone(tokenizer, **bcfg)

    built = build_generators(rec, overrides)

    projectors = s.get("projectors", {})
    enc = dict(s.get("encoders", {}))
    enc_type = enc.pop("type", "generator_vae")
    if enc:
        raise AnyGenInputError(f"Unknown keys in [encoders]: {sorted(enc)}; known: ['type']")
    pcfg = _take(s.get("pipeline"), PIPELINE_DEFAULTS, "pipeline")
    pipe = assemble(
        tokenizer, backbone, image_generator=built.get("image"), video_generator=built.get("video"),
        audio_generator=built.get("audio"), input_projector=projectors.get("input"),
        output_projector=projectors.get("output"), encoder_type=enc_type, seed=rec.seed, **pcfg,
    )
    if recipe_kernels(rec) is not None:
        pipe.enable_kernels()
    return pipe


def recipe_kernels(recipe) -> str | None:
    """The recipe's top-level ``kernels`` key (``"off"`` by default, or ``"auto"``/``"torch"``/``"triton"``).

    Returns None when it is off; otherwise makes its mode the process default (``$ANYGEN_KERNELS`` or the CLI's
    ``--kernels``, when given, win) and returns the mode in effect.
    """
    from ..kernels.dispatch import apply_kernels_option

    return apply_kernels_option(recipe.sections.get("kernels", "off"))
