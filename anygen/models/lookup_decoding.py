"""Greedy lookup decoding with signal groups, as a ``custom_generate`` loop for ``model.generate``.

Prompt lookup decoding (transformers' ``prompt_lookup_num_tokens``) drafts the next tokens from n-grams of the
prompt and checks them all with one forward; the reply stays the greedy one, but a run of copied words costs one
forward instead of one per word. A tiny backbone on a CPU spends its time per forward, not per position fed (a
one-token step and an 11-token check cost 3.5 and 5.0 ms for anygen-tiny, ``benchmarks/anygen.py --breakdown``), so
the fewer forwards the better. :class:`SignalLookupDecoding` drafts from three sources, at each drafted position:

1. the signal group in progress: once a group's first token is out, :class:`SignalGroupLogitsProcessor` allows
   only the group's next token, so the rest of the group is drafted, and always accepted;
2. n-grams of recent replies (:class:`NgramMemory`): stock openings and closings like "Here is a" and
   ". [IMG0] ... [IMG3]" that the prompt does not contain, and the slots between them: the memory keeps every
   token seen after an n-gram, and the draft takes one the request holds and the reply has not used yet ("a small"
   was followed by "red", "blue", "green"...; a request for a green square drafts "green");
3. n-grams of the sequence so far (prompt and reply: replies copy the request's words).

The memory's n-grams come first, and the sequence's only where the memory has none (the memory knows how replies go
on, the request only which words they copy); taking the request's words from the memory's successors cut the
forwards of a text → image request from 8.1 to 5.3 (``benchmarks/anygen.py --breakdown``).
Verification is sequential greedy: the processors see each position once, with exactly the ids they would see
decoding step by step, and the first draft token that differs from the greedy choice ends the check (the greedy
token is kept). The last hidden layer the output projectors read comes from one pass over the whole reply after the
prompt's cache (the last check itself, when its draft ended the reply and was all accepted; otherwise one more
forward): the conditioning then depends on the prompt and the reply only, not on which drafts were accepted
(chunking changes the float rounding), so a request gives the same media whatever was decoded before it.

Example:
    ```py
    >>> decoding = SignalLookupDecoding(signal, memory=NgramMemory())
    >>> out = model.generate(input_ids, logits_processor=LogitsProcessorList([signal]), custom_generate=decoding,
    ...                      do_sample=False, return_dict_in_generate=True, output_hidden_states=True)
    >>> out.sequences, out.last_hidden_state.shape, out.num_forwards
    ```
"""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .signal_tokens import SignalGroupLogitsProcessor

Table = dict[tuple[int, ...], int]
Successors = dict[tuple[int, ...], dict[int, None]]  # n-gram → the tokens seen after it, the most recent last


def _index(table: Table, ids: list[int], start: int, max_ngram: int, skip: frozenset[int] = frozenset()) -> None:
    """Record, for every position ``p >= start`` of ``ids`` with ``ids[p]`` not in ``skip``, the n-grams
    (n ≤ ``max_ngram``) ending at ``p - 1`` → ``ids[p]``. A later occurrence replaces an earlier one."""
    for p in range(max(start, 1), len(ids)):
        if ids[p] in skip:
            continue
        for n in range(1, min(max_ngram, p) + 1):
            table[tuple(ids[p - n : p])] = ids[p]


def _index_successors(table: Successors, ids: list[int], max_ngram: int) -> None:
    """Record, for every position ``p >= 1`` of ``ids``, ``ids[p]`` as the most recent successor of the n-grams
    (n ≤ ``max_ngram``) ending at ``p - 1``."""
    for p in range(1, len(ids)):
        for n in range(1, min(max_ngram, p) + 1):
            seen = table.setdefault(tuple(ids[p - n : p]), {})
            seen.pop(ids[p], None)
            seen[ids[p]] = None


def _processors_applied(logits_processor):
    """``logits_processor`` as a function of ``(input_ids, scores)``. A ``LogitsProcessorList`` inspects each
    processor's signature on every call (for extra keyword arguments, which this loop never passes): ~10 µs a
    processor at every position checked, ~0.3 ms a text → image reply of anygen-tiny. When no processor takes more
    than ``(input_ids, scores)``, they are applied directly, in order; otherwise the list is kept, to raise its own
    error."""
    processors = list(logits_processor)
    if any(len(inspect.signature(p.__call__).parameters) > 2 for p in processors):
        return logits_processor

    def apply(input_ids, scores):
        for p in processors:
            scores = p(input_ids, scores)
        return scores

    return apply


class NgramMemory:
    """N-gram → next-tokens table over recent replies, a draft source for :class:`SignalLookupDecoding`.

    ``table[ngram]`` holds every token seen after ``ngram`` in the remembered replies, in the order of their most
    recent occurrence (the latest last): replies share their frames ("Here is a ... at the ... on a ...") and differ
    in the words they copy from their requests, so the drafter picks, among the tokens that followed, one the
    current request holds. ``replies_with[token]`` counts the remembered replies that hold ``token``: one in most
    of them is a word of the frame, not of a slot.

    It holds the last ``size`` to ``2 * size`` replies: when a reply makes more than ``2 * size``, all but the last
    ``size`` are dropped and the table rebuilt, so adding a reply costs its own n-grams plus, amortised, about as
    much again (not a rebuild over ``size`` replies every time).

    Args:
        size: replies kept at least (0: none).
        max_ngram: longest n-gram indexed.
    """

    def __init__(self, size: int = 64, max_ngram: int = 3):
        if size < 0 or max_ngram < 1:
            raise ValueError(f"`size` must be >= 0 and `max_ngram` >= 1, got {size} and {max_ngram}")
        self.size, self.max_ngram = int(size), int(max_ngram)
        self.replies: deque[list[int]] = deque()
        self.table: Successors = {}
        self.replies_with: dict[int, int] = {}

    def add(self, reply: list[int]) -> None:
        """Remember ``reply`` (token ids, with the eos if it ended with one)."""
        if self.size == 0 or not reply:
            return
        self.replies.append(list(reply))
        if len(self.replies) > 2 * self.size:
            while len(self.replies) > self.size:
                self.replies.popleft()
            self.table, self.replies_with = {}, {}
            for r in self.replies:
                self._learn(r)
        else:
            self._learn(self.replies[-1])

    def _learn(self, reply: list[int]) -> None:
        _index_successors(self.table, reply, self.max_ngram)
        for t in set(reply):
            self.replies_with[t] = self.replies_with.get(t, 0) + 1

    def clear(self) -> None:
        self.replies.clear()
        self.table, self.replies_with = {}, {}

    def __len__(self) -> int:
        return len(self.replies)


@dataclass
class LookupDecodingOutput(ModelOutput):
    """What :class:`SignalLookupDecoding` returns when ``generate`` is asked for ``return_dict_in_generate``.

    Args:
        sequences: (1, L) prompt and reply ids.
        last_hidden_state: (1, R, hidden) the last hidden layer at each reply token but a final eos, from one
            pass over the reply after the prompt's; ``None`` unless ``output_hidden_states`` and the reply holds
            a signal token.
        num_forwards: forwards run, the prompt's included.
    """

    sequences: torch.LongTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    num_forwards: int | None = None


class SignalLookupDecoding:
    """Greedy decoding with drafts from a signal group in progress, the sequence and a reply memory.

    Pass an instance as ``custom_generate`` to ``model.generate`` (``do_sample=False``, one sequence): ``generate``
    prepares the inputs, processors, stopping criteria and cache as usual, then runs this loop.

    Args:
        signal: the processor in ``generate``'s ``logits_processor`` that keeps signal groups whole; its
            ``forced_after`` drafts the rest of a group.
        num_draft_tokens: n-gram draft tokens per forward (0: none; a group's forced rest is drafted anyway).
        memory: recent replies to draft from; the reply decoded here is added to it.
        max_ngram: longest n-gram matched against the sequence.
        never_copied: token ids never drafted from the sequence, such as the chat template's turn markers: a
            reply copies the request's words, not the ``<|end|>`` after them (the memory may still draft them).
    """

    def __init__(
        self,
        signal: SignalGroupLogitsProcessor,
        num_draft_tokens: int = 10,
        memory: NgramMemory | None = None,
        max_ngram: int = 3,
        never_copied: list[int] | tuple[int, ...] = (),
    ):
        if num_draft_tokens < 0:
            raise ValueError(f"`num_draft_tokens` must be >= 0, got {num_draft_tokens}")
        self.signal, self.num_draft_tokens, self.memory, self.max_ngram = signal, num_draft_tokens, memory, max_ngram
        self.never_copied = frozenset(never_copied)

    def draft(self, ids: list[int], table: Table, budget: int, eos: set[int]) -> list[int]:
        """Up to ``budget`` tokens likely to follow ``ids`` (``table`` indexes ``ids``' own n-grams).

        At each position: the forced rest of a started signal group; else an n-gram draft (:meth:`_next`).
        """
        out: list[int] = []
        ngram_left = self.num_draft_tokens
        start = self.signal.prompt_length
        first: dict[int, int] = {}  # token → its first position in the prompt
        unused: dict[int, int] = {}  # token → how many more times the prompt holds it than the reply
        for i, t in enumerate(ids[:start]):
            if t not in self.never_copied:
                first.setdefault(t, i)
                unused[t] = unused.get(t, 0) + 1
        for t in ids[start:]:
            if t in unused:
                unused[t] -= 1
        while len(out) < budget:
            tail = (ids[-self.max_ngram :] + out)[-self.max_ngram :]
            nxt = self.signal.forced_after(tail[-1]) if len(ids) + len(out) > start else None
            if nxt is None:
                if ngram_left == 0:
                    break
                nxt = self._next(tail, table, unused, first)
                if nxt is None:
                    break
                ngram_left -= 1
            out.append(nxt)
            if nxt in unused:
                unused[nxt] -= 1
            if nxt in eos:
                break
        return out

    def _next(self, tail: list[int], table: Table, unused: dict[int, int], first: dict[int, int]) -> int | None:
        """The n-gram draft token after ``tail``, or ``None``.

        The memory's n-grams first, the longest first: the first one followed by a word the request still has to
        give (a prompt token, ``never_copied`` aside, that the reply holds fewer times than the prompt) gives that
        word, the earliest in the prompt. A single token is searched so only when nothing longer matched, or when
        it is rare in the memory (in fewer than half of its replies): after a frame word like " a" a reply's next
        word may fill one of several slots (a shape's size, a background's colour), after "red" only one. No
        asked-for word: the longest match's most recent successor. No match in the memory: the sequence's longest
        n-gram (the memory knows how replies go on, the request only which words they copy).
        """
        memory = self.memory.table if self.memory is not None else {}
        rare = self.memory is not None and 2 * self.memory.replies_with.get(tail[-1], 0) < len(self.memory)
        fallback = None
        for n in range(min(self.max_ngram, len(tail)), 0, -1):
            seen = memory.get(tuple(tail[-n:]))
            if not seen:
                continue
            if fallback is None or n >= 2 or rare:
                wanted = [t for t in seen if unused.get(t, 0) > 0]
                if wanted:
                    return min(wanted, key=first.__getitem__)
            if fallback is None:
                fallback = next(reversed(seen))
        if fallback is not None:
            return fallback
        for n in range(min(self.max_ngram, len(tail)), 0, -1):
            nxt = table.get(tuple(tail[-n:]))
            if nxt is not None:
                return nxt
        return None

    @torch.no_grad()
    def __call__(
        self,
        model,
        input_ids: torch.LongTensor,
        logits_processor,
        stopping_criteria,
        generation_config,
        synced_gpus: bool = False,
        streamer=None,
        **model_kwargs,
    ) -> LookupDecodingOutput | torch.LongTensor:
        if generation_config.do_sample or input_ids.shape[0] != 1:
            raise ValueError("SignalLookupDecoding decodes one sequence greedily: pass do_sample=False and one prompt")
        mask = model_kwargs.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            raise ValueError("SignalLookupDecoding does not support padding: pass an attention mask of ones or none")
        cache = model_kwargs["cache"]
        logits_processor = _processors_applied(logits_processor)
        want_hidden = generation_config.output_hidden_states
        eos = generation_config.eos_token_id
        eos = set() if eos is None else {int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos])}
        max_length = generation_config.max_length

        def forward(**inputs):
            return model(**inputs, cache=cache, use_cache=True, return_dict=True)

        # Prefill: the prompt (or its spliced embeddings) in one forward.
        embeds = model_kwargs.get("inputs_embeds")
        logits = forward(**({"inputs_embeds": embeds} if embeds is not None else {"input_ids": input_ids}), logits_to_keep=1).logits
        num_forwards = 1
        ids = input_ids[0].tolist()
        prompt_length = indexed = len(ids)
        table: Table = {}
        _index(table, ids, 1, self.max_ngram, self.never_copied)

        def holds_group(tokens: list[int]) -> bool:
            return any(self.signal.is_signal_token(t) for t in tokens)

        whole_reply = None  # the last hidden layer of a forward that fed the whole reply after the prompt
        scores = logits_processor(input_ids, logits[:, -1].float())
        ids.append(int(scores.argmax(-1)))
        input_ids = input_ids.new_tensor([ids])
        if streamer is not None:
            streamer.put(input_ids[:, -1:].cpu())
        # Stopping is checked once a forward, on everything it accepted (as transformers' assisted decoding does).
        while not (ids[-1] in eos or len(ids) >= max_length or bool(stopping_criteria(input_ids, scores).all())):
            # One forward feeds the newest token (not fed yet) with a draft after it and checks the draft position
            # by position: the processors see each position once, with the ids decoding step by step would give
            # them; the first greedy choice that differs from the draft is the next newest token.
            _index(table, ids, indexed, self.max_ngram, self.never_copied)
            indexed = len(ids)
            draft = self.draft(ids, table, max_length - len(ids) - 1, eos)
            # A draft that ends the reply (with a group in it) is fed with the whole reply before it, from the
            # prompt's cache on: if it is all accepted, this forward is the pass over the reply that step 4 reads.
            whole = want_hidden and bool(draft) and draft[-1] in eos and holds_group(ids[prompt_length:] + draft)
            if whole:
                cache.crop(-(cache.get_seq_length() - prompt_length))
            fed = ids[prompt_length:] + draft if whole else [ids[-1], *draft]
            out = forward(input_ids=input_ids.new_tensor([fed]), logits_to_keep=len(draft) + 1, output_hidden_states=whole)
            logits = out.logits.float()  # (1, len(draft) + 1, vocab): after the newest token, after each draft token
            num_forwards += 1
            candidate, n, matched = input_ids.new_tensor([ids + draft]), len(ids), 0
            for i in range(len(draft) + 1):
                scores = logits_processor(candidate[:, : n + i], logits[:, i])
                ids.append(int(scores.argmax(-1)))
                if i == len(draft) or ids[-1] != draft[i]:
                    break
                matched += 1
                if ids[-1] in eos:
                    break
            input_ids = input_ids.new_tensor([ids])
            if streamer is not None:
                streamer.put(input_ids[:, n:].cpu())
            if whole and matched == len(draft):
                whole_reply = out.hidden_states[-1]
            cache.crop(-(len(draft) - matched))  # forget what the rejected draft tokens wrote

        if streamer is not None:
            streamer.end()
        reply = ids[prompt_length:]
        if self.memory is not None:
            self.memory.add(reply)
        hidden = None
        if want_hidden and holds_group(reply):
            # The hidden states a signal group is read from come from one pass over the whole reply (its eos too)
            # after the prompt's, so they depend on the prompt and reply alone, never on which drafts happened to be
            # accepted before: chunking changes the float rounding.
            if whole_reply is None:
                cache.crop(-(cache.get_seq_length() - prompt_length))
                whole_reply = forward(input_ids=input_ids.new_tensor([reply]), logits_to_keep=1, output_hidden_states=True).hidden_states[-1]
                num_forwards += 1
            hidden = whole_reply[:, : len(reply) - (reply[-1] in eos)]
        if not generation_config.return_dict_in_generate:
            return input_ids
        return LookupDecodingOutput(
            sequences=input_ids,
            last_hidden_state=hidden,
            num_forwards=num_forwards,
        )
