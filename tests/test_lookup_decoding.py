"""SignalLookupDecoding (``model.generate(custom_generate=...)``) against transformers' own greedy decoding.

A tiny random LlamaForCausalLM whose greedy replies are made to repeat themselves (a processor pushing the token
that followed the last one the first time), so that drafts from the sequence and the memory are accepted and the
check against plain ``generate`` covers accepted, rejected and forced tokens alike.
"""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from anygen.models.backbone import build_llama
from anygen.models.lookup_decoding import NgramMemory, SignalLookupDecoding
from anygen.models.signal_tokens import SignalGroupLogitsProcessor
from anygen.testing import TINY_BACKBONE, tiny_tokenizer
from anygen.models.tokenizer import signal_groups

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_and_groups():
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    return build_llama(tok, **TINY_BACKBONE).eval(), signal_groups(tok), tok.eos_token_id


class _Echo(LogitsProcessor):
    """Boosts the token that followed the last token at its first occurrence (a reply that copies itself), and
    the first image signal token every ``every`` steps: greedy replies with loops and groups, not noise."""

    def __init__(self, start: int, every: int, group_start: int):
        self.start, self.every, self.group_start = start, every, group_start

    def __call__(self, input_ids, scores):
        ids = input_ids[0].tolist()
        scores = scores.clone()
        if (len(ids) - self.start) % self.every == self.every - 1:
            scores[0, self.group_start] += 50.0
        elif ids[-1] in ids[:-1]:
            scores[0, ids[ids.index(ids[-1]) + 1]] += 50.0
        return scores


def _generate(model, groups, eos, prompt, decoding=None, embeds=False, max_new_tokens=40, logits_processor_extra=None, **kwargs):
    signal = SignalGroupLogitsProcessor(groups, prompt_length=prompt.shape[1], max_length=prompt.shape[1] + max_new_tokens)
    extra = logits_processor_extra or [_Echo(prompt.shape[1], 9, groups["image"][0])]
    processors = LogitsProcessorList([*extra, signal])
    if decoding is not None:
        decoding = decoding(signal)
    inputs = {"inputs_embeds": model.get_input_embeddings()(prompt)} if embeds else {}
    return model.generate(
        input_ids=prompt, **inputs, attention_mask=torch.ones_like(prompt), logits_processor=processors,
        max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=0, custom_generate=decoding,
        **{"do_sample": False, **kwargs},
    )


@pytest.mark.parametrize("embeds", [False, True])
def test_replies_are_plain_greedy_replies(model_and_groups, embeds):
    model, groups, eos = model_and_groups
    memory = NgramMemory(8)
    gen = torch.Generator().manual_seed(1)
    saved = 0
    for n in (5, 12, 30, 12, 5):
        prompt = torch.randint(10, 400, (1, n), generator=gen)
        plain = _generate(model, groups, eos, prompt, embeds=embeds)
        out = _generate(model, groups, eos, prompt, lambda s: SignalLookupDecoding(s, memory=memory), embeds=embeds,
                        return_dict_in_generate=True, output_hidden_states=True)
        reply = plain[0, n:].tolist()
        assert out.sequences[0, n:].tolist() == reply
        assert out.num_forwards < len(reply)
        saved += len(reply) - out.num_forwards
        # The hidden states the projectors read: one pass over the reply after the prompt's, however it was found.
        full = model(input_ids=torch.cat([prompt, out.sequences[:, n:]], 1), output_hidden_states=True).hidden_states[-1]
        body = len(reply) - (reply[-1] == eos)
        torch.testing.assert_close(out.last_hidden_state, full[:, n : n + body])
    assert saved > 40 and len(memory) == 5


class _Script(LogitsProcessor):
    """Only ``reply[i]`` is allowed at reply position i (then the eos)."""

    def __init__(self, start: int, reply: list[int]):
        self.start, self.reply = start, reply

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, torch.finfo(scores.dtype).min)
        out[:, self.reply[min(input_ids.shape[1] - self.start, len(self.reply) - 1)]] = 0.0
        return out


def test_hidden_states_do_not_depend_on_the_drafts(model_and_groups):
    model, groups, eos = model_and_groups
    prompt = torch.tensor([[30, 31, 32, 33, 34, 35, 36, 37, 38]])
    reply = [40, 31, 32, 33, 41, *groups["image"], 42, 43, eos]  # copies the prompt, a group, then its own words
    runs, remembered = [], NgramMemory(4)
    for decoding in (
        lambda s: SignalLookupDecoding(s, num_draft_tokens=0),
        lambda s: SignalLookupDecoding(s, num_draft_tokens=10),
        lambda s: SignalLookupDecoding(s, memory=remembered),
    ):
        runs.append(_generate(model, groups, eos, prompt, decoding, return_dict_in_generate=True, output_hidden_states=True,
                              logits_processor_extra=[_Script(9, reply)]))
        remembered.add(reply)  # the third run finds this very reply remembered
    assert runs[0].sequences[0, 9:].tolist() == reply
    # Step by step (the group's rest fed with its first token, then a pass over the reply); drafts from the prompt;
    # the prompt, then the whole remembered reply checked at once, which is also the pass the projectors read.
    assert [r.num_forwards for r in runs] == [len(reply) - 3 + 1, 8, 2]
    for r in runs[1:]:
        assert torch.equal(r.sequences, runs[0].sequences) and torch.equal(r.last_hidden_state, runs[0].last_hidden_state)


def test_draft_sources_in_order():
    groups = {"image": [900, 901, 902]}
    signal = SignalGroupLogitsProcessor(groups, prompt_length=4)
    memory = NgramMemory(2)
    memory.add([5, 6, 7, 2])
    decoding = SignalLookupDecoding(signal, num_draft_tokens=3, memory=memory, never_copied=[3])
    seq: dict = {}
    ids = [5, 8, 3, 1, 900]  # prompt [5, 8, 3, 1], then a group's first token
    assert decoding.draft(ids, seq, budget=10, eos={2}) == [901, 902]  # forced; then nothing matches "902"
    assert decoding.draft([1, 5], seq, budget=10, eos={2}) == [6, 7, 2]  # the memory, up to its eos
    assert decoding.draft([1, 5], {(5,): 8}, budget=10, eos={2}) == [6, 7, 2]  # the memory's before the sequence's,
    assert decoding.draft([1, 5], {(5,): 8, (1, 5): 9}, budget=10, eos={2}) == [6, 7, 2]  # even when shorter
    assert decoding.draft([1, 4], {(4,): 8}, budget=10, eos={2}) == [8]  # the sequence's where the memory has none
    assert decoding.draft([1, 5], seq, budget=1, eos={2}) == [6]


def test_memory_drafts_the_words_the_request_gives():
    """Replies share a frame and differ in the words copied from their request: among the tokens the memory saw
    after an n-gram, the draft takes one the request holds and the reply has not used yet (the earliest in the
    request), else the most recent one."""
    memory = NgramMemory(8)
    for r in ([5, 10, 6, 12, 2], [5, 11, 6, 13, 2], [7, 5, 14, 2]):
        memory.add(r)
    signal = SignalGroupLogitsProcessor({"image": [900, 901]}, prompt_length=4)
    decoding = SignalLookupDecoding(signal, memory=memory, never_copied=[3])

    def draft(prompt, reply):
        return decoding.draft(prompt + reply, {}, budget=10, eos={2})

    assert draft([30, 31, 32, 3], [5]) == [14, 2]  # nothing asked for: the most recent successor of (5,)
    assert draft([30, 10, 12, 3], [5]) == [10, 6, 12, 2]  # the request says 10 and 12
    assert draft([11, 10, 32, 3], [5]) == [11, 6, 13, 2]  # both: the earlier in the request
    assert draft([11, 10, 32, 3], [5, 11, 6, 13, 4, 5]) == [10, 6, 12, 2]  # 11 is used up
    assert draft([3, 31, 32, 3], [5]) == [14, 2]  # never_copied tokens are not asked for
    # The longest n-gram followed by an asked-for word: (1, 5, 6) only saw 12, (5, 6) saw 13 too.
    memory.add([1, 5, 6, 12, 2])
    memory.add([7, 5, 6, 13, 2])
    memory.add([1, 5, 6, 12, 2])
    assert draft([30, 13, 32, 3], [1, 5]) == [6, 13, 2]
    # ... but not a lone token's: (9, 6) only saw 15, and (6,)'s 12 and 13 are not searched (6 is in most replies:
    # a frame word, followed by different slots in different frames) ...
    memory.add([9, 6, 15, 2])
    assert draft([30, 13, 32, 3], [9]) == [6, 15, 2]
    # ... unless it is rare in the memory: 9 is in 3 of 9 replies, and (9,) saw 41 and 43.
    memory.add([40, 9, 41, 2])
    memory.add([42, 9, 43, 2])
    assert draft([30, 43, 32, 3], [40, 9]) == [43, 2]


def test_memory_keeps_recent_replies():
    memory = NgramMemory(2, max_ngram=2)
    for r in ([1, 2, 3], [1, 4], [5, 6], [7, 8], [9, 1, 7]):
        memory.add(r)
    # The fifth reply makes more than 2 * size: all but the last `size` are dropped, [7, 8] and [9, 1, 7] remain.
    assert len(memory) == 2 and (5,) not in memory.table
    assert list(memory.table[(1,)]) == [7] and list(memory.table[(9, 1)]) == [7]
    assert memory.replies_with == {7: 2, 8: 1, 9: 1, 1: 1}
    memory.add([7, 9])
    assert list(memory.table[(7,)]) == [8, 9]  # every successor, the most recent last
    memory.add([7, 8])
    assert list(memory.table[(7,)]) == [9, 8]
    memory.clear()
    assert len(memory) == 0 and memory.table == {} and memory.replies_with == {}
    with pytest.raises(ValueError, match="size"):
        NgramMemory(-1)


def test_refuses_what_it_cannot_do(model_and_groups):
    model, groups, eos = model_and_groups
    prompt = torch.randint(10, 400, (1, 6))
    with pytest.raises(ValueError, match="greedily"):
        _generate(model, groups, eos, prompt, SignalLookupDecoding, do_sample=True)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        SignalLookupDecoding(SignalGroupLogitsProcessor(groups), num_draft_tokens=-1)
