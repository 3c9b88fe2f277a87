"""Text-to-audio latent diffusion over log-mel spectrograms, diffusers style.

Same shape as AudioLDM: a caption encoder conditions a ``UNet2DConditionModel``
on (frames × mels) spectrogram latents of an ``AutoencoderKL``; the decoded
log-mel goes through a vocoder. For ``anygen-tiny`` the vocoder is
:class:`~anygen.pipelines.vocoder.GriffinLimVocoder`; AudioLDM-family
checkpoints plug in ``transformers.SpeechT5HifiGan``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_output import AudioGenerationOutput


_SHIM_MODULE = "pipeline_anygen_audio"
_SHIM_SOURCE = '''"""Loader shim: `DiffusionPipeline.from_pretrained(this_folder, trust_remote_code=True)` finds AnyGen's audio
pipeline here. It runs no code of its own; the class comes from the installed `anygen` package."""

from anygen.pipelines.pipeline_audio import AnyGenAudioPipeline

__all__ = ["AnyGenAudioPipeline"]
'''


class AnyGenAudioPipeline(DiffusionPipeline):
    r"""Generate audio from text with log-mel latent diffusion.

    Args:
        vae: ``AutoencoderKL`` over (1, frames, mels) spectrograms.
        text_encoder: caption encoder returning per-token states (``CLIPTextModel`` or any model whose
            first output is ``[B, L, D]``).
        tokenizer: its tokenizer.
        unet: ``UNet2DConditionModel`` denoising the spectrogram latents.
        scheduler: any diffusers scheduler.
        vocoder: ``GriffinLimVocoder`` or ``SpeechT5HifiGan``: (batch, frames, mels) → (batch, samples).

    Examples:
        ```py
        >>> from anygen.pipelines import AnyGenAudioPipeline
        >>> pipe = AnyGenAudioPipeline.from_pretrained("weights/anygen-tiny/audio_generator")
        >>> out = pipe("a beeping buzzy very low tone", num_inference_steps=20, generator=torch.manual_seed(0))
        >>> out.audios.shape, out.sample_rate
        ((1, 16000), 16000)
        ```

    A saved folder also loads through diffusers' generic entry point, the way custom pipelines do:
    ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (the folder's
    ``pipeline_anygen_audio.py`` only imports this class from the installed ``anygen`` package).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder,
        tokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        vocoder,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # The folder's `_class_name` names its loader shim for DiffusionPipeline; the shim is our own installed code.
        kwargs.setdefault("trust_remote_code", True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        super().save_pretrained(save_directory, **kwargs)
        folder = Path(save_directory)
        (folder / f"{_SHIM_MODULE}.py").write_text(_SHIM_SOURCE)
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = [_SHIM_MODULE, type(self).__name__]
        tmp = index_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        tmp.replace(index_path)

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sampling_rate)

    def encode_prompt(
        self,
        prompt,
        device,
        num_waveforms_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt=None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token caption embeddings ``[B * num_waveforms_per_prompt, L, D]`` (and the unconditional ones)."""
        if prompt_embeds is None:
            prompt_embeds = self._encode_text(prompt if isinstance(prompt, list) else [prompt], device)
        prompt_embeds = prompt_embeds.to(device=device, dtype=self.unet.dtype)
        batch = prompt_embeds.shape[0]
        prompt_embeds = prompt_embeds.repeat_interleave(num_waveforms_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            return prompt_embeds, None
        if negative_prompt_embeds is None:
            neg = negative_prompt if negative_prompt is not None else ""
            neg = [neg] * batch if isinstance(neg, str) else list(neg)
            negative_prompt_embeds = self._encode_text(neg, device)
        negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=self.unet.dtype)
        negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_waveforms_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

    def _encode_text(self, texts: list[str], device) -> torch.Tensor:
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids.to(device))[0]

    def check_inputs(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_inference_steps, callback_on_step_end_tensor_inputs):
        if prompt is None and prompt_embeds is None:
            raise ValueError("Provide either `prompt` or `prompt_embeds`.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass `prompt` or `prompt_embeds`, not both.")
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise ValueError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}")
        if prompt_embeds is not None and prompt_embeds.dim() != 3:
            raise ValueError(f"`prompt_embeds` must be [batch, tokens, dim], got shape {tuple(prompt_embeds.shape)}")
        if negative_prompt_embeds is not None and prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(
                f"`negative_prompt_embeds` {tuple(negative_prompt_embeds.shape)} must match `prompt_embeds` {tuple(prompt_embeds.shape)}"
            )
        if negative_prompt is not None and prompt is not None and isinstance(negative_prompt, list) and isinstance(prompt, list):
            if len(negative_prompt) != len(prompt):
                raise ValueError("`negative_prompt` must have as many entries as `prompt`")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive int, got {num_inference_steps!r}")
        bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {bad}")

    def prepare_latents(self, batch_size, dtype, device, generator, latents=None):
        size = self.vae.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        shape = (batch_size, self.unet.config.in_channels, size // self.vae_scale_factor, size // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif latents.shape != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device) * self.scheduler.init_noise_sigma

    def mel_spectrogram_to_waveform(self, mel_spectrogram: torch.Tensor) -> torch.Tensor:
        """(batch, 1, frames, mels) decoder output → (batch, samples) float32 waveform."""
        if mel_spectrogram.dim() == 4:
            mel_spectrogram = mel_spectrogram.squeeze(1)
        return self.vocoder(mel_spectrogram.to(self.vocoder.dtype)).float()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.5,
        negative_prompt: str | list[str] | None = None,
        num_waveforms_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Generate audio.

        Args:
            prompt: caption(s) to sound out; or pass ``prompt_embeds``.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight (``<= 1`` disables guidance).
            negative_prompt: what to steer away from (default: the empty caption).
            num_waveforms_per_prompt: samples per prompt.
            generator: ``torch.Generator`` for reproducible sampling.
            latents: initial noisy latents (optional).
            prompt_embeds: per-token conditioning ``[B, L, D]`` (e.g. from AnyGen's output projector).
            negative_prompt_embeds: unconditional conditioning of the same shape.
            output_type: ``"np"``, ``"pt"`` (waveforms) or ``"latent"`` (spectrogram latents).
            return_dict: return an :class:`AudioGenerationOutput` instead of a tuple.
            callback_on_step_end: called at the end of every denoising step as ``fn(pipe, i, t, tensors)``; it
                returns a dict of tensors to replace (``latents``, ``prompt_embeds``, ``negative_prompt_embeds``) or
                ``None``.
            callback_on_step_end_tensor_inputs: names of the tensors passed to the callback (default ``["latents"]``).

        Returns:
            :class:`AudioGenerationOutput` with ``audios`` (batch, samples) and ``sample_rate``.
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        # 1. Check inputs. Raise error if not correct
        self.check_inputs(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_inference_steps, callback_on_step_end_tensor_inputs)
        if output_type not in ("np", "pt", "latent"):
            raise ValueError(f"`output_type` must be 'np', 'pt' or 'latent', got {output_type!r}")
        device = self._execution_device
        do_cfg = guidance_scale > 1.0

        # 2. Encode the prompt
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_waveforms_per_prompt, do_cfg, negative_prompt, prompt_embeds, negative_prompt_embeds
        )
        batch_size = prompt_embeds.shape[0]
        if do_cfg:
            cond = torch.cat([negative_prompt_embeds, prompt_embeds])

        # 3. Prepare timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Prepare latent variables
        latents = self.prepare_latents(batch_size, prompt_embeds.dtype, device, generator, latents)

        # 5. Denoising loop
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                latent_in = torch.cat([latents] * 2) if do_cfg else latents
                latent_in = self.scheduler.scale_model_input(latent_in, t)
                noise_pred = self.unet(latent_in, t, encoder_hidden_states=cond if do_cfg else prompt_embeds).sample
                if do_cfg:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
                latents = self.scheduler.step(noise_pred, t, latents).prev_sample
                if callback_on_step_end is not None:
                    named = {"latents": latents, "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
                    tensors = {k: named[k] for k in callback_on_step_end_tensor_inputs}
                    out = callback_on_step_end(self, i, t, tensors) or {}
                    latents = out.pop("latents", latents)
                    prompt_embeds = out.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = out.pop("negative_prompt_embeds", negative_prompt_embeds)
                    if do_cfg:
                        cond = torch.cat([negative_prompt_embeds, prompt_embeds])
                progress_bar.update()

        # 6. Decode the spectrogram and vocode it
        if output_type == "latent":
            audio = latents
        else:
            mel = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            audio = self.mel_spectrogram_to_waveform(mel)
            if output_type == "np":
                audio = audio.cpu().numpy().astype(np.float32)

        self.maybe_free_model_hooks()
        # 7. Return
        if not return_dict:
            return (audio, self.sample_rate)
        return AudioGenerationOutput(audios=audio, sample_rate=self.sample_rate)
