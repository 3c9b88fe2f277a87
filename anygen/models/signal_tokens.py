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
        self._all = torch.tensor(all_ids, dtype=torch.long)

    def forced_after(self, token: int) -> int | None:
        """The group token that must follow ``token`` (``None`` unless ``token`` starts or continues a group)."""
        if token not in self._where:
            return None
        m, j = self._where[token]
        ids = self.groups[m]
        return ids[j + 1] if j + 1 < len(ids) else None

    def state(self, reply: list[int]) -> tuple[int | None, dict[str, int]]:
        """For a reply so far: the id forced next (or ``None``) and the completed groups per modality."""
        forced, done = None, {m: 0 for m in self.groups}
        for t in reply:
            if t in self._where:
                forced = self.forced_after(t)
                if forced is None:
                    done[self._where[t][0]] += 1
        if reply and reply[-1] not in self._where:
            forced = None  # only reachable when someone bypasses the processor; then the group is already broken
        return forced, done

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cur_len = input_ids.shape[1]
        neg = torch.finfo(scores.dtype).min
        forbid = torch.zeros_like(scores, dtype=torch.bool)  # (batch, vocab)
        for b in range(input_ids.shape[0]):
            forced, done = self.state(input_ids[b, self.prompt_length :].tolist())
            if forced is not None:
                forbid[b] = True
                forbid[b, forced] = False
                continue
            forbid[b, self._all.to(scores.device)] = True
            for m, ids in self.groups.items():
                fits = self.max_length is None or cur_len + len(ids) <= self.max_length
                capped = self.max_groups is not None and done[m] >= self.max_groups
                if m not in self.disabled and fits and not capped:
                    forbid[b, ids[0]] = False
        return scores.masked_fill(forbid, neg)

    def __repr__(self) -> str:
        k = {m: len(ids) for m, ids in self.groups.items()}
        return f"{type(self).__name__}(K={k}, prompt_length={self.prompt_length}, disabled={sorted(self.disabled)})"
