"""The LLM backbone: a small ``LlamaForCausalLM`` trained from scratch, or any ``AutoModelForCausalLM``.

One builder switches on ``type`` (the ``[backbone]`` table of a recipe):

* ``"llama"``: a randomly initialised ``LlamaForCausalLM`` sized by the recipe, its vocabulary the tokenizer's;
* ``"pretrained"``: ``AutoModelForCausalLM.from_pretrained(name_or_path)`` with its embeddings resized to the
  tokenizer after :func:`~anygen.models.tokenizer.add_signal_tokens`.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

LLAMA_DEFAULTS = dict(
    hidden_size=256,
    num_layers=4,
    num_heads=4,
    num_kv_heads=None,
    intermediate_size=688,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


def build_llama(tokenizer: PreTrainedTokenizerBase, **cfg) -> LlamaForCausalLM:
    """A randomly initialised ``LlamaForCausalLM`` over ``tokenizer``'s vocabulary.

    Args:
        tokenizer: supplies ``vocab_size`` (``len(tokenizer)``) and the bos/eos/pad ids.
        **cfg: any key of :data:`LLAMA_DEFAULTS` (``hidden_size``, ``num_layers``, ``num_heads``,
            ``num_kv_heads``, ``intermediate_size``, ``max_position_embeddings``, ``rms_norm_eps``,
            ``rope_theta``, ``tie_word_embeddings``).

    Returns:
        The model in eval mode (``torch.manual_seed`` before the call fixes its weights).

    Example:
        ```py
        >>> model = build_llama(tokenizer, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688)
        >>> model.config.hidden_size
        256
        ```
    """
    unknown = sorted(set(cfg) - set(LLAMA_DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown backbone keys {unknown}; known: {sorted(LLAMA_DEFAULTS)}")
    c = {**LLAMA_DEFAULTS, **cfg}
    if c["hidden_size"] % c["num_heads"]:
        raise ValueError(f"`hidden_size` ({c['hidden_size']}) must be divisible by `num_heads` ({c['num_heads']})")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_layers"],
        num_attention_heads=c["num_heads"],
        num_key_value_heads=c["num_kv_heads"] or c["num_heads"],
        max_position_embeddings=c["max_position_embeddings"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_theta=c["rope_theta"],
        tie_word_embeddings=c["tie_word_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def build_backbone(tokenizer: PreTrainedTokenizerBase, type: str = "llama", **cfg) -> PreTrainedModel:
    """Build the backbone named by a recipe's ``[backbone]`` table.

    Args:
        tokenizer: the backbone's tokenizer, signal tokens and placeholders already added.
        type: ``"llama"`` (from scratch, sized by ``cfg``) or ``"pretrained"`` (``cfg["name_or_path"]``
            loaded with ``AutoModelForCausalLM``; optional ``torch_dtype`` as a string, e.g. ``"bfloat16"``).
        **cfg: the rest of the table.

    Returns:
        A transformers causal LM whose input embeddings cover ``len(tokenizer)``.
    """
    if type == "llama":
        return build_llama(tokenizer, **cfg)
    if type == "pretrained":
        cfg = dict(cfg)
        name = cfg.pop("name_or_path", None)
        if not name:
            raise ValueError("[backbone] type = 'pretrained' needs `name_or_path` (a hub id or a local folder)")
        dtype = cfg.pop("torch_dtype", None)
        if dtype is not None:
            cfg["dtype"] = getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(name, **cfg)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        return model.eval()
    raise ValueError(f"Unknown backbone type: {type!r}; expected 'llama' or 'pretrained'")
