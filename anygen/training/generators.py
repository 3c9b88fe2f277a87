"""Stage 0: the modality generators of a recipe, trained on the Shapes World.

Sub-stages run in this order, each resumable from ``run_dir/generators/<name>``:

* ``vae``       image AutoencoderKL, 64×64×3 → 8×8 latents, per-channel latents normalised
* ``vae_decoder`` the image VAE's decoder fine-tuned alone (latents unchanged) to remove halos around shapes
* ``image``     caption encoder + image UNet (StableDiffusionPipeline)
* ``video``     MotionAdapter (zero-initialised outputs) over the image UNet, frozen or fine-tuned on clips with
                ``spatial_lr`` (AnimateDiffPipeline; its caption encoder and VAE are the image generator's)
* ``audio_vae`` AutoencoderKL over the 64×64 log-mel
* ``audio``     caption encoder + audio UNet (AnyGenAudioPipeline with a Griffin-Lim vocoder)

Each sub-stage exports its component(s) to ``run_dir/generators/<name>/final``;
finished pipelines are written to ``output_dir/{image,video,audio}_generator``.
"""

from __future__ import annotations

import copy
import filecmp
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNetMotionModel,
)
from diffusers.training_utils import EMAModel

from ..errors import AnyGenInputError
from ..models.generators import build_motion_adapter, build_unet, build_vae, fold_latent_normalisation
from ..models.text_encoder import build_caption_encoder, build_caption_tokenizer
from ..world import spec
from ..world.datasets import AudioCaptionDataset, ImageCaptionDataset, VideoCaptionDataset
from ..world.scenes import sample_clip, sample_scene, sample_sound
from .common import adamw_with_schedule, make_accelerator, step_rng, to_uint8
from .loop import train
from .recipe import Recipe, take

SUBSTAGES = ("vae", "vae_decoder", "image", "video", "audio_vae", "audio")

VAE_DEFAULTS = dict(
    block_out_channels=[8, 16, 32, 64],
    latent_channels=8,
    layers_per_block=1,
    norm_num_groups=8,
    steps=1200,
    batch_size=32,
    lr=2e-3,
    warmup=50,
    foreground_weight=10.0,
    edge_weight=20.0,
    palette_ce_weight=0.1,
    kl_weight=1e-5,
    checkpoint_every=200,
    validate_every=400,
    validate_samples=256,
)
ENCODER_DEFAULTS = dict(max_length=24, hidden_size=64, num_layers=2, num_heads=2)
UNET_DEFAULTS = dict(
    block_out_channels=[64, 128],
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=32,
    steps=4000,
    batch_size=64,
    lr=5e-4,
    warmup=200,
    caption_dropout=0.1,
    ema_decay=0.999,
    video_frame_fraction=0.0,
    two_object_prob=0.3,
    checkpoint_every=500,
    validate_every=1000,
    validate_samples=64,
    num_inference_steps=20,
    guidance_scale=1.5,  # measured on the trained image UNet: 89 % at 1.5, 75 % at 3, 28 % at 7 (over-saturation)
)
MOTION_DEFAULTS = dict(
    motion_layers_per_block=1,
    motion_num_attention_heads=4,
    motion_norm_num_groups=32,
    steps=3000,
    batch_size=8,
    lr=5e-4,
    spatial_lr=0.0,  # > 0: the image UNet's own layers are fine-tuned on clips too (then saved with the video generator)
    text_encoder_lr=0.0,  # > 0: so is the caption encoder (then the video generator has its own; see the recipe)
    lanes=None,  # train on clips in these lanes only (None: all of spec.LANES); see VideoCaptionDataset
    warmup=100,
    caption_dropout=0.1,
    ema_decay=0.999,
    checkpoint_every=250,
    validate_every=1000,
    validate_samples=32,
    num_inference_steps=20,
    guidance_scale=1.5,  # measured on the trained image UNet: 89 % at 1.5, 75 % at 3, 28 % at 7 (over-saturation)
)
# DDPM's linear betas, not SD's scaled_linear: at t = 999 scaled_linear keeps 6.8 % of the signal, so sampling from
# pure noise mis-states the mean colour (our background); linear keeps 0.6 %. With so little signal left, epsilon
# prediction carries almost no information about the clean latent at high t (measured on 8 overfitted captions: x0
# error 44 at t = 900, samples were noise), so the UNets predict v (Salimans & Ho), which is -x0 there.
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, steps_offset=1,
                 prediction_type="v_prediction")


def parse_substages(stage: str) -> list[str]:
    """``"generators"`` → all; ``"generators:vae,image"`` → those, in dependency order."""
    if stage == "generators":
        return list(SUBSTAGES)
    names = stage.split(":", 1)[1].split(",") if ":" in stage else []
    unknown = [n for n in names if n not in SUBSTAGES]
    if not names or unknown:
        raise AnyGenInputError(f"`--stage`: expected 'generators' or 'generators:<names>' with names from {SUBSTAGES}, got {stage!r}")
    return [s for s in SUBSTAGES if s in names]


def train_generators(recipe: Recipe, stage: str = "generators", resume: bool = True, max_steps: int | None = None) -> dict:
    """Train the selected generator sub-stages of ``recipe``; returns their figures by name."""
    figures = {}
    for name in parse_substages(stage):
        t0 = time.time()
        figures[name] = _SUBSTAGE_FNS[name](recipe, resume=resume, max_steps=max_steps)
        figures[name]["wall_seconds_this_run"] = round(time.time() - t0, 1)
        _append_report(recipe, name, figures[name])
    return figures


def _append_report(recipe: Recipe, name: str, figures: dict) -> None:
    path = recipe.run_dir / "generators" / "report.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"substage": name, **figures}) + "\n")


def _dir(recipe: Recipe, name: str) -> Path:
    return recipe.run_dir / "generators" / name


def _steps(cfg: dict, max_steps: int | None) -> int:
    return min(cfg["steps"], max_steps) if max_steps else cfg["steps"]


# ----------------------------------------------------------------------------- judged validation


def judge_accuracy(kind: str, outputs, media) -> dict:
    """Fraction of outputs whose every requested attribute the judges recover, plus per-attribute rates."""
    from ..eval.judges import judge_image, judge_mel, judge_video
    from ..eval.metrics import judged_matches

    judge = {"image": judge_image, "video": judge_video, "audio": judge_mel}[kind]
    per_attr: dict[str, list[bool]] = {}
    all_ok = []
    for out, medium in zip(outputs, media):
        m = judged_matches(judge(out), medium)
        for k, v in m.items():
            per_attr.setdefault(k, []).append(bool(v))
        all_ok.append(all(m.values()))
    res = {f"acc_{k}": round(float(np.mean(v)), 4) for k, v in per_attr.items()}
    res["acc_all"] = round(float(np.mean(all_ok)), 4) if all_ok else 0.0
    return res


# ----------------------------------------------------------------------------- image VAE


def _vae_batch(ds, step: int, batch_size: int):
    items = [ds[step * batch_size + j] for j in range(batch_size)]
    x = torch.stack([it["pixel_values"] for it in items])
    bg = torch.tensor([spec.BACKGROUNDS[it["scene"].bg] for it in items], dtype=torch.float32).view(-1, 3, 1, 1) / 127.5 - 1
    fg = ((x - bg).abs().sum(1, keepdim=True) > 1e-3).float()  # (batch, 1, H, W): shape pixels
    return x, fg, items


_PALETTE = torch.tensor(list(spec.COLORS.values()) + list(spec.BACKGROUNDS.values()), dtype=torch.float32) / 127.5 - 1


def _palette_logits(img: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → (B, K, H, W) logits: negative squared distance to each palette colour."""
    d = (img.permute(0, 2, 3, 1).unsqueeze(-2) - _PALETTE.to(img.device)).pow(2).sum(-1)  # (B, H, W, K)
    return (-d / temperature).permute(0, 3, 1, 2)


def _reconstruction_loss(y, x, fg, cfg: dict, outside: int, palette: bool) -> tuple[torch.Tensor, dict]:
    """Weighted MSE + L1 (+ palette cross-entropy) of a reconstruction ``y`` of ``x``.

    Shapes cover ~5 % of the pixels and their outline decides the judged shape, so ``fg`` pixels and a band around
    every outline (``outside`` px out, 1 px in) are weighted up; the band is where a soft decoder leaves halos.
    """
    band = F.max_pool2d(fg, 2 * outside + 1, 1, outside) + F.max_pool2d(-fg, 3, 1, 1)  # dilation - erosion
    w = 1 + cfg["foreground_weight"] * fg + cfg["edge_weight"] * band
    rec = ((y - x) ** 2 * w).mean() + ((y - x).abs() * w).mean()
    logs = {"rec": round(rec.item(), 5)}
    if palette and cfg["palette_ce_weight"] > 0:
        # Cross-entropy over the world's palette: an in-between colour on an edge costs as much as a wrong one.
        ce = (F.cross_entropy(_palette_logits(y), _palette_logits(x).argmax(1), reduction="none") * w[:, 0]).mean()
        rec = rec + cfg["palette_ce_weight"] * ce
        logs["ce"] = round(ce.item(), 5)
    return rec, logs


def _background_hinge(y, x, fg, outside: int, margin: float) -> torch.Tensor:
    """Squared excess over ``margin`` of each background pixel's largest channel error, away from the shapes.

    A tint or blotch of 10-30 levels over a plain background costs little MSE (the shapes' weights dominate), yet
    the judges read such a patch as a stray object or a wrong background; this term sees only those pixels and only
    the part of their error above ``margin`` (in [-1, 1] units: 0.08 is ~10 of 255 levels).
    """
    near = F.max_pool2d(fg, 2 * outside + 1, 1, outside)  # shapes and their halo band are the other terms' job
    err = (y - x).abs().amax(1, keepdim=True)  # (B, 1, H, W)
    return (F.relu(err - margin) ** 2 * (1 - near)).sum() / (1 - near).sum().clamp_min(1)


def train_image_vae(recipe: Recipe, resume: bool = True, max_steps: int | None = None) -> dict:
    cfg = take(recipe.sections.get("generators", {}).get("image_vae", {}), VAE_DEFAULTS, "generators.image_vae")
    return _train_vae(recipe, cfg, "vae", modality="image", resume=resume, max_steps=max_steps)


def _train_vae(recipe: Recipe, cfg: dict, name: str, modality: str, resume: bool, max_steps: int | None) -> dict:
    steps, bs = _steps(cfg, max_steps), cfg["batch_size"]
    accelerator = make_accelerator(recipe.seed)
    in_channels = 3 if modality == "image" else 1
    vae = build_vae(
        in_channels=in_channels,
        block_out_channels=cfg["block_out_channels"],
        latent_channels=cfg["latent_channels"],
        layers_per_block=cfg["layers_per_block"],
        norm_num_groups=cfg["norm_num_groups"],
    )
    opt, sched = adamw_with_schedule(vae.parameters(), cfg["lr"], steps, cfg["warmup"])
    vae, opt, sched = accelerator.prepare(vae, opt, sched)
    if modality == "image":
        ds = ImageCaptionDataset("train", size=steps * bs, seed=recipe.seed)
        val = ImageCaptionDataset("val", size=cfg["validate_samples"], seed=recipe.seed + 1)
    else:
        ds = AudioCaptionDataset("train", size=steps * bs, seed=recipe.seed)
        val = AudioCaptionDataset("val", size=cfg["validate_samples"], seed=recipe.seed + 1)

    def batch(step, source=ds):
        if modality == "image":
            return _vae_batch(source, step, bs)
        items = [source[step * bs + j] for j in range(bs)]
        x = mel_to_vae_input(torch.stack([it["mel"] for it in items]))
        fg = (x > x.amin(dim=(2, 3), keepdim=True) + 0.5).float()  # sounding time-frequency cells
        return x, fg, items

    def loss_fn(step):
        x, fg, _ = batch(step)
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        rec, logs = _reconstruction_loss(y, x, fg, cfg, outside=1, palette=modality == "image")
        kl = post.kl().mean() / (cfg["latent_channels"] * 64)
        logs["kl"] = round(kl.item(), 4)
        return rec + cfg["kl_weight"] * kl, logs

    @torch.no_grad()
    def validate(step):
        model = accelerator.unwrap_model(vae)
        items = [val[i] for i in range(len(val))]
        if modality == "image":
            x = torch.stack([it["pixel_values"] for it in items])
            y = model.decode(model.encode(x).latent_dist.mode()).sample
            return {f"val_{k}": v for k, v in judge_accuracy("image", to_uint8(y), [it["scene"] for it in items]).items()}
        x = mel_to_vae_input(torch.stack([it["mel"] for it in items]))
        y = model.decode(model.encode(x).latent_dist.mode()).sample
        mels = vae_output_to_mel(y)
        return {f"val_{k}": v for k, v in judge_accuracy("audio", list(mels), [it["sound"] for it in items]).items()}

    state = train(
        name=f"generators:{name}",
        accelerator=accelerator,
        models=[vae],
        optimizer=opt,
        scheduler=sched,
        loss_fn=loss_fn,
        steps=steps,
        ckpt_dir=_dir(recipe, name),
        checkpoint_every=cfg["checkpoint_every"],
        validate=validate,
        validate_every=cfg["validate_every"],
        resume=resume,
    )
    model = accelerator.unwrap_model(vae).eval()
    figures = validate(steps)
    # Normalise latents per channel so the UNet sees zero-mean, unit-variance inputs.
    stats_cls = ImageCaptionDataset if modality == "image" else AudioCaptionDataset
    stats = stats_cls("train", size=8 * bs, seed=recipe.seed + 2)
    with torch.no_grad():
        z = torch.cat([model.encode(batch(s, stats)[0]).latent_dist.mode() for s in range(8)])
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        fold_latent_normalisation(model, mean, std)
        z2 = torch.cat([model.encode(batch(s, stats)[0]).latent_dist.mode() for s in range(2)])
    figures.update(
        steps=state.step,
        train_seconds=round(state.seconds, 1),
        latent_mean_before=[round(v, 3) for v in mean.tolist()],
        latent_std_before=[round(v, 3) for v in std.tolist()],
        latent_std_after=round(z2.std().item(), 3),
    )
    if accelerator.is_main_process:
        model.save_pretrained(_dir(recipe, name) / "final")
    accelerator.print(f"[generators:{name}] {json.dumps(figures)}")
    return figures


# ----------------------------------------------------------------------------- image VAE decoder fine-tuning

DECODER_DEFAULTS = dict(
    steps=1000,
    batch_size=32,
    lr=1e-3,
    warmup=50,
    foreground_weight=10.0,
    edge_weight=20.0,
    halo_width=3,
    palette_ce_weight=0.3,
    background_weight=0.0,
    background_margin=0.08,
    checkpoint_every=200,
    validate_every=500,
    validate_samples=256,
)


def train_image_vae_decoder(recipe: Recipe, resume: bool = True, max_steps: int | None = None) -> dict:
    """Fine-tune only the decoder of the trained image VAE (Stable Diffusion's ft-MSE recipe).

    The encoder and ``quant_conv`` stay frozen, so the latent space, its folded normalisation and any UNet trained on
    it are unchanged; the decoder learns to stop leaving soft halos around shapes (``halo_width`` px band).
    ``background_weight`` adds a hinge on the background far from any shape (:func:`_background_hinge`).
    """
    cfg = take(recipe.sections.get("generators", {}).get("image_vae_decoder", {}), DECODER_DEFAULTS,
               "generators.image_vae_decoder")
    steps, bs = _steps(cfg, max_steps), cfg["batch_size"]
    accelerator = make_accelerator(recipe.seed + 4)
    vae = _load_final(recipe, "vae", AutoencoderKL).train()
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt, sched = adamw_with_schedule(params, cfg["lr"], steps, cfg["warmup"])
    vae, opt, sched = accelerator.prepare(vae, opt, sched)
    ds = ImageCaptionDataset("train", size=steps * bs, seed=recipe.seed + 5)
    val = ImageCaptionDataset("val", size=cfg["validate_samples"], seed=recipe.seed + 1)
    model = accelerator.unwrap_model(vae)

    def loss_fn(step):
        x, fg, _ = _vae_batch(ds, step, bs)
        with torch.no_grad():
            z = model.encode(x).latent_dist.sample()  # sampled latents: the UNet's outputs are never exact either
        y = model.decode(z).sample
        rec, logs = _reconstruction_loss(y, x, fg, cfg, outside=cfg["halo_width"], palette=True)
        if cfg["background_weight"] > 0:
            hinge = _background_hinge(y, x, fg, cfg["halo_width"], cfg["background_margin"])
            rec = rec + cfg["background_weight"] * hinge
            logs["bg"] = round(hinge.item(), 6)
        return rec, logs

    @torch.no_grad()
    def validate(step):
        items = [val[i] for i in range(len(val))]
        x = torch.stack([it["pixel_values"] for it in items])
        y = model.decode(model.encode(x).latent_dist.mode()).sample
        return {f"val_{k}": v for k, v in judge_accuracy("image", to_uint8(y), [it["scene"] for it in items]).items()}

    state = train(
        name="generators:vae_decoder", accelerator=accelerator, models=[vae], optimizer=opt, scheduler=sched,
        loss_fn=loss_fn, steps=steps, ckpt_dir=_dir(recipe, "vae_decoder"), checkpoint_every=cfg["checkpoint_every"],
        validate=validate, validate_every=cfg["validate_every"], resume=resume,
    )
    model.eval()
    figures = {"steps": state.step, "train_seconds": round(state.seconds, 1), **validate(state.step)}
    if accelerator.is_main_process:
        model.save_pretrained(_dir(recipe, "vae_decoder") / "final")
    accelerator.print(f"[generators:vae_decoder] {json.dumps(figures)}")
    return figures


def _image_vae(recipe: Recipe) -> AutoencoderKL:
    """The image VAE for later sub-stages: the decoder-tuned one once it exists (same encoder, same latents)."""
    name = "vae_decoder" if (_dir(recipe, "vae_decoder") / "final").exists() else "vae"
    return _load_final(recipe, name, AutoencoderKL).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- mel <-> VAE input

MEL_MEAN, MEL_STD = -5.0, 4.0  # log-mel spans [log 1e-5, ~5]; this maps it to about [-1.6, 2.5]


def mel_to_vae_input(mel: torch.Tensor) -> torch.Tensor:
    """(…, 64 mels, 64 frames) log-mel → (…, 1, 64 frames, 64 mels) normalised, AudioLDM's (time, mel) layout."""
    x = (mel.float() - MEL_MEAN) / MEL_STD
    x = x.transpose(-1, -2)
    return x if x.dim() == 4 else x.unsqueeze(-3)


def vae_output_to_mel(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mel_to_vae_input`: (B, 1, T, M) → (B, M, T) log-mel."""
    return (x.float()[:, 0] * MEL_STD + MEL_MEAN).transpose(-1, -2)


# ----------------------------------------------------------------------------- caption-conditioned UNets


def _encode_captions(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(next(text_encoder.parameters()).device))[0]  # (batch, L, D): the per-token conditioning


def _drop(captions: list[str], rng, p: float) -> list[str]:
    # Classifier-free guidance: the unconditional prompt of StableDiffusionPipeline is "".
    return ["" if rng.random() < p else c for c in captions]


def _load_final(recipe: Recipe, name: str, cls):
    path = _dir(recipe, name) / "final"
    if not path.exists():
        raise AnyGenInputError(f"Sub-stage `{name}` has not finished ({path} missing): run `--stage generators:{name}` first")
    return cls.from_pretrained(path)


def _train_caption_unet(
    recipe: Recipe, name: str, cfg: dict, vae: AutoencoderKL, salt: int, batch_fn, make_pipeline, evaluate,
    resume: bool, max_steps: int | None,
) -> dict:
    """Caption encoder + UNet2DConditionModel on frozen-VAE latents: the image and audio generators.

    ``batch_fn(step, rng)`` → (VAE inputs, captions); ``make_pipeline(vae, text_encoder, tokenizer, unet)`` wraps
    the EMA weights in the exported pipeline; ``evaluate(pipe)`` judges its samples.
    """
    enc_cfg = take(recipe.sections.get("generators", {}).get("caption_encoder", {}), ENCODER_DEFAULTS, "generators.caption_encoder")
    steps = _steps(cfg, max_steps)
    accelerator = make_accelerator(recipe.seed + salt)
    tokenizer = build_caption_tokenizer(enc_cfg["max_length"])

    def new_encoder():
        return build_caption_encoder(tokenizer, enc_cfg["hidden_size"], enc_cfg["num_layers"], enc_cfg["num_heads"])

    def new_unet():
        return build_unet(vae.config.latent_channels, enc_cfg["hidden_size"], cfg["block_out_channels"],
                          cfg["layers_per_block"], cfg["attention_head_dim"], cfg["norm_num_groups"])

    text_encoder, unet = new_encoder(), new_unet()
    noise_scheduler = DDPMScheduler(**SCHEDULER)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt, sched = adamw_with_schedule(params, cfg["lr"], steps, cfg["warmup"], weight_decay=1e-2)
    unet, text_encoder, opt, sched = accelerator.prepare(unet, text_encoder, opt, sched)
    ema_unet = EMAModel(unet.parameters(), decay=cfg["ema_decay"], use_ema_warmup=True)
    ema_text = EMAModel(text_encoder.parameters(), decay=cfg["ema_decay"], use_ema_warmup=True)

    def loss_fn(step):
        rng = step_rng(recipe.seed, step, salt=salt)
        x, captions = batch_fn(step, rng)
        with torch.no_grad():
            latents = vae.encode(x.to(accelerator.device)).latent_dist.sample()
        cond = _encode_captions(tokenizer, text_encoder, _drop(captions, rng, cfg["caption_dropout"]))
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        pred = unet(noise_scheduler.add_noise(latents, noise, t), t, cond).sample
        return F.mse_loss(pred, noise_scheduler.get_velocity(latents, noise, t)), {}

    def after_step(step):
        ema_unet.step(unet.parameters())
        ema_text.step(text_encoder.parameters())

    def export_pipeline():
        u, te = new_unet(), new_encoder()
        ema_unet.copy_to(u.parameters())
        ema_text.copy_to(te.parameters())
        return make_pipeline(vae, te.eval(), tokenizer, u.eval())

    @torch.no_grad()
    def validate(step):
        return {f"val_{k}": v for k, v in evaluate(export_pipeline()).items()}

    state = train(
        name=f"generators:{name}", accelerator=accelerator, models=[unet, text_encoder], optimizer=opt, scheduler=sched,
        loss_fn=loss_fn, steps=steps, ckpt_dir=_dir(recipe, name), checkpoint_every=cfg["checkpoint_every"],
        extra_state=[ema_unet, ema_text], after_step=after_step, validate=validate, validate_every=cfg["validate_every"],
        resume=resume,
    )
    pipe = export_pipeline()
    figures = {"steps": state.step, "train_seconds": round(state.seconds, 1), **validate(state.step)}
    if accelerator.is_main_process:
        pipe.save_pretrained(_dir(recipe, name) / "final")
        pipe.save_pretrained(recipe.output_dir / f"{name}_generator")
    accelerator.print(f"[generators:{name}] {json.dumps(figures)}")
    return figures


def train_image_unet(recipe: Recipe, resume: bool = True, max_steps: int | None = None) -> dict:
    cfg = take(recipe.sections.get("generators", {}).get("image_unet", {}), UNET_DEFAULTS, "generators.image_unet")
    bs = cfg["batch_size"]
    steps = _steps(cfg, max_steps)
    n_video = int(round(bs * cfg["video_frame_fraction"]))
    images = ImageCaptionDataset("train", size=steps * bs, seed=recipe.seed, two_object_prob=cfg["two_object_prob"])
    clips = VideoCaptionDataset("train", size=max(1, steps * n_video), seed=recipe.seed)

    def batch_fn(step, rng):
        items = [images[step * bs + j] for j in range(bs - n_video)]
        x = [it["pixel_values"] for it in items]
        captions = [it["caption"] for it in items]
        for j in range(n_video):  # single frames of clips teach the spatial layers the video captions
            clip = clips[step * n_video + j]
            x.append(clip["pixel_values"][rng.randrange(spec.NUM_FRAMES)])
            captions.append(clip["caption"])
        return torch.stack(x), captions

    def make_pipeline(vae, text_encoder, tokenizer, unet):
        return StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )

    vae = _image_vae(recipe)
    return _train_caption_unet(
        recipe, "image", cfg, vae, 1, batch_fn, make_pipeline,
        lambda pipe: evaluate_image_pipeline(pipe, cfg["validate_samples"], recipe.seed, cfg), resume, max_steps,
    )


def evaluate_image_pipeline(pipe, n: int, seed: int, cfg: dict, split: str = "val", n_objects: int = 1) -> dict:
    """Generate ``n`` images from canonical captions of ``split`` and judge them."""
    import random

    rng = random.Random(seed + 12345)
    scenes = [sample_scene(rng, split, n_objects=n_objects) for _ in range(n)]
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, n, 16):
        chunk = scenes[i : i + 16]
        res = pipe(
            [s.caption() for s in chunk], num_inference_steps=cfg["num_inference_steps"], guidance_scale=cfg["guidance_scale"],
            height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(seed + i),
        ).images
        out.extend((res * 255).round().astype(np.uint8))
    return judge_accuracy("image", out, scenes)


# ----------------------------------------------------------------------------- video: AnimateDiff motion adapter


def _load_image_generator(recipe: Recipe) -> StableDiffusionPipeline:
    path = _dir(recipe, "image") / "final"
    if not path.exists():
        raise AnyGenInputError(f"Sub-stage `image` has not finished ({path} missing): run `--stage generators:image` first")
    return StableDiffusionPipeline.from_pretrained(path)


def train_motion_adapter(recipe: Recipe, resume: bool = True, max_steps: int | None = None) -> dict:
    cfg = take(recipe.sections.get("generators", {}).get("motion_adapter", {}), MOTION_DEFAULTS, "generators.motion_adapter")
    steps, bs = _steps(cfg, max_steps), cfg["batch_size"]
    accelerator = make_accelerator(recipe.seed + 2)
    image_pipe = _load_image_generator(recipe)
    vae, tokenizer = image_pipe.vae.requires_grad_(False), image_pipe.tokenizer
    text_encoder = image_pipe.text_encoder.requires_grad_(False)
    adapter = build_motion_adapter(
        image_pipe.unet.config.block_out_channels,
        cfg["motion_layers_per_block"],
        cfg["motion_num_attention_heads"],
        cfg["motion_norm_num_groups"],
    )
    unet = UNetMotionModel.from_unet2d(image_pipe.unet, adapter)
    with torch.no_grad():  # each motion module starts as the identity: the UNet starts as the image UNet per frame
        for name, p in unet.named_parameters():
            if "motion_modules" in name and ".proj_out." in name:
                p.zero_()
    motion = [p for name, p in unet.named_parameters() if "motion_modules" in name]
    spatial = [p for name, p in unet.named_parameters() if "motion_modules" not in name]
    if cfg["spatial_lr"] > 0:
        groups = [{"params": motion}, {"params": spatial, "lr": cfg["spatial_lr"]}]
    else:
        unet.freeze_unet2d_params()  # AnimateDiff: only the motion modules learn
        groups = [{"params": motion}]
    train_text = cfg["text_encoder_lr"] > 0
    if train_text:
        groups.append({"params": list(text_encoder.requires_grad_(True).parameters()), "lr": cfg["text_encoder_lr"]})
    noise_scheduler = DDPMScheduler(**SCHEDULER)
    trainable = [p for p in unet.parameters() if p.requires_grad]  # module order; prepare() keeps these tensors
    opt, sched = adamw_with_schedule(groups, cfg["lr"], steps, cfg["warmup"], weight_decay=1e-2)
    if train_text:
        unet, text_encoder, opt, sched = accelerator.prepare(unet, text_encoder, opt, sched)
    else:
        unet, opt, sched = accelerator.prepare(unet, opt, sched)
    ema = EMAModel(trainable, decay=cfg["ema_decay"], use_ema_warmup=True)
    clips = VideoCaptionDataset("train", size=steps * bs, seed=recipe.seed, lanes=cfg["lanes"])
    num_frames = spec.NUM_FRAMES

    def loss_fn(step):
        rng = step_rng(recipe.seed, step, salt=2)
        items = [clips[step * bs + j] for j in range(bs)]
        frames = torch.stack([it["pixel_values"] for it in items])  # (batch, frames, 3, H, W)
        with torch.no_grad():
            z = vae.encode(frames.flatten(0, 1).to(accelerator.device)).latent_dist.sample()
        with torch.set_grad_enabled(train_text):
            cond = _encode_captions(tokenizer, text_encoder, _drop([it["caption"] for it in items], rng, cfg["caption_dropout"]))
        z = z.view(bs, num_frames, *z.shape[1:]).transpose(1, 2)  # (batch, C, frames, h, w): UNetMotionModel layout
        noise = torch.randn_like(z)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bs,), device=z.device)
        # UNetMotionModel folds frames into the batch; like AnimateDiffPipeline, repeat the caption per frame.
        cond = cond.repeat_interleave(num_frames, dim=0)
        pred = unet(noise_scheduler.add_noise(z, noise, t), t, cond).sample
        return F.mse_loss(pred, noise_scheduler.get_velocity(z, noise, t)), {}

    def after_step(step):
        ema.step(trainable)

    def export_pipeline() -> AnimateDiffPipeline:
        model = accelerator.unwrap_model(unet)  # not `motion`: that name holds the motion modules' parameters
        ema.store(trainable)
        ema.copy_to(trainable)
        adapter_out = build_motion_adapter(
            image_pipe.unet.config.block_out_channels, cfg["motion_layers_per_block"], cfg["motion_num_attention_heads"],
            cfg["motion_norm_num_groups"],
        )
        adapter_out.load_state_dict(_motion_state(model), strict=True)
        spatial_out = image_pipe.unet
        if cfg["spatial_lr"] > 0:  # the fine-tuned image layers: every UNetMotionModel key that is not a motion module
            spatial_out = copy.deepcopy(image_pipe.unet)
            spatial_out.load_state_dict({k: v for k, v in model.state_dict().items() if "motion_modules" not in k})
        ema.restore(trainable)
        text_out = copy.deepcopy(accelerator.unwrap_model(text_encoder)).requires_grad_(False) if train_text else text_encoder
        return AnimateDiffPipeline(
            vae=vae, text_encoder=text_out.eval(), tokenizer=tokenizer, unet=spatial_out.eval(), motion_adapter=adapter_out.eval(),
            scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
        )

    @torch.no_grad()
    def validate(step):
        return {f"val_{k}": v for k, v in evaluate_video_pipeline(export_pipeline(), cfg["validate_samples"], recipe.seed, cfg).items()}

    state = train(
        name="generators:video", accelerator=accelerator, models=[unet, text_encoder] if train_text else [unet],
        optimizer=opt, scheduler=sched, loss_fn=loss_fn, steps=steps, ckpt_dir=_dir(recipe, "video"),
        checkpoint_every=cfg["checkpoint_every"], extra_state=[ema], after_step=after_step, validate=validate,
        validate_every=cfg["validate_every"], resume=resume,
    )
    pipe = export_pipeline()
    figures = {"steps": state.step, "train_seconds": round(state.seconds, 1), **validate(state.step)}
    if accelerator.is_main_process:
        pipe.motion_adapter.save_pretrained(_dir(recipe, "video") / "final" / "motion_adapter")
        save_sharing(pipe, recipe.output_dir / "video_generator", recipe.output_dir / "image_generator")
    accelerator.print(f"[generators:video] {json.dumps(figures)}")
    return figures


def save_sharing(pipe, dest: Path, shared: Path, names: tuple[str, ...] = ("vae", "text_encoder", "tokenizer")) -> None:
    """``pipe.save_pretrained(dest)``, with each component in ``names`` that is byte-identical to ``shared``'s
    saved as a relative symlink to it (the video generator reuses the image generator's VAE and caption encoder:
    AnimateDiff only adds motion modules). The folder is written aside and moved in whole: never half-written.
    """
    dest, shared = Path(dest), Path(shared)
    tmp = dest.parent / f".tmp_{dest.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp)
    for name in names:
        a, b = tmp / name, shared / name
        if b.is_dir() and not b.is_symlink() and _same_weights(a, b):
            shutil.rmtree(a)
            a.symlink_to(os.path.relpath(b, tmp))
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _same_weights(a: Path, b: Path) -> bool:
    """Two saved components hold the same weights (or vocabulary); their configs' bookkeeping may differ."""
    kinds = ("*.safetensors", "tokenizer.json", "vocab.json", "merges.txt")
    fa = sorted(f.name for k in kinds for f in a.glob(k))
    fb = sorted(f.name for k in kinds for f in b.glob(k))
    return bool(fa) and fa == fb and all(filecmp.cmp(a / f, b / f, shallow=False) for f in fa)


def _motion_state(motion_unet: UNetMotionModel) -> dict:
    """The MotionAdapter weights held inside a UNetMotionModel (as diffusers' ``save_motion_modules`` extracts them)."""
    return {k: v for k, v in motion_unet.state_dict().items() if "motion_modules" in k}


def evaluate_video_pipeline(pipe, n: int, seed: int, cfg: dict, split: str = "val") -> dict:
    """Generate ``n`` clips from canonical captions of ``split`` and judge them."""
    import random

    rng = random.Random(seed + 23456)
    clips = [sample_clip(rng, split) for _ in range(n)]
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, n, 8):
        chunk = clips[i : i + 8]
        frames = pipe(
            [c.caption() for c in chunk], num_frames=spec.NUM_FRAMES, num_inference_steps=cfg["num_inference_steps"],
            guidance_scale=cfg["guidance_scale"], height=64, width=64, output_type="np",
            generator=torch.Generator().manual_seed(seed + i),
        ).frames
        out.extend((np.asarray(frames) * 255).round().astype(np.uint8))
    return judge_accuracy("video", out, clips)


# ----------------------------------------------------------------------------- audio


def train_audio_vae(recipe: Recipe, resume: bool = True, max_steps: int | None = None) -> dict:
    defaults = {**VAE_DEFAULTS, "block_out_channels": [16, 32, 64, 64], "latent_channels": 8}
    cfg = take(recipe.sections.get("generators", {}).get("audio_vae", {}), defaults, "generators.audio_vae")
    return _train_vae(recipe, cfg, "audio_vae", modality="audio", resume=resume, max_steps=max_steps)


def _vocoder():
    from ..pipelines.vocoder import GriffinLimVocoder

    m = spec.MEL
    return GriffinLimVocoder(
        sampling_rate=spec.SAMPLE_RATE, model_in_dim=m["n_mels"], n_fft=m["n_fft"], hop_length=m["hop_length"],
        f_min=m["f_min"], f_max=m["f_max"], mel_scale=m["mel_scale"], n_iter=32, input_mean=MEL_MEAN, input_scale=MEL_STD,
        log_floor=spec.MEL_FLOOR, num_samples=spec.NUM_SAMPLES,
    )


def train_audio_unet(recipe: Recipe, resume: bool = True, max_steps: int | None = None) -> dict:
    from ..pipelines.pipeline_audio import AnyGenAudioPipeline

    cfg = take(recipe.sections.get("generators", {}).get("audio_unet", {}), UNET_DEFAULTS, "generators.audio_unet")
    bs = cfg["batch_size"]
    sounds = AudioCaptionDataset("train", size=_steps(cfg, max_steps) * bs, seed=recipe.seed)

    def batch_fn(step, rng):
        items = [sounds[step * bs + j] for j in range(bs)]
        return mel_to_vae_input(torch.stack([it["mel"] for it in items])), [it["caption"] for it in items]

    def make_pipeline(vae, text_encoder, tokenizer, unet):
        return AnyGenAudioPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DPMSolverMultistepScheduler(**SCHEDULER), vocoder=_vocoder())

    vae = _load_final(recipe, "audio_vae", AutoencoderKL).eval().requires_grad_(False)
    return _train_caption_unet(
        recipe, "audio", cfg, vae, 3, batch_fn, make_pipeline,
        lambda pipe: evaluate_audio_pipeline(pipe, cfg["validate_samples"], recipe.seed, cfg), resume, max_steps,
    )


def evaluate_audio_pipeline(pipe, n: int, seed: int, cfg: dict, split: str = "val", vocode: bool = True) -> dict:
    """Generate ``n`` sounds from canonical captions of ``split`` and judge the vocoded waveforms (or the mels)."""
    import random

    from ..world.mel import log_mel

    rng = random.Random(seed + 34567)
    sounds = [sample_sound(rng, split) for _ in range(n)]
    pipe.set_progress_bar_config(disable=True)
    mels = []
    for i in range(0, n, 16):
        chunk = sounds[i : i + 16]
        kw = dict(num_inference_steps=cfg["num_inference_steps"], guidance_scale=cfg["guidance_scale"],
                  generator=torch.Generator().manual_seed(seed + i))
        if vocode:
            mels.extend(log_mel(pipe([s.caption() for s in chunk], output_type="pt", **kw).audios))
        else:
            latents = pipe([s.caption() for s in chunk], output_type="latent", **kw).audios
            mels.extend(vae_output_to_mel(pipe.vae.decode(latents).sample))
    return judge_accuracy("audio", mels, sounds)


_SUBSTAGE_FNS = {
    "vae": train_image_vae,
    "vae_decoder": train_image_vae_decoder,
    "image": train_image_unet,
    "video": train_motion_adapter,
    "audio_vae": train_audio_vae,
    "audio": train_audio_unet,
}
