"""Signal-token groups at generation time: a ``LogitsProcessor`` that never lets a group be partial.

A reply generates a medium by emitting a whole group ``[IMG0] [IMG1] .. [IMG{K-1}]``. Used with
``model.generate(..., logits_processor=LogitsProcessorList([SignalGroupLogitsProcessor(...)]))``.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class SignalGroupLogitsProcessor(LogitsProcessor):
    r"""Complete a signal group once its first token appears; forbid every group token out of order.

    At each step, per batch row, over the tokens generated so far (those after ``prompt_length``):

    * inside a group (its last emitted token is ``group[j]`` with ``j < K-1``): only ``group[j+1]`` is allowed;
    * otherwise: every non-first group token is forbidden, and so is every first token of a group that
      could not be finished before ``max_length`` (so truncation never leaves a partial group) or whose
      modality is in ``disabled`` (no generator for it);
    * a group that has been completed may start again: asking for two images in one sentence is a task of
      the world (``multi``: "draw A and B" → two ``[IMG]`` groups), so forbidding repeats would break it.
      ``max_groups`` caps the groups of one modality per reply instead.

    Args:
        groups: signal-token ids per modality, in order (e.g. from
            :func:`anygen.models.tokenizer.signal_groups`).
        prompt_length: number of prompt ids at the start of ``input_ids`` (0 when ``generate`` was given
            only ``inputs_embeds``, in which case ``input_ids`` holds the reply alone).
        max_length: total length ``generate`` stops at (prompt + ``max_new_tokens``), or ``None``.
        disabled: modalities whose groups may never start.
        max_groups: at most this many groups per modality in one reply (``None``: no cap).

    Example:
        ```py
        >>> from transformers import LogitsProcessorList
        >>> proc = SignalGroupLogitsProcessor({"image": [9, 10, 11, 12]}, prompt_length=ids.shape[1])
        >>> out = model.generate(ids, logits_processor=LogitsProcessorList([proc]), max_new_tokens=64)
        ```
    """

    def __init__(
        self,
        groups: dict[str, list[int]],
        prompt_length: int = 0,
        max_length: int | None = None,
        disabled: tuple[str, ...] | list[str] = (),
        max_groups: int | None = None,
    ):
        if not groups or any(len(ids) == 0 for ids in groups.values()):
            raise ValueError(f"`groups` must map each modality to a non-empty list of token ids, got {groups}")
        all_ids = [i for ids in groups.values() for i in ids]
        if len(set(all_ids)) != len(all_ids):
            raise ValueError("`groups` must not share token ids")
        self.groups = {m: list(ids) for m, ids in groups.items()}
        self.prompt_length = int(prompt_length)
        self.max_length = max_length
        self.disabled = set(disabled)
        self.max_groups = max_groups
        # token id -> (modality, index in group)
        self._where = {t: (m, j) for m, ids in self.groups.items() for j, t in enumerate(ids)}
        self._mask_cache: dict[tuple[int, str], tuple[torch.Tensor, dict[int, torch.Tensor]]] = {}

    def is_signal_token(self, token: int) -> bool:
        return token in self._where

    def forced_after(self, token: int) -> int | None:
        """The group token that must follow ``token`` (``None`` unless ``token`` starts or continues a group)."""
        if token not in self._where:
            return None
        m, j = self._where[token]
        ids = self.groups[m]
        return ids[j + 1] if j + 1 < len(ids) else None

    def _masks(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Forbidden-token masks over the vocabulary, built once per (vocab, device): outside a group (every
        non-first group token, and the first token of a disabled modality's group), and inside one, per group token
        that forces a next one (everything but that next token)."""
        key = (vocab, str(device))
        if key not in self._mask_cache:
            outside = torch.zeros(vocab, dtype=torch.bool)
            inside = {}
            for m, ids in self.groups.items():
                outside[ids[1:]] = True
                outside[ids[0]] = m in self.disabled
                for token, following in zip(ids, ids[1:]):
                    inside[token] = torch.ones(vocab, dtype=torch.bool)
                    inside[token][following] = False
            self._mask_cache[key] = (outside.to(device), {t: v.to(device) for t, v in inside.items()})
        return self._mask_cache[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Called once per step, and with prompt lookup once per candidate position: precomputed masks and one
        # masked_fill, no walk over the reply (unless `max_groups` asks to count its groups).
        batch, vocab = scores.shape
        outside, inside = self._masks(vocab, scores.device)
        cur_len = input_ids.shape[1]
        last = input_ids[:, -1].tolist() if cur_len > self.prompt_length else [None] * batch
        # First tokens of groups that could not be finished before max_length.
        late = [ids[0] for ids in self.groups.values() if self.max_length is not None and cur_len + len(ids) > self.max_length]
        rows = []
        for b in range(batch):
            if last[b] in inside:
                rows.append(inside[last[b]])
                continue
            closed = late
            if self.max_groups is not None:
                reply = input_ids[b, self.prompt_length :].tolist()
                closed = closed + [ids[0] for ids in self.groups.values() if reply.count(ids[-1]) >= self.max_groups]
            row = outside
            if closed:
                row = outside.clone()
                row[closed] = True
            rows.append(row)
        forbid = rows[0].unsqueeze(0) if batch == 1 else torch.stack(rows)
        return scores.masked_fill(forbid, torch.finfo(scores.dtype).min)

    def __repr__(self) -> str:
        k = {m: len(ids) for m, ids in self.groups.items()}
        return f"{type(self).__name__}(K={k}, prompt_length={self.prompt_length}, disabled={sorted(self.disabled)})"
