"""Input and output projectors: learnable queries cross-attending to a memory (``nn.TransformerDecoder``).

* :class:`InputProjector` (a perceiver resampler, as in Flamingo/IDEFICS): N learnable queries read a
  medium's encoder tokens and become N embeddings of the backbone, spliced at the medium's placeholder.
* :class:`OutputProjector` (NExT-GPT / GILL): Lc learnable queries read the K hidden states of a signal
  group and become the generator's conditioning ``[Lc, Dc]``; a learned null embedding of the same shape is
  the unconditional branch of classifier-free guidance.

Both are diffusers ``ModelMixin, ConfigMixin`` with flat JSON-safe configs, so ``save_pretrained`` /
``from_pretrained`` write and read ``config.json`` + safetensors.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


def _decoder(hidden_size: int, num_layers: int, num_heads: int, dropout: float) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(
        d_model=hidden_size, nhead=num_heads, dim_feedforward=4 * hidden_size, dropout=dropout,
        activation="gelu", batch_first=True, norm_first=True,
    )
    return nn.TransformerDecoder(layer, num_layers=num_layers, norm=nn.LayerNorm(hidden_size))


class InputProjector(ModelMixin, ConfigMixin):
    r"""Perceiver resampler: a medium's encoder tokens → ``num_queries`` backbone embeddings.

    Why a resampler over the generators' VAE latents (the ``anygen-tiny`` design): the VAE encoders are
    already trained on exactly this world and kept frozen, so the input side needs no encoder of its own
    (no extra weights on disk, and what the model reads is the space its generators write). A latent grid has
    P = 64 positions (8×8) per image or second of audio and T × 64 per video; a fixed number of learnable
    queries (8) compresses any of them to the same short span of the LLM's context, keeps the sequence
    short (8 positions, not 512, for a video) and, unlike an MLP per position, can pool the whole grid, so a
    two-shape scene or a motion across frames reaches the backbone as a few summary vectors.

    Args:
        in_channels: channels of an encoder token (the VAE's ``latent_channels``).
        num_positions: tokens per frame (latent height × width).
        max_frames: frames per medium (1 for images and audio; video clips up to this many frames).
        hidden_size: width of the resampler.
        num_layers: decoder layers (self-attention among queries + cross-attention to the tokens + MLP).
        num_heads: attention heads.
        num_queries: embeddings per medium spliced into the backbone's input.
        out_dim: the backbone's hidden size.
        modality: ``"image"``, ``"video"`` or ``"audio"`` (recorded for loading and errors).
        encoder_type: which modality encoder produces the tokens (``"generator_vae"``).
        dropout: dropout in the decoder layers (training only).

    Example:
        ```py
        >>> proj = InputProjector(in_channels=8, num_positions=64, max_frames=8, out_dim=256, modality="video")
        >>> proj(torch.randn(2, 8, 64, 8)).shape   # (batch, frames, positions, channels)
        torch.Size([2, 8, 256])
        ```
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        num_positions: int = 64,
        max_frames: int = 1,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        num_queries: int = 8,
        out_dim: int = 256,
        modality: str = "image",
        encoder_type: str = "generator_vae",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_proj = nn.Linear(in_channels, hidden_size)
        self.pos_embedding = nn.Parameter(torch.randn(num_positions, hidden_size) * 0.02)
        self.frame_embedding = nn.Parameter(torch.randn(max_frames, hidden_size) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_size) * 0.02)
        self.decoder = _decoder(hidden_size, num_layers, num_heads, dropout)
        self.out_proj = nn.Linear(hidden_size, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (batch, frames, positions, in_channels) → (batch, num_queries, out_dim)."""
        c = self.config
        if tokens.dim() != 4 or tokens.shape[2] != c.num_positions or tokens.shape[3] != c.in_channels:
            raise ValueError(
                f"{c.modality} input projector expects (batch, frames, {c.num_positions}, {c.in_channels}) tokens, "
                f"got {tuple(tokens.shape)}"
            )
        B, T, P, _ = tokens.shape
        if T > c.max_frames:
            raise ValueError(f"{c.modality} input projector takes at most {c.max_frames} frames, got {T}")
        x = self.in_proj(tokens.to(self.dtype)) + self.pos_embedding + self.frame_embedding[:T, None]
        x = x.reshape(B, T * P, -1)  # (batch, frames × positions, hidden)
        q = self.queries.expand(B, -1, -1)  # (batch, queries, hidden)
        return self.out_proj(self.decoder(q, x))


class OutputProjector(ModelMixin, ConfigMixin):
    r"""Signal-group hidden states → a generator's conditioning ``[batch, Lc, Dc]``.

    ``Linear → TransformerDecoder (num_queries learnable queries attend to the K group states) → Linear``.
    The queries are as many as the conditioning's tokens (Lc = the generator's caption length), so each
    query learns what one caption-encoder position should carry; training (stage 2) regresses them on the
    generator's own caption conditioning, so the generator sees the space it was trained on.

    Args:
        in_dim: the backbone's hidden size.
        num_signal_tokens: K, the group length.
        hidden_size: width of the decoder.
        num_layers: decoder layers.
        num_heads: attention heads.
        num_queries: Lc, tokens of the conditioning (the generator tokenizer's ``model_max_length``).
        out_dim: Dc, the generator's cross-attention width (its caption encoder's ``hidden_size``).
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        dropout: dropout in the decoder layers (training only).

    Example:
        ```py
        >>> proj = OutputProjector(in_dim=256, num_signal_tokens=4, num_queries=24, out_dim=64)
        >>> proj(torch.randn(1, 4, 256)).shape, proj.null_conditioning(1).shape
        (torch.Size([1, 24, 64]), torch.Size([1, 24, 64]))
        ```
    """

    @register_to_config
    def __init__(
        self,
        in_dim: int = 256,
        num_signal_tokens: int = 4,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        num_queries: int = 24,
        out_dim: int = 64,
        modality: str = "image",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_proj = nn.Linear(in_dim, hidden_size)
        self.signal_embedding = nn.Parameter(torch.randn(num_signal_tokens, hidden_size) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_size) * 0.02)
        self.decoder = _decoder(hidden_size, num_layers, num_heads, dropout)
        self.out_proj = nn.Linear(hidden_size, out_dim)
        self.null_embedding = nn.Parameter(torch.randn(num_queries, out_dim) * 0.02)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` (batch, K, in_dim) at one signal group → (batch, Lc, Dc)."""
        c = self.config
        if hidden_states.dim() != 3 or hidden_states.shape[1:] != (c.num_signal_tokens, c.in_dim):
            raise ValueError(
                f"{c.modality} output projector expects (batch, {c.num_signal_tokens}, {c.in_dim}) hidden states, "
                f"got {tuple(hidden_states.shape)}"
            )
        memory = self.in_proj(hidden_states.to(self.dtype)) + self.signal_embedding  # (batch, K, hidden)
        q = self.queries.expand(hidden_states.shape[0], -1, -1)  # (batch, Lc, hidden)
        return self.out_proj(self.decoder(q, memory))

    def null_conditioning(self, batch_size: int = 1) -> torch.Tensor:
        """The learned unconditional conditioning, (batch, Lc, Dc)."""
        return self.null_embedding.unsqueeze(0).expand(batch_size, -1, -1)


def build_input_projector(type: str = "resampler", **cfg) -> InputProjector:
    """The input projector named by a recipe's ``[projectors.input]`` ``type``."""
    if type == "resampler":
        return InputProjector(**cfg)
    raise ValueError(f"Unknown input projector type: {type!r}; expected 'resampler'")


def build_output_projector(type: str = "transformer", **cfg) -> OutputProjector:
    """The output projector named by a recipe's ``[projectors.output]`` ``type``."""
    if type == "transformer":
        return OutputProjector(**cfg)
    raise ValueError(f"Unknown output projector type: {type!r}; expected 'transformer'")
