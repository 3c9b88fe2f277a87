"""Unit tests of the backbone's parts: tokenizer, signal-group logits processor, projectors, backbone builder."""

import random

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from anygen.models.backbone import build_backbone, build_llama
from anygen.models.projectors import (
    ConvAbstractor,
    InputProjector,
    MLPInputProjector,
    OutputProjector,
    build_input_projector,
    build_output_projector,
)
from anygen.models.signal_tokens import SignalGroupLogitsProcessor
from anygen.models.tokenizer import (
    build_tokenizer,
    collapse_signal_groups,
    expand_signal_markers,
    signal_groups,
    space_brackets,
    world_corpus,
)
from anygen.testing import tiny_tokenizer
from anygen.world import TASKS, make_dialogue

K4 = {"image": 4, "video": 4, "audio": 4}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_unseen_text(tok):
    rng = random.Random(1)
    texts = [m.content for t in TASKS for m in make_dialogue(t, rng, "val").messages]  # eval phrasings, unseen
    texts += ["Ünïcode & emoji 🎨 survive byte-level BPE", "  two  spaces\tand a tab\n"]
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id is None or tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_special_tokens_are_single_ids(tok):
    groups = signal_groups(tok)
    assert {m: len(v) for m, v in groups.items()} == K4
    for text in ["<image>", "<video>", "<audio>", "[IMG0]", "[VID3]", "[AUD2]", "<|end|>"]:
        assert len(tok(text, add_special_tokens=False).input_ids) == 1, text
    ids = tok("a red circle. [IMG0][IMG1][IMG2][IMG3]", add_special_tokens=False).input_ids
    assert ids[-4:] == groups["image"]


def test_chat_template_expands_markers_and_masks_assistant(tok):
    msgs = [
        {"role": "user", "content": "<image>\nmake it blue"},
        {"role": "assistant", "content": "Here it is: a small blue circle at the top on a black background. [IMG]"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<s><|user|>\n<image>\nmake it blue<|end|>\n<|assistant|>\n"
        "Here it is: a small blue circle at the top on a black background. [IMG0][IMG1][IMG2][IMG3]<|end|>\n"
    )
    assert tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True).endswith("<|assistant|>\n")
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    answer = [i for i, m in zip(ids, mask) if m]
    assert answer[-5:] == signal_groups(tok)["image"] + [tok.eos_token_id]  # the loss reads the group and the eos
    assert tok.convert_ids_to_tokens(answer[0]) == "Here"
    with pytest.raises(Exception, match="roles"):
        tok.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_chat_template_reads_a_bracketed_word_as_the_word(tok):
    # "(big)" in a request is the word " big" between brackets, not the bytes "b", "ig" (the corpus has sizes only
    # after a space); replies are fed as written.
    def user_ids(content):
        ids = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=True, return_dict=True)["input_ids"]
        return tok.convert_ids_to_tokens(ids)

    word = tok.convert_ids_to_tokens(tok(" big", add_special_tokens=False).input_ids)
    assert tok.convert_ids_to_tokens(tok("(big)", add_special_tokens=False).input_ids)[1:-1] != word  # unspaced
    assert user_ids("a red circle (big)")[-3 - len(word) : -3] == word  # before ")", "<|end|>", "\n"
    assert user_ids("a red circle (big)") == user_ids("a red circle ( big)")
    text = tok.apply_chat_template([{"role": "assistant", "content": "a tone (220 Hz)."}], tokenize=False)
    assert "a tone (220 Hz)." in text
    # The template's Jinja and space_brackets (which prepares the BPE corpus) write the same text.
    for content in ["a (big) ((red)) circle", "( on black)", "no brackets", "(x"]:
        text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
        assert f"<|user|>\n{space_brackets(content)}<|end|>" in text, content


def test_tokenizer_save_load_and_k_is_configurable(tmp_path):
    corpus = list(world_corpus(dialogues_per_task=5))
    tok = build_tokenizer({"image": 2, "audio": 3}, vocab_size=400, corpus=corpus)
    assert {m: len(v) for m, v in signal_groups(tok).items()} == {"image": 2, "audio": 3}
    assert expand_signal_markers("x. [IMG] y. [AUD]", {"image": 2, "audio": 3}) == "x. [IMG0][IMG1] y. [AUD0][AUD1][AUD2]"
    assert collapse_signal_groups("x. [IMG0][IMG1]", {"image": 2}) == "x. [IMG]"
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    msgs = [{"role": "user", "content": "play a tone"}, {"role": "assistant", "content": "a tone. [AUD]"}]
    assert loaded.apply_chat_template(msgs, tokenize=False) == tok.apply_chat_template(msgs, tokenize=False)
    assert signal_groups(loaded) == signal_groups(tok)
    with pytest.raises(ValueError, match="positive int"):
        build_tokenizer({"image": 0}, corpus=corpus)


# ----------------------------------------------------------------------------- logits processor

GROUPS = {"image": [10, 11, 12], "audio": [20, 21]}
NEG = torch.finfo(torch.float32).min


def _allowed(proc, reply, vocab=32, prompt=(1, 2)):
    ids = torch.tensor([list(prompt) + list(reply)])
    return set(torch.nonzero(proc(ids, torch.zeros(1, vocab))[0] > NEG).flatten().tolist())


def test_processor_forces_rest_of_group():
    proc = SignalGroupLogitsProcessor(GROUPS, prompt_length=2)
    assert _allowed(proc, [5, 10]) == {11}
    assert _allowed(proc, [5, 10, 11]) == {12}
    assert _allowed(proc, [20]) == {21}


def test_processor_forbids_out_of_order_and_allows_restart():
    proc = SignalGroupLogitsProcessor(GROUPS, prompt_length=2)
    free = _allowed(proc, [5])
    assert {10, 20} <= free and not free & {11, 12, 21}
    after = _allowed(proc, [10, 11, 12, 7])  # a finished image group: a second image may start ("draw A and B")
    assert 10 in after and not after & {11, 12, 21}
    # Signal ids inside the prompt (an earlier turn's group) do not count as an open group.
    assert _allowed(proc, [], prompt=(1, 10)) == _allowed(proc, [], prompt=(1, 5))


def test_processor_disabled_cap_and_length():
    assert 20 not in _allowed(SignalGroupLogitsProcessor(GROUPS, prompt_length=2, disabled=["audio"]), [5])
    capped = SignalGroupLogitsProcessor(GROUPS, prompt_length=2, max_groups=1)
    assert 10 not in _allowed(capped, [10, 11, 12]) and 20 in _allowed(capped, [10, 11, 12])
    # 2 prompt + 2 reply = 4 tokens so far; a 3-token group needs length 7, an audio group 6.
    short = SignalGroupLogitsProcessor(GROUPS, prompt_length=2, max_length=6)
    allowed = _allowed(short, [5, 6])
    assert 10 not in allowed and 20 in allowed
    with pytest.raises(ValueError, match="share"):
        SignalGroupLogitsProcessor({"image": [1, 2], "audio": [2, 3]})


class _Push(LogitsProcessor):
    """Makes one token the greedy choice wherever it is allowed."""

    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token] = scores.max() + 100.0
        return scores


def test_processor_inside_generate(tok):
    torch.manual_seed(0)
    model = build_llama(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    groups = signal_groups(tok)
    prompt = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "draw"}], add_generation_prompt=True)["input_ids"]])

    def run(*extra, max_new_tokens=12):
        # The pusher runs first, the signal processor last: what the pusher wants is still subject to the rules.
        procs = LogitsProcessorList([*extra, SignalGroupLogitsProcessor(groups, prompt_length=prompt.shape[1])])
        out = model.generate(prompt, logits_processor=procs, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return out[0, prompt.shape[1]:].tolist()

    img = groups["image"]
    reply = run(_Push(img[0]))
    assert reply[:4] == img  # [IMG0] then the rest of the group, forced against the pusher
    reply = run(_Push(img[2]))
    assert img[2] not in reply  # an out-of-order group token is never emitted


# ----------------------------------------------------------------------------- projectors


def test_output_projector_shapes_null_and_round_trip(tmp_path):
    torch.manual_seed(0)
    proj = build_output_projector(in_dim=32, num_signal_tokens=4, hidden_size=16, num_layers=1, num_heads=2,
                                  num_queries=24, out_dim=64).eval()
    h = torch.randn(3, 4, 32)
    y = proj(h)
    assert y.shape == (3, 24, 64)
    null = proj.null_conditioning(3)
    assert null.shape == (3, 24, 64) and null.requires_grad  # learned, not a constant
    assert not torch.allclose(y[0], null[0])
    assert not torch.allclose(proj(h.flip(1))[0], y[0])  # the K states are ordered (signal embeddings)
    y.sum().backward()
    assert proj.queries.grad is not None and proj.in_proj.weight.grad is not None
    proj.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = OutputProjector.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(h), proj(h), rtol=0, atol=0)
    torch.testing.assert_close(loaded.null_conditioning(1), proj.null_conditioning(1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="expects"):
        proj(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="Unknown output projector type"):
        build_output_projector(type="mlp")


def test_input_projector_resamples_frames_in_order():
    torch.manual_seed(0)
    proj = build_input_projector(in_channels=4, num_positions=16, max_frames=4, hidden_size=16, num_layers=1,
                                 num_heads=2, num_queries=3, out_dim=32, modality="video").eval()
    x = torch.randn(2, 4, 16, 4)  # (batch, frames, positions, channels)
    y = proj(x)
    assert y.shape == (2, 3, 32)
    assert not torch.allclose(proj(x.flip(1)), y)  # reversing a clip changes what the backbone reads
    assert proj(x[:, :2]).shape == (2, 3, 32)  # fewer frames are fine
    with pytest.raises(ValueError, match="at most 4 frames"):
        proj(torch.randn(1, 5, 16, 4))
    with pytest.raises(ValueError, match="expects"):
        proj(torch.randn(1, 1, 15, 4))
    assert isinstance(proj, InputProjector)


def test_mlp_input_projector_keeps_frames_in_their_own_positions(tmp_path):
    torch.manual_seed(0)
    proj = build_input_projector(type="mlp", in_channels=4, num_positions=16, max_frames=4, hidden_size=16,
                                 num_layers=2, num_heads=2, num_queries=8, out_dim=32, modality="video").eval()
    assert isinstance(proj, MLPInputProjector) and proj.tokens_per_frame == 2
    x = torch.randn(2, 4, 16, 4)
    y = proj(x)
    assert y.shape == (2, 8, 32)
    x2 = x.clone()
    x2[:, 2] = torch.randn(16, 4)  # change frame 2 only: its two embeddings change, the others do not
    y2 = proj(x2)
    changed = (y2 - y).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [False, False, False, False, True, True, False, False]
    x3 = x.clone()
    x3[:, 0] = x[:, 0].roll(1, dims=1)  # the same content at other grid positions reads differently
    assert not torch.allclose(proj(x3)[:, :2], y[:, :2])
    short = proj(x[:, :2])  # 2 frames are stretched to 4 by repeating: frame 0, 0, 1, 1
    torch.testing.assert_close(short, proj(x[:, [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="at most 4 frames"):
        proj(torch.randn(1, 5, 16, 4))
    with pytest.raises(ValueError, match="expects"):
        proj(torch.randn(1, 1, 16, 3))
    with pytest.raises(ValueError, match="multiple of `max_frames`"):
        build_input_projector(type="mlp", max_frames=3, num_queries=8)
    with pytest.raises(ValueError, match="Unknown input projector type"):
        build_input_projector(type="qformer")
    proj.save_pretrained(tmp_path)
    loaded = MLPInputProjector.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(x), y, rtol=0, atol=0)


def test_mlp_input_projector_conv_front_is_local_and_shared(tmp_path):
    torch.manual_seed(0)
    proj = build_input_projector(type="mlp", in_channels=4, num_positions=36, max_frames=1, hidden_size=16,
                                 num_queries=2, out_dim=8, conv_channels=[6, 4], modality="image").eval()
    assert isinstance(proj.convs, torch.nn.Sequential) and proj.config.conv_channels == [6, 4]
    x = torch.randn(3, 1, 36, 4)
    y = proj(x)
    assert y.shape == (3, 2, 8)
    # Two 3×3 convolutions see a 5×5 neighbourhood: change the corner cell (0, 0) of the 6×6 grid and the conv
    # features change within two cells of it, nowhere else.
    grid = x.reshape(3, 6, 6, 4).permute(0, 3, 1, 2)
    x2 = x.clone()
    x2[:, 0, 0] += 1.0
    grid2 = x2.reshape(3, 6, 6, 4).permute(0, 3, 1, 2)
    delta = (proj.convs(grid2) - proj.convs(grid)).abs().amax(dim=(0, 1))
    assert (delta[:3, :3] > 0).all() and (delta[3:, :] == 0).all() and (delta[:, 3:] == 0).all()
    assert not torch.allclose(proj(x2), y)
    proj.save_pretrained(tmp_path)
    torch.testing.assert_close(MLPInputProjector.from_pretrained(tmp_path).eval()(x), y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="must equal `in_channels`"):
        build_input_projector(type="mlp", in_channels=4, num_positions=16, conv_channels=[6, 5])
    with pytest.raises(ValueError, match="square grid"):
        build_input_projector(type="mlp", in_channels=4, num_positions=12, conv_channels=[4])
    with pytest.raises(ValueError, match="not the resampler"):
        build_input_projector(type="resampler", in_channels=4, num_positions=16, conv_channels=[4])


def test_conv_abstractor_keeps_each_cell_in_its_own_embedding(tmp_path):
    torch.manual_seed(0)
    proj = build_input_projector(type="conv_abstractor", in_channels=4, num_positions=64, max_frames=1,
                                 hidden_size=16, num_layers=1, num_heads=2, num_queries=9, out_dim=8).eval()
    assert isinstance(proj, ConvAbstractor) and proj.grid == 3
    x = torch.randn(2, 1, 64, 4)
    y = proj(x)
    assert y.shape == (2, 9, 8)
    # Three 3×3 convolutions reach 3 cells: a change at grid cell (0, 0) of the 8×8 latents reaches pooling
    # windows 0 (rows/columns 0-2) and 1 (2-5), never window 2 (5-7). Only the four top-left embeddings move.
    x2 = x.clone()
    x2[:, 0, 0] += 2.0
    changed = (proj(x2) - y).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [True, True, False, True, True, False, False, False, False]
    proj.save_pretrained(tmp_path)
    torch.testing.assert_close(ConvAbstractor.from_pretrained(tmp_path).eval()(x), y, rtol=0, atol=0)
    video = build_input_projector(type="conv_abstractor", in_channels=4, num_positions=16, max_frames=2,
                                  hidden_size=8, num_queries=8, out_dim=8, modality="video").eval()
    v = torch.randn(1, 2, 16, 4)
    assert video(v).shape == (1, 8, 8)  # 2 frames × a 2×2 grid, frame by frame
    assert not torch.allclose(video(v.flip(1)), video(v))  # the frame embedding tells the frames apart
    with pytest.raises(ValueError, match="times a square"):
        build_input_projector(type="conv_abstractor", num_queries=8)
    with pytest.raises(ValueError, match="finer than"):
        build_input_projector(type="conv_abstractor", num_positions=4, num_queries=9)
    with pytest.raises(ValueError, match="square grid"):
        build_input_projector(type="conv_abstractor", num_positions=12, num_queries=1)
    with pytest.raises(ValueError, match="not the conv_abstractor"):
        build_input_projector(type="conv_abstractor", conv_channels=[8])


def test_backbone_builder(tok):
    model = build_backbone(tok, type="llama", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    assert model.config.vocab_size == len(tok) and model.config.eos_token_id == tok.eos_token_id
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="Unknown backbone keys"):
        build_backbone(tok, type="llama", hidden=32)
    with pytest.raises(ValueError, match="Unknown backbone type"):
        build_backbone(tok, type="gpt9")
    with pytest.raises(ValueError, match="name_or_path"):
        build_backbone(tok, type="pretrained")
