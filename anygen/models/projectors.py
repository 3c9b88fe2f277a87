"""Input and output projectors: learnable queries cross-attending to a memory (``nn.TransformerDecoder``).

* :class:`InputProjector` (a perceiver resampler, as in Flamingo/IDEFICS): N learnable queries read a
  medium's encoder tokens and become N embeddings of the backbone, spliced at the medium's placeholder.
* :class:`MLPInputProjector` (LLaVA-1.5's MLP, over each frame's whole latent grid): the same N embeddings,
  with position read by the weights instead of learnt attention (``anygen-tiny``'s choice for video and audio).
* :class:`ConvAbstractor` (Honeybee's C-Abstractor): convolutions and pooling to a small grid, one embedding
  per cell, so what is where stays together (``anygen-tiny``'s choice for images; see the class).
* :class:`OutputProjector` (NExT-GPT / GILL): Lc learnable queries read the K hidden states of a signal
  group and become the generator's conditioning ``[Lc, Dc]``; a learned null embedding of the same shape is
  the unconditional branch of classifier-free guidance.

All are diffusers ``ModelMixin, ConfigMixin`` with flat JSON-safe configs, so ``save_pretrained`` /
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


def _check_tokens(c, tokens: torch.Tensor) -> None:
    if tokens.dim() != 4 or tokens.shape[2] != c.num_positions or tokens.shape[3] != c.in_channels:
        raise ValueError(
            f"{c.modality} input projector expects (batch, frames, {c.num_positions}, {c.in_channels}) tokens, "
            f"got {tuple(tokens.shape)}"
        )
    if tokens.shape[1] > c.max_frames:
        raise ValueError(f"{c.modality} input projector takes at most {c.max_frames} frames, got {tokens.shape[1]}")


def _grid_side(num_positions: int, needed_by: str) -> int:
    """The side of a square grid of ``num_positions`` tokens; ``needed_by`` names what needs it in the error."""
    side = int(round(num_positions**0.5))
    if side * side != num_positions:
        raise ValueError(f"{needed_by} needs a square grid; `num_positions` is {num_positions}")
    return side


def _stretch_frames(tokens: torch.Tensor, max_frames: int) -> torch.Tensor:
    """A clip of T < ``max_frames`` frames → ``max_frames`` frames by repeating frames (nearest-frame sampling)."""
    T = tokens.shape[1]
    if T == max_frames:
        return tokens
    return tokens[:, (torch.arange(max_frames, device=tokens.device) * T) // max_frames]


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
        _check_tokens(c, tokens)
        B, T, P, _ = tokens.shape
        x = self.in_proj(tokens.to(self.dtype)) + self.pos_embedding + self.frame_embedding[:T, None]
        x = x.reshape(B, T * P, -1)  # (batch, frames × positions, hidden)
        q = self.queries.expand(B, -1, -1)  # (batch, queries, hidden)
        return self.out_proj(self.decoder(q, x))


class MLPInputProjector(ModelMixin, ConfigMixin):
    r"""A medium's encoder tokens → ``num_queries`` backbone embeddings through an MLP over each frame's whole grid.

    The LLaVA-1.5 projector (``mlp2x_gelu``) maps every encoder position to one embedding; here the encoder grid
    is small (8×8 latents) and the LLM's context short, so the MLP reads a frame's whole grid flattened
    (positions × channels) and writes ``num_queries / max_frames`` embeddings per frame. Where a thing is in the
    grid is then carried by *which weights* read it, not by attention that must first learn to localise:
    measured on the committed image VAE (a 1-layer reader over the projector's embeddings, 1-object scenes,
    batch 64), this projector reads the position right on 99.9 % of validation images after 300 steps, the
    perceiver resampler (:class:`InputProjector`, 1 layer, 8 queries) on 17 % (75 % after 600, 96 % after 900).

    ``conv_channels`` puts a few 3×3 convolutions over each frame's latent grid (weights shared by every position)
    in front of the MLP, so a local detector (is there a triangle in this cell?) is learnt once, not once per
    position by the MLP's first layer; the last width must equal ``in_channels`` (a residual block: the MLP reads
    ``x + convs(x)``, so its size is unchanged and the raw latent still reaches it). Not used by ``anygen-tiny``:
    trained through stages 1-3 it moved ``anygen eval`` within noise on validation and lower on held-out pairs.

    Video: frame ``t`` gives embeddings ``t·k .. t·k + k - 1`` (k = ``num_queries / max_frames``), so the clip's
    order is the order of its embeddings; a clip shorter than ``max_frames`` is stretched to it by repeating
    frames (nearest-frame sampling), so every medium takes the same ``num_queries`` positions.

    Args:
        in_channels: channels of an encoder token (the VAE's ``latent_channels``).
        num_positions: tokens per frame (latent height × width).
        max_frames: frames per medium (1 for images and audio).
        hidden_size: width of the hidden layers.
        num_layers: linear layers (2: Linear → GELU → Linear, as LLaVA-1.5).
        num_queries: embeddings per medium spliced into the backbone's input (a multiple of ``max_frames``).
        out_dim: the backbone's hidden size.
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        encoder_type: which modality encoder produces the tokens (``"generator_vae"``).
        dropout: dropout after each hidden layer (training only).
        conv_channels: widths of 3×3 convolutions over the grid before the MLP (empty: none); the last must
            equal ``in_channels``. Needs a square grid (``num_positions`` = side²).

    Example:
        ```py
        >>> proj = MLPInputProjector(in_channels=8, num_positions=64, max_frames=8, out_dim=256, modality="video")
        >>> proj(torch.randn(2, 5, 64, 8)).shape   # 5 frames are stretched to 8: one embedding per frame
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
        num_queries: int = 8,
        out_dim: int = 256,
        modality: str = "image",
        encoder_type: str = "generator_vae",
        dropout: float = 0.0,
        conv_channels: tuple[int, ...] | list[int] = (),
    ):
        super().__init__()
        if num_queries % max_frames:
            raise ValueError(f"`num_queries` ({num_queries}) must be a multiple of `max_frames` ({max_frames})")
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be >= 1, got {num_layers}")
        self.tokens_per_frame = num_queries // max_frames
        width = [num_positions * in_channels] + [hidden_size] * (num_layers - 1) + [self.tokens_per_frame * out_dim]
        layers: list[nn.Module] = [nn.LayerNorm(width[0])]
        for i, (a, b) in enumerate(zip(width[:-1], width[1:])):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers += [nn.GELU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)
        self.side = None  # the grid's side, read by the conv block only
        self.convs = None
        if conv_channels:
            self.side = _grid_side(num_positions, "`conv_channels`")
            if conv_channels[-1] != in_channels:
                raise ValueError(
                    f"The last of `conv_channels` ({conv_channels[-1]}) must equal `in_channels` ({in_channels})"
                )
            convs: list[nn.Module] = []
            for i, (a, b) in enumerate(zip([in_channels, *conv_channels[:-1]], conv_channels)):
                convs.append(nn.Conv2d(a, b, 3, padding=1))
                if i < len(conv_channels) - 1:
                    convs.append(nn.GELU())
            self.convs = nn.Sequential(*convs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (batch, frames, positions, in_channels) → (batch, num_queries, out_dim)."""
        c = self.config
        _check_tokens(c, tokens)
        B = tokens.shape[0]
        tokens = _stretch_frames(tokens, c.max_frames)
        x = tokens.to(self.dtype)
        if self.convs is not None:  # (batch × frames, channels, side, side) through the residual conv block
            grid = x.reshape(-1, self.side, self.side, c.in_channels).permute(0, 3, 1, 2)
            grid = grid + self.convs(grid)
            x = grid.permute(0, 2, 3, 1).reshape(x.shape)
        x = self.mlp(x.flatten(2))  # (batch, max_frames, k × out_dim)
        return x.reshape(B, c.num_queries, c.out_dim)


class _ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each grid cell of a (batch, channels, height, width) map: unlike GroupNorm,
    no statistic is shared between cells, so a cell's features depend on its neighbourhood only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvAbstractor(ModelMixin, ConfigMixin):
    r"""A medium's encoder grid → a smaller grid of backbone embeddings that keeps *where* things are (Honeybee's
    C-Abstractor, Cha et al. 2024).

    3×3 convolutions (a stem and ``num_layers`` residual blocks, weights shared by every position) turn each frame's
    latent grid into local features, adaptive average pooling brings the grid down to ``grid × grid`` cells, and an
    MLP maps every cell, plus a learned embedding of the cell, to one backbone embedding. A cell's embedding is
    built from its pooling window and a border of ``1 + 2 × num_layers`` latent cells around it (the convolutions'
    reach), not from the whole grid, so the colour and the kind of a shape arrive *together* in the same embedding.
    :class:`MLPInputProjector` writes every embedding from the whole grid at once, and in two-shape scenes the
    backbone then mixes up which colour goes with which kind ("a pink circle and a yellow triangle" for a pink
    triangle and a yellow circle), which was most of its image → text errors.

    With an 8×8 latent grid and ``grid = 3`` the pooling windows (latent columns 0–2, 2–5 and 5–7) sit on the
    Shapes World's 3 × 3 grid of positions (centres at 16, 32 and 48 px).

    Args:
        in_channels: channels of an encoder token (the VAE's ``latent_channels``).
        num_positions: tokens per frame (latent height × width, a square grid).
        max_frames: frames per medium (1 for images and audio).
        hidden_size: channels of the convolutions and width of the MLP.
        num_layers: residual blocks (two 3×3 convolutions each) after the stem.
        num_queries: embeddings per medium, ``max_frames × grid²`` (images: 9 for a 3 × 3 grid).
        out_dim: the backbone's hidden size.
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        encoder_type: which modality encoder produces the tokens (``"generator_vae"``).
        dropout: dropout in the MLP (training only).

    Example:
        ```py
        >>> proj = ConvAbstractor(in_channels=8, num_positions=64, num_queries=9, out_dim=256)
        >>> proj(torch.randn(2, 1, 64, 8)).shape   # one image: a 3 × 3 grid of embeddings
        torch.Size([2, 9, 256])
        ```
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        num_positions: int = 64,
        max_frames: int = 1,
        hidden_size: int = 128,
        num_layers: int = 1,
        num_queries: int = 9,
        out_dim: int = 256,
        modality: str = "image",
        encoder_type: str = "generator_vae",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.side = _grid_side(num_positions, "A ConvAbstractor")
        per_frame, rest = divmod(num_queries, max_frames)
        self.grid = int(round(per_frame**0.5))
        if rest or self.grid * self.grid != per_frame:
            raise ValueError(
                f"`num_queries` ({num_queries}) must be `max_frames` ({max_frames}) times a square (grid × grid)"
            )
        if self.grid > self.side:
            raise ValueError(f"A {self.grid}×{self.grid} output grid is finer than the {self.side}×{self.side} input")
        if num_layers < 0:
            raise ValueError(f"`num_layers` must be >= 0, got {num_layers}")
        self.stem = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                _ChannelNorm(hidden_size), nn.GELU(), nn.Conv2d(hidden_size, hidden_size, 3, padding=1),
                nn.GELU(), nn.Conv2d(hidden_size, hidden_size, 3, padding=1),
            )
            for _ in range(num_layers)
        )
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        self.cell_embedding = nn.Parameter(torch.randn(per_frame, hidden_size) * 0.02)
        self.frame_embedding = nn.Parameter(torch.randn(max_frames, hidden_size) * 0.02)
        self.mlp = nn.Sequential(
            nn.LayerNorm(hidden_size), nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_size, out_dim),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (batch, frames, positions, in_channels) → (batch, num_queries, out_dim)."""
        c = self.config
        _check_tokens(c, tokens)
        B = tokens.shape[0]
        tokens = _stretch_frames(tokens, c.max_frames)
        x = tokens.to(self.dtype).reshape(-1, self.side, self.side, c.in_channels).permute(0, 3, 1, 2)
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        x = self.pool(x).flatten(2).transpose(1, 2)  # (batch × frames, grid², hidden)
        x = x.reshape(B, c.max_frames, -1, x.shape[-1]) + self.cell_embedding + self.frame_embedding[:, None]
        return self.mlp(x).reshape(B, c.num_queries, c.out_dim)


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


INPUT_PROJECTOR_TYPES = ("resampler", "mlp", "conv_abstractor")


def build_input_projector(
    type: str = "resampler", **cfg
) -> InputProjector | MLPInputProjector | ConvAbstractor:
    """The input projector named by a recipe's ``[projectors.input]`` ``type``.

    ``"resampler"``: :class:`InputProjector`; ``"mlp"``: :class:`MLPInputProjector`; ``"conv_abstractor"``:
    :class:`ConvAbstractor` (``num_heads`` is the resampler's and is ignored by the other two).
    """
    if type == "resampler":
        if cfg.pop("conv_channels", None):
            raise ValueError("`conv_channels` is an option of the \"mlp\" input projector, not the resampler")
        return InputProjector(**cfg)
    if type == "mlp":
        cfg.pop("num_heads", None)
        return MLPInputProjector(**cfg)
    if type == "conv_abstractor":
        cfg.pop("num_heads", None)
        if cfg.pop("conv_channels", None):
            raise ValueError("`conv_channels` is an option of the \"mlp\" input projector, not the conv_abstractor")
        return ConvAbstractor(**cfg)
    raise ValueError(f"Unknown input projector type: {type!r}; expected one of {INPUT_PROJECTOR_TYPES}")


def build_output_projector(type: str = "transformer", **cfg) -> OutputProjector:
    """The output projector named by a recipe's ``[projectors.output]`` ``type``."""
    if type == "transformer":
        return OutputProjector(**cfg)
    raise ValueError(f"Unknown output projector type: {type!r}; expected 'transformer'")
