"""Stages 1–3: the backbone, its signal tokens and the projectors, trained on the world's dialogues.

* ``align-in``  (1) input projectors on the describe tasks (i2t, v2t, a2t): LM loss on the reply;
* ``align-out`` (2) output projectors on the text-to-X tasks (t2i, t2v, t2a): MSE between
  ``output_projector(hidden states at the signal group)`` and the generator's own caption conditioning
  ``encode_caption(generator, [canonical caption])``, plus an LM loss on the signal tokens (or the reply);
* ``instruct``  (3) every task of the world: LM loss on every assistant token plus that MSE at every
  generated medium of the conversation.

Stage 1 starts from :meth:`AnyGenPipeline.from_recipe` (a fresh tokenizer, backbone and projectors around the
stage-0 generators); each later stage from the previous stage's export ``run_dir/<previous>/final``. Every stage
ends by saving the whole system to ``run_dir/<stage>/final`` (the next stage's start) and to ``output_dir``, so
``output_dir/model_index.json`` appears with the first finished stage and holds the instruction-tuned system
after ``instruct``.

The backbone in each stage (the ``backbone`` key of ``[train.<stage>]``):

* ``"full"``: every weight trains. ``"auto"`` picks it for a ``[backbone] type = "llama"`` trained from
  scratch in every stage: there is no language model to preserve, and a frozen random LM could neither write
  a caption (stage 1) nor carry a request's content to the signal group (stage 2).
* ``"frozen"``: ``"auto"`` for a pretrained backbone in ``align-in`` (NExT-GPT's stage 1: only the projectors
  learn to speak the LM's language).
* ``"lora"``: peft LoRA adapters, plus the rows of the new tokens (placeholders, signal groups) of the
  embeddings; ``"auto"`` for a pretrained backbone in ``align-out`` and ``instruct``. Merged into the weights at
  the end of the stage, so the saved system is a plain causal LM.

One training example is one dialogue (:func:`anygen.world.make_dialogue`, ``train`` split and templates): the
chat template gives the ids and the assistant-token mask; each ``<image>``/``<video>``/``<audio>`` placeholder is
widened to its input projector's N positions (exactly as :meth:`AnyGenPipeline.splice` does at inference);
media are rendered on the fly and encoded once per medium by the frozen VAEs (cached, with the caption
targets). A batch's dialogues are packed into a few rows and run as one forward.

Validation (every ``validate_every`` steps and at the end) on ``validate_samples`` val dialogues, worded with
the eval templates: teacher-forced LM loss, next-token accuracy on the assistant tokens and MSE, plus the greedy
reply to each first turn: routing (the right output modalities) and whether the reply says the right thing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import string
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AnyGenInputError
from ..eval.evaluation import fully_specified_requests, medium_for_pipeline
from ..kernels import kernels_applied
from ..models import encoders
from ..pipelines.assembly import build_generators, recipe_kernels
from ..models.tokenizer import MODALITIES, expand_signal_markers
from ..world import TASKS
from ..world.datasets import DEFAULT_TASK_WEIGHTS, DialogueDataset
from ..world.dialogue import Dialogue
from ..world.text import attribute_words, output_segment
from .common import make_accelerator
from .loop import train
from .recipe import Recipe, take

STAGE_SECTIONS = {"align-in": "align_in", "align-out": "align_out", "instruct": "instruct"}
PREVIOUS = {"align-out": "align-in", "instruct": "align-out"}
BACKBONE_MODES = ("auto", "full", "lora", "frozen")
TRAINABLE = ("input_projectors", "output_projectors")
NOISE_KEEP = ("none", "attributes")

COMMON_DEFAULTS = dict(
    steps=1000,
    batch_size=32,
    lr=1e-3,                    # projectors (and the backbone unless backbone_lr is set)
    backbone_lr=None,
    warmup=100,
    weight_decay=0.0,
    task_weights=None,          # {task: weight}; default anygen.world.DEFAULT_TASK_WEIGHTS
    two_object_prob=None,       # share of two-shape scenes in t2i/i2t training dialogues; None: the world's 0.3
    relative_edit_prob=None,    # share of multi-turn sound/clip edits that step the pitch or reverse; None: world's
    multiturn_audio_prob=None,  # share of multi-turn dialogues about a sound; None: the world's one in three
    dialogues=0,                # distinct training dialogues, cycled in seeded epochs; 0 = a fresh one every time
    backbone="auto",
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.05,
    lora_target_modules="all-linear",
    lm_tokens="assistant",      # "assistant": every assistant token; "signal": the signal-group tokens only
    user_token_noise=0.0,       # probability of replacing each ordinary non-assistant token with a random one
    user_token_noise_keep="none",  # "attributes": never noise the world's attribute words (attribute_words())
    unknown_word_noise=0.0,     # probability of replacing each word of a request with a made-up word (spelled)
    lm_weight=1.0,
    mse_weight=1.0,
    pack_length=256,            # dialogues packed into rows of this many positions (0: one padded row each)
    media_cache=50_000,         # media encodings and caption targets kept in memory
    checkpoint_every=250,
    validate_every=500,
    validate_samples=48,        # val dialogues (eval templates): teacher-forced losses + greedy replies
    max_new_tokens=64,
    judge_samples=0,            # > 0: at the end, `anygen eval` on this many val dialogues of each judge task
    judge_tasks=None,
    num_inference_steps=20,
    guidance_scale=1.5,         # the generators' measured best (weights/anygen-tiny/README.md)
)
STAGE_DEFAULTS = {
    "align-in": {**COMMON_DEFAULTS, "tasks": ["i2t", "v2t", "a2t"], "train": ["input_projectors"], "mse_weight": 0.0},
    "align-out": {
        **COMMON_DEFAULTS, "tasks": ["t2i", "t2v", "t2a"], "train": ["output_projectors"], "lm_tokens": "signal",
        "judge_tasks": ["t2i", "t2v", "t2a"],
    },
    "instruct": {
        **COMMON_DEFAULTS, "tasks": list(TASKS), "train": list(TRAINABLE),
        "judge_tasks": ["t2i", "t2v", "t2a", "i2t", "v2t", "a2t", "edit", "multi", "multiturn"],
    },
}
_SALT = {"align-in": 11, "align-out": 12, "instruct": 13}


def stage_config(recipe: Recipe, stage: str) -> dict:
    """The ``[train.<stage>]`` table merged over :data:`STAGE_DEFAULTS`, checked."""
    key = STAGE_SECTIONS[stage]
    cfg = take(recipe.sections.get("train", {}).get(key, {}), STAGE_DEFAULTS[stage], f"train.{key}")
    where = f"[train.{key}]"
    if cfg["backbone"] not in BACKBONE_MODES:
        raise AnyGenInputError(f"{where} backbone must be one of {BACKBONE_MODES}, got {cfg['backbone']!r}")
    if cfg["lm_tokens"] not in ("assistant", "signal"):
        raise AnyGenInputError(f"{where} lm_tokens must be 'assistant' or 'signal', got {cfg['lm_tokens']!r}")
    if bad := [t for t in cfg["train"] if t not in TRAINABLE]:
        raise AnyGenInputError(f"{where} train: unknown parts {bad}; known: {list(TRAINABLE)}")
    if bad := [t for t in cfg["tasks"] if t not in TASKS]:
        raise AnyGenInputError(f"{where} tasks: unknown {bad}; known: {list(TASKS)}")
    for key in ("user_token_noise", "unknown_word_noise", "two_object_prob", "relative_edit_prob", "multiturn_audio_prob"):
        if cfg[key] is not None and not 0.0 <= cfg[key] <= 1.0:
            raise AnyGenInputError(f"{where} {key} is a probability in [0, 1], got {cfg[key]!r}")
    if cfg["user_token_noise_keep"] not in NOISE_KEEP:
        raise AnyGenInputError(
            f"{where} user_token_noise_keep must be one of {NOISE_KEEP}, got {cfg['user_token_noise_keep']!r}"
        )
    return cfg


def noise_keep_ids(tokenizer, keep: str) -> list[int]:
    """Token ids that request noise leaves alone: none, or every token of the world's attribute words."""
    return word_token_ids(tokenizer, sorted(attribute_words())) if keep == "attributes" else []


def backbone_mode(recipe: Recipe, stage: str, cfg: dict) -> str:
    """``cfg["backbone"]`` with ``"auto"`` resolved (see the module docstring)."""
    if cfg["backbone"] != "auto":
        return cfg["backbone"]
    if recipe.sections.get("backbone", {}).get("type", "llama") == "llama":
        return "full"
    return "frozen" if stage == "align-in" else "lora"


# ----------------------------------------------------------------------------- batches


def assistant_token_mask(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and a 0/1 mask of the assistant's tokens (the LM loss reads these).

    Uses the chat template's ``{% generation %}`` block when it has one (AnyGen's own template does, and marks
    each reply plus its end-of-turn token); otherwise each reply's span is found by templating the
    conversation up to it with and without the reply (any prefix-stable template, e.g. a pretrained LM's).
    """
    template = tokenizer.chat_template or ""
    if re.search(r"\{%-?\s*generation\s*-?%\}", template):
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return list(enc["input_ids"]), list(enc["assistant_masks"])
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    mask = [0] * len(ids)
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=True, add_generation_prompt=True, return_dict=True)
        before = before["input_ids"]
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=True, return_dict=True)["input_ids"]
        if list(upto[: len(before)]) != list(before) or list(ids[: len(upto)]) != list(upto):
            raise ValueError("The chat template is not prefix-stable: add a {% generation %} block to mark assistant tokens")
        mask[len(before) : len(upto)] = [1] * (len(upto) - len(before))
    return ids, mask


class DialogueBatcher:
    r"""Dialogues → one padded batch for :class:`SystemLoss`.

    The batch holds ``input_ids`` (R, L) with each placeholder widened to its input projector's N positions,
    ``assistant_mask``/``signal_mask`` (R, L), the attached media as frozen-VAE tokens per modality
    (n, T, P, C) with the (row, column) of every spliced position, and per output modality the (row, column) of
    each signal group's K tokens with its target: the generator's caption conditioning of that medium's
    canonical caption (``encode_caption``), (n, Lc, Dc).

    With ``pack_length`` > 0, dialogues are packed into rows of that many positions with ``position_ids`` that
    restart at each dialogue (transformers then masks attention across dialogues, as for any packed batch), so
    a batch of a few long multi-turn dialogues and many short requests costs little padding. With 0, each
    dialogue is one right-padded row with an ``attention_mask``.

    Media are encoded one at a time, exactly as the pipeline encodes an attachment, and kept (with the caption
    targets) in a cache of ``cache_size`` entries, so a repeated medium or caption costs nothing and a resumed
    run sees bit-identical inputs.

    Args:
        pipe: the :class:`~anygen.AnyGenPipeline` being trained (tokenizer, VAEs, generators, projector sizes).
        device: where the batch tensors go.
        cache_size: most media encodings + caption targets to keep.
        pack_length: positions per packed row (0: one padded row per dialogue).
    """

    def __init__(self, pipe, device: torch.device | str = "cpu", cache_size: int = 50_000, pack_length: int = 0):
        from ..pipelines.pipeline_anygen import encode_caption

        self.pipe, self.device, self.cache_size, self.pack_length = pipe, torch.device(device), cache_size, pack_length
        self.tokenizer = pipe.tokenizer
        self.groups = pipe.signal_groups
        self.k = pipe.num_signal_tokens
        self.by_placeholder = {i: m for m, i in pipe.placeholder_ids.items()}
        self.signal_ids = {t for ids in self.groups.values() for t in ids}
        self._encode_caption = encode_caption
        self._media: dict[str, torch.Tensor] = {}
        self._targets: dict[tuple[str, str], torch.Tensor] = {}

    # ------------------------------------------------------------------ cached encoders

    def _remember(self, cache: dict, key, value: torch.Tensor) -> torch.Tensor:
        if len(self._media) + len(self._targets) < self.cache_size:
            cache[key] = value
        return value

    def _cached(self, cache: dict, keys: list, encode) -> list[torch.Tensor]:
        """``cache[key]`` for each key; the missing keys (each once) computed together by ``encode(missing)``."""
        found = {k: cache[k] for k in keys if k in cache}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            found.update({k: self._remember(cache, k, v.float().cpu()) for k, v in zip(missing, encode(missing))})
        return [found[k] for k in keys]

    def media_tokens(self, media: list) -> list[torch.Tensor]:
        """Frozen-VAE tokens of media of one modality, each (T, P, C), as :meth:`AnyGenPipeline.encode_media`
        computes them. The uncached ones go through the VAE in one batch (a video's frames alongside), since
        with fresh dialogues every step brings new media and a VAE call per medium costs mostly overhead."""
        modalities = {x.modality for x in media}
        if len(modalities) > 1:
            raise ValueError(f"`media` must be of one modality, got {sorted(modalities)}")
        by_key = {repr(x): x for x in media}  # repr, not hash: jitter does not take part in scene equality but moves pixels

        def encode(keys: list[str]) -> list[torch.Tensor]:
            m = by_key[keys[0]].modality
            vae = self.pipe._encoder_vae(m)
            xs = [medium_for_pipeline(by_key[k]) for k in keys]
            if m == "image":
                return list(encoders.encode_images(vae, xs))  # each (1, P, C)
            if m == "video":
                frames = encoders.encode_images(vae, [f for clip in xs for f in clip])[:, 0]  # (sum T, P, C)
                return list(frames.split([len(clip) for clip in xs]))  # each (T, P, C)
            return list(encoders.encode_audios(vae, xs))  # each (1, P, C)

        return self._cached(self._media, [repr(x) for x in media], encode)

    def caption_targets(self, modality: str, captions: list[str]) -> list[torch.Tensor]:
        """The generator's conditioning of each caption, (Lc, Dc): the output projector's regression targets
        (the uncached ones through the text encoder in one batch)."""
        generator = self.pipe.generator(modality)
        return self._cached(self._targets, [(modality, c) for c in captions],
                            lambda keys: self._encode_caption(generator, [c for _, c in keys]))

    # ------------------------------------------------------------------ one dialogue

    def tokenize(self, dialogue: Dialogue) -> dict:
        """One dialogue → widened ids, masks, spliced media and signal groups (lists, unpadded)."""
        messages = [
            {"role": m.role, "content": expand_signal_markers(m.content, self.k) if m.role == "assistant" else m.content}
            for m in dialogue.messages
        ]
        ids, amask = assistant_token_mask(self.tokenizer, messages)
        inputs, outputs = dialogue.inputs(), dialogue.outputs()
        new_ids, new_mask, media = [], [], []
        for t, a in zip(ids, amask):
            m = self.by_placeholder.get(t)
            if m is None:
                new_ids.append(t)
                new_mask.append(a)
                continue
            x = inputs[len(media)]
            if x.modality != m:
                raise ValueError(f"Placeholder {m} does not match the attached {x.modality}")
            if m not in self.pipe.input_modalities:
                raise AnyGenInputError(f"A {dialogue.task} dialogue attaches a {m} but the pipeline reads no {m}s: drop the task")
            n = self.pipe.input_projector(m).config.num_queries
            media.append((len(new_ids), n, x))
            new_ids += [t] * n
            new_mask += [0] * n
        if len(media) != len(inputs):
            raise ValueError(f"The template kept {len(media)} of {len(inputs)} placeholders")
        groups, i = [], 0
        while i < len(new_ids):
            for m, g in self.groups.items():
                if new_ids[i : i + len(g)] == g:
                    groups.append((i, m))
                    i += len(g) - 1
                    break
            i += 1
        if missing := {x.modality for x in outputs} - set(self.pipe.output_modalities):
            raise AnyGenInputError(
                f"A {dialogue.task} dialogue generates {sorted(missing)} but the pipeline cannot: drop the task"
            )
        if [m for _, m in groups] != [x.modality for x in outputs]:
            raise ValueError(f"Signal groups {[m for _, m in groups]} do not match the outputs {[x.modality for x in outputs]}")
        return dict(ids=new_ids, mask=new_mask, media=media, groups=[(i, m, x) for (i, m), x in zip(groups, outputs)])

    # ------------------------------------------------------------------ a batch

    def pack(self, lengths: list[int]) -> list[list[int]]:
        """Items per row: first fit, longest first, rows of ``pack_length`` positions (or the longest item)."""
        if not self.pack_length:
            return [[i] for i in range(len(lengths))]
        cap = max(self.pack_length, max(lengths))
        rows: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
            r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
            if r is None:
                rows.append([])
                room.append(cap)
                r = len(rows) - 1
            rows[r].append(i)
            room[r] -= lengths[i]
        return rows

    def __call__(self, dialogues: list[Dialogue]) -> dict:
        items = [self.tokenize(d) for d in dialogues]
        lengths = [len(it["ids"]) for it in items]
        limit = getattr(self.pipe.backbone.config, "max_position_embeddings", None)
        if limit is not None and max(lengths) > limit:
            raise ValueError(f"A training dialogue is {max(lengths)} positions long; the backbone reads at most {limit}")
        rows = self.pack(lengths)
        R, L = len(rows), max(sum(lengths[i] for i in row) for row in rows)
        ids = torch.full((R, L), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros(R, L, dtype=torch.long)
        pos = torch.zeros(R, L, dtype=torch.long)
        amask = torch.zeros(R, L, dtype=torch.bool)
        media: dict[str, list] = {m: [] for m in MODALITIES}
        groups: dict[str, list] = {m: [] for m in MODALITIES}
        for r, row in enumerate(rows):
            off = 0
            for i in row:
                it, n = items[i], lengths[i]
                ids[r, off : off + n] = torch.tensor(it["ids"])
                attn[r, off : off + n] = 1
                pos[r, off : off + n] = torch.arange(n)  # restarts per dialogue: the backbone masks across them
                amask[r, off : off + n] = torch.tensor(it["mask"], dtype=torch.bool)
                for start, width, x in it["media"]:
                    media[x.modality].append((r, off + start, width, x))
                for start, m, x in it["groups"]:
                    groups[m].append((r, off + start, x))
                off += n
            pos[r, off:] = torch.arange(L - off) + (pos[r, off - 1] + 1)  # padding continues the last dialogue
        signal = amask & torch.isin(ids, torch.tensor(sorted(self.signal_ids)))
        batch = dict(input_ids=ids, assistant_mask=amask, signal_mask=signal, media={}, groups={})
        if self.pack_length:
            batch["position_ids"] = pos
        else:
            batch["attention_mask"] = attn
        for m, entries in media.items():
            if not entries:
                continue
            tokens = torch.stack(self.media_tokens([x for *_, x in entries]))  # (n, T, P, C)
            rows_ = torch.tensor([r for r, _, w, _ in entries for _ in range(w)])
            cols = torch.tensor([s + j for _, s, w, _ in entries for j in range(w)])
            batch["media"][m] = dict(tokens=tokens, rows=rows_, cols=cols)  # rows/cols: (n × N,) in medium order
        for m, entries in groups.items():
            if not entries:
                continue
            k = self.k[m]
            rows_ = torch.tensor([[r] * k for r, _, _ in entries])  # (n, K)
            cols = torch.tensor([[s + j for j in range(k)] for _, s, _ in entries])
            target = torch.stack(self.caption_targets(m, [x.caption() for *_, x in entries]))  # (n, Lc, Dc)
            batch["groups"][m] = dict(rows=rows_, cols=cols, target=target)
        return _to(batch, self.device)


def word_token_ids(tokenizer, words) -> list[int]:
    """The token ids that spell ``words`` as "word", " word", "Word" or " Word" ("(orange)" has no space before
    the word), but not single characters: every rare word is spelled with those."""
    ids = set()
    for w in words:
        for form in (w, " " + w, w.capitalize(), " " + w.capitalize()):
            pieces = tokenizer(form, add_special_tokens=False)["input_ids"]
            ids.update(i for i in pieces if len(tokenizer.convert_ids_to_tokens(i)) > 1)
    return sorted(ids)


def noise_user_tokens(batch: dict, tokenizer, p: float, generator: torch.Generator, keep_ids=()) -> dict:
    """Replace each ordinary token outside the assistant's replies with a random ordinary token, with probability ``p``.

    Requests are worded with templates, and those of validation and evaluation are held out of training; a
    backbone trained from scratch then keys its routing on exact template words ("What's depicted in this
    photo?" was answered as an edit). Noising the requests' words, never the special, placeholder or signal
    tokens and never the replies (the LM targets), makes it read the whole request. Tokens in ``keep_ids`` are
    never noised either: with the attribute words kept (:func:`word_token_ids` of
    :func:`~anygen.world.text.attribute_words`), a request still names what the reply's caption must say, and
    only the frame around it is noised. In place; returns ``batch``.
    """
    if p <= 0:
        return batch
    ids = batch["input_ids"]
    special = set(tokenizer.all_special_ids)
    keep = torch.ones(len(tokenizer), dtype=torch.bool, device=ids.device)
    keep[sorted(special)] = False
    ordinary = keep.nonzero().squeeze(1)  # vectorised: a full-scale vocabulary has 10^5 ids
    never = torch.tensor(sorted(special | set(keep_ids)), device=ids.device)  # never noised: special and kept ids
    pick = (torch.rand(ids.shape, generator=generator) < p).to(ids.device)
    pick &= ~batch["assistant_mask"] & ~torch.isin(ids, never)
    if "attention_mask" in batch:
        pick &= batch["attention_mask"].bool()
    repl = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator).to(ids.device)]
    batch["input_ids"] = torch.where(pick, repl, ids)
    return batch


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def unknown_words(dialogues: list[Dialogue], p: float, generator: torch.Generator) -> list[Dialogue]:
    """Copies of ``dialogues`` whose user turns have each word replaced, with probability ``p``, by a made-up one.

    The evaluation's phrasings are held out of training, and some of their words never occur in a training
    request ("What's depicted in this photo?", "explain this painting", "a square painted pink"): the tokenizer
    spells them out in single characters and short pieces, a run of tokens the backbone never saw, and a
    backbone trained from scratch longer than the recipe's instruct stage answered them at random ("What's
    depicted in this photo?" with the shape "at the center", "Explain this painting" as an edit; README). A
    random lower-case word of 4-9 letters is spelled the same way, so training requests carry such runs too,
    with the reply unchanged. Placeholders (``<image>``...) and replies are never touched; ``p = 0`` returns
    ``dialogues`` as they are.
    """
    if p <= 0:
        return dialogues
    letters = string.ascii_lowercase

    def noise(text: str) -> str:
        def one(m: re.Match) -> str:
            if m.start() > 0 and text[m.start() - 1] == "<":  # a placeholder
                return m.group(0)
            if torch.rand((), generator=generator).item() >= p:
                return m.group(0)
            n = int(torch.randint(4, 10, (), generator=generator))
            return "".join(letters[i] for i in torch.randint(len(letters), (n,), generator=generator).tolist())

        return _WORD.sub(one, text)

    return [
        dataclasses.replace(d, messages=[
            dataclasses.replace(m, content=noise(m.content)) if m.role == "user" else m for m in d.messages
        ])
        for d in dialogues
    ]


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- the trained system


class SystemLoss(nn.Module):
    r"""The trained parts of an AnyGenPipeline behind one forward that returns a batch's losses.

    One module, so accelerate prepares, checkpoints and (under DDP) synchronises them together. The forward is
    the pipeline's inference path with teacher forcing: input projectors → embeddings spliced at the widened
    placeholders → one backbone pass → LM logits and, at each signal group, the output projector.

    Args:
        backbone: the causal LM (possibly peft-wrapped).
        input_projectors: ``{modality: InputProjector}``.
        output_projectors: ``{modality: OutputProjector}``.
        lm_tokens: ``"assistant"`` or ``"signal"``: which tokens the LM loss reads.

    Returns (forward):
        ``dict(lm, mse, token_acc, n_tokens, n_groups)``: ``lm`` the mean cross-entropy over the chosen tokens,
        ``mse`` the mean over signal groups of each group's mean squared error to its caption conditioning,
        ``token_acc`` greedy next-token accuracy over every assistant token.
    """

    def __init__(self, backbone, input_projectors: dict, output_projectors: dict, lm_tokens: str = "assistant"):
        super().__init__()
        self.backbone = backbone
        self.input_projectors = nn.ModuleDict(input_projectors)
        self.output_projectors = nn.ModuleDict(output_projectors)
        self.lm_tokens = lm_tokens

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        embeds = self.backbone.get_input_embeddings()(ids)  # (batch, L, hidden)
        for m, media in batch["media"].items():
            e = self.input_projectors[m](media["tokens"])  # (n, N, hidden)
            embeds = embeds.index_put((media["rows"], media["cols"]), e.reshape(-1, e.shape[-1]).to(embeds.dtype))
        # Packed rows: no attention mask, position ids restarting per dialogue (transformers' packed-sequence
        # format); no KV cache, which would also switch that detection off.
        out = self.backbone(
            inputs_embeds=embeds, attention_mask=batch.get("attention_mask"), position_ids=batch.get("position_ids"),
            output_hidden_states=True, use_cache=False,
        )
        logits, targets = out.logits[:, :-1].float(), ids[:, 1:]  # position t predicts token t + 1
        lm_mask = batch["signal_mask" if self.lm_tokens == "signal" else "assistant_mask"][:, 1:]
        acc_mask = batch["assistant_mask"][:, 1:]
        # An empty selection sums to 0 and keeps the graph: a batch with nothing to score still backpropagates.
        lm = F.cross_entropy(logits[lm_mask], targets[lm_mask]) if lm_mask.any() else logits[lm_mask].sum()
        hits = (logits.argmax(-1)[acc_mask] == targets[acc_mask]).float()
        token_acc = hits.mean() if acc_mask.any() else hits.sum()
        # The pipeline reads the same states: the last entry of `hidden_states` of one pass over prompt + reply.
        hidden = out.hidden_states[-1]
        errors = []
        for m, g in batch["groups"].items():
            pred = self.output_projectors[m](hidden[g["rows"], g["cols"]])  # (n, K, hidden) → (n, Lc, Dc)
            errors.append((pred.float() - g["target"].float()).pow(2).mean(dim=(1, 2)))
        mse = torch.cat(errors).mean() if errors else hidden[:0].sum()
        n_groups = sum(len(g["rows"]) for g in batch["groups"].values())
        return dict(lm=lm, mse=mse, token_acc=token_acc, n_tokens=acc_mask.sum(), n_groups=torch.tensor(n_groups))


def build_system(pipe, cfg: dict, mode: str) -> SystemLoss:
    """Freeze what the stage does not train, wrap the backbone in LoRA if asked, and return the module to train."""
    backbone = pipe.backbone
    if mode == "lora":
        backbone = apply_lora(backbone, pipe.tokenizer, cfg)
    else:
        backbone.requires_grad_(mode == "full")
    ins = {m: pipe.input_projector(m) for m in pipe.input_modalities}
    outs = {m: pipe.output_projector(m) for m in pipe.output_modalities}
    for part, mods in (("input_projectors", ins), ("output_projectors", outs)):
        for p in mods.values():
            p.requires_grad_(part in cfg["train"])
    for p in outs.values():
        p.null_embedding.requires_grad_(False)  # stays the generator's own unconditional input (assembly sets it)
    return SystemLoss(backbone, ins, outs, cfg["lm_tokens"])


def apply_lora(backbone, tokenizer, cfg: dict):
    """peft LoRA on ``backbone`` plus trainable embedding rows for AnyGen's added tokens (placeholders, signals)."""
    from peft import LoraConfig, get_peft_model

    from ..models.tokenizer import PLACEHOLDERS, signal_groups

    vocab = tokenizer.get_vocab()
    new_ids = [vocab[p] for p in PLACEHOLDERS.values() if p in vocab]
    new_ids = sorted(new_ids + [i for g in signal_groups(tokenizer).values() for i in g])
    config = LoraConfig(
        r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
        target_modules=cfg["lora_target_modules"], trainable_token_indices=new_ids, task_type="CAUSAL_LM",
    )
    return get_peft_model(backbone, config)


def merged_backbone(system: SystemLoss):
    """The plain causal LM of a trained system (LoRA adapters merged into the weights)."""
    from peft import PeftModel

    b = system.backbone
    return b.merge_and_unload() if isinstance(b, PeftModel) else b


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def greedy_reply(pipe, dialogue: Dialogue, max_new_tokens: int = 64) -> tuple[str, list[str]]:
    """The backbone's greedy reply to a dialogue's first user turn: (text with markers, output modalities)."""
    first = dialogue.messages[0]
    media = {m: [medium_for_pipeline(x) for x in first.media if x.modality == m] for m in MODALITIES}
    ids = pipe._prompt_ids([{"role": "user", "content": first.content}])
    input_ids, embeds = pipe.splice(ids, pipe.encode_media(media))
    reply = pipe.generate_reply(input_ids, embeds, max_new_tokens)
    groups = pipe._groups_in(reply)
    return pipe._reply_text(reply, groups), [m for m, _ in groups]


def reply_is_right(dialogue: Dialogue, text: str) -> bool:
    """Whether a reply to the first turn says what it should: every output's "<caption>. [marker]" in order, an
    attached medium's every attribute (none contradicted), or a chat answer word for word."""
    from ..eval.metrics import reply_names_medium

    expected = dialogue.messages[1]
    if expected.media:
        pos = 0
        for x in expected.media:
            pos = text.find(output_segment(x), pos)
            if pos < 0:
                return False
        return True
    if dialogue.messages[0].media and dialogue.task in ("i2t", "v2t", "a2t"):
        return reply_names_medium(text, dialogue.messages[0].media[0])
    return text == expected.content


def evaluate_batches(system: SystemLoss, batches: list[dict]) -> dict:
    """Teacher-forced figures over prepared batches: LM loss, MSE and token accuracy, weighted by tokens/groups."""
    tot = dict(lm=0.0, acc=0.0, tokens=0, mse=0.0, groups=0)
    for batch in batches:
        out = system(batch)
        n, g = int(out["n_tokens"]), int(out["n_groups"])
        tot["lm"] += out["lm"].item() * n
        tot["acc"] += out["token_acc"].item() * n
        tot["mse"] += out["mse"].item() * g
        tot["tokens"] += n
        tot["groups"] += g
    res = {"val_lm": tot["lm"] / max(tot["tokens"], 1), "val_token_acc": tot["acc"] / max(tot["tokens"], 1)}
    if tot["groups"]:
        res["val_mse"] = tot["mse"] / tot["groups"]
    return {k: round(v, 5) for k, v in res.items()}


# ----------------------------------------------------------------------------- a stage


def _stage_dir(recipe: Recipe, stage: str) -> Path:
    return recipe.run_dir / stage


def initial_pipeline(recipe: Recipe, stage: str, resume: bool = True):
    """Stage 1: the recipe's fresh system; later stages: the previous stage's export.

    Stage 1 keeps the tokenizer it trained in ``run_dir/align-in/tokenizer``: a resumed run reads its
    checkpoint's token ids with that very tokenizer instead of training another.
    """
    from transformers import PreTrainedTokenizerFast

    from ..pipelines.pipeline_anygen import AnyGenPipeline
    from .loop import latest_checkpoint

    if stage == "align-in":
        saved = _stage_dir(recipe, stage) / "tokenizer"
        if resume and saved.exists() and latest_checkpoint(_stage_dir(recipe, stage)) is not None:
            return AnyGenPipeline.from_recipe(recipe, tokenizer=PreTrainedTokenizerFast.from_pretrained(saved))
        pipe = AnyGenPipeline.from_recipe(recipe)
        pipe.tokenizer.save_pretrained(saved)
        return pipe
    prev = _stage_dir(recipe, PREVIOUS[stage]) / "final"
    if not (prev / "model_index.json").exists():
        raise AnyGenInputError(
            f"Stage `{PREVIOUS[stage]}` has not finished ({prev} missing): run `--stage {PREVIOUS[stage]}` first"
        )
    # Stages 1-3 never train the generators: take them from the recipe (stage 0's outputs), so that projectors
    # aligned after a generator was trained further target that generator's conditioning, not a stale copy.
    # Passed as component overrides, the previous stage's copies are never loaded.
    return AnyGenPipeline.from_pretrained(prev, **{f"{m}_generator": g for m, g in build_generators(recipe).items()})


def dialogue_stream(recipe: Recipe, stage: str, cfg: dict, steps: int):
    """``batch_dialogues(step)``: the dialogues of one step, a pure function of (recipe seed, stage, step)."""
    bs = cfg["batch_size"]
    weights = cfg["task_weights"] or DEFAULT_TASK_WEIGHTS
    pool = cfg["dialogues"] or steps * bs
    ds = DialogueDataset("train", size=pool, seed=recipe.seed + _SALT[stage], tasks=cfg["tasks"], task_weights=weights,
                         two_object_prob=cfg["two_object_prob"], relative_edit_prob=cfg["relative_edit_prob"],
                         multiturn_audio_prob=cfg["multiturn_audio_prob"])
    perms: dict[int, torch.Tensor] = {}

    def index(e: int) -> int:
        if not cfg["dialogues"]:
            return e
        epoch = e // pool
        if epoch not in perms:
            perms.clear()
            perms[epoch] = torch.randperm(pool, generator=torch.Generator().manual_seed(recipe.seed * 7919 + epoch))
        return int(perms[epoch][e % pool])

    return lambda step: [ds[index(step * bs + j)] for j in range(bs)]


def make_optimizer(system: SystemLoss, cfg: dict, steps: int):
    """AdamW over the trainable parameters (backbone and projectors may have their own LR), warm-up + cosine."""
    from diffusers.optimization import get_scheduler

    backbone = [p for p in system.backbone.parameters() if p.requires_grad]
    projectors = [p for n, p in system.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    groups = [g for g in (
        {"params": backbone, "lr": cfg["backbone_lr"] or cfg["lr"]},
        {"params": projectors, "lr": cfg["lr"]},
    ) if g["params"]]
    if not groups:
        raise AnyGenInputError("Nothing to train: the stage freezes the backbone and every projector")
    opt = torch.optim.AdamW(groups, weight_decay=cfg["weight_decay"])
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=cfg["warmup"], num_training_steps=steps)
    return opt, sched


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_dtype(recipe: Recipe) -> torch.dtype:
    """The ``[export] dtype`` the LLM side is stored in under ``output_dir`` (default ``"float32"``)."""
    cfg = take(recipe.sections.get("export", {}), {"dtype": "float32"}, "export")
    if cfg["dtype"] not in STORAGE_DTYPES:
        raise AnyGenInputError(f"[export] dtype must be one of {list(STORAGE_DTYPES)}, got {cfg['dtype']!r}")
    return STORAGE_DTYPES[cfg["dtype"]]


def store_as(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite the floating-point tensors of every ``*.safetensors`` file in ``folder`` in ``dtype``.

    The files' metadata is kept, and so is each config: its ``dtype`` (``torch_dtype``) still names the one the
    model computes in, so ``from_pretrained`` upcasts the stored tensors on load.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as handle:  # one read: the tensors and the metadata
            metadata = handle.metadata()
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, f, metadata=metadata)


def export_pipeline(
    pipe, dest: Path, keep_generators_from: dict[str, Path] | None = None, dtype: torch.dtype = torch.float32
) -> None:
    """``pipe.save_pretrained`` into ``dest`` without ever leaving it half-written.

    Everything is saved to a temporary sibling first and moved in entry by entry, ``model_index.json`` last.
    A generator folder already in ``dest`` that the pipeline's generator was loaded from is left untouched
    (stages 1–3 never change the generators). With a ``dtype`` other than float32, the LLM side (backbone and
    projectors, every component but the generators) is stored in it: half the bytes, loaded back as float32.
    """
    dest = Path(dest)
    tmp = dest.parent / f".tmp_{dest.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp)
    if dtype != torch.float32:
        for folder in tmp.iterdir():
            if folder.is_dir() and not folder.name.endswith("_generator"):
                store_as(folder, dtype)
    dest.mkdir(parents=True, exist_ok=True)
    keep = {
        f"{m}_generator" for m, src in (keep_generators_from or {}).items()
        if src is not None and Path(src).resolve() == (dest / f"{m}_generator").resolve()
    }
    for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "model_index.json"):
        target = dest / entry.name
        if entry.name in keep and target.exists():
            continue
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.rename(target)
    shutil.rmtree(tmp)


def _generator_sources(recipe: Recipe) -> dict[str, Path | None]:
    root = recipe.path.resolve().parent.parent if recipe.path else Path.cwd()
    out = {}
    for m in MODALITIES:
        c = recipe.sections.get("components", {}).get(f"{m}_generator", {})
        out[m] = root / c["path"] if c.get("type", "diffusers") == "diffusers" and "path" in c else None
    return out


def _steps(cfg: dict, max_steps: int | None) -> int:
    return min(cfg["steps"], max_steps) if max_steps else cfg["steps"]


def train_stage(recipe: Recipe, stage: str, resume: bool = True, max_steps: int | None = None) -> dict:
    """Run one of ``align-in``, ``align-out``, ``instruct``; export the system; return the stage's figures.

    Args:
        recipe: the loaded recipe (its ``[train.<stage>]`` table, see :data:`STAGE_DEFAULTS`).
        stage: the stage name.
        resume: continue from the newest checkpoint in ``run_dir/<stage>``.
        max_steps: cap the stage's steps (smoke runs and tests).

    Returns:
        Figures: steps, seconds, the final validation (``val_*``) and, with ``judge_samples``, judged accuracies.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    if stage not in STAGE_SECTIONS:
        raise AnyGenInputError(f"Unknown backbone stage {stage!r}; expected one of {list(STAGE_SECTIONS)}")
    # One progress bar, the stage's: none per loaded or saved component.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        return _train_stage(recipe, stage, resume, max_steps)
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def _train_stage(recipe: Recipe, stage: str, resume: bool, max_steps: int | None) -> dict:
    from accelerate.utils import DistributedDataParallelKwargs

    t_start = time.time()
    cfg = stage_config(recipe, stage)
    storage_dtype = export_dtype(recipe)  # checked now, not after the training
    steps = _steps(cfg, max_steps)
    # A batch may hold no video (say): its projector is then unused, which DDP must be told to expect.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = make_accelerator(recipe.seed + _SALT[stage], kwargs_handlers=[ddp])
    pipe = initial_pipeline(recipe, stage, resume)
    pipe.set_progress_bar_config(disable=True)
    if recipe_kernels(recipe) is not None and not kernels_applied(pipe.backbone):
        pipe.enable_kernels()  # RMSNorm and SwiGLU have backward passes: the backbone trains through them
    mode = backbone_mode(recipe, stage, cfg)
    system = build_system(pipe, cfg, mode)
    opt, sched = make_optimizer(system, cfg, steps)
    system, opt, sched = accelerator.prepare(system, opt, sched)
    batcher = DialogueBatcher(pipe, accelerator.device, cfg["media_cache"], cfg["pack_length"])
    dialogues = dialogue_stream(recipe, stage, cfg, steps)
    keep_ids = noise_keep_ids(pipe.tokenizer, cfg["user_token_noise_keep"])

    def loss_fn(step):
        # Each process takes its share of the step's dialogues (all of them on a single process).
        noise = torch.Generator().manual_seed((recipe.seed * 1_000_003 + step) * 31 + _SALT[stage])
        mine = dialogues(step)[accelerator.process_index :: accelerator.num_processes]
        batch = batcher(unknown_words(mine, cfg["unknown_word_noise"], noise))
        out = system(noise_user_tokens(batch, pipe.tokenizer, cfg["user_token_noise"], noise, keep_ids))
        loss = cfg["lm_weight"] * out["lm"] + cfg["mse_weight"] * out["mse"]
        logs = {"lm": round(out["lm"].item(), 5), "mse": round(out["mse"].item(), 5), "acc": round(out["token_acc"].item(), 4)}
        return loss, logs

    val = DialogueDataset("val", size=cfg["validate_samples"], seed=recipe.seed + 100 + _SALT[stage], tasks=cfg["tasks"],
                          task_weights=cfg["task_weights"] or DEFAULT_TASK_WEIGHTS)
    with fully_specified_requests():  # an attribute the request leaves unsaid has no right reply to check
        val_dialogues = [val[i] for i in range(len(val))]
    last: dict = {}

    @torch.no_grad()
    def validate(step):
        model = accelerator.unwrap_model(system)
        bs = cfg["batch_size"]
        figures = evaluate_batches(model, [batcher(val_dialogues[i : i + bs]) for i in range(0, len(val_dialogues), bs)])
        routing, right = [], []
        for d in val_dialogues:
            text, mods = greedy_reply(pipe, d, cfg["max_new_tokens"])
            routing.append(sorted(mods) == sorted(x.modality for x in d.messages[1].media))
            right.append(reply_is_right(d, text))
        figures.update(val_routing=round(float(np.mean(routing)), 4), val_reply=round(float(np.mean(right)), 4))
        last.clear()
        last.update(step=step, figures=figures)
        return figures

    state = train(
        name=stage, accelerator=accelerator, models=[system], optimizer=opt, scheduler=sched, loss_fn=loss_fn,
        steps=steps, ckpt_dir=_stage_dir(recipe, stage), checkpoint_every=cfg["checkpoint_every"], validate=validate,
        validate_every=cfg["validate_every"], resume=resume,
    )
    model = accelerator.unwrap_model(system).eval()
    if last.get("step") != steps:
        validate(steps)
    figures = {"stage": stage, "backbone": mode, "steps": state.step, "train_seconds": round(state.seconds, 1)}
    figures.update(last["figures"])
    pipe.register_modules(backbone=merged_backbone(model).eval())
    if cfg["judge_samples"]:
        from ..eval.evaluation import evaluate

        judged = evaluate(pipe, split="val", n=cfg["judge_samples"], seed=recipe.seed, tasks=cfg["judge_tasks"],
                          num_inference_steps=cfg["num_inference_steps"], guidance_scale=cfg["guidance_scale"], progress=False)
        figures.update({f"judged_{k}": v for k, v in judged["metrics"].items() if v is not None})
    if accelerator.is_main_process:
        export_pipeline(pipe, _stage_dir(recipe, stage) / "final")
        # The next stage starts from `final` in float32; only `output_dir` takes the recipe's storage dtype.
        export_pipeline(pipe, recipe.output_dir, keep_generators_from=_generator_sources(recipe), dtype=storage_dtype)
        figures["wall_seconds_this_run"] = round(time.time() - t_start, 1)
        with (_stage_dir(recipe, stage) / "report.jsonl").open("a") as f:
            f.write(json.dumps(figures) + "\n")
    accelerator.print(f"[{stage}] {json.dumps(figures)}")
    return figures
