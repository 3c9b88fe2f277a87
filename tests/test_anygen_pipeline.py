"""The public contract of AnyGenPipeline (DESIGN.md), end to end on tiny random components.

A random backbone rarely emits a signal group, so most tests script the reply with
``anygen.testing.ScriptedReply`` (a LogitsProcessor passed through the public ``logits_processor``
argument); everything after the reply — the signal-group processor, hidden states, output projectors,
generators — runs for real.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers import LogitsProcessor

from anygen import AnyGenInputError, AnyGenOutput, AnyGenPipeline
from anygen.models.tokenizer import signal_groups
from anygen.pipelines import AnyGenAudioPipeline
from anygen.testing import ScriptedReply, build_tiny_random_pipeline, tiny_image_generator, tiny_tokenizer

diffusers_logging.disable_progress_bar()

ALL3 = "Here is a small red circle. [IMG] And a clip. [VID] And a high tone. [AUD]"
FAST = dict(num_inference_steps=2, seed=0)


def script(pipe, text):
    return [ScriptedReply(pipe.tokenizer, text)]


def arr(x):
    return np.asarray(x, dtype=np.float32)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_random_pipeline(seed=0)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("anygen-tiny-random")
    pipe.save_pretrained(path)
    return path


def solid(rgb, size=64):
    return Image.new("RGB", (size, size), rgb)


# ----------------------------------------------------------------------------- outputs and routing


def test_text_in_any_mix_out(pipe):
    out = pipe("draw a red circle, animate it and play a high tone", logits_processor=script(pipe, ALL3), **FAST)
    assert isinstance(out, AnyGenOutput)
    assert out.text == ALL3
    (image,), (video,), (audio,) = out.images, out.videos, out.audios
    assert isinstance(image, Image.Image) and image.size == (16, 16)
    assert len(video) == pipe.config.num_frames == 4 and all(isinstance(f, Image.Image) for f in video)
    assert audio.dtype == np.float32 and audio.shape == (16000,) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert out.sample_rate == 16000
    assert pipe("draw", return_dict=False, logits_processor=script(pipe, ALL3), **FAST)[0] == ALL3


def test_routing_follows_the_emitted_groups(pipe):
    out = pipe("play a tone", logits_processor=script(pipe, "A tone. [AUD]"), **FAST)
    assert (len(out.images), len(out.videos), len(out.audios)) == (0, 0, 1)
    out = pipe("just talk", logits_processor=script(pipe, "There are four shapes."), **FAST)
    assert out.text == "There are four shapes." and not (out.images or out.videos or out.audios)
    out = pipe("draw two", logits_processor=script(pipe, "A. [IMG] And B. [IMG]"), **FAST)
    assert len(out.images) == 2
    assert np.abs(arr(out.images[0]) - arr(out.images[1])).max() > 0  # output i is seeded with seed + i


def test_signal_groups_are_never_partial(pipe):
    # A script that ends right after [IMG0] contradicts the signal-group rules (only [IMG1] may follow):
    # no image is generated from the broken group, and the reply text carries no stray signal token.
    out = pipe("draw", logits_processor=[ScriptedReply(pipe.tokenizer, "x [IMG0]")], max_new_tokens=8, **FAST)
    assert out.images == [] and "[IMG" not in out.text
    # A group that would not fit before max_new_tokens is never started.
    out = pipe("draw", logits_processor=script(pipe, "[IMG]"), max_new_tokens=3, **FAST)
    assert out.images == [] and "[IMG" not in out.text
    out = pipe("draw", logits_processor=script(pipe, "[IMG]"), max_new_tokens=4, **FAST)
    assert len(out.images) == 1 and out.text == "[IMG]"


class _PushWhereAllowed(LogitsProcessor):
    """Makes ``token`` the greedy choice whenever the earlier processors still allow it."""

    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        allowed = scores[:, self.token] > torch.finfo(scores.dtype).min
        scores[allowed, self.token] = scores.max() + 100.0
        return scores


def test_pipeline_completes_groups_the_backbone_starts(pipe):
    # A backbone that only ever wants [IMG0]: the pipeline's processor forces [IMG1..3] after each one, so
    # 8 new tokens hold exactly two complete groups, i.e. two images.
    first = signal_groups(pipe.tokenizer)["image"][0]
    out = pipe("draw", logits_processor=[_PushWhereAllowed(first)], max_new_tokens=8, **FAST)
    assert out.text == "[IMG][IMG]" and len(out.images) == 2


def _count_forwards(pipe, prompt, reply, **kwargs):
    """Reply text and backbone forwards of one call whose (greedy) reply is scripted to be ``reply``."""
    forwards = []
    hook = pipe.backbone.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        out = pipe(prompt, logits_processor=script(pipe, reply), **kwargs, **FAST)
    finally:
        hook.remove()
    return out.text, len(forwards)


def test_drafts_save_forwards_and_keep_the_reply(pipe, monkeypatch):
    # Three draft sources, each checked by the forward that feeds it: the request's words, earlier replies,
    # and (always) the forced rest of a started signal group. The reply is the greedy one in every case.
    prompt, reply = "draw a small red circle and a small red circle", "Here is a small red circle and a small red circle. [IMG]"
    pipe.reply_memory.clear()
    monkeypatch.setattr(pipe, "lookup_memory", 0)
    monkeypatch.setattr(pipe, "prompt_lookup_num_tokens", 0)
    plain = _count_forwards(pipe, prompt, reply)
    monkeypatch.setattr(pipe, "prompt_lookup_num_tokens", 10)
    copied = _count_forwards(pipe, prompt, reply)
    monkeypatch.setattr(pipe, "lookup_memory", 64)
    _count_forwards(pipe, "draw something", reply)  # remembered
    remembered = _count_forwards(pipe, prompt, reply)
    assert plain[0] == copied[0] == remembered[0] == reply
    n_tokens = len(pipe.tokenizer(reply.replace("[IMG]", "[IMG0][IMG1][IMG2][IMG3]"), add_special_tokens=False).input_ids)
    # Without drafts: the prompt; one forward per later reply token and the eos, but [IMG1..3] (fed with [IMG0]);
    # the pass over the reply that the projector reads.
    assert plain[1] == 1 + n_tokens - (pipe.num_signal_tokens["image"] - 1) + 1
    assert copied[1] < plain[1] - 4  # "small red circle and a small red circle" copied from the request
    # The prompt, two forwards checking the remembered reply (10 n-gram tokens each); the second drafts the end, so
    # it feeds the whole reply and is the pass the projector reads.
    assert remembered[1] == 3 < copied[1]
    # A spliced medium: drafts from the reply so far and the memory, same reply.
    with_image = dict(images=[solid((255, 0, 0))])
    described = "A red square. A red square. A red square."
    monkeypatch.setattr(pipe, "lookup_memory", 0)
    monkeypatch.setattr(pipe, "prompt_lookup_num_tokens", 0)
    plain = _count_forwards(pipe, "describe <image>", described, **with_image)
    monkeypatch.setattr(pipe, "prompt_lookup_num_tokens", 10)
    drafted = _count_forwards(pipe, "describe <image>", described, **with_image)
    assert plain[0] == drafted[0] == described and drafted[1] < plain[1] - 4


def _step_by_step(pipe, input_ids, inputs_embeds, max_new_tokens, logits_processor=None):
    """The reference decoding: one `generate` round per token, no stopping criterion, no pass handed on."""
    from transformers import LogitsProcessorList

    from anygen.models.signal_tokens import SignalGroupLogitsProcessor

    max_length = min(input_ids.shape[1] + max_new_tokens, pipe.backbone.config.max_position_embeddings)
    signal = SignalGroupLogitsProcessor(pipe.signal_groups, prompt_length=input_ids.shape[1], max_length=max_length)
    out = pipe.backbone.generate(
        input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=torch.ones_like(input_ids),
        logits_processor=LogitsProcessorList([signal, *(logits_processor or [])]), do_sample=False,
        max_new_tokens=max_length - input_ids.shape[1], eos_token_id=pipe.tokenizer.eos_token_id,
        pad_token_id=pipe.tokenizer.pad_token_id,
    )[0, input_ids.shape[1] :].tolist()
    return (out[: out.index(pipe.tokenizer.eos_token_id)] if pipe.tokenizer.eos_token_id in out else out), None


def test_signal_groups_cost_no_decoding_rounds(pipe, monkeypatch):
    """The rest of a started group is appended without decoding, and the reply's pass feeds the projectors."""
    monkeypatch.setattr(pipe, "prompt_lookup_num_tokens", 0)  # one forward per decoded token: countable
    monkeypatch.setattr(pipe, "lookup_memory", 0)
    forwards, conditioning = [], []
    hooks = [pipe.backbone.model.register_forward_hook(lambda *a: forwards.append(1))] + [
        pipe.output_projector(m).register_forward_hook(lambda mod, i, o: conditioning.append(o)) for m in ("image", "video", "audio")
    ]
    try:
        fast = pipe("draw", logits_processor=script(pipe, ALL3), **FAST)
        n_fast, cond_fast = len(forwards), list(conditioning)
        forwards.clear(), conditioning.clear()
        monkeypatch.setattr(pipe, "_decode", lambda *a: _step_by_step(pipe, *a))
        slow = pipe("draw", logits_processor=script(pipe, ALL3), **FAST)
    finally:
        for h in hooks:
            h.remove()
    assert fast.text == slow.text and len(cond_fast) == len(conditioning) == 3
    for a, b in zip(cond_fast, conditioning):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(arr(fast.images[0]), arr(slow.images[0]))
    # Step by step: one forward per reply token and the eos, then one teacher-forced pass. Now each group's
    # K - 1 later tokens are fed with its first one, and the pass over the reply is step 4's.
    saved = sum(k - 1 for k in pipe.num_signal_tokens.values())
    assert n_fast == len(forwards) - saved


def test_signal_group_jump_keeps_step_by_step_replies(pipe):
    """Unscripted (random backbone) replies, with a signal group forced in at several places, are unchanged."""

    class StartGroup(LogitsProcessor):  # start an image group at reply position `at`; leave the rest to the model
        def __init__(self, at):
            self.at, self.start = at, None

        def __call__(self, input_ids, scores):
            self.start = input_ids.shape[1] if self.start is None else self.start
            if input_ids.shape[1] - self.start == self.at:
                scores = scores.clone()
                scores[:, pipe.signal_groups["image"][0]] = scores.max() + 1
            return scores

    ids = torch.tensor([pipe._prompt_ids([{"role": "user", "content": "draw a red circle"}])])
    embeds = pipe.backbone.get_input_embeddings()(ids)
    for at in (0, 3, 10):
        reply, hidden = pipe._decode(ids, embeds, 16, [StartGroup(at)])
        assert reply == _step_by_step(pipe, ids, embeds, 16, [StartGroup(at)])[0]
        assert pipe._groups_in(reply)[0] == ("image", at)
        full = torch.cat([embeds, pipe.backbone.get_input_embeddings()(torch.tensor([reply]))], dim=1)
        torch.testing.assert_close(hidden, pipe.backbone(inputs_embeds=full, output_hidden_states=True).hidden_states[-1][:, ids.shape[1] :])
        # Again, now drafted from the memory of that very reply: other forwards, the same reply and the very same
        # hidden states (one pass over the reply after the prompt's, however the reply was found).
        again, hidden_again = pipe._decode(ids, embeds, 16, [StartGroup(at)])
        assert again == reply and torch.equal(hidden_again, hidden)


def test_seed_determinism(pipe):
    a = pipe("draw", logits_processor=script(pipe, ALL3), **FAST)
    b = pipe("draw", logits_processor=script(pipe, ALL3), **FAST)
    c = pipe("draw", logits_processor=script(pipe, ALL3), num_inference_steps=2, seed=1)
    np.testing.assert_array_equal(arr(a.images[0]), arr(b.images[0]))
    np.testing.assert_array_equal(np.stack([arr(f) for f in a.videos[0]]), np.stack([arr(f) for f in b.videos[0]]))
    np.testing.assert_array_equal(a.audios[0], b.audios[0])
    assert np.abs(arr(a.images[0]) - arr(c.images[0])).max() > 0
    assert np.abs(a.audios[0] - c.audios[0]).max() > 1e-4


def test_negative_prompt_and_num_frames(pipe):
    a = pipe("draw", logits_processor=script(pipe, "A. [IMG]"), **FAST)
    b = pipe("draw", logits_processor=script(pipe, "A. [IMG]"), negative_prompt="a large blue square", **FAST)
    assert np.abs(arr(a.images[0]) - arr(b.images[0])).max() > 0
    out = pipe("animate", logits_processor=script(pipe, "A. [VID]"), num_frames=2, **FAST)
    assert len(out.videos[0]) == 2
    # Assembly starts each null embedding at its generator's unconditional input, the empty caption.
    from anygen.pipelines.pipeline_anygen import encode_caption

    for m, g in pipe.generators().items():
        torch.testing.assert_close(pipe.output_projector(m).null_conditioning(1), encode_caption(g, [""]), rtol=0, atol=0)


# ----------------------------------------------------------------------------- inputs reach the backbone


def _image_for(pipe, **kw):
    return arr(pipe(kw.pop("prompt", "what is this?"), logits_processor=script(pipe, "It is. [IMG]"), **FAST, **kw).images[0])


def test_attached_media_condition_the_output(pipe):
    red, blue = solid((230, 30, 30)), solid((40, 70, 230))
    base = _image_for(pipe, images=[red])
    assert np.abs(base - _image_for(pipe, images=[blue])).max() > 0
    np.testing.assert_array_equal(base, _image_for(pipe, prompt="<image>\nwhat is this?", images=[red]))  # auto placement
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    a = _image_for(pipe, audios=[tone])
    assert np.abs(a - _image_for(pipe, audios=[np.zeros(16000, np.float32)])).max() > 0
    np.testing.assert_array_equal(a, _image_for(pipe, audios=[(16000, tone)]))
    frames = [solid((230, 30, 30)), solid((30, 190, 50)), solid((40, 70, 230))]
    v = _image_for(pipe, videos=[frames])
    assert np.abs(v - _image_for(pipe, videos=[[solid((250, 120, 190))] * 3])).max() > 0
    # Frame order reaches the embeddings (the frame embedding is small at init, so compare before quantisation).
    fwd = pipe.encode_media({"image": [], "audio": [], "video": [frames]})["video"][0]
    rev = pipe.encode_media({"image": [], "audio": [], "video": [frames[::-1]]})["video"][0]
    assert fwd.shape == (pipe.video_input_projector.config.num_queries, pipe.backbone.config.hidden_size)
    assert (fwd - rev).abs().max() > 1e-6
    both = _image_for(pipe, prompt="<image> <video> <audio> all of them", images=[red], videos=[frames], audios=[tone])
    assert both.shape == (16, 16, 3)


def test_multi_turn_history_is_read(pipe):
    def turn(prev):
        msgs = [
            {"role": "user", "content": "draw a circle"},
            {"role": "assistant", "content": prev},
            {"role": "user", "content": "now make it bigger"},
        ]
        return arr(pipe(msgs, logits_processor=script(pipe, "Done. [IMG]"), **FAST).images[0])

    a = turn("Here is a small red circle at the top on a black background. [IMG]")
    b = turn("Here is a small blue square at the left on a white background. [IMG]")
    assert np.abs(a - b).max() > 0
    # The previous reply's marker is the full signal group in the backbone's context.
    ids = pipe._prompt_ids([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y. [IMG]"},
                            {"role": "user", "content": "z"}])
    g = signal_groups(pipe.tokenizer)["image"]
    assert any(ids[i : i + len(g)] == g for i in range(len(ids)))
    # A system message is accepted.
    out = pipe([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
               logits_processor=script(pipe, "Hi."), **FAST)
    assert out.text == "Hi."


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip_identical(pipe, saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "AnyGenPipeline" and index["num_frames"] == 4
    assert not list(saved.rglob("*.bin")) and not list(saved.rglob("*.pt"))  # safetensors only
    loaded = AnyGenPipeline.from_pretrained(saved)
    assert all(g._progress_bar_config.get("disable") for g in loaded.generators().values())
    loaded.set_progress_bar_config(disable=False, leave=False)  # passes through to every generator
    assert all(g._progress_bar_config == {"disable": False, "leave": False} for g in loaded.generators().values())
    loaded.set_progress_bar_config(disable=True)
    assert loaded.to("cpu") is loaded  # nested bars off by default
    a = pipe("draw", logits_processor=script(pipe, ALL3), **FAST)
    b = loaded("draw", logits_processor=script(loaded, ALL3), **FAST)
    assert a.text == b.text
    np.testing.assert_array_equal(arr(a.images[0]), arr(b.images[0]))
    np.testing.assert_array_equal(np.stack([arr(f) for f in a.videos[0]]), np.stack([arr(f) for f in b.videos[0]]))
    np.testing.assert_array_equal(a.audios[0], b.audios[0])


def test_generator_subfolders_load_on_their_own(saved):
    from diffusers import AnimateDiffPipeline

    assert isinstance(DiffusionPipeline.from_pretrained(saved / "image_generator"), StableDiffusionPipeline)
    assert isinstance(DiffusionPipeline.from_pretrained(saved / "video_generator"), AnimateDiffPipeline)
    audio = DiffusionPipeline.from_pretrained(saved / "audio_generator", trust_remote_code=True)
    assert isinstance(audio, AnyGenAudioPipeline)
    assert isinstance(AnyGenAudioPipeline.from_pretrained(saved / "audio_generator"), AnyGenAudioPipeline)


def test_from_pretrained_default_resolves_next_to_the_package(saved, monkeypatch, tmp_path):
    import anygen.pipelines.pipeline_anygen as mod

    assert mod.DEFAULT_PRETRAINED == Path(mod.__file__).resolve().parents[2] / "weights" / "anygen-tiny"
    monkeypatch.chdir(tmp_path)  # not relative to the working directory
    monkeypatch.setattr(mod, "DEFAULT_PRETRAINED", saved)
    assert isinstance(AnyGenPipeline.from_pretrained(), AnyGenPipeline)
    monkeypatch.setattr(mod, "DEFAULT_PRETRAINED", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing"):
        AnyGenPipeline.from_pretrained()


# ----------------------------------------------------------------------------- assembly (recipes)


def test_recipe_assembles_random_llama_and_stable_diffusion(tmp_path):
    """A tiny random LlamaForCausalLM and StableDiffusionPipeline, built here, through the recipe code path."""
    from anygen.models.backbone import build_llama
    from anygen.models.projectors import ConvAbstractor
    from anygen.models.text_encoder import build_caption_tokenizer

    # "Pretrained" parts as a user would have them on disk: a tokenizer without our tokens, a causal LM, SD.
    plain = build_caption_tokenizer(max_length=64)
    plain.save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    build_llama(plain, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).save_pretrained(tmp_path / "lm")
    tiny_image_generator(seed=0).save_pretrained(tmp_path / "sd")
    (tmp_path / "pipelines").mkdir()
    recipe = tmp_path / "pipelines" / "random.toml"
    recipe.write_text(
        'name = "random"\noutput_dir = "out"\nrun_dir = "runs"\n'
        '[tokenizer]\ntype = "pretrained"\nname_or_path = "lm"\n'
        '[signal_tokens]\nimage = 2\n'
        '[backbone]\ntype = "pretrained"\nname_or_path = "lm"\n'
        '[projectors.input]\nnum_queries = 2\nhidden_size = 16\nnum_layers = 1\nnum_heads = 2\n'
        '[projectors.input.image]\ntype = "conv_abstractor"\nnum_queries = 4\n'
        '[projectors.output]\nhidden_size = 16\nnum_layers = 1\nnum_heads = 2\n'
        '[components.image_generator]\ntype = "diffusers"\npath = "sd"\n'
    )
    pipe = AnyGenPipeline.from_recipe(recipe)
    assert isinstance(pipe.image_generator, StableDiffusionPipeline) and pipe.output_modalities == ("image",)
    assert pipe.backbone.get_input_embeddings().num_embeddings == len(pipe.tokenizer)  # resized for the new tokens
    proj = pipe.image_output_projector.config
    assert (proj.num_signal_tokens, proj.in_dim, proj.num_queries, proj.out_dim) == (2, 32, 12, 16)  # read, not hard-coded
    # [projectors.input.image] overrides the shared table for the image projector only
    inp = pipe.image_input_projector
    assert isinstance(inp, ConvAbstractor) and (inp.config.num_queries, inp.config.hidden_size) == (4, 16)
    out = pipe("draw a red circle", images=[solid((230, 30, 30))],
               logits_processor=script(pipe, "a red circle. [IMG]"), **FAST)
    assert len(out.images) == 1 and out.images[0].size == (16, 16)
    # The same path with ready objects (what a test or a notebook passes).
    tok = tiny_tokenizer({"image": 4})
    llama = build_llama(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    p2 = AnyGenPipeline.from_recipe(recipe, tokenizer=tok, backbone=llama, image_generator=tiny_image_generator(seed=1))
    assert p2.image_output_projector.config.num_signal_tokens == 4
    with pytest.raises(AnyGenInputError, match="unknown overrides"):
        AnyGenPipeline.from_recipe(recipe, vocoder=None)
    recipe.write_text(recipe.read_text().replace('num_queries = 4', 'num_querys = 4'))
    with pytest.raises(AnyGenInputError, match=r"Unknown keys in \[projectors.input.image\]: \['num_querys'\]"):
        AnyGenPipeline.from_recipe(recipe)


def test_shipped_recipes_parse():
    from anygen.training.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    for name in ("anygen-tiny", "full-scale-example"):
        s = load_recipe(root / "pipelines" / f"{name}.toml").sections
        assert {"tokenizer", "signal_tokens", "backbone", "encoders", "projectors", "components", "pipeline"} <= set(s)
    full = load_recipe(root / "pipelines" / "full-scale-example.toml").sections
    assert full["components"]["image_generator"]["name_or_path"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"


# ----------------------------------------------------------------------------- bad input

BAD = [
    (dict(prompt=""), "`prompt` is empty"),
    (dict(prompt=3), "`prompt` must be a str"),
    (dict(prompt=[]), "empty message list"),
    (dict(prompt=[{"role": "bot", "content": "x"}]), r"prompt\[0\]\['role'\]"),
    (dict(prompt=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]), "last message"),
    (dict(prompt=[{"role": "user", "content": 5}]), r"prompt\[0\]\['content'\]"),
    (dict(prompt="draw [IMG]"), "signal token"),
    (dict(images=solid((0, 0, 0))), "wrap a single image in a list"),
    (dict(images=["a.png"]), r"images\[0\]"),
    (dict(prompt="<image> <image> two?", images=[solid((0, 0, 0))]), "2 <image> placeholder"),
    (dict(audios=[np.zeros(16000)]), r"audios\[0\]` has dtype float64"),
    (dict(audios=[(22050, np.zeros(16000, np.float32))]), "22050 Hz"),
    (dict(audios=[np.zeros((2, 8000), np.float32)]), "mono"),
    (dict(audios=[np.zeros(32000, np.float32)]), "trim it"),
    (dict(audios=[np.full(100, 2.0, np.float32)]), r"\[-1, 1\]"),
    (dict(videos=[[solid((0, 0, 0))] * 5]), "at most 4"),
    (dict(videos=[[]]), r"videos\[0\]"),
    (dict(seed=-1), "`seed`"),
    (dict(seed=True), "`seed`"),
    (dict(num_inference_steps=0), "`num_inference_steps`"),
    (dict(guidance_scale=-1.0), "`guidance_scale`"),
    (dict(negative_prompt=1), "`negative_prompt`"),
    (dict(max_new_tokens=0), "`max_new_tokens`"),
    (dict(num_frames=0), "`num_frames`"),
    (dict(logits_processor=[lambda ids, s: s]), "`logits_processor`"),
    (dict(scheduler="NoSuchScheduler"), "`scheduler`: unknown scheduler 'NoSuchScheduler'"),
    (dict(scheduler={"picture": "DDIMScheduler"}), r"`scheduler`: \['picture'\] are not output modalities"),
    (dict(scheduler={"audio": "ddim"}), "`scheduler`: unknown scheduler 'ddim' for the audio generator"),
    (dict(scheduler=3), "`scheduler` must be"),
    (dict(callback_on_step_end=3), "`callback_on_step_end` must be a function"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), "`callback_on_step_end_tensor_inputs`"),
    (dict(callback_on_step_end_tensor_inputs="latents"), "`callback_on_step_end_tensor_inputs`"),
]


@pytest.mark.parametrize("kwargs, match", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_before_any_model_runs(pipe, monkeypatch, kwargs, match):
    def boom(*a, **k):
        raise AssertionError("a model ran before the input was checked")

    monkeypatch.setattr(pipe.backbone, "generate", boom)
    monkeypatch.setattr(pipe.image_input_projector, "forward", boom)
    kwargs = {"prompt": "draw", **kwargs}
    with pytest.raises(AnyGenInputError, match=match):
        pipe(**kwargs)


def test_missing_modality_is_an_input_error():
    image_only = build_tiny_random_pipeline(seed=0, modalities=("image",))
    assert image_only.output_modalities == ("image",)
    assert image_only.input_modalities == ("image", "video")  # videos are read frame by frame with the image VAE
    with pytest.raises(AnyGenInputError, match="no audio encoder"):
        image_only("what is this?", audios=[np.zeros(100, np.float32)])
    # A group of a modality without a generator is never started, even if the reply tries.
    out = image_only("play", logits_processor=script(image_only, "A. [AUD]"), **FAST)
    assert out.audios == [] and "[AUD" not in out.text


# ----------------------------------------------------------------------------- hooks: step callback, scheduler, batch


def _frames(video):
    return np.stack([arr(f) for f in video])


def test_callback_on_step_end_sees_every_step_of_every_medium(pipe):
    calls = []

    def record(generator, step, timestep, kw):
        calls.append((kw["medium_index"], kw["modality"], step, tuple(kw["latents"].shape), generator))

    steps = 3
    out = pipe("draw", logits_processor=script(pipe, ALL3), callback_on_step_end=record, num_inference_steps=steps, seed=0)
    latents = {"image": (1, 4, 8, 8), "video": (1, 4, pipe.config.num_frames, 8, 8), "audio": (1, 4, 8, 8)}
    for j, m in enumerate(["image", "video", "audio"]):  # reply order: ALL3's markers
        mine = [c for c in calls if c[0] == j]
        assert [c[1:4] for c in mine] == [(m, i, latents[m]) for i in range(steps)]
        assert all(c[4] is pipe.generator(m) for c in mine), "the callback gets the generator pipeline (its vae decodes)"
    assert len(calls) == 3 * steps
    plain = pipe("draw", logits_processor=script(pipe, ALL3), num_inference_steps=steps, seed=0)
    np.testing.assert_array_equal(arr(out.images[0]), arr(plain.images[0]))  # an observing callback changes nothing
    np.testing.assert_array_equal(out.audios[0], plain.audios[0])


def test_callback_on_step_end_can_change_the_latents(pipe):
    def shift(generator, step, timestep, kw):
        return {"latents": kw["latents"] + 0.5} if step == 0 else None

    plain = pipe("draw", logits_processor=script(pipe, ALL3), **FAST)
    out = pipe("draw", logits_processor=script(pipe, ALL3), callback_on_step_end=shift, **FAST)
    assert np.abs(arr(out.images[0]) - arr(plain.images[0])).max() > 0
    assert np.abs(_frames(out.videos[0]) - _frames(plain.videos[0])).max() > 0
    assert np.abs(out.audios[0] - plain.audios[0]).max() > 1e-4  # our audio pipeline honours it too

    seen = []  # the embeddings can be asked for as well (the generator's own tensors)
    pipe("draw", logits_processor=script(pipe, "A. [AUD]"), callback_on_step_end=lambda g, i, t, kw: seen.append(sorted(kw)),
         callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"], **FAST)
    assert seen[0] == ["latents", "medium_index", "modality", "negative_prompt_embeds", "prompt_embeds"]


def test_scheduler_per_call_leaves_the_pipeline_alone(pipe):
    image_gen, audio_gen = pipe.generator("image"), pipe.generator("audio")
    before = (image_gen.scheduler, dict(image_gen.scheduler.config), image_gen.config["scheduler"], audio_gen.scheduler)
    default = pipe("draw", logits_processor=script(pipe, "A. [IMG] B. [AUD]"), num_inference_steps=3, seed=0)
    used = []
    euler = pipe("draw", logits_processor=script(pipe, "A. [IMG] B. [AUD]"), num_inference_steps=3, seed=0,
                 scheduler="EulerDiscreteScheduler", callback_on_step_end=lambda g, i, t, kw: used.append(type(g.scheduler).__name__))
    assert set(used) == {"EulerDiscreteScheduler"}
    assert np.abs(arr(euler.images[0]) - arr(default.images[0])).max() > 0
    assert np.abs(euler.audios[0] - default.audios[0]).max() > 1e-4
    ddim_audio = pipe("draw", logits_processor=script(pipe, "A. [IMG] B. [AUD]"), num_inference_steps=3, seed=0,
                      scheduler={"audio": "DDIMScheduler"})
    np.testing.assert_array_equal(arr(ddim_audio.images[0]), arr(default.images[0]))  # other modalities keep their own
    assert np.abs(ddim_audio.audios[0] - default.audios[0]).max() > 1e-4
    after = (image_gen.scheduler, dict(image_gen.scheduler.config), image_gen.config["scheduler"], audio_gen.scheduler)
    assert after[0] is before[0] and after[3] is before[3] and after[1:3] == before[1:3]
    assert type(pipe.generator("image").scheduler).__name__ == "DPMSolverMultistepScheduler"
    again = pipe("draw", logits_processor=script(pipe, "A. [IMG] B. [AUD]"), num_inference_steps=3, seed=0)
    np.testing.assert_array_equal(arr(again.images[0]), arr(default.images[0]))


def test_generate_batch_equals_single_calls(pipe):
    replies = [ALL3, "Two. [IMG] [IMG]", "Just words.", "A. [IMG]", "B. [AUD]"]
    settings = [{}, {}, {}, {"scheduler": "DDIMScheduler"}, {"negative_prompt": "a low tone"}]
    requests = [dict(prompt=f"request {i}", seed=10 * i, num_inference_steps=2, logits_processor=script(pipe, r), **kw)
                for i, (r, kw) in enumerate(zip(replies, settings))]
    batch_sizes = []
    hook = pipe.image_generator.unet.register_forward_pre_hook(lambda m, args: batch_sizes.append(args[0].shape[0]))
    try:
        batched = pipe.generate_batch(requests)
    finally:
        hook.remove()
    # 3 images share settings (and the video's UNet is another module): one stack of 3, under guidance 6 rows;
    # the DDIM image is a stack of its own.
    assert sorted(set(batch_sizes)) == [2, 6]
    for request, reply, b in zip(requests, replies, batched):
        one = pipe(**{**request, "logits_processor": script(pipe, reply)})
        assert b.text == one.text
        assert (len(b.images), len(b.videos), len(b.audios)) == (len(one.images), len(one.videos), len(one.audios))
        for x, y in zip(b.images, one.images):
            np.testing.assert_array_equal(arr(x), arr(y))
        for x, y in zip(b.videos, one.videos):
            np.testing.assert_allclose(_frames(x), _frames(y), atol=1)  # batched matmuls round differently
        for x, y in zip(b.audios, one.audios):
            np.testing.assert_allclose(x, y, atol=2e-4)  # ... and Griffin-Lim spreads it
    # max_batch bounds a stack; a request's callback still sees its own medium, alone.
    steps = []
    small = pipe.generate_batch([{**requests[1], "logits_processor": script(pipe, replies[1]),
                                  "callback_on_step_end": lambda g, i, t, kw: steps.append((kw["medium_index"], i, kw["latents"].shape[0]))},
                                 {**requests[3], "logits_processor": script(pipe, replies[3]), "scheduler": None}],
                                max_batch=1)
    assert steps == [(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]
    np.testing.assert_array_equal(arr(small[0].images[1]), arr(batched[1].images[1]))


def test_generate_batch_bad_requests(pipe, monkeypatch):
    good = dict(prompt="draw", seed=0, num_inference_steps=2, logits_processor=script(pipe, "A. [IMG]"))
    out = pipe.generate_batch([good, dict(prompt=""), dict(prompt="x", colour="red"), "draw"], return_exceptions=True)
    assert isinstance(out[0], AnyGenOutput) and len(out[0].images) == 1
    assert isinstance(out[1], AnyGenInputError) and "`prompt` is empty" in str(out[1])
    assert isinstance(out[2], AnyGenInputError) and "colour" in str(out[2])
    assert isinstance(out[3], AnyGenInputError) and "a request must be a dict" in str(out[3])
    assert pipe.generate_batch([{**good, "logits_processor": script(pipe, "A. [IMG]"), "return_dict": False}])[0][0] == "A. [IMG]"

    def boom(*a, **k):
        raise AssertionError("a model ran before every request was checked")

    monkeypatch.setattr(pipe.backbone, "generate", boom)
    with pytest.raises(AnyGenInputError, match=r"`requests\[1\]`: `seed`"):
        pipe.generate_batch([good, dict(prompt="draw", seed=-1)])
    with pytest.raises(AnyGenInputError, match="`max_batch`"):
        pipe.generate_batch([good], max_batch=0)


# ----------------------------------------------------------------------------- kernels


def test_enable_disable_kernels(pipe):
    ref = pipe("draw", logits_processor=script(pipe, "A. [IMG]"), **FAST).images[0]
    counts = pipe.enable_kernels()
    try:
        assert counts.get("rms_norm", 0) > 0 and counts.get("swiglu", 0) > 0 and counts.get("group_norm_silu", 0) > 0
        out = pipe("draw", logits_processor=script(pipe, "A. [IMG]"), **FAST).images[0]
        assert np.abs(arr(out) - arr(ref)).max() <= 1  # same model, fused ops: at most a rounding step apart
    finally:
        pipe.disable_kernels()
    from anygen.kernels import kernels_applied

    assert not kernels_applied(pipe.backbone) and not kernels_applied(pipe.image_generator.unet)


def test_compile_generators_keeps_outputs():
    fresh = build_tiny_random_pipeline(seed=0)  # compiled in place: keep the shared fixture eager
    ref = fresh("draw", logits_processor=script(fresh, "A. [IMG]"), **FAST).images[0]
    with pytest.raises(AnyGenInputError, match="`modalities`"):
        fresh.compile_generators(["smell"])
    assert fresh.compile_generators(["image"]) == ["image"]
    unet = fresh.image_generator.unet
    assert unet._compiled_call_impl is not None and fresh.audio_generator.unet._compiled_call_impl is None
    out = fresh("draw", logits_processor=script(fresh, "A. [IMG]"), **FAST).images[0]
    assert np.abs(arr(out) - arr(ref)).max() <= 1


# ----------------------------------------------------------------------------- CLI


def test_cli_generate_writes_files(saved, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from anygen.cli import main

    # The random backbone says what the script says; loading, the pipeline and the file writing are real.
    original = AnyGenPipeline.__call__

    def scripted(self, *args, **kwargs):
        return original(self, *args, logits_processor=script(self, ALL3), **kwargs)

    monkeypatch.setattr(AnyGenPipeline, "__call__", scripted)
    solid((230, 30, 30)).save(tmp_path / "in.png")
    out_dir = tmp_path / "out"
    rc = main(["generate", "what is this? make a picture, a clip and a sound", "--image", str(tmp_path / "in.png"),
               "--model", str(saved), "--out", str(out_dir), "--steps", "2", "--seed", "3"])
    assert rc == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["audio_0.wav", "image_0.png", "reply.txt", "result.json", "video_0.gif", "video_0.mp4"]
    assert (out_dir / "reply.txt").read_text() == ALL3
    result = json.loads((out_dir / "result.json").read_text())
    assert result["seed"] == 3 and result["outputs"] == {"images": 1, "videos": 1, "audios": 1}
    assert result["num_inference_steps"] == 2
    wave, rate = sf.read(out_dir / "audio_0.wav")
    assert rate == 16000 and wave.shape == (16000,)
    assert Image.open(out_dir / "image_0.png").size == (16, 16)
    import imageio.v3 as iio

    assert iio.imread(out_dir / "video_0.mp4").shape[0] == 4

    # Bad input: one line on stderr, exit code 2, nothing written.
    bad_dir = tmp_path / "bad"
    capsys.readouterr()
    assert main(["generate", " ", "--model", str(saved), "--out", str(bad_dir), "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "`prompt` is empty" in err
    assert not bad_dir.exists() or not os.listdir(bad_dir)
    assert main(["generate", "x", "--model", str(tmp_path / "nope"), "--out", str(bad_dir)]) == 2
