"""The backbone's tokenizer: byte-level BPE over the Shapes World, a chat template, placeholders and signal tokens.

Trained with ``tokenizers`` on the text of :func:`anygen.world.make_dialogue` (every task, ``train`` split
only, so held-out phrasings stay unseen) and returned as a transformers ``PreTrainedTokenizerFast``.

Special tokens:

* ``<s>`` (bos), ``<pad>``, ``<|end|>`` (eos: ends every turn, so generation stops after the reply), and the
  role headers ``<|system|>``, ``<|user|>``, ``<|assistant|>``;
* media placeholders ``<image>``, ``<video>``, ``<audio>`` (one per attached medium in a user turn; the
  pipeline replaces each by the input projector's embeddings);
* one signal-token group per output modality, ``[IMG0]..[IMG{K-1}]``, ``[VID0]..``, ``[AUD0]..``.

The dialogue data marks a generated medium with one ``[IMG]``/``[VID]``/``[AUD]`` after its caption; the chat
template (and :func:`expand_signal_markers`, for tokenizers with a template of their own) expands each marker
into the full group, so training and inference read the same tokens.

Why K = 4 for ``anygen-tiny``: the output projector's learnable queries read the group's K hidden states, so K
is the width of the bottleneck between the LLM and a generator. A Shapes World caption carries at most ~25
bits (two objects × size, colour, shape, position, plus background); one 256-d hidden state could hold that,
but K > 1 gives the queries separate slots (e.g. per object, background) and lets later group tokens attend to
earlier ones, which NExT-GPT and GILL found helps the projection. Each extra token costs one decode step per
output (≈1 ms on the tiny backbone) and K positions in every training sequence; 4 is the knee: it keeps a
two-output reply under 20 % longer than its text while giving the queries 4× the slots of K = 1.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

MODALITIES: tuple[str, ...] = ("image", "video", "audio")
PLACEHOLDERS: dict[str, str] = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
MARKERS: dict[str, str] = {"image": "[IMG]", "video": "[VID]", "audio": "[AUD]"}
SIGNAL_PREFIX: dict[str, str] = {"image": "IMG", "video": "VID", "audio": "AUD"}
BOS, EOS, PAD = "<s>", "<|end|>", "<pad>"
ROLE_TOKENS: dict[str, str] = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}


def signal_token_names(modality: str, k: int) -> list[str]:
    """``["[IMG0]", ..., "[IMG{k-1}]"]`` for ``modality``."""
    if modality not in SIGNAL_PREFIX:
        raise ValueError(f"`modality` must be one of {MODALITIES}, got {modality!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"The number of signal tokens for {modality} must be a positive int, got {k!r}")
    return [f"[{SIGNAL_PREFIX[modality]}{i}]" for i in range(k)]


def signal_groups(tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """The signal-token ids of each output modality present in ``tokenizer``, in group order.

    Read from the vocabulary (``[IMG0]``, ``[IMG1]``, ...), so a saved tokenizer carries its own K.
    """
    vocab = tokenizer.get_vocab()
    groups = {}
    for m in MODALITIES:
        ids, i = [], 0
        while f"[{SIGNAL_PREFIX[m]}{i}]" in vocab:
            ids.append(vocab[f"[{SIGNAL_PREFIX[m]}{i}]"])
            i += 1
        if ids:
            groups[m] = ids
    return groups


def expand_signal_markers(text: str, k: dict[str, int]) -> str:
    """Replace each ``[IMG]``/``[VID]``/``[AUD]`` marker by its full signal group (idempotent).

    Example:
        ```py
        >>> expand_signal_markers("Here is a red circle. [IMG]", {"image": 2})
        'Here is a red circle. [IMG0][IMG1]'
        ```
    """
    for m, n in k.items():
        text = text.replace(MARKERS[m], "".join(signal_token_names(m, n)))
    return text


def collapse_signal_groups(text: str, k: dict[str, int]) -> str:
    """Inverse of :func:`expand_signal_markers`: each complete group becomes its marker again."""
    for m, n in k.items():
        text = text.replace("".join(signal_token_names(m, n)), MARKERS[m])
    return text


def space_brackets(text: str) -> str:
    """``text`` with one space after every ``(``, as the chat template writes user and system turns.

    Byte-level BPE learns a word twice: with its leading space ("Ġbig") and, only if the corpus has it, without.
    The world's requests put a colour in brackets ("a circle (yellow)") but never a size, so "(big)" in a request
    fell apart into "(", "b", "ig", ")" and was read as any size (t2i misses on val, see the README). With the
    space every bracketed word is the token it is everywhere else. Replies are left as they are, so decoded
    output is unchanged.
    """
    return text.replace("( ", "(").replace("(", "( ")


def world_corpus(dialogues_per_task: int = 400, seed: int = 0) -> Iterator[str]:
    """Every message of ``dialogues_per_task`` train-split dialogues of every task, placeholders and markers removed
    (user turns with :func:`space_brackets`, as the chat template feeds them)."""
    from ..world import TASKS, make_dialogue

    strip = re.compile("|".join(re.escape(t) for t in [*PLACEHOLDERS.values(), *MARKERS.values()]))
    rng = random.Random(seed)
    for task in TASKS:
        for _ in range(dialogues_per_task):
            for msg in make_dialogue(task, rng, "train").messages:
                text = strip.sub("", msg.content)
                yield text if msg.role == "assistant" else space_brackets(text)


def chat_template(k: dict[str, int]) -> str:
    """The Jinja chat template: role headers, ``<|end|>`` after every turn, markers expanded to groups, and user
    and system turns through :func:`space_brackets`.

    The assistant content sits in ``{% generation %}`` so ``return_assistant_tokens_mask=True`` marks the
    tokens a training loss should read.
    """
    expand = "".join(f"|replace('{MARKERS[m]}', '{''.join(signal_token_names(m, n))}')" for m, n in k.items())
    return (
        "{{- bos_token -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
        "{{- raise_exception('Chat roles must be system, user or assistant, got ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{- '<|assistant|>\\n' -}}{%- generation -%}{{- message['content']" + expand + " + eos_token -}}"
        "{%- endgeneration -%}{{- '\\n' -}}"
        "{%- else -%}"
        "{{- '<|' + message['role'] + '|>\\n' + message['content']|replace('( ', '(')|replace('(', '( ') + eos_token"
        " + '\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
    )


def special_tokens(k: dict[str, int]) -> list[str]:
    """Every special token, in id order after the BPE merges' base: control, roles, placeholders, signals."""
    toks = [PAD, BOS, EOS, *ROLE_TOKENS.values(), *PLACEHOLDERS.values()]
    for m, n in k.items():
        toks += signal_token_names(m, n)
    return toks


def build_tokenizer(
    signal_tokens: dict[str, int] | None = None,
    vocab_size: int = 1024,
    dialogues_per_task: int = 400,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer of the backbone.

    Byte-level, so any user text encodes (no ``<unk>``; phrasings unseen in training still round-trip) and
    case is kept ("Draw" and "draw" both occur).

    Args:
        signal_tokens: K per output modality, e.g. ``{"image": 4, "video": 4, "audio": 4}`` (the default).
        vocab_size: BPE vocabulary size, special tokens included. The world's text has ~700 distinct words;
            1024 makes nearly every one a single token.
        dialogues_per_task: train-split dialogues per task in the corpus.
        seed: seed of the dialogue sampler.
        corpus: train on these strings instead of :func:`world_corpus`.
        model_max_length: longest sequence the backbone is meant to see.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``chat_template`` set; ``save_pretrained`` writes ``tokenizer.json``.

    Example:
        ```py
        >>> tok = build_tokenizer({"image": 4, "video": 4, "audio": 4}, dialogues_per_task=50)
        >>> msgs = [{"role": "user", "content": "draw a red circle"},
        ...         {"role": "assistant", "content": "Here is a large red circle at the center on a black background. [IMG]"}]
        >>> tok.apply_chat_template(msgs, tokenize=False).endswith("[IMG0][IMG1][IMG2][IMG3]<|end|>\\n")
        True
        ```
    """
    k = dict(signal_tokens or {m: 4 for m in MODALITIES})
    for m, n in k.items():
        signal_token_names(m, n)  # validates
    specials = special_tokens(k)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else world_corpus(dialogues_per_task, seed), trainer=trainer)
    # Mark them special so decode(skip_special_tokens=True) drops them and the pre-tokenizer never splits them.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
        additional_special_tokens=[t for t in specials if t not in (BOS, EOS, PAD)],
    )
    fast.chat_template = chat_template(k)
    return fast


def add_signal_tokens(tokenizer: PreTrainedTokenizerBase, signal_tokens: dict[str, int]) -> PreTrainedTokenizerBase:
    """Add placeholders and signal groups to a pretrained tokenizer (full scale), in place.

    Its own chat template is kept; the pipeline expands markers with :func:`expand_signal_markers` before
    applying it. A tokenizer without a template gets ours. Call ``model.resize_token_embeddings(len(tokenizer))``
    afterwards.

    Returns:
        ``tokenizer``.
    """
    new = [*PLACEHOLDERS.values()]
    for m, n in signal_tokens.items():
        new += signal_token_names(m, n)
    tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template(signal_tokens)
    return tokenizer
