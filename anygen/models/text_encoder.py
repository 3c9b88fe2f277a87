"""The generators' caption encoder: a word-level tokenizer and a small CLIP text model.

The generators are conditioned on per-token embeddings ``[B, L, D]`` of a
caption. For ``anygen-tiny`` the tokenizer is a word-level
``PreTrainedTokenizerFast`` over the Shapes World vocabulary and the encoder a
small ``transformers.CLIPTextModel`` trained together with the UNets; at full
scale both are simply the checkpoint's own (CLIP for Stable Diffusion).
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from ..world import spec

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]


def world_vocabulary() -> list[str]:
    """Every word of every canonical caption of WORLD.md, in a stable order."""
    words = ["a", "at", "the", "and", "on", "background", "moving", "tone"]
    words += list(spec.SIZES) + list(spec.COLORS) + list(spec.SHAPES) + list(spec.POSITIONS)
    words += list(spec.BACKGROUNDS) + list(spec.MOTIONS) + list(spec.TIMBRES) + list(spec.PATTERNS)
    for pitch in spec.PITCHES:
        words += pitch.split()
    return list(dict.fromkeys(words))  # de-duplicate, keep order


def build_caption_tokenizer(max_length: int = 24) -> PreTrainedTokenizerFast:
    """Word-level tokenizer of the world's captions.

    Lower-cases, splits on whitespace, isolates punctuation (hyphenated words
    such as ``top-left`` stay one token) and wraps the ids in ``<s> … </s>``.

    Args:
        max_length: ``model_max_length``; pipelines pad every caption to it.

    Returns:
        A ``PreTrainedTokenizerFast`` that ``save_pretrained`` writes as ``tokenizer.json``.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + world_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^\w\-]"), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=max_length,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )


def build_caption_encoder(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2
) -> CLIPTextModel:
    """A small randomly initialised ``CLIPTextModel`` sized for ``tokenizer``."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=hidden_size,
    )
    return CLIPTextModel(config)
