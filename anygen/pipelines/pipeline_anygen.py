"""AnyGenPipeline: any-to-any generation through one causal LM and diffusers generators.

One call, top to bottom (``AnyGenPipeline.__call__``):

1. check every argument (``AnyGenInputError`` naming it) before any model runs;
2. chat template → token ids; each ``<image>``/``<video>``/``<audio>`` placeholder is widened to the input
   projector's N positions and its embeddings (frozen VAE encoder → input projector) are spliced in;
3. ``backbone.generate`` with :class:`~anygen.models.signal_tokens.SignalGroupLogitsProcessor`, so every signal
   group in the reply is complete, and :class:`~anygen.models.lookup_decoding.SignalLookupDecoding` as its
   decoding loop: greedy, each forward also checking drafted tokens (a started group's forced rest, the request's
   words, phrases of recent replies);
4. one pass over the reply after the prompt's (the loop's last) gives the last-layer hidden states at each group;
   the group's output projector turns them into ``prompt_embeds`` of that modality's generator (a
   :class:`MediumRequest`, seeded per output);
5. :meth:`~AnyGenPipeline.generate_media` runs each through its generator (the null embedding, or the encoded
   ``negative_prompt``, → ``negative_prompt_embeds``), through a per-call copy of the generator when the call
   picks a ``scheduler``, reporting every denoising step to ``callback_on_step_end`` if given;
6. post-process into :class:`~anygen.pipelines.pipeline_output.AnyGenOutput`.

:meth:`~AnyGenPipeline.generate_batch` answers several requests with the same steps, except that step 5
denoises the media of all of them together, stacked per generator and settings.

Routing is the reply itself: an ``[IMG*]`` group gives an image, ``[VID*]`` a video, ``[AUD*]`` a sound, in
reply order, as many as the backbone emitted (the processor never starts a group for a modality without a
generator).

Multi-turn: pass the conversation as messages, earlier assistant replies as returned in ``out.text`` (their
``[IMG]`` markers expand to the full signal group). The backbone re-reads the whole history, and since it is
causal, the hidden states at a previous turn's signal group are recomputed exactly as they were when that
medium was generated: the previous output's conditioning, together with the caption the reply wrote before
it, is in context, so "now make it bigger" has the medium to refer to. Generated pixels are not re-encoded
(they are a deterministic function of that conditioning and the seed); attach them as ``images=`` with a
placeholder if you want the model to look at an actual picture.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from ..errors import AnyGenInputError
from ..models import encoders, projectors  # noqa: F401  (diffusers resolves saved projector classes through this module)
from ..models.lookup_decoding import NgramMemory, SignalLookupDecoding
from ..models.signal_tokens import SignalGroupLogitsProcessor
from ..models.tokenizer import (
    MODALITIES,
    PLACEHOLDERS,
    collapse_signal_groups,
    expand_signal_markers,
    signal_groups,
)
from ..world import spec
from .pipeline_output import AnyGenOutput

DEFAULT_PRETRAINED = Path(__file__).resolve().parents[2] / "weights" / "anygen-tiny"
"""The embedded default, ``weights/anygen-tiny`` next to the package (not relative to the working directory)."""

GENERATORS = {"image": "image_generator", "video": "video_generator", "audio": "audio_generator"}
ROLES = ("system", "user", "assistant")
_SIGNAL_RE = re.compile(r"\[(?:IMG|VID|AUD)\d*\]")


# Classifier-free guidance weight of every generator unless a call says otherwise. Measured on anygen-tiny
# (weights/anygen-tiny/README.md): 89 % of images judged right at 1.5, 75 % at 3, 28 % at 7 (over-saturated).
DEFAULT_GUIDANCE_SCALE = 1.5


def _conditioning_shape(generator) -> tuple[int, int]:
    """(Lc, Dc) a generator's UNet expects: its caption tokenizer's padded length and its encoder's width."""
    lc = int(generator.tokenizer.model_max_length)
    dc = int(generator.text_encoder.config.hidden_size)
    cross = generator.unet.config.cross_attention_dim
    if cross is not None and cross != dc:
        raise ValueError(f"The generator's text encoder width {dc} does not match its UNet's cross_attention_dim {cross}")
    return lc, dc


@torch.no_grad()
def encode_caption(generator, texts: list[str]) -> torch.Tensor:
    """Captions through a generator's own tokenizer and text encoder: ``[B, Lc, Dc]``, the space the output
    projector targets (padded to ``model_max_length``, as Stable Diffusion and the audio pipeline do)."""
    tok = generator.tokenizer
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return generator.text_encoder(ids.to(generator.text_encoder.device))[0]


@dataclass
class MediumRequest:
    """One medium to generate: the input of step 5 (:meth:`AnyGenPipeline.generate_media`).

    ``__call__`` makes one per signal group of the reply; build one yourself to run a generator on any
    conditioning of its space (e.g. ``encode_caption(pipe.generator("image"), ["a red circle"])``).

    Args:
        modality: ``"image"``, ``"video"`` or ``"audio"``: the generator that denoises it.
        prompt_embeds: its conditioning, (1, Lc, Dc) (an output projector's, or a caption's).
        seed: seeds its initial noise (``torch.Generator("cpu").manual_seed(seed)``).
        index: its position among the media of its reply (``callback_on_step_end`` reports it as ``medium_index``).
        negative_prompt: a caption to steer away from; ``None``: the output projector's learned null embedding.
        num_inference_steps, guidance_scale: as in ``AnyGenPipeline.__call__``.
        num_frames: frames of a video (``None``: the pipeline config's; unused by other modalities).
        scheduler: a diffusers scheduler class name to denoise with; ``None``: the generator's own.
        callback_on_step_end, callback_on_step_end_tensor_inputs: as in ``AnyGenPipeline.__call__``.
    """

    modality: str
    prompt_embeds: torch.Tensor
    seed: int
    index: int = 0
    negative_prompt: str | None = None
    num_inference_steps: int = 20
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    num_frames: int | None = None
    scheduler: str | None = None
    callback_on_step_end: Callable | None = None
    callback_on_step_end_tensor_inputs: list[str] = field(default_factory=lambda: ["latents"])


@dataclass
class _Call:
    """A checked request (step 1): what steps 2-4 read, and the settings shared by every medium it asks for."""

    messages: list[dict[str, str]]
    media: dict[str, list]
    ids: list[int]
    seed: int
    max_new_tokens: int
    logits_processor: list[LogitsProcessor] | None
    scheduler: str | dict[str, str | None] | None
    medium: dict  # MediumRequest fields: negative_prompt, num_inference_steps, guidance_scale, num_frames, callback...


class AnyGenPipeline(DiffusionPipeline):
    r"""Any-to-any generation: text, images, videos and sounds in; text plus any mix of media out.

    Args:
        tokenizer: the backbone's tokenizer, with a chat template, media placeholders and signal groups.
        backbone: any transformers causal LM (``LlamaForCausalLM`` for ``anygen-tiny``).
        image_generator: ``StableDiffusionPipeline`` fed ``prompt_embeds``.
        video_generator: ``AnimateDiffPipeline`` fed ``prompt_embeds``.
        audio_generator: :class:`~anygen.pipelines.AnyGenAudioPipeline` fed ``prompt_embeds``.
        image_input_projector, video_input_projector, audio_input_projector:
            :class:`~anygen.models.projectors.InputProjector` or :class:`~anygen.models.projectors.MLPInputProjector`
            per input modality (over the generators' VAEs).
        image_output_projector, video_output_projector, audio_output_projector:
            :class:`~anygen.models.projectors.OutputProjector` per output modality.
        num_frames: frames of a generated video.
        fps: their frame rate (used when writing files).
        max_new_tokens: default reply length limit.

    Any generator or projector may be ``None``: that modality is then neither read nor written.

    Examples:
        ```py
        >>> from anygen import AnyGenPipeline
        >>> pipe = AnyGenPipeline.from_pretrained()          # weights/anygen-tiny
        >>> out = pipe("draw a small red circle at the top-left on a black background", seed=0)
        >>> out.text, out.images[0].size
        ('Here is a small red circle at the top-left on a black background. [IMG]', (64, 64))
        >>> out = pipe([{"role": "user", "content": "draw a red circle"},
        ...             {"role": "assistant", "content": out.text},
        ...             {"role": "user", "content": "now make it bigger"}], seed=0)
        ```
    """

    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    #: Draft tokens per backbone forward taken from n-grams of the request and of recent replies (0: none, plain
    #: greedy decoding except that a started signal group is still fed whole). The reply is the greedy one either
    #: way; drafts save forwards because replies copy the request's words and repeat stock phrases.
    prompt_lookup_num_tokens: int = 10
    #: Recent replies (at least) whose n-grams are drafted from (0: none): :attr:`reply_memory`'s size.
    lookup_memory: int = 64
    _reply_memory: NgramMemory | None = None
    _optional_components = [
        "image_generator",
        "video_generator",
        "audio_generator",
        "image_input_projector",
        "video_input_projector",
        "audio_input_projector",
        "image_output_projector",
        "video_output_projector",
        "audio_output_projector",
    ]

    def __init__(
        self,
        tokenizer,
        backbone,
        image_generator=None,
        video_generator=None,
        audio_generator=None,
        image_input_projector=None,
        video_input_projector=None,
        audio_input_projector=None,
        image_output_projector=None,
        video_output_projector=None,
        audio_output_projector=None,
        num_frames: int = spec.NUM_FRAMES,
        fps: int = spec.FPS,
        max_new_tokens: int = 96,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            backbone=backbone,
            image_generator=image_generator,
            video_generator=video_generator,
            audio_generator=audio_generator,
            image_input_projector=image_input_projector,
            video_input_projector=video_input_projector,
            audio_input_projector=audio_input_projector,
            image_output_projector=image_output_projector,
            video_output_projector=video_output_projector,
            audio_output_projector=audio_output_projector,
        )
        self.register_to_config(num_frames=num_frames, fps=fps, max_new_tokens=max_new_tokens)
        self.signal_groups = signal_groups(tokenizer)
        self.num_signal_tokens = {m: len(ids) for m, ids in self.signal_groups.items()}
        vocab = tokenizer.get_vocab()
        self.placeholder_ids = {m: vocab[p] for m, p in PLACEHOLDERS.items() if p in vocab}
        for m in MODALITIES:
            proj = self.output_projector(m)
            if proj is not None and proj.config.num_signal_tokens != self.num_signal_tokens.get(m):
                raise ValueError(
                    f"{m} output projector reads {proj.config.num_signal_tokens} signal tokens but the tokenizer "
                    f"has {self.num_signal_tokens.get(m, 0)}"
                )
        self._kernel_modules: list = []
        for g in self.generators().values():
            g.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------ components

    def generator(self, modality: str):
        """The generator pipeline of ``modality`` (or ``None``)."""
        return getattr(self, GENERATORS[modality], None)

    @property
    def reply_memory(self) -> NgramMemory:
        """The recent replies (at least the last ``lookup_memory``; this instance's, in memory only) that decoding
        drafts from. Drafts never change a reply or its media, only how many backbone forwards it takes;
        ``pipe.reply_memory.clear()`` forgets them."""
        if self._reply_memory is None or self._reply_memory.size != self.lookup_memory:
            self._reply_memory = NgramMemory(self.lookup_memory)
        return self._reply_memory

    def generators(self) -> dict:
        """``{modality: generator pipeline}`` of the modalities this pipeline can write."""
        return {m: g for m in MODALITIES if (g := self.generator(m)) is not None}

    def input_projector(self, modality: str):
        return getattr(self, f"{modality}_input_projector", None)

    def output_projector(self, modality: str):
        return getattr(self, f"{modality}_output_projector", None)

    @property
    def output_modalities(self) -> tuple[str, ...]:
        """Modalities the backbone may emit a group for: a generator, a projector and signal tokens."""
        return tuple(
            m for m in MODALITIES
            if self.generator(m) is not None and self.output_projector(m) is not None and m in self.signal_groups
        )

    @property
    def input_modalities(self) -> tuple[str, ...]:
        """Modalities that can be attached: an input projector, a VAE to encode with, a placeholder token."""
        return tuple(
            m for m in MODALITIES
            if self.input_projector(m) is not None and self._encoder_vae(m) is not None and m in self.placeholder_ids
        )

    def _encoder_vae(self, modality: str):
        g = self.generator(modality)
        if g is None and modality == "video":
            g = self.image_generator  # AnimateDiff shares the image VAE
        return getattr(g, "vae", None)

    @property
    def sample_rate(self) -> int:
        g = self.audio_generator
        return int(g.sample_rate) if g is not None else spec.SAMPLE_RATE

    def to(self, *args, **kwargs):
        """Move (or cast) every component, nested generator pipelines included."""
        super().to(*args, **kwargs)
        for g in self.generators().values():
            g.to(*args, **kwargs)
        return self

    def set_progress_bar_config(self, **kwargs):
        """Configure the progress bars of this pipeline and of every generator (all off by default)."""
        super().set_progress_bar_config(**kwargs)
        for g in self.generators().values():
            g.set_progress_bar_config(**kwargs)

    def enable_kernels(self, **ops: bool) -> dict[str, int]:
        """Install AnyGen's fused kernels in the backbone and every generator (see :mod:`anygen.kernels`).

        Args:
            **ops: ``group_norm_silu``, ``attention``, ``rms_norm``, ``swiglu`` switches of
                :func:`~anygen.kernels.patching.apply_kernels`.

        Returns:
            Patched sites per op, summed over components.
        """
        from ..kernels.patching import apply_kernels

        mods = [self.backbone]
        for g in self.generators().values():
            mods += [getattr(g, n, None) for n in ("unet", "vae", "text_encoder")]
        counts: dict[str, int] = {}
        for m in mods:
            if m is not None:
                for op, n in apply_kernels(m, **ops).counts.items():
                    counts[op] = counts.get(op, 0) + n
                self._kernel_modules.append(m)
        return counts

    def compile_generators(self, modalities: tuple[str, ...] | list[str] | None = None, **compile_kwargs) -> list[str]:
        """``torch.compile`` each generator's denoiser in place (the hot loop: one UNet call per step).

        The first call of each compiled generator pays the compilation (seconds on CPU, where inductor writes
        C++: a compiler must be installed); later calls of the same shapes reuse it. Worth it for batches and
        servers, not for one-off calls. Numerics match eager mode to float rounding.

        Args:
            modalities: which generators (default: all of them).
            **compile_kwargs: passed to ``torch.compile`` (default ``fullgraph=True``).

        Returns:
            The modalities whose denoiser was compiled.

        Example:
            ```py
            >>> pipe = AnyGenPipeline.from_pretrained()
            >>> pipe.compile_generators(["image"])
            ['image']
            >>> out = pipe("draw a large red circle at the center on a black background", seed=0)  # compiles here
            ```
        """
        generators = self.generators()
        names = list(generators) if modalities is None else list(modalities)
        if bad := [m for m in names if m not in generators]:
            raise AnyGenInputError(f"`modalities`: no {bad} generator in this pipeline; it has {sorted(generators)}")
        for m in names:
            generators[m].unet.compile(**{"fullgraph": True, **compile_kwargs})
        return names

    def disable_kernels(self) -> None:
        """Restore every module patched by :meth:`enable_kernels`."""
        from ..kernels.patching import remove_kernels

        while self._kernel_modules:
            remove_kernels(self._kernel_modules.pop())

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | None = None, **kwargs) -> "AnyGenPipeline":
        """Load a saved pipeline; with no argument, the embedded default ``weights/anygen-tiny``.

        Args:
            pretrained_model_name_or_path: a folder written by :meth:`save_pretrained` or a hub id.
            **kwargs: passed to ``DiffusionPipeline.from_pretrained`` (``torch_dtype``, component overrides...).
        """
        if pretrained_model_name_or_path is None:
            if not (DEFAULT_PRETRAINED / "model_index.json").exists():
                raise FileNotFoundError(
                    f"The embedded default {DEFAULT_PRETRAINED} has no model_index.json: the anygen-tiny weights are "
                    "missing from this checkout (train them with `anygen train pipelines/anygen-tiny.toml`)."
                )
            pretrained_model_name_or_path = DEFAULT_PRETRAINED
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_recipe(cls, recipe: str | Path, **overrides) -> "AnyGenPipeline":
        """Assemble the system a recipe (``pipelines/<name>.toml``) names; see :mod:`anygen.pipelines.assembly`.

        Args:
            recipe: path to the TOML.
            **overrides: components to use instead of building them (``tokenizer=``, ``backbone=``,
                ``image_generator=``, ...), e.g. to assemble tiny random parts in tests.
        """
        from .assembly import pipeline_from_recipe

        return pipeline_from_recipe(recipe, **overrides)

    # ------------------------------------------------------------------ 1. inputs

    def check_inputs(
        self,
        prompt,
        images,
        audios,
        videos,
        seed,
        num_inference_steps,
        guidance_scale,
        negative_prompt,
        max_new_tokens,
        num_frames,
        logits_processor,
        scheduler=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
    ) -> tuple[list[dict[str, str]], dict[str, list]]:
        """Validate every argument; return the messages (placeholders placed) and the media per modality.

        Raises:
            AnyGenInputError: naming the argument and the fix.
        """
        messages = self._check_prompt(prompt)
        media = {
            "image": self._check_images(images),
            "video": self._check_videos(videos),
            "audio": self._check_audios(audios),
        }
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise AnyGenInputError(f"`seed` must be a non-negative int or None, got {seed!r}")
        for name, v in (("num_inference_steps", num_inference_steps), ("max_new_tokens", max_new_tokens)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise AnyGenInputError(f"`{name}` must be a positive int, got {v!r}")
        if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, numbers.Integral) or num_frames < 1):
            raise AnyGenInputError(f"`num_frames` must be a positive int or None, got {num_frames!r}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise AnyGenInputError(f"`guidance_scale` must be a finite number >= 0 (<= 1 disables guidance), got {guidance_scale!r}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise AnyGenInputError(f"`negative_prompt` must be a str or None, got {type(negative_prompt).__name__}")
        if logits_processor is not None and (
            not isinstance(logits_processor, (list, LogitsProcessorList))
            or not all(isinstance(p, LogitsProcessor) for p in logits_processor)
        ):
            raise AnyGenInputError("`logits_processor` must be a list of transformers.LogitsProcessor")
        self._check_scheduler(scheduler)
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise AnyGenInputError(
                "`callback_on_step_end` must be a function (pipeline, step_index, timestep, callback_kwargs) -> dict, "
                f"got {type(callback_on_step_end).__name__}"
            )
        tensor_inputs = callback_on_step_end_tensor_inputs
        if not isinstance(tensor_inputs, (list, tuple)) or any(k not in self._callback_tensor_inputs for k in tensor_inputs):
            raise AnyGenInputError(
                f"`callback_on_step_end_tensor_inputs` must be a list drawn from {self._callback_tensor_inputs}, "
                f"got {tensor_inputs!r}"
            )

        for m, items in media.items():
            if items and m not in self.input_modalities:
                raise AnyGenInputError(
                    f"`{m}s`: this pipeline has no {m} encoder (input modalities: {list(self.input_modalities)}); "
                    f"drop the {m}s or load a pipeline with a {m}_input_projector"
                )
        messages = self._place_media(messages, {m: len(v) for m, v in media.items()})
        return messages, media

    def _check_scheduler(self, scheduler) -> None:
        if scheduler is None:
            return
        if isinstance(scheduler, str):
            chosen = {m: scheduler for m in self.output_modalities}
        elif isinstance(scheduler, dict):
            bad = sorted(map(str, set(scheduler) - set(self.output_modalities)))
            if bad:
                raise AnyGenInputError(
                    f"`scheduler`: {bad} are not output modalities of this pipeline; key the dict by "
                    f"{list(self.output_modalities)}"
                )
            chosen = {m: name for m, name in scheduler.items() if name is not None}
        else:
            raise AnyGenInputError(
                "`scheduler` must be a diffusers scheduler class name such as 'EulerDiscreteScheduler', or a dict "
                f"{{modality: name}}, got {type(scheduler).__name__}"
            )
        for m, name in chosen.items():
            known = sorted(c.__name__ for c in self.generator(m).scheduler.compatibles)
            if name not in known:
                raise AnyGenInputError(f"`scheduler`: unknown scheduler {name!r} for the {m} generator; choose one of {known}")

    def _check_prompt(self, prompt) -> list[dict[str, str]]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise AnyGenInputError("`prompt` is empty; pass a request such as 'draw a red circle'")
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, (list, tuple)):
            if not prompt:
                raise AnyGenInputError("`prompt` is an empty message list; pass at least one user message")
            messages = []
            for i, msg in enumerate(prompt):
                if not isinstance(msg, dict) or not {"role", "content"} <= set(msg):
                    raise AnyGenInputError(f"`prompt[{i}]` must be a dict with 'role' and 'content', got {msg!r}")
                role, content = msg["role"], msg["content"]
                if role not in ROLES:
                    raise AnyGenInputError(f"`prompt[{i}]['role']` must be one of {ROLES}, got {role!r}")
                if not isinstance(content, str):
                    raise AnyGenInputError(f"`prompt[{i}]['content']` must be a str, got {type(content).__name__}")
                if role == "assistant" and any(p in content for p in PLACEHOLDERS.values()):
                    raise AnyGenInputError(f"`prompt[{i}]`: an assistant message cannot hold a media placeholder")
                if role != "assistant" and _SIGNAL_RE.search(content):
                    raise AnyGenInputError(
                        f"`prompt[{i}]`: signal tokens / output markers ({_SIGNAL_RE.search(content).group()}) only "
                        "belong in assistant messages"
                    )
                messages.append({"role": role, "content": content})
            if messages[-1]["role"] != "user":
                raise AnyGenInputError("`prompt`: the last message must be the user's turn to answer")
            if not messages[-1]["content"].strip():
                raise AnyGenInputError("`prompt`: the last user message is empty")
        else:
            raise AnyGenInputError(
                f"`prompt` must be a str or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}"
            )
        if isinstance(prompt, str) and _SIGNAL_RE.search(prompt):
            raise AnyGenInputError(
                f"`prompt` holds a signal token / output marker ({_SIGNAL_RE.search(prompt).group()}); those only belong "
                "in assistant messages"
            )
        return messages

    @staticmethod
    def _check_images(images) -> list[Image.Image]:
        if images is None:
            return []
        if not isinstance(images, (list, tuple)):
            raise AnyGenInputError(f"`images` must be a list of PIL.Image.Image (wrap a single image in a list), got {type(images).__name__}")
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise AnyGenInputError(f"`images[{i}]` must be a PIL.Image.Image, got {type(im).__name__}")
        return list(images)

    def _check_videos(self, videos) -> list[list[Image.Image]]:
        if videos is None:
            return []
        if not isinstance(videos, (list, tuple)):
            raise AnyGenInputError(f"`videos` must be a list of videos, each a list of PIL frames, got {type(videos).__name__}")
        proj = self.video_input_projector
        for i, frames in enumerate(videos):
            if not isinstance(frames, (list, tuple)) or not frames:
                raise AnyGenInputError(f"`videos[{i}]` must be a non-empty list of PIL.Image.Image frames")
            for j, f in enumerate(frames):
                if not isinstance(f, Image.Image):
                    raise AnyGenInputError(f"`videos[{i}][{j}]` must be a PIL.Image.Image, got {type(f).__name__}")
            if proj is not None and len(frames) > proj.config.max_frames:
                raise AnyGenInputError(
                    f"`videos[{i}]` has {len(frames)} frames; this model reads at most {proj.config.max_frames} "
                    "(subsample the clip)"
                )
        return [list(v) for v in videos]

    @staticmethod
    def _check_audios(audios) -> list[np.ndarray]:
        if audios is None:
            return []
        if not isinstance(audios, (list, tuple)):
            raise AnyGenInputError(f"`audios` must be a list of float32 arrays at {spec.SAMPLE_RATE} Hz, got {type(audios).__name__}")
        out = []
        for i, a in enumerate(audios):
            if isinstance(a, tuple):
                if len(a) != 2 or not isinstance(a[0], numbers.Integral):
                    raise AnyGenInputError(f"`audios[{i}]`: a tuple must be (sample_rate, waveform)")
                if a[0] != spec.SAMPLE_RATE:
                    raise AnyGenInputError(
                        f"`audios[{i}]` is at {a[0]} Hz; the model hears {spec.SAMPLE_RATE} Hz: resample it first, e.g. "
                        f"torchaudio.functional.resample(x, {a[0]}, {spec.SAMPLE_RATE})"
                    )
                a = a[1]
            if not isinstance(a, np.ndarray):
                raise AnyGenInputError(f"`audios[{i}]` must be a numpy float32 array, got {type(a).__name__}")
            if a.dtype != np.float32:
                raise AnyGenInputError(f"`audios[{i}]` has dtype {a.dtype}; pass float32 samples in [-1, 1] (e.g. x.astype(np.float32) / 32768 for int16)")
            if a.ndim != 1 or a.size == 0:
                raise AnyGenInputError(f"`audios[{i}]` must be a non-empty mono waveform of shape (samples,), got shape {a.shape}")
            if a.size > spec.NUM_SAMPLES:
                raise AnyGenInputError(
                    f"`audios[{i}]` lasts {a.size / spec.SAMPLE_RATE:.2f} s; the model hears at most "
                    f"{spec.NUM_SAMPLES / spec.SAMPLE_RATE:.2f} s at {spec.SAMPLE_RATE} Hz: trim it"
                )
            if not np.isfinite(a).all() or np.abs(a).max() > 1.0:
                raise AnyGenInputError(f"`audios[{i}]` must hold finite samples in [-1, 1]")
            out.append(a)
        return out

    @staticmethod
    def _place_media(messages: list[dict[str, str]], counts: dict[str, int]) -> list[dict[str, str]]:
        """Check placeholders against attached media; with no placeholder anywhere, put them first in the last user turn."""
        found = {m: sum(msg["content"].count(p) for msg in messages) for m, p in PLACEHOLDERS.items()}
        if not any(found.values()):
            if not any(counts.values()):
                return messages
            ph = " ".join(PLACEHOLDERS[m] for m in MODALITIES for _ in range(counts[m]))
            last = messages[-1]
            return [*messages[:-1], {"role": last["role"], "content": f"{ph}\n{last['content']}"}]
        for m, p in PLACEHOLDERS.items():
            if found[m] != counts[m]:
                raise AnyGenInputError(
                    f"`{m}s`: the conversation holds {found[m]} {p} placeholder(s) but {counts[m]} {m}(s) are attached; "
                    f"pass one {m} per {p}, in order (or no placeholder at all to attach them to the last message)"
                )
        return messages

    # ------------------------------------------------------------------ 2. prompt embeddings

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        msgs = [
            {**m, "content": expand_signal_markers(m["content"], self.num_signal_tokens)} if m["role"] == "assistant" else m
            for m in messages
        ]
        enc = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(enc["input_ids"])

    @torch.no_grad()
    def encode_media(self, media: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        """Attached media → the input projector's embeddings, one ``(N, hidden)`` tensor per medium, in order."""
        out: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
        if media["image"]:
            tokens = encoders.encode_images(self._encoder_vae("image"), media["image"])  # (n, 1, P, C)
            out["image"] = list(self.image_input_projector(tokens.to(self.image_input_projector.device)))
        for frames in media["video"]:
            tokens = encoders.encode_video(self._encoder_vae("video"), frames)  # (1, T, P, C)
            out["video"].append(self.video_input_projector(tokens.to(self.video_input_projector.device))[0])
        for wave in media["audio"]:
            tokens = encoders.encode_audio(self._encoder_vae("audio"), wave)  # (1, 1, P, C)
            out["audio"].append(self.audio_input_projector(tokens.to(self.audio_input_projector.device))[0])
        return out

    def splice(self, ids: list[int], media_embeds: dict[str, list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Widen each placeholder to its N embeddings; return ``input_ids`` (1, L) and ``inputs_embeds`` (1, L, H).

        The widened positions keep the placeholder's id in ``input_ids`` (so the reply and the logits processor
        see ordinary ids) while ``inputs_embeds`` carries the projected medium there.
        """
        by_id = {i: m for m, i in self.placeholder_ids.items()}
        next_medium = {m: 0 for m in MODALITIES}
        new_ids, spans = [], []
        for t in ids:
            m = by_id.get(t)
            if m is None:
                new_ids.append(t)
                continue
            emb = media_embeds[m][next_medium[m]]
            next_medium[m] += 1
            spans.append((len(new_ids), emb))
            new_ids += [t] * emb.shape[0]
        device = self.backbone.device
        input_ids = torch.tensor([new_ids], dtype=torch.long, device=device)
        embeds = self.backbone.get_input_embeddings()(input_ids)  # (1, L, hidden)
        for start, emb in spans:
            embeds[0, start : start + emb.shape[0]] = emb.to(embeds.dtype)
        return input_ids, embeds

    # ------------------------------------------------------------------ 3-4. backbone

    def _groups_in(self, reply: list[int]) -> list[tuple[str, int]]:
        """Complete signal groups in a reply: (modality, start index), in order."""
        found, i = [], 0
        while i < len(reply):
            for m, ids in self.signal_groups.items():
                if reply[i : i + len(ids)] == ids:
                    found.append((m, i))
                    i += len(ids) - 1
                    break
            i += 1
        return found

    def _reply_text(self, reply: list[int], groups: list[tuple[str, int]]) -> str:
        """Decoded reply, complete groups as markers; other special tokens (and stray signal tokens, which only
        an extra ``logits_processor`` contradicting the signal-group rules can produce) are dropped."""
        keep = {i + j for m, i in groups for j in range(self.num_signal_tokens[m])}
        special = set(self.tokenizer.all_special_ids)
        ids = [t for n, t in enumerate(reply) if n in keep or t not in special]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return collapse_signal_groups(text, self.num_signal_tokens).strip()

    @torch.inference_mode()
    def generate_reply(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        max_new_tokens: int,
        logits_processor: list[LogitsProcessor] | None = None,
    ) -> list[int]:
        """Greedy reply ids (without the eos) to a spliced prompt, every signal group complete.

        Args:
            input_ids: (1, L) prompt ids, as returned by :meth:`splice`.
            inputs_embeds: (1, L, hidden) prompt embeddings, as returned by :meth:`splice`.
            max_new_tokens: reply length limit (also capped by the backbone's ``max_position_embeddings``).
            logits_processor: extra processors applied after the signal-group processor.

        Returns:
            The reply's token ids.
        """
        return self._decode(input_ids, inputs_embeds, max_new_tokens, logits_processor)[0]

    @torch.inference_mode()
    def _decode(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        max_new_tokens: int,
        logits_processor: list[LogitsProcessor] | None = None,
    ) -> tuple[list[int], torch.Tensor | None]:
        """:meth:`generate_reply`, plus the last hidden layer at each reply token (``None`` if the reply has no group).

        One ``generate`` call whose decoding loop is :class:`~anygen.models.lookup_decoding.SignalLookupDecoding`:
        greedy, each forward also checking a draft of the tokens to come (the rest of a signal group once it has
        started, words of the request, stock phrases of this pipeline's recent replies). The reply is the greedy
        one; when it holds a signal group, the loop ends with one pass over the reply after the prompt's cached
        one, whose last hidden layer step 4 reads.
        """
        for name in ("prompt_lookup_num_tokens", "lookup_memory"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise AnyGenInputError(f"`pipe.{name}` must be an int >= 0, got {value!r}")
        max_length = input_ids.shape[1] + max_new_tokens
        limit = getattr(self.backbone.config, "max_position_embeddings", None)
        if limit is not None:
            max_length = min(max_length, limit)
        signal = SignalGroupLogitsProcessor(
            self.signal_groups, prompt_length=input_ids.shape[1], max_length=max_length,
            disabled=[m for m in self.signal_groups if m not in self.output_modalities],
        )
        decoding = SignalLookupDecoding(
            signal, num_draft_tokens=self.prompt_lookup_num_tokens, memory=self.reply_memory,
            never_copied=self.tokenizer.all_special_ids,  # a reply copies the request's words, not its turn markers
        )
        out = self.backbone.generate(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=torch.ones_like(input_ids),
            logits_processor=LogitsProcessorList([signal, *(logits_processor or [])]),
            custom_generate=decoding,
            max_new_tokens=max_length - input_ids.shape[1],  # explicit: a checkpoint's generation_config may set its own
            do_sample=False,
            num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_hidden_states=True,
        )
        reply = out.sequences[0, input_ids.shape[1] :].tolist()
        eos = self.tokenizer.eos_token_id
        if eos in reply:
            reply = reply[: reply.index(eos)]
        return reply, out.last_hidden_state

    # ------------------------------------------------------------------ 5. generators

    def _stack_key(self, medium: MediumRequest, position: int) -> tuple:
        """Media with equal keys can share one generator call; a medium with a step callback gets its own."""
        return (
            medium.modality,
            medium.num_inference_steps,
            medium.guidance_scale,
            self._num_frames(medium) if medium.modality == "video" else None,
            medium.scheduler,
            position if medium.callback_on_step_end is not None else None,
        )

    def _num_frames(self, medium: MediumRequest) -> int:
        return self.config.num_frames if medium.num_frames is None else medium.num_frames

    def _generator_for(self, medium: MediumRequest):
        """The generator pipeline to run ``medium`` through: the shared one, or a per-call copy with its own scheduler."""
        g = self.generator(medium.modality)
        if medium.scheduler is None:
            return g
        import diffusers

        # A shallow copy shares every module, processor and setting of the shared pipeline; assigning the scheduler
        # rebinds it (and the copy's config entry) on the copy only, so the shared pipeline is never touched.
        g = copy.copy(g)
        g.scheduler = getattr(diffusers, medium.scheduler).from_config(g.scheduler.config)
        return g

    def _denoise(self, media: list[MediumRequest]) -> list:
        """One generator call over media of one stack key: ``prompt_embeds`` (batch, Lc, Dc), one seeded
        ``torch.Generator`` per medium (so each starts from the noise it would start from alone)."""
        first = media[0]
        g = self._generator_for(first)
        proj = self.output_projector(first.modality)
        negatives = [
            encode_caption(g, [m.negative_prompt]) if m.negative_prompt is not None else proj.null_conditioning(1)
            for m in media
        ]
        # The generator moves and casts the conditioning itself, as it does for a caller of the bare pipeline
        # (asking a pipeline for its device and dtype walks every module: milliseconds a call on a CPU).
        kw = dict(
            prompt_embeds=torch.cat([m.prompt_embeds for m in media]),  # (batch, Lc, Dc)
            negative_prompt_embeds=torch.cat(negatives),
            num_inference_steps=first.num_inference_steps,
            guidance_scale=first.guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(m.seed) for m in media],
        )
        if first.callback_on_step_end is not None:  # such a medium is alone in its call (see _stack_key)
            kw.update(
                callback_on_step_end=_told_which_medium(first),
                callback_on_step_end_tensor_inputs=list(first.callback_on_step_end_tensor_inputs),
            )
        if first.modality == "image":
            return g(**kw, output_type="pil").images
        if first.modality == "video":
            return [list(frames) for frames in g(**kw, num_frames=self._num_frames(first), output_type="pil").frames]
        return [np.asarray(a, dtype=np.float32) for a in g(**kw, output_type="np").audios]

    @torch.no_grad()
    def generate_media(self, media: list[MediumRequest], max_batch: int | None = 1, return_exceptions: bool = False) -> list:
        """Step 5 of a call: run each requested medium through its generator.

        Media of one modality with equal ``num_inference_steps``, ``guidance_scale``, ``num_frames`` (videos) and
        ``scheduler`` are denoised together, up to ``max_batch`` per generator call. Each medium keeps its own
        seeded ``torch.Generator``, so it starts from the same noise as when denoised alone (the result then
        differs from that only by the float rounding of batched matmuls). A medium with a
        ``callback_on_step_end`` is always denoised alone.

        Args:
            media: what to generate (``__call__`` makes one per signal group of the reply).
            max_batch: most media per generator call; ``None``: every medium that shares the settings.
                ``__call__`` uses 1.
            return_exceptions: if a generator call fails, put its exception in the place of each of its media
                (and go on with the other calls) instead of raising it.

        Returns:
            One result per medium, in order: a ``PIL.Image.Image`` (image), a list of PIL frames (video) or a float32
            waveform (audio); or, with ``return_exceptions``, the exception of a failed call.

        Raises:
            AnyGenInputError: a medium of a modality this pipeline cannot generate, an unknown scheduler, or a bad
                ``max_batch``.
        """
        _check_max_batch(max_batch)
        for i, m in enumerate(media):
            if m.modality not in self.output_modalities:
                raise AnyGenInputError(
                    f"`media[{i}].modality` is {m.modality!r}; this pipeline generates {list(self.output_modalities)}"
                )
            self._check_scheduler({m.modality: m.scheduler})
        stacks: dict[tuple, list[int]] = {}
        for i, m in enumerate(media):
            stacks.setdefault(self._stack_key(m, i), []).append(i)
        results: list = [None] * len(media)
        for members in stacks.values():
            size = max_batch or len(members)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                try:
                    outputs = self._denoise([media[i] for i in chunk])
                except Exception as e:
                    if not return_exceptions:
                        raise
                    outputs = [e] * len(chunk)
                for i, out in zip(chunk, outputs):
                    results[i] = out
        return results

    # ------------------------------------------------------------------ call

    def _check_call(
        self,
        prompt,
        images=None,
        audios=None,
        videos=None,
        seed=None,
        num_inference_steps=20,
        guidance_scale=DEFAULT_GUIDANCE_SCALE,
        negative_prompt=None,
        max_new_tokens=None,
        num_frames=None,
        scheduler=None,
        logits_processor=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
    ) -> _Call:
        """Step 1 of a call (``__call__``'s arguments, defaults included): check them, tokenize, draw the seed."""
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        max_new_tokens = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        messages, media = self.check_inputs(
            prompt, images, audios, videos, seed, num_inference_steps, guidance_scale, negative_prompt,
            max_new_tokens, num_frames, logits_processor, scheduler, callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        ids = self._prompt_ids(messages)
        n_positions = sum(self.input_projector(m).config.num_queries * len(v) for m, v in media.items() if v)
        prompt_len = len(ids) - sum(len(v) for v in media.values()) + n_positions
        limit = getattr(self.backbone.config, "max_position_embeddings", None)
        if limit is not None and prompt_len >= limit:
            raise AnyGenInputError(
                f"`prompt`: the conversation is {prompt_len} positions long (media included); the backbone reads at most "
                f"{limit}: shorten the history"
            )
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        medium = dict(
            negative_prompt=negative_prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            num_frames=self.config.num_frames if num_frames is None else num_frames,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs),
        )
        return _Call(messages, media, ids, seed, max_new_tokens, logits_processor, scheduler, medium)

    @torch.inference_mode()
    def _write_reply(self, call: _Call) -> tuple[str, list[MediumRequest]]:
        """Steps 2-4 of a call: the reply's text, and one :class:`MediumRequest` per signal group in it.

        In inference mode rather than ``no_grad``: the backbone's forwards are many and small, and skipping
        autograd's version counting and view tracking makes each faster (a one-token forward of anygen-tiny:
        3.8 → 3.5 ms, ``benchmarks/anygen.py --breakdown``). Nothing made here is updated in place afterwards (the
        conditioning is only read).
        """
        # 2. Encode attached media and splice them at their placeholders
        input_ids, inputs_embeds = self.splice(call.ids, self.encode_media(call.media))

        # 3. Run the backbone: a reply whose signal groups are never partial
        reply, hidden = self._decode(input_ids, inputs_embeds, call.max_new_tokens, call.logits_processor)
        groups = self._groups_in(reply)

        # 4. Hidden states at each signal group (from step 3's last pass over the reply, or one teacher-forced
        #    pass over prompt + reply); each group's output projector turns them into its generator's conditioning
        media = []
        if groups:
            if hidden is None:
                reply_ids = torch.tensor([reply], dtype=torch.long, device=input_ids.device)
                full = torch.cat([inputs_embeds, self.backbone.get_input_embeddings()(reply_ids)], dim=1)
                hidden = self.backbone(inputs_embeds=full, output_hidden_states=True).hidden_states[-1]
                hidden = hidden[:, input_ids.shape[1] :]  # (1, reply length, hidden)
            for j, (m, i) in enumerate(groups):
                k = self.num_signal_tokens[m]
                h = hidden[:, i : i + k]  # (1, K, hidden)
                proj = self.output_projector(m)
                scheduler = call.scheduler.get(m) if isinstance(call.scheduler, dict) else call.scheduler
                media.append(MediumRequest(
                    m, proj(h.to(proj.device)), seed=call.seed + j, index=j, scheduler=scheduler, **call.medium
                ))
        return self._reply_text(reply, groups), media

    def _output(self, text: str, media: list[MediumRequest], results: list, return_dict: bool) -> AnyGenOutput | tuple:
        """Step 6: the results in reply order, sorted by modality."""
        out: dict[str, list] = {m: [] for m in MODALITIES}
        for medium, result in zip(media, results):
            out[medium.modality].append(result)
        if not return_dict:
            return (text, out["image"], out["video"], out["audio"], self.sample_rate)
        return AnyGenOutput(text=text, images=out["image"], videos=out["video"], audios=out["audio"], sample_rate=self.sample_rate)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[dict[str, str]],
        images: list[Image.Image] | None = None,
        audios: list[np.ndarray] | None = None,
        videos: list[list[Image.Image]] | None = None,
        seed: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        negative_prompt: str | None = None,
        max_new_tokens: int | None = None,
        num_frames: int | None = None,
        scheduler: str | dict[str, str | None] | None = None,
        logits_processor: list[LogitsProcessor] | None = None,
        callback_on_step_end: Callable[..., dict | None] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006  (diffusers' signature)
        return_dict: bool = True,
    ) -> AnyGenOutput | tuple:
        r"""Answer a request with text and any mix of images, videos and sounds.

        Args:
            prompt: a request, or a conversation ``[{"role": "user"|"assistant"|"system", "content": str}, ...]``
                ending with a user message. Earlier assistant messages are replies as returned in
                ``AnyGenOutput.text`` (their ``[IMG]``/``[VID]``/``[AUD]`` markers stand for the signal groups).
            images: attached images, one per ``<image>`` placeholder in conversation order. With no
                placeholder anywhere in the prompt, the placeholders of all attached media are put at the
                start of the last user message.
            audios: attached sounds: float32 mono arrays at 16 kHz in [-1, 1], at most 1 s, or
                ``(sample_rate, array)`` tuples (the rate must be 16000), one per ``<audio>``.
            videos: attached videos, each a list of PIL frames, one per ``<video>``.
            seed: makes the call reproducible: the reply is greedy, and the i-th generated medium uses a
                generator seeded with ``seed + i``. ``None`` draws one.
            num_inference_steps: denoising steps of every generator.
            guidance_scale: classifier-free guidance weight (``<= 1`` disables guidance).
            negative_prompt: a caption to steer away from, encoded by each generator's own caption encoder;
                by default the output projector's learned null embedding is the unconditional branch.
            max_new_tokens: reply length limit (default: the pipeline config's).
            num_frames: frames per generated video (default: the pipeline config's).
            scheduler: the diffusers scheduler to denoise with, by class name (``"DPMSolverMultistepScheduler"``,
                ``"EulerDiscreteScheduler"``, ``"DDIMScheduler"``, ... any in the generator's
                ``scheduler.compatibles``), for every medium; or ``{modality: name}`` (e.g. ``{"image": "DDIMScheduler"}``),
                other modalities keeping their own. It is built from the generator's scheduler config and used
                through a per-call copy of the generator pipeline: the pipeline itself is never changed.
                ``None``: each generator's own scheduler.
            logits_processor: extra ``transformers.LogitsProcessor`` objects applied after the signal-group
                processor (e.g. to constrain or script the reply; ``anygen.testing.ScriptedReply`` does the
                latter for tests of random-weight pipelines).
            callback_on_step_end: called at the end of every denoising step of every generated medium, as
                diffusers calls it: ``callback_on_step_end(pipeline, step_index, timestep, callback_kwargs)``, where
                ``pipeline`` is the generator pipeline denoising the medium (its ``vae`` decodes ``latents``) and
                ``callback_kwargs`` holds the tensors named in ``callback_on_step_end_tensor_inputs`` plus
                ``"modality"`` (``"image"``, ``"video"`` or ``"audio"``) and ``"medium_index"`` (the medium's
                position among the media of the reply: its marker's position in ``text``, its seed ``seed + i``).
                It returns a dict of tensors to replace (e.g. ``{"latents": ...}``) or ``None``. A diffusers
                ``PipelineCallback`` works too (its ``tensor_inputs`` are then used).
            callback_on_step_end_tensor_inputs: the tensors passed to ``callback_on_step_end``, drawn from
                ``"latents"``, ``"prompt_embeds"`` and ``"negative_prompt_embeds"`` (the generator pipeline's own
                tensors, as it passes them to its callback).
            return_dict: return an :class:`AnyGenOutput` rather than a tuple.

        Returns:
            :class:`~anygen.pipelines.pipeline_output.AnyGenOutput` ``(text, images, videos, audios, sample_rate)``.

        Raises:
            AnyGenInputError: on any bad argument, before a model runs.
        """
        # 1. Check inputs. Raise error if not correct
        call = self._check_call(
            prompt, images, audios, videos, seed, num_inference_steps, guidance_scale, negative_prompt, max_new_tokens,
            num_frames, scheduler, logits_processor, callback_on_step_end, callback_on_step_end_tensor_inputs,
        )

        # 2-4. Read the conversation, write the reply, project each of its signal groups
        text, media = self._write_reply(call)

        # 5. Generate each medium the reply asked for, seeded per output
        results = self.generate_media(media, max_batch=1)

        # 6. Post-process and return
        self.maybe_free_model_hooks()
        return self._output(text, media, results, return_dict)

    @torch.no_grad()
    def generate_batch(
        self, requests: list[dict], max_batch: int | None = None, return_exceptions: bool = False
    ) -> list[AnyGenOutput | tuple | Exception]:
        r"""Answer several requests, denoising their media together (higher throughput than one call each).

        Every request is checked first (step 1), then each one's reply is written and projected (steps 2-4)
        as in ``__call__``; then the media of all requests go through :meth:`generate_media`, those that share a
        generator and its settings in stacks of up to ``max_batch``. Each medium is seeded as in its own call,
        so it equals that call's medium up to the float rounding of batched matmuls.

        Args:
            requests: one dict per request, the keyword arguments of one ``__call__`` (``prompt`` included),
                e.g. ``[{"prompt": "draw a red circle", "seed": 0}, {"prompt": "play a high tone", "seed": 1}]``.
            max_batch: most media per generator call (``None``: all that share a generator and settings).
            return_exceptions: an entry of a request that failed is its exception, and the other requests go
                on; otherwise the first failure is raised (bad input: before any model runs).

        Returns:
            One entry per request, in order: what ``__call__`` would return for it (or its exception).

        Raises:
            AnyGenInputError: a bad request (naming ``requests[i]`` and its argument) or ``max_batch``.
        """
        if not isinstance(requests, (list, tuple)):
            raise AnyGenInputError(f"`requests` must be a list of dicts of __call__ arguments, got {type(requests).__name__}")
        _check_max_batch(max_batch)
        allowed = list(inspect.signature(self.__call__).parameters)

        # 1. Check every request
        calls: list = []
        for i, request in enumerate(requests):
            try:
                if not isinstance(request, dict) or "prompt" not in request:
                    raise AnyGenInputError(f"a request must be a dict of __call__ arguments with a 'prompt', got {request!r}")
                unknown = sorted(set(request) - set(allowed))
                if unknown:
                    raise AnyGenInputError(f"unknown argument(s) {unknown}; a request takes {allowed}")
                kwargs = {k: v for k, v in request.items() if k != "return_dict"}
                calls.append(self._check_call(**kwargs))
            except AnyGenInputError as e:
                if not return_exceptions:
                    raise AnyGenInputError(f"`requests[{i}]`: {e}") from e
                calls.append(e)

        # 2-4. Each request's reply and the media it asks for
        replies: list = []
        for call in calls:
            try:
                replies.append(call if isinstance(call, Exception) else self._write_reply(call))
            except Exception as e:
                if not return_exceptions:
                    raise
                replies.append(e)

        # 5. Every medium of every reply, in stacks
        media = [m for r in replies if not isinstance(r, Exception) for m in r[1]]
        results = iter(self.generate_media(media, max_batch=max_batch, return_exceptions=return_exceptions))

        # 6. Post-process: a request with a failed medium fails
        outputs = []
        for request, reply in zip(requests, replies):
            if isinstance(reply, Exception):
                outputs.append(reply)
                continue
            text, mine = reply
            done = [next(results) for _ in mine]
            failed = [r for r in done if isinstance(r, Exception)]
            outputs.append(failed[0] if failed else self._output(text, mine, done, request.get("return_dict", True)))
        self.maybe_free_model_hooks()
        return outputs


def _check_max_batch(max_batch) -> None:
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, numbers.Integral) or max_batch < 1):
        raise AnyGenInputError(f"`max_batch` must be a positive int or None, got {max_batch!r}")


def _told_which_medium(medium: MediumRequest) -> Callable:
    """``medium``'s ``callback_on_step_end``, as its generator calls it, with ``modality`` and ``medium_index`` added."""

    def callback(pipeline, step_index, timestep, callback_kwargs):
        info = {"modality": medium.modality, "medium_index": medium.index}
        out = medium.callback_on_step_end(pipeline, step_index, timestep, {**callback_kwargs, **info})
        return {} if out is None else out

    return callback
