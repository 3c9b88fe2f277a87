"""Tiny-component tests of the generator pipelines (diffusers style: seeded dummies, 2 steps)."""

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, DiffusionPipeline, DPMSolverMultistepScheduler, StableDiffusionPipeline
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from anygen.models.generators import build_motion_adapter, build_unet, build_vae, fold_latent_normalisation
from anygen.models.text_encoder import build_caption_encoder, build_caption_tokenizer
from anygen.pipelines import AnyGenAudioPipeline, GriffinLimVocoder

SCHED = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
CAPTION = "a beeping buzzy very low tone"


def get_dummy_audio_components(vocoder=None):
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer(max_length=12)
    text_encoder = build_caption_encoder(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    vae = build_vae(in_channels=1, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16)
    unet = build_unet(4, 16, (16, 32), layers_per_block=1, attention_head_dim=2, norm_num_groups=8, sample_size=8)
    vocoder = vocoder or GriffinLimVocoder(model_in_dim=16, n_iter=4, num_samples=15 * 256, input_mean=-5.0, input_scale=4.0)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=DPMSolverMultistepScheduler(**SCHED), vocoder=vocoder)


def _audio_pipe(**kw):
    pipe = AnyGenAudioPipeline(**get_dummy_audio_components(**kw))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_audio_pipeline_output_and_slice():
    out = _audio_pipe()(CAPTION, num_inference_steps=2, guidance_scale=4.0, generator=torch.manual_seed(0))
    assert out.sample_rate == 16000
    assert out.audios.shape == (1, 15 * 256) and out.audios.dtype == np.float32
    assert np.isfinite(out.audios).all() and np.abs(out.audios).max() > 0
    expected = np.array(EXPECTED_AUDIO_SLICE, dtype=np.float32)
    np.testing.assert_allclose(out.audios[0, 1000:1008], expected, atol=2e-5, rtol=1e-3)


EXPECTED_AUDIO_SLICE = [-1.662030e-03, -5.315248e-04, 2.124949e-03, 1.719672e-03, -5.659187e-05, -2.515381e-04, 2.909638e-03, 2.555660e-03]


def test_audio_pipeline_prompt_embeds_match_prompt():
    pipe = _audio_pipe()
    a = pipe(CAPTION, num_inference_steps=2, generator=torch.manual_seed(1)).audios
    embeds, neg = pipe.encode_prompt(CAPTION, "cpu", 1, True)
    b = pipe(prompt_embeds=embeds, negative_prompt_embeds=neg, num_inference_steps=2, generator=torch.manual_seed(1)).audios
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = pipe(CAPTION, num_inference_steps=2, generator=torch.manual_seed(2)).audios
    assert np.abs(a - c).max() > 1e-4, "a different seed must give a different sound"


def test_audio_pipeline_save_load_round_trip(tmp_path):
    pipe = _audio_pipe()
    a = pipe(CAPTION, num_inference_steps=2, generator=torch.manual_seed(0)).audios
    pipe.save_pretrained(tmp_path)
    loaded = AnyGenAudioPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.vocoder, GriffinLimVocoder) and loaded.vocoder.config.n_iter == 4
    b = loaded(CAPTION, num_inference_steps=2, generator=torch.manual_seed(0)).audios
    np.testing.assert_array_equal(a, b)
    # diffusers' generic entry point finds our class through the folder's loader shim.
    generic = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(generic).__name__ == "AnyGenAudioPipeline" and isinstance(generic.vocoder, GriffinLimVocoder)
    generic.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(a, generic(CAPTION, num_inference_steps=2, generator=torch.manual_seed(0)).audios)


def test_audio_pipeline_accepts_speecht5_hifigan():
    torch.manual_seed(0)
    config = SpeechT5HifiGanConfig(
        model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    )
    pipe = _audio_pipe(vocoder=SpeechT5HifiGan(config).eval())
    out = pipe(CAPTION, num_inference_steps=2, generator=torch.manual_seed(0))
    assert out.audios.shape == (1, 16 * 16)  # 16 frames x hop 16
    assert out.sample_rate == 16000 and np.isfinite(out.audios).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "Provide either"),
        (dict(prompt=CAPTION, prompt_embeds=torch.zeros(1, 12, 16)), "not both"),
        (dict(prompt=CAPTION, num_inference_steps=0), "num_inference_steps"),
        (dict(prompt=CAPTION, output_type="wav"), "output_type"),
        (dict(prompt_embeds=torch.zeros(12, 16)), "prompt_embeds"),
    ],
)
def test_audio_pipeline_rejects_bad_input(kwargs, match):
    kwargs.setdefault("num_inference_steps", 2)
    with pytest.raises(ValueError, match=match):
        _audio_pipe()(**kwargs)


def test_fold_latent_normalisation_keeps_reconstruction():
    torch.manual_seed(0)
    vae = build_vae(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16).eval()
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        before = vae.decode(z).sample
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        fold_latent_normalisation(vae, mean, std)
        z2 = vae.encode(x).latent_dist.mode()
        after = vae.decode(z2).sample
    torch.testing.assert_close(z2.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z2.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def get_dummy_image_components():
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer(max_length=24)
    return dict(
        vae=build_vae(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16),
        text_encoder=build_caption_encoder(tokenizer, hidden_size=16, num_layers=1, num_heads=2),
        tokenizer=tokenizer,
        unet=build_unet(4, 16, (16, 32), layers_per_block=1, attention_head_dim=2, norm_num_groups=8, sample_size=8),
        scheduler=DPMSolverMultistepScheduler(**SCHED),
    )


def test_image_pipeline_from_our_components_round_trips(tmp_path):
    c = get_dummy_image_components()
    pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    caption = "a small red circle at the top-left on a black background"
    kw = dict(num_inference_steps=2, height=16, width=16, output_type="np")
    a = pipe(caption, generator=torch.manual_seed(0), **kw).images
    embeds, neg = pipe.encode_prompt(caption, "cpu", 1, True)
    b = pipe(prompt_embeds=embeds, negative_prompt_embeds=neg, generator=torch.manual_seed(0), **kw).images
    np.testing.assert_allclose(a, b, atol=1e-6)
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, StableDiffusionPipeline)
    np.testing.assert_array_equal(a, loaded(caption, generator=torch.manual_seed(0), **kw).images)


def test_video_pipeline_from_our_components_round_trips(tmp_path):
    c = get_dummy_image_components()
    adapter = build_motion_adapter((16, 32), motion_num_attention_heads=2, motion_norm_num_groups=8, motion_max_seq_length=8)
    pipe = AnimateDiffPipeline(**c, motion_adapter=adapter)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_frames=4, num_inference_steps=2, height=16, width=16, output_type="np")
    a = pipe("a small red circle moving left", generator=torch.manual_seed(0), **kw).frames
    assert a.shape == (1, 4, 16, 16, 3)
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, AnimateDiffPipeline)
    np.testing.assert_allclose(a, loaded("a small red circle moving left", generator=torch.manual_seed(0), **kw).frames, atol=1e-6)
