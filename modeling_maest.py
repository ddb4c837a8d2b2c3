# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""MAEST (Music Audio Efficient Spectrogram Transformer) for transformers, with whole-track analysis.

The module names follow the pre-5.0 transformers AST layout (`audio_spectrogram_transformer.encoder.layer.{i}...`), so
the published `mtg-upf/discogs-maest-*` checkpoints load into these classes as they are, without key renaming.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging


# --- Compatibility with transformers 4.48 - 5.x (see docs/compatibility.md) ---------------------------------------
import importlib  # noqa: E402  (used by the shims below only)
import inspect  # noqa: E402
from functools import partial  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402


try:  # loaded as Hugging Face remote code (a package)
    from .configuration_maest import FRAMES_PER_SECOND, MaestConfig
except ImportError:  # imported from the repository root as a plain module (tests, scripts)
    # Spelled with importlib: transformers 4.48 - 4.50 take every `from x import` left after a try body for a
    # package the remote code needs, and refuse to load it when no package `configuration_maest` is installed.
    _configuration_maest = importlib.import_module("configuration_maest")
    FRAMES_PER_SECOND, MaestConfig = _configuration_maest.FRAMES_PER_SECOND, _configuration_maest.MaestConfig
MAEST_AUTO_MAP = importlib.import_module(MaestConfig.__module__).MAEST_AUTO_MAP

# transformers >= 5.0 has create_bidirectional_mask; 4.48 - 4.57 get a boolean key mask (True = attend), which the
# eager and sdpa kernels read exactly as the 5.x mask (same numbers).
try:
    from transformers.masking_utils import create_bidirectional_mask
except ImportError:

    def create_bidirectional_mask(config, inputs_embeds, attention_mask):
        """`(batch, 1, 1, tokens)` boolean mask from a `(batch, tokens)` token mask (transformers 4.48 - 4.57)."""
        return attention_mask[:, None, None, :].to(device=inputs_embeds.device, dtype=torch.bool)


# transformers >= 4.52 has GradientCheckpointingLayer; 4.48 - 4.51 get the same behaviour: when gradient checkpointing
# is enabled, PreTrainedModel sets `gradient_checkpointing` and `_gradient_checkpointing_func` on every module that
# has the attribute, and the layer's call goes through that function.
try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:

    class GradientCheckpointingLayer(nn.Module):
        """A block whose call is recomputed in the backward pass when gradient checkpointing is on (4.48 - 4.51)."""

        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            call = super().__call__
            if self.gradient_checkpointing and self.training:
                return self._gradient_checkpointing_func(partial(call, **kwargs), *args)
            return call(*args, **kwargs)


# transformers >= 5.0 has ALL_ATTENTION_FUNCTIONS.get_interface(); 4.48 - 4.57 have a mapping of the same kernels
# (a dict up to 4.50, an AttentionInterface from 4.51). MAEST attention is never causal: the kernels get
# is_causal=False, because the sdpa kernel of 4.48 - 4.50 makes unmasked attention causal unless told otherwise.
if not hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):

    class _AttentionFunctions:
        """`get_interface` over the attention kernels of transformers 4.48 - 4.57 (looked up at call time)."""

        def __init__(self, functions):
            self.functions = functions

        def get_interface(self, name, default):
            function = self.functions.get(name)
            return default if function is None else partial(function, is_causal=False)

    ALL_ATTENTION_FUNCTIONS = _AttentionFunctions(ALL_ATTENTION_FUNCTIONS)

# transformers 4.48 - 5.3 (5.24 does not), loading a model from a local folder, copy into their module cache only
# the files this module imports relatively, yet import the whole chain: modeling_maest -> pipeline_maest (lazily, for
# config.json files that name `modeling_maest.*Pipeline`) -> audio_maest, feature_extraction_maest. Naming the last two
# here (never executed) has them copied too; a repo id (the Hub cache) follows the chain on every release.
if TYPE_CHECKING:
    from .audio_maest import load_input  # noqa: F401
    from .feature_extraction_maest import MaestFeatureExtractor  # noqa: F401

# transformers >= 4.54 initialises Linear / Conv / LayerNorm in PreTrainedModel._init_weights (normal with
# config.initializer_range, zero bias, unit LayerNorm); before, the base method does nothing, and from_pretrained
# leaves weights missing from a checkpoint (a new classification head) uninitialised. Give those versions the same
# initialisation, under the same name, so MaestPreTrainedModel's `super()._init_weights(module)` works everywhere;
# the same subclass makes save_pretrained of remote code keep its code files (4.48 - 4.52).
if not inspect.unwrap(PreTrainedModel._init_weights).__code__.co_names:

    class PreTrainedModel(PreTrainedModel):  # noqa: F811
        def save_pretrained(self, *args, **kwargs):
            """transformers 4.48 - 4.52: the Auto classes do not register remote-code classes for their auto class
            (4.53 does), so save_pretrained would save neither the code files nor auto_map; register it here."""
            names = {reference.split(".")[-1]: auto for auto, reference in MAEST_AUTO_MAP.items()}
            if self._auto_class is None and type(self).__module__.startswith("transformers_modules"):
                type(self).register_for_auto_class(names[type(self).__name__])
                type(self.config).register_for_auto_class()
            return super().save_pretrained(*args, **kwargs)

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()


# --- End of compatibility block ----------------------------------------------------------------------------------


logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Shape arithmetic
# ---------------------------------------------------------------------------------------------------------------------


def window_starts(num_frames: int, window_length: int, hop: int) -> list[int]:
    """First frame of every analysis window of a signal of `num_frames` mel frames.

    Audio no longer than one window is one window of its own length (it uses the first time positions). Longer audio
    gets a window every `hop` frames from frame 0 while a whole window fits, and, when those leave a tail uncovered,
    one more whole window aligned to the end (it overlaps the previous one), so no frame is ignored and every window
    has the trained length.

    Args:
        num_frames (`int`): length of the signal in mel frames.
        window_length (`int`): window length in frames (`config.max_length`).
        hop (`int`): step between window starts in frames (`config.window_hop`), 1 <= hop <= window_length.

    Returns:
        `list[int]`: window start frames, increasing; windows are `[start, start + min(window_length, num_frames))`.
    """
    if num_frames <= window_length:
        return [0]
    starts = list(range(0, num_frames - window_length + 1, hop))
    if starts[-1] + window_length < num_frames:
        starts.append(num_frames - window_length)
    return starts


@dataclass
class WindowChunk:
    """Windows run together in one pass: for each, its track (`items`), its index among that track's windows
    (`positions`), its first frame (`starts`) and its real frames (`sizes`)."""

    items: list[int]
    positions: list[int]
    starts: list[int]
    sizes: list[int]


class WindowPlan:
    """Where the analysis windows of a batch of tracks lie and how they are run: the one planner of every caller.

    Each track of `lengths[i]` real frames gets the windows of [`window_starts`]; the windows of the whole batch are
    run in chunks of at most `chunk_size`, except that a batch whose tracks are all one window long runs in a single
    pass (the caller chose that batch size). Results of the chunks are written back into `(batch, windows, ...)`
    tensors with [`WindowPlan.scatter`]; the windows a shorter track lacks stay 0 and are False in `window_mask`.

    Args:
        lengths (`Sequence[int]`): real frames of each track (right padding excluded).
        window_length (`int`): window length in frames (`config.max_length`).
        hop (`int`): step between window starts in frames (`config.window_hop`).
        chunk_size (`int`): windows per pass (`config.max_windows_per_batch`).
    """

    def __init__(self, lengths: Sequence[int], window_length: int, hop: int, chunk_size: int):
        entries = []
        self.counts = []
        for item, length in enumerate(lengths):
            starts = window_starts(length, window_length, hop)
            self.counts.append(len(starts))
            entries += [(item, position, start, min(window_length, length)) for position, start in enumerate(starts)]
        self.batch = len(self.counts)
        self.num_windows = max(self.counts)
        if self.num_windows == 1:
            chunk_size = len(entries)
        self.chunks = [
            WindowChunk(*(list(column) for column in zip(*entries[begin : begin + chunk_size])))
            for begin in range(0, len(entries), chunk_size)
        ]
        self._starts = [[start for item_, _, start, _ in entries if item_ == item] for item in range(self.batch)]

    def window_mask(self, device: torch.device | None = None) -> torch.Tensor:
        """`(batch, windows)` bool: True for the windows a track has."""
        counts = torch.tensor(self.counts, device=device)
        return torch.arange(self.num_windows, device=device)[None, :] < counts[:, None]

    def window_starts(self, device: torch.device | None = None) -> torch.Tensor:
        """`(batch, windows)` long: first frame of every window, 0 for the windows a track lacks."""
        padded = [starts + [0] * (self.num_windows - len(starts)) for starts in self._starts]
        return torch.tensor(padded, dtype=torch.long, device=device)

    def cut(self, input_values: torch.Tensor, chunk: WindowChunk) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The windows of `chunk` `(n, frames, mel)`, right-padded to its longest window, and their real frames
        `(n,)` (`None` when all are whole)."""
        longest = max(chunk.sizes)
        if chunk.items == list(range(self.batch)) and not any(chunk.starts):
            windows = input_values[:, :longest]  # one window per track: a view, no copy
        else:
            windows = torch.stack(
                [input_values[item, start : start + longest] for item, start in zip(chunk.items, chunk.starts)]
            )
        window_lengths = None
        if any(size != longest for size in chunk.sizes):
            window_lengths = torch.tensor(chunk.sizes, device=input_values.device)
        return windows, window_lengths

    def scatter(self, target: torch.Tensor | None, chunk: WindowChunk, values: torch.Tensor) -> torch.Tensor:
        """Write the per-window rows `values` `(n, ...)` of `chunk` into `target` `(batch, windows, ...)` (created
        with zeros when `None`) and return it."""
        if target is None:
            target = values.new_zeros(self.batch, self.num_windows, *values.shape[1:])
        index = (torch.tensor(chunk.items, device=values.device), torch.tensor(chunk.positions, device=values.device))
        return target.index_put(index, values)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


def pool_window_logits(
    window_logits: torch.Tensor, window_mask: torch.Tensor, problem_type: str | None = None
) -> torch.Tensor:
    """Track logits `(batch, labels)` from window logits `(batch, windows, labels)`: the equal-weight mean in
    probability space over the windows where `window_mask` `(batch, windows)` is True.

    This is the one definition of MAEST's track score; the model, the ONNX runner and the tagger all call it.
    Multi-label (and `problem_type=None`, MAEST's own setting): `log(mean p) - log(mean (1 - p))` with
    `p = sigmoid(window_logits)`, computed with log-sum-exp so that `sigmoid` of the result is the mean
    probability without overflow. `"single_label_classification"`: `log(mean softmax)`. `"regression"`: the mean.
    """
    logits = window_logits.float()
    mask = window_mask[:, :, None]
    if problem_type == "regression":
        total = torch.where(mask, logits, torch.zeros_like(logits)).sum(dim=1)
        return total / window_mask.sum(dim=1, keepdim=True)
    if problem_type == "single_label_classification":
        log_probs = torch.where(mask, torch.log_softmax(logits, dim=-1), -math.inf)
        count = window_mask.sum(dim=1, keepdim=True).float()
        return torch.logsumexp(log_probs, dim=1) - torch.log(count)
    positive = torch.where(mask, nn.functional.logsigmoid(logits), -math.inf)
    negative = torch.where(mask, nn.functional.logsigmoid(-logits), -math.inf)
    return torch.logsumexp(positive, dim=1) - torch.logsumexp(negative, dim=1)


@dataclass
class MaestAudioClassifierOutput(ModelOutput):
    """Output of [`MaestForAudioClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Loss of the track-level `logits` against `labels` (by `config.problem_type`).
        logits (`torch.FloatTensor` of shape `(batch, num_labels)`):
            Track-level logits. For one window they are the head's logits. For several windows they pool the
            windows with equal weight in probability space: `sigmoid(logits)` is exactly the mean over windows of
            `sigmoid(window_logits)` for multi-label models (MAEST), `softmax(logits)` the mean of the softmax
            probabilities for single-label models, and the plain mean for regression.
        window_logits (`torch.FloatTensor` of shape `(batch, windows, num_labels)`):
            Head logits of every analysis window, in time order. In a batch whose items have different numbers of
            windows, the missing windows of the shorter items are filled with 0 and marked False in `window_mask`.
        window_mask (`torch.BoolTensor` of shape `(batch, windows)`):
            True for the windows that exist.
        window_starts (`torch.LongTensor` of shape `(batch, windows)`):
            First mel frame of each window (divide by `FRAMES_PER_SECOND` = 62.5 for seconds); 0 for missing windows.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Per-token hidden states (embeddings output, then the output of each block, before the final norm), each
            `(batch, tokens, hidden_size)`. Only for inputs of one window per item.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of each block, `(batch, heads, tokens, tokens)`. Only for inputs of one window
            per item.
        embedding (`torch.FloatTensor` of shape `(batch, 3 * hidden_size)`, *optional*):
            With `embedding_block=k`: the paper's track embedding after block k (as [`MaestModel.embed`]).
        window_embeddings (`torch.FloatTensor` of shape `(batch, windows, 3 * hidden_size)`, *optional*):
            With `embedding_block=k`: the embedding of every window (zeros where `window_mask` is False).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    window_logits: torch.FloatTensor | None = None
    window_mask: torch.BoolTensor | None = None
    window_starts: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    embedding: torch.FloatTensor | None = None
    window_embeddings: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------------


class MaestPatchEmbeddings(nn.Module):
    """Conv2d patch embedding of a (batch, frames, mel bins) spectrogram into a (batch, freq, time, hidden) grid."""

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.projection = nn.Conv2d(
            1,
            config.hidden_size,
            kernel_size=(config.patch_size, config.patch_size),
            stride=(config.frequency_stride, config.time_stride),
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        # (batch, frames, mel) -> (batch, 1, mel, frames): frequency is the image height, time its width.
        spectrogram = input_values.transpose(1, 2).unsqueeze(1)
        grid = self.projection(spectrogram.to(self.projection.weight.dtype))
        return grid.permute(0, 2, 3, 1).contiguous()


class MaestEmbeddings(nn.Module):
    """CLS and distillation tokens, patch embeddings and the factorised position table.

    `position_embeddings` has shape `(1, 2 + F * T, hidden)`: the positions of CLS and distillation, then
    `freq_pos[f] + time_pos[t]` for every patch, frequency-major (row f, column t is entry `2 + f * T + t`), where F and
    T are the frequency rows and time columns of a full window (`config.max_length` frames).
    """

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.config = config
        self.num_frequency_patches = config.num_frequency_patches
        self.num_time_positions = config.num_time_positions
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = MaestPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, 2 + self.num_frequency_patches * self.num_time_positions, config.hidden_size)
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def kept_patches(
        self,
        num_time: int,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
    ) -> tuple[list[int] | None, list[int] | None]:
        """Time columns and frequency rows that inference patchout keeps (`None` where all are kept)."""
        n_time, n_freq = self.config.inference_patchout_time, self.config.inference_patchout_freq
        time_keep = freq_keep = None
        if n_time > 1 or drop_time_indices:
            dropped = _check_indices(drop_time_indices, num_time, "drop_time_indices", "time columns")
            time_keep = [t for t in range(0, num_time, n_time) if t not in dropped]
        if n_freq > 1 or drop_freq_indices:
            dropped = _check_indices(drop_freq_indices, self.num_frequency_patches, "drop_freq_indices", "rows")
            freq_keep = [f for f in range(0, self.num_frequency_patches, n_freq) if f not in dropped]
        if time_keep == [] or freq_keep == []:
            raise ValueError(
                f"Inference patchout removed every patch (time columns kept: {time_keep}, frequency rows kept: "
                f"{freq_keep}, of {num_time} x {self.num_frequency_patches}). Drop fewer indices or use a smaller "
                "inference_patchout_time / inference_patchout_freq."
            )
        return time_keep, freq_keep

    def forward(
        self,
        input_values: torch.Tensor,
        frame_lengths: torch.Tensor | None = None,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed windows of `(batch, frames, mel)`; returns tokens `(batch, 2 + patches, hidden)` and a token mask.

        `frame_lengths` (batch,) gives the real frames of right-padded windows; patches that reach into padding are
        marked 0 in the returned `(batch, tokens)` mask (`None` when every token is real).
        """
        grid = self.patch_embeddings(input_values)
        batch, num_freq, num_time, hidden = grid.shape
        if num_time > self.num_time_positions:
            raise ValueError(
                f"A window of {input_values.shape[1]} frames has {num_time} time patches but the position table "
                f"holds {self.num_time_positions} (max_length={self.config.max_length} frames). Analyse longer "
                "audio with MaestForAudioClassification or MaestModel.embed, which cut it into windows."
            )
        config = self.config
        offset = 0
        if self.training and config.train_random_time_offset and num_time < self.num_time_positions:
            offset = int(torch.randint(0, self.num_time_positions - num_time + 1, ()).item())
        table = self.position_embeddings[:, 2:].view(1, num_freq, self.num_time_positions, hidden)
        # index_select rather than a slice: the slice of the table is a strided view whose layout torch.export
        # would check for a symbolic number of columns, fixing the window length of an exported model.
        columns = torch.arange(offset, offset + num_time, device=grid.device)
        grid = grid + table.index_select(2, columns)

        column_valid = None
        if frame_lengths is not None:
            patch, stride = config.patch_size, config.time_stride
            valid_columns = torch.div(frame_lengths - patch, stride, rounding_mode="floor") + 1
            column_valid = torch.arange(num_time, device=grid.device)[None, :] < valid_columns.to(grid.device)[:, None]
            if bool(column_valid.all()):
                column_valid = None

        time_keep, freq_keep = self.kept_patches(num_time, drop_time_indices, drop_freq_indices)
        if self.training:  # PaSST structured patchout: the same random rows / columns for the whole batch
            time_keep = _random_subset(time_keep or list(range(num_time)), config.train_patchout_time) or time_keep
            freq_keep = _random_subset(freq_keep or list(range(num_freq)), config.train_patchout_freq) or freq_keep
        if freq_keep is not None:
            grid = grid[:, freq_keep]
        if time_keep is not None:
            grid = grid[:, :, time_keep]
            if column_valid is not None:
                column_valid = column_valid[:, time_keep]

        # Frequency-major patch order (row f, column t -> f * T + t). Concatenating the rows, rather than flattening
        # the grid, keeps the number of time columns symbolic when torch.export traces the model.
        patches = torch.cat(grid.unbind(1), dim=1)
        patch_mask = None
        if column_valid is not None:
            patch_mask = column_valid[:, None, :].expand(-1, grid.shape[1], -1).flatten(1)
        if self.training and config.train_patchout_unstructured > 0:
            kept = _random_subset(list(range(patches.shape[1])), config.train_patchout_unstructured)
            if kept is not None:
                patches = patches[:, kept]
                patch_mask = patch_mask[:, kept] if patch_mask is not None else None

        special = torch.cat([self.cls_token, self.distillation_token], dim=1) + self.position_embeddings[:, :2]
        tokens = torch.cat([special.expand(batch, -1, -1).to(patches.dtype), patches], dim=1)
        tokens = self.dropout(tokens)

        token_mask = None
        if patch_mask is not None:
            token_mask = torch.cat([patch_mask.new_ones(batch, 2), patch_mask], dim=1)
        return tokens, token_mask


def _random_subset(indices: list[int], drop: int) -> list[int] | None:
    """`indices` without `drop` random entries, in order (at least one kept); `None` when nothing is dropped."""
    drop = min(drop, len(indices) - 1)
    if drop <= 0:
        return None
    kept = torch.randperm(len(indices))[: len(indices) - drop].sort().values.tolist()
    return [indices[i] for i in kept]


def _check_indices(indices: Sequence[int] | None, size: int, name: str, what: str) -> set[int]:
    if not indices:
        return set()
    dropped = set()
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise ValueError(f"{name} holds {index!r}, but the window has {size} {what} (valid: 0..{size - 1}).")
        dropped.add(index)
    return dropped


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention over `(batch, heads, tokens, head_dim)`; returns `(batch, tokens, heads, head_dim)`.

    `attention_mask` is either boolean (True = attend) or additive, broadcastable to `(batch, heads, tokens, tokens)`.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class MaestSelfAttention(nn.Module):
    """Multi-head self-attention; the kernel is chosen by `config._attn_implementation` (sdpa by default)."""

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.is_causal = False
        self.dropout_prob = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, _ = hidden_states.shape
        shape = (batch, tokens, self.num_attention_heads, self.attention_head_size)
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)

        # Attention probabilities exist only in the eager kernel: asking for them selects it for this call.
        attention_interface: Callable = eager_attention_forward
        if not output_attentions and self.config._attn_implementation not in (None, "eager"):
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        context, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout_prob if self.training else 0.0,
        )
        return context.reshape(batch, tokens, -1), (weights if output_attentions else None)


class MaestSelfOutput(nn.Module):
    def __init__(self, config: MaestConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class MaestAttention(nn.Module):
    def __init__(self, config: MaestConfig):
        super().__init__()
        self.attention = MaestSelfAttention(config)
        self.output = MaestSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        context, weights = self.attention(hidden_states, attention_mask, output_attentions)
        return self.output(context), weights


class MaestIntermediate(nn.Module):
    def __init__(self, config: MaestConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class MaestOutput(nn.Module):
    def __init__(self, config: MaestConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class MaestLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.attention = MaestAttention(config)
        self.intermediate = MaestIntermediate(config)
        self.output = MaestOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attention_output, weights = self.attention(self.layernorm_before(hidden_states), attention_mask, output_attentions)
        hidden_states = hidden_states + attention_output
        hidden_states = hidden_states + self.output(self.intermediate(self.layernorm_after(hidden_states)))
        return hidden_states, weights


@dataclass
class MaestEncoderOutput(ModelOutput):
    """Output of [`MaestEncoder`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, tokens, hidden_size)`):
            Output of the last block run (the last block, or `stop_after_block`), before the final norm.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's input, then the output of each block run, each `(batch, tokens, hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of each block run, `(batch, heads, tokens, tokens)`.
        kept_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The output of each block of `keep_blocks`, in that order (`None` when none is asked for).
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    kept_hidden_states: tuple[torch.FloatTensor, ...] | None = None


class MaestEncoder(nn.Module):
    """The `num_hidden_layers` pre-norm blocks."""

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.layer = nn.ModuleList([MaestLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        stop_after_block: int | None = None,
        keep_blocks: Sequence[int] = (),
    ) -> MaestEncoderOutput:
        """Run the blocks on tokens `(batch, tokens, hidden_size)`.

        Args:
            hidden_states (`torch.FloatTensor`): the embeddings' output.
            attention_mask (`torch.Tensor`, *optional*): attention mask as the attention kernel takes it (from
                `create_bidirectional_mask`), `None` when every token is real.
            output_attentions / output_hidden_states (`bool`): collect the attention probabilities / the hidden
                states of every block run.
            stop_after_block (`int`, *optional*): 0-based index of the last block to run (later blocks are skipped).
            keep_blocks (`Sequence[int]`): 0-based blocks whose output is returned in `kept_hidden_states`.
        """
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        kept = {}
        for index, layer in enumerate(self.layer):
            hidden_states, weights = layer(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (weights,)
            if index in keep_blocks:
                kept[index] = hidden_states
            if stop_after_block is not None and index == stop_after_block:
                break
        return MaestEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden,
            attentions=all_attentions,
            kept_hidden_states=tuple(kept[block] for block in keep_blocks) if keep_blocks else None,
        )


class MaestClassifierHead(nn.Module):
    """LayerNorm (eps `config.head_layer_norm_eps`) then Linear to the labels, on the pooled (CLS + dist) / 2 token."""

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.head_layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dense(self.layernorm(pooled))


# ---------------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------------


def _is_tracing() -> bool:
    """True while torch.compile or torch.export traces the model (checks that read tensor values are skipped then).

    `torch.compiler.is_compiling` exists from torch 2.3 (also true while exporting) and `is_exporting` from torch 2.7;
    a missing one reads as "not tracing" (torch 2.1 - 2.2 have neither: eager only there, every check kept).
    """
    compiler = getattr(torch, "compiler", None)
    return any(getattr(compiler, name, lambda: False)() for name in ("is_compiling", "is_exporting"))


def check_input_values(
    config: MaestConfig, input_values: torch.Tensor, attention_mask: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor | None:
    """Validate model input and return the real frames of each item.

    Args:
        config (`MaestConfig`): the model's configuration.
        input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel frames.
        attention_mask (`torch.Tensor` or `np.ndarray` of shape `(batch, frames)`, *optional*): 1 (or True) for real
            frames, 0 for padding; right padding only (every item's real frames first).

    Returns:
        `torch.LongTensor` of shape `(batch,)`: real frames of each item from `attention_mask`, or `None` without a
        mask (every item is `frames` long). Lengths come from shapes when there is no mask, so that torch.compile
        and torch.export can trace a call without a mask; checks of tensor values (NaN / Inf, the padding layout)
        run in eager calls only.

    Raises:
        TypeError / ValueError: naming the problem, the value seen and the fix.
    """
    if not isinstance(input_values, torch.Tensor):
        raise TypeError(
            f"input_values must be a torch.Tensor of shape (batch, frames, {config.num_mel_bins}), got "
            f"{type(input_values).__name__}. Use MaestFeatureExtractor(..., return_tensors='pt')."
        )
    if input_values.dim() != 3 or input_values.shape[-1] != config.num_mel_bins:
        hint = " Add a batch dimension: input_values[None]." if input_values.dim() == 2 else ""
        raise ValueError(
            f"input_values must have shape (batch, frames, {config.num_mel_bins}) (log-mel frames from "
            f"MaestFeatureExtractor), got {tuple(input_values.shape)}.{hint}"
        )
    if not input_values.is_floating_point():
        raise ValueError(f"input_values must be floating point, got dtype {input_values.dtype}.")
    batch, frames, _ = input_values.shape
    if batch == 0:
        raise ValueError("input_values holds an empty batch (batch size 0).")
    tracing = _is_tracing()
    one_patch = f"one patch ({config.patch_size} frames, about {config.patch_size / FRAMES_PER_SECOND:.3f} s of audio)"
    lengths = None
    if attention_mask is None:
        if frames < config.patch_size:
            raise ValueError(f"input_values has {frames} mel frames, fewer than {one_patch}. Pass longer audio.")
    else:
        if isinstance(attention_mask, np.ndarray):
            attention_mask = torch.from_numpy(attention_mask)
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                f"attention_mask must be a torch.Tensor or numpy array of shape (batch, frames), got "
                f"{type(attention_mask).__name__}."
            )
        if attention_mask.shape != (batch, frames):
            raise ValueError(
                f"attention_mask must have shape (batch, frames) = {(batch, frames)} like input_values, got "
                f"{tuple(attention_mask.shape)}."
            )
        real = attention_mask.to(input_values.device) != 0
        lengths = real.sum(dim=1)
        if not tracing:
            # The model reads the mask as lengths (its real frames first, then padding). Left padding or holes would
            # be silently misread as right padding, so they are refused here, where the lengths are computed anyway.
            right_padded = torch.arange(frames, device=real.device)[None, :] < lengths[:, None]
            misplaced = (real != right_padded).any(dim=1).nonzero().flatten().tolist()
            if misplaced:
                item = misplaced[0]
                first_real = int(real[item].long().argmax())
                raise ValueError(
                    f"attention_mask of item {item} is not right padding: its {int(lengths[item])} real frames (1) "
                    f"do not all come first (the first 1 is at frame {first_real}, and zeros come between or before "
                    "them). MAEST takes right padding only: put each item's frames first and the padding after them, "
                    "as MaestFeatureExtractor does, or pass the items one by one."
                )
            too_short = (lengths < config.patch_size).nonzero().flatten().tolist()
            if too_short:
                item = too_short[0]
                raise ValueError(
                    f"Item {item} of the batch has {int(lengths[item])} mel frames, fewer than {one_patch}. "
                    "Pass longer audio."
                )
    # Checked in blocks of frames: isfinite() makes temporaries the size of its input (an hour of audio: 86 MB).
    if not tracing and not all(bool(torch.isfinite(block).all()) for block in input_values.split(4096, dim=1)):
        raise ValueError("input_values contains NaN or Inf; check the audio and the feature extraction.")
    return lengths


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


class MaestPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and saving for the MAEST models."""

    config_class = MaestConfig
    config: MaestConfig
    base_model_prefix = "audio_spectrogram_transformer"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    # forward() takes **kwargs, which transformers.Trainer otherwise reads as "the
    # model normalises its loss by num_items_in_batch itself": it would then neither divide the loss by the gradient
    # accumulation steps nor leave it alone under DDP (average_tokens_across_devices multiplies it by the process
    # count). MAEST's loss is a plain batch mean, so the Trainer must do the usual scaling.
    accepts_loss_kwargs = False
    _no_split_modules = ["MaestEmbeddings", "MaestLayer"]
    # Tested kernels: "sdpa" (default; on CUDA it picks the flash / memory-efficient backends for unpadded windows)
    # and "eager" (also used for any call with output_attentions=True).
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, loading weights only from safetensors unless asked otherwise.

        Pickled `pytorch_model.bin` checkpoints run code when unpickled; pass `use_safetensors=False` to load one
        (transformers then uses `torch.load(weights_only=True)`). Folders and repo ids of the published
        `mtg-upf/discogs-maest-*` checkpoints (transformers AST layout) load as they are.
        """
        kwargs.setdefault("use_safetensors", True)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except OSError as error:
            if kwargs["use_safetensors"] and "safetensors" in str(error):
                raise OSError(
                    f"{error}\nMAEST loads weights from model.safetensors only by default. To load a pickled "
                    "pytorch_model.bin that you trust, pass use_safetensors=False, or convert it once with "
                    "maest-convert (pip install . in this repository)."
                ) from error
            raise

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MaestEmbeddings):
            std = self.config.initializer_range
            for parameter in (module.cls_token, module.distillation_token, module.position_embeddings):
                nn.init.trunc_normal_(parameter, std=std)





@dataclass
class MaestFeaturesOutput(ModelOutput):
    """Output of [`MaestModel.forward_features`] for a batch of windows.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(windows, tokens, hidden_size)`, *optional*):
            Tokens after the final norm; `None` when the blocks stopped early (`stop_after_block`).
        pooler_output (`torch.FloatTensor` of shape `(windows, hidden_size)`, *optional*):
            (CLS + distillation) / 2 after the final norm, what the classification head reads.
        hidden_states / attentions (`tuple(torch.FloatTensor)`, *optional*): as in [`MaestEncoderOutput`].
        token_mask (`torch.Tensor` of shape `(windows, tokens)`, *optional*):
            1 for tokens of real frames, 0 for patches that reach into right padding; `None` when all are real.
        embeddings (`tuple(torch.FloatTensor)`, *optional*):
            The paper's embedding `(windows, 3 * hidden_size)` after each block of `embedding_blocks`, in that order
            (`None` when none is asked for).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    token_mask: torch.Tensor | None = None
    embeddings: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MaestWindowOutput(ModelOutput):
    """Output of [`MaestForAudioClassification.window_forward`] for a batch of windows.

    Args:
        logits (`torch.FloatTensor` of shape `(windows, num_labels)`): head logits of each window.
        hidden_states / attentions (`tuple(torch.FloatTensor)`, *optional*): as in [`MaestEncoderOutput`].
        embedding (`torch.FloatTensor` of shape `(windows, 3 * hidden_size)`, *optional*):
            The paper's embedding after `embedding_block`.
    """

    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    embedding: torch.FloatTensor | None = None


@dataclass
class MaestWindowedResults:
    """Per-window results of whole tracks from [`MaestModel.run_windows`].

    Args:
        values (`dict[str, torch.Tensor]`): each result `(batch, windows, ...)`, 0 for the windows a track lacks.
        window_mask (`torch.BoolTensor` of shape `(batch, windows)`): True for the windows that exist.
        window_starts (`torch.LongTensor` of shape `(batch, windows)`): first mel frame of each window.
    """

    values: dict[str, torch.Tensor]
    window_mask: torch.Tensor
    window_starts: torch.Tensor


class MaestModel(MaestPreTrainedModel):
    """The MAEST encoder: embeddings, `num_hidden_layers` pre-norm blocks and the final LayerNorm.

    `forward` takes one window per item (at most `config.max_length` frames). `embed` analyses whole tracks.
    Every path runs `forward_features` on windows; whole tracks go through `run_windows`.
    """

    # Loading the encoder alone from a classification checkpoint leaves its head aside, as expected.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: MaestConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = MaestEmbeddings(config)
        self.encoder = MaestEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> MaestPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @property
    def default_embedding_block(self) -> int:
        """The middle block, `num_hidden_layers // 2` (6 for MAEST's 12): the default block of the embeddings.

        The paper finds the best embeddings in the middle of the network; the middle of the model at hand also
        exists in models with fewer blocks (small fine-tuned models, test models).
        """
        return self.config.num_hidden_layers // 2

    def check_block(self, block: int | None) -> int:
        """Validate a 0-based block index (negative counts from the end; `None` is `default_embedding_block`) and
        return it in 0..layers-1."""
        if block is None:
            return self.default_embedding_block
        layers = self.config.num_hidden_layers
        if isinstance(block, bool) or not isinstance(block, int) or not -layers <= block < layers:
            raise ValueError(f"block must be an int in 0..{layers - 1} (or -{layers}..-1), got {block!r}.")
        return block % layers

    @staticmethod
    def paper_embedding(hidden_states: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """concat(CLS, distillation, mean of the real patch tokens) of `(windows, tokens, hidden)` -> `(windows, 3*hidden)`."""
        patches = hidden_states[:, 2:]
        if token_mask is None:
            patch_mean = patches.mean(dim=1)
        else:
            weights = token_mask[:, 2:, None].to(patches.dtype)
            patch_mean = (patches * weights).sum(dim=1) / weights.sum(dim=1)
        return torch.cat([hidden_states[:, 0], hidden_states[:, 1], patch_mean], dim=-1)

    def forward_features(
        self,
        windows: torch.Tensor,
        window_lengths: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
        stop_after_block: int | None = None,
        embedding_blocks: Sequence[int] = (),
    ) -> MaestFeaturesOutput:
        """Windows to normed tokens: embeddings, blocks and final norm, without input checks or windowing.

        Args:
            windows (`torch.FloatTensor` of shape `(n, frames, num_mel_bins)`): one window per row, `patch_size` to
                `config.max_length` frames, right-padded.
            window_lengths (`torch.LongTensor` of shape `(n,)`, *optional*): real frames of each row.
            output_attentions / output_hidden_states (`bool`): as in [`MaestModel.forward`].
            drop_time_indices / drop_freq_indices (`list[int]`, *optional*): inference patchout (as in `forward`).
            stop_after_block (`int`, *optional*): 0-based last block to run; later blocks and the final norm are
                skipped (`last_hidden_state` and `pooler_output` are then `None` unless it is the last block).
            embedding_blocks (`Sequence[int]`): 0-based blocks (validated, 0..layers-1) after which the paper's
                embedding is returned.

        Returns:
            [`MaestFeaturesOutput`].
        """
        tokens, token_mask = self.embeddings(windows, window_lengths, drop_time_indices, drop_freq_indices)
        mask = None
        if token_mask is not None:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=tokens, attention_mask=token_mask)
        encoded = self.encoder(
            tokens, mask, output_attentions, output_hidden_states, stop_after_block, tuple(embedding_blocks)
        )
        sequence_output = pooled_output = None
        if stop_after_block is None or stop_after_block == self.config.num_hidden_layers - 1:
            sequence_output = self.layernorm(encoded.last_hidden_state)
            pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2
        return MaestFeaturesOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            token_mask=token_mask,
            embeddings=tuple(self.paper_embedding(hidden, token_mask) for hidden in encoded.kept_hidden_states)
            if encoded.kept_hidden_states
            else None,
        )

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`):
                Normalised log-mel frames from [`MaestFeatureExtractor`], one window per item: from `patch_size`
                (16) to `config.max_length` frames. A window shorter than `max_length` uses the first time
                positions of the table, as the trained model does; no padding to `max_length` is needed.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*):
                1 for real frames, 0 for right padding (a numpy array is accepted). Patches that reach into padding
                are masked out of attention, so a padded item gives the same result as the item alone. Left
                padding or holes raise a ValueError.
            output_attentions (`bool`, *optional*):
                Return the attention probabilities of every block (runs the eager kernel for this call).
            output_hidden_states (`bool`, *optional*):
                Return the embeddings output and the output of every block (before the final norm).
            drop_time_indices / drop_freq_indices (`list[int]`, *optional*):
                Inference patchout: time columns / frequency rows of the patch grid to drop, after positions are
                added, on top of `config.inference_patchout_time` / `inference_patchout_freq`.

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state` `(batch, tokens, hidden)` after the final norm
            (tokens = 2 + frequency rows x time columns, CLS first, distillation second, patches frequency-major),
            `pooler_output` `(batch, hidden)` = (CLS + distillation) / 2 after the final norm, and optionally
            `hidden_states` and `attentions`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        lengths = check_input_values(self.config, input_values, attention_mask)
        if input_values.shape[1] > self.config.max_length:
            raise ValueError(
                f"MaestModel.forward takes one window of at most max_length={self.config.max_length} frames "
                f"({self.config.window_seconds:g} s) per item, got {input_values.shape[1]} frames. For whole tracks use "
                "MaestModel.embed(...) or MaestForAudioClassification, which analyse windows every "
                f"window_hop={self.config.window_hop} frames."
            )
        features = self.forward_features(
            input_values,
            lengths,
            output_attentions,
            output_hidden_states,
            drop_time_indices=drop_time_indices,
            drop_freq_indices=drop_freq_indices,
        )
        if not return_dict:
            output = (features.last_hidden_state, features.pooler_output, features.hidden_states, features.attentions)
            return tuple(v for v in output if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=features.last_hidden_state,
            pooler_output=features.pooler_output,
            hidden_states=features.hidden_states,
            attentions=features.attentions,
        )

    # -- whole tracks --------------------------------------------------------------------------------------------------

    def run_windows(
        self,
        input_values: torch.Tensor,
        lengths: torch.Tensor | None,
        window_fn: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]],
    ) -> MaestWindowedResults:
        """Run `window_fn` on every analysis window of a batch of tracks (the one windowed runner of MAEST).

        Windows are planned by [`WindowPlan`] (a window every `config.window_hop` frames, the tail covered by one
        more window aligned to the end, chunks of `config.max_windows_per_batch` windows). A batch without a mask
        whose items fit one window is one call on the input itself, decided from shapes alone, so that
        torch.compile and torch.export can trace it; other batches are planned from their lengths (eager only).

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): right-padded tracks.
            lengths (`torch.LongTensor` of shape `(batch,)`, *optional*): real frames of each track (from
                [`check_input_values`]); `None` when every track has all `frames`.
            window_fn: maps windows `(n, frames, mel)` and their real frames `(n,)` (or `None`) to a dict of
                per-window results `(n, ...)`.

        Returns:
            [`MaestWindowedResults`].
        """
        batch, frames, _ = input_values.shape
        if lengths is None and frames <= self.config.max_length:
            values = {name: value[:, None] for name, value in window_fn(input_values, None).items()}
            device = next(iter(values.values())).device
            return MaestWindowedResults(
                values=values,
                window_mask=torch.ones(batch, 1, dtype=torch.bool, device=device),
                window_starts=torch.zeros(batch, 1, dtype=torch.long, device=device),
            )
        config = self.config
        plan = WindowPlan(
            lengths.tolist() if lengths is not None else [frames] * batch,
            config.max_length,
            config.window_hop,
            config.max_windows_per_batch,
        )
        values = {}
        for chunk in plan.chunks:
            windows, window_lengths = plan.cut(input_values, chunk)
            for name, value in window_fn(windows, window_lengths).items():
                values[name] = plan.scatter(values.get(name), chunk, value)
        device = next(iter(values.values())).device
        return MaestWindowedResults(values, plan.window_mask(device), plan.window_starts(device))

    def embed(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        block: int | None = None,
        per_window: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The paper's embedding of whole tracks: CLS, distillation and the mean of the patch tokens after a block.

        Each analysis window (cut as in [`MaestForAudioClassification`]) gives
        `concat(h_cls, h_dist, mean of the patch tokens)` of the output of block `block` (0-based, before the final
        norm; 3 x hidden_size = 2304 values for MAEST). Blocks after `block` are not run. A track's embedding is the
        equal-weight mean of its windows' embeddings.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): tracks of any length.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 for real frames, 0 for
                right padding.
            block (`int`, *optional*): 0-based block index; defaults to the middle block `num_hidden_layers // 2`
                (6 = the 7th block for MAEST, where the paper finds the best embeddings); negative values count from
                the end (-1 = last block).
            per_window (`bool`, *optional*, defaults to `False`): return every window's embedding instead of the mean.

        Returns:
            `torch.FloatTensor` `(batch, 3 * hidden_size)`; with `per_window=True` a tuple of the window embeddings
            `(batch, windows, 3 * hidden_size)` (zeros for windows an item of a padded batch does not have) and the
            window mask `(batch, windows)` (True where the window exists).
        """
        block = self.check_block(block)
        lengths = check_input_values(self.config, input_values, attention_mask)

        def window_embeddings(windows, window_lengths):
            features = self.forward_features(
                windows, window_lengths, stop_after_block=block, embedding_blocks=(block,)
            )
            return {"embedding": features.embeddings[0]}

        results = self.run_windows(input_values, lengths, window_embeddings)
        embeddings, window_mask = results.values["embedding"], results.window_mask
        if per_window:
            return embeddings, window_mask
        return embeddings.sum(dim=1) / window_mask.sum(dim=1, keepdim=True).to(embeddings.dtype)


class MaestForAudioClassification(MaestPreTrainedModel):
    """MAEST with its classification head, analysing whole tracks in windows.

    Audio longer than one window (`config.max_length` frames) is cut into windows every `config.window_hop` frames
    (see [`window_starts`]: the tail is covered by one more window aligned to the end), run in chunks of at most
    `config.max_windows_per_batch` windows, and pooled as the equal-weight mean of the window probabilities. The
    windows are run by [`MaestModel.run_windows`]; this class adds the head and the pooling.
    """

    def __init__(self, config: MaestConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = MaestModel(config)
        self.classifier = MaestClassifierHead(config)
        self.post_init()

    def get_input_embeddings(self) -> MaestPatchEmbeddings:
        return self.audio_spectrogram_transformer.get_input_embeddings()

    def window_forward(
        self,
        windows: torch.Tensor,
        window_lengths: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        embedding_block: int | None = None,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
    ) -> MaestWindowOutput:
        """Head logits of windows, without input checks or windowing (for export and custom loops).

        Args:
            windows (`torch.FloatTensor` of shape `(n, frames, num_mel_bins)`): one window per row, `patch_size`
                to `config.max_length` frames, right-padded.
            window_lengths (`torch.LongTensor` of shape `(n,)`, *optional*): real frames of each row.
            output_attentions / output_hidden_states (`bool`): as in [`MaestModel.forward`].
            embedding_block (`int`, *optional*): also return the paper's embedding after this block (validated;
                `None` returns none).
            drop_time_indices / drop_freq_indices (`list[int]`, *optional*): inference patchout.

        Returns:
            [`MaestWindowOutput`] (indexable as a tuple of its non-`None` fields: logits first, embedding last).
        """
        maest = self.audio_spectrogram_transformer
        blocks = () if embedding_block is None else (maest.check_block(embedding_block),)
        features = maest.forward_features(
            windows,
            window_lengths,
            output_attentions,
            output_hidden_states,
            drop_time_indices=drop_time_indices,
            drop_freq_indices=drop_freq_indices,
            embedding_blocks=blocks,
        )
        return MaestWindowOutput(
            logits=self.classifier(features.pooler_output),
            hidden_states=features.hidden_states,
            attentions=features.attentions,
            embedding=features.embeddings[0] if blocks else None,
        )

    def embed(self, input_values, attention_mask=None, block: int | None = None, per_window: bool = False):
        """The paper's track embedding (default block: the middle one); see [`MaestModel.embed`]."""
        return self.audio_spectrogram_transformer.embed(input_values, attention_mask, block, per_window)

    def pool_windows(self, window_logits: torch.Tensor, window_mask: torch.Tensor) -> torch.Tensor:
        """Track logits from window logits by this model's `problem_type`; see [`pool_window_logits`]."""
        return pool_window_logits(window_logits, window_mask, self.config.problem_type)

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of track logits `(batch, num_labels)` by `config.problem_type`.

        `"multi_label_classification"`: binary cross-entropy with logits on multi-hot float labels
        `(batch, num_labels)`; `"single_label_classification"`: cross-entropy on class indices `(batch,)`;
        `"regression"`: mean squared error. With `problem_type=None` it is inferred as in transformers: regression
        for one label, single-label for integer labels, multi-label otherwise.
        """
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        labels = labels.to(logits.device)
        batch = logits.shape[0]
        if problem_type == "single_label_classification":
            if labels.shape != (batch,) or labels.is_floating_point():
                raise ValueError(
                    f"Single-label classification takes integer class indices of shape ({batch},), got "
                    f"{labels.dtype} of shape {tuple(labels.shape)}."
                )
            return nn.functional.cross_entropy(logits, labels.long())
        if problem_type == "multi_label_classification":
            if labels.shape != logits.shape:
                raise ValueError(
                    f"Multi-label classification takes multi-hot labels of shape {tuple(logits.shape)} "
                    f"(batch, num_labels), got {tuple(labels.shape)}."
                )
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        if self.num_labels == 1:
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(batch))
        return nn.functional.mse_loss(logits, labels.to(logits.dtype).view(logits.shape))

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
        embedding_block: int | None = None,
        **kwargs,
    ) -> MaestAudioClassifierOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`):
                Normalised log-mel frames from [`MaestFeatureExtractor`] of any length from `patch_size` (16) frames
                up: whole tracks are analysed in windows.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*):
                1 for real frames, 0 for right padding (a numpy array is accepted): each track is analysed on its own
                frames only, so a padded batch gives the results of its items one by one. Left padding or holes
                raise a ValueError.
            labels (`torch.Tensor`, *optional*):
                Track labels: multi-hot floats `(batch, num_labels)` for multi-label, class indices `(batch,)` for
                single-label, values `(batch,)` or `(batch, num_labels)` for regression. The loss follows
                `config.problem_type` (inferred from the labels when `None`, as in transformers).
            output_attentions / output_hidden_states (`bool`, *optional*):
                As in [`MaestModel`]; only for inputs of one window per item.
            drop_time_indices / drop_freq_indices (`list[int]`, *optional*):
                Inference patchout of given time columns / frequency rows of every window.
            embedding_block (`int`, *optional*):
                Also return the paper's embedding after this block (0-based), from the same pass: `embedding`
                (track mean) and `window_embeddings`, as [`MaestModel.embed`] computes them.

        Returns:
            [`MaestAudioClassifierOutput`].
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        maest = self.audio_spectrogram_transformer
        lengths = check_input_values(self.config, input_values, attention_mask)
        if embedding_block is not None:
            embedding_block = maest.check_block(embedding_block)
        longest = input_values.shape[1] if lengths is None else int(lengths.max())
        if (output_attentions or output_hidden_states) and longest > self.config.max_length:
            raise ValueError(
                "output_attentions / output_hidden_states are returned for inputs of one window per item only "
                f"(at most max_length={self.config.max_length} frames); this batch has longer items. Cut windows "
                "with window_starts(...) and run MaestModel on them."
            )

        per_batch = {}  # hidden states and attentions: one window per item, hence a single call of head()

        def head(windows, window_lengths):
            output = self.window_forward(
                windows,
                window_lengths,
                output_attentions,
                output_hidden_states,
                embedding_block,
                drop_time_indices=drop_time_indices,
                drop_freq_indices=drop_freq_indices,
            )
            per_batch.update(hidden_states=output.hidden_states, attentions=output.attentions)
            values = {"logits": output.logits}
            if output.embedding is not None:
                values["embedding"] = output.embedding
            return values

        results = maest.run_windows(input_values, lengths, head)
        window_logits, window_mask = results.values["logits"], results.window_mask
        if not _is_tracing() and not bool(torch.isfinite(window_logits).all()):
            peak = max(float(block.abs().max()) for block in input_values.split(4096, dim=1))
            raise ValueError(
                f"The model produced non-finite logits in {window_logits.dtype}: the input_values are too large for "
                f"the network (largest |value| {peak:.3g}, while MAEST's normalised log-mel features lie within about "
                "[-2, 5]). Pass the features of MaestFeatureExtractor; in float16, run in bfloat16 or float32 instead."
            )
        window_embeddings = results.values.get("embedding")
        all_hidden, all_attentions = per_batch["hidden_states"], per_batch["attentions"]

        if window_logits.shape[1] == 1:
            logits = window_logits[:, 0]
        else:
            logits = self.pool_windows(window_logits, window_mask)

        embedding = None
        if window_embeddings is not None:
            weights = window_mask[:, :, None].to(window_embeddings.dtype)
            embedding = (window_embeddings * weights).sum(dim=1) / weights.sum(dim=1)

        loss = self.compute_loss(logits, labels) if labels is not None else None
        starts = results.window_starts

        if not return_dict:
            output = (logits, window_logits, window_mask, starts, all_hidden, all_attentions, embedding, window_embeddings)
            output = tuple(v for v in output if v is not None)
            return ((loss,) + output) if loss is not None else output
        return MaestAudioClassifierOutput(
            loss=loss,
            logits=logits,
            window_logits=window_logits,
            window_mask=window_mask,
            window_starts=starts,
            hidden_states=all_hidden,
            attentions=all_attentions,
            embedding=embedding,
            window_embeddings=window_embeddings,
        )


# Pipelines (defined in pipeline_maest.py)
# ---------------------------------------------------------------------------------------------------------------------


def __getattr__(name: str):
    # config.json files saved before pipeline_maest.py existed name `modeling_maest.MaestAudioClassificationPipeline`
    # (and `...MaestEmbeddingPipeline`) in `custom_pipelines`; they still resolve. Imported on first use only, so that
    # loading a model never imports the pipelines (and the two modules never import each other at load time).
    if name in ("MaestAudioClassificationPipeline", "MaestEmbeddingPipeline"):
        try:  # loaded as Hugging Face remote code (a package)
            from .pipeline_maest import MaestAudioClassificationPipeline, MaestEmbeddingPipeline
        except ImportError:  # imported from the repository root as a plain module (tests, scripts)
            # importlib for transformers 4.48 - 4.50's check_imports (see the compatibility block at the top).
            pipelines = importlib.import_module("pipeline_maest")
            MaestAudioClassificationPipeline = pipelines.MaestAudioClassificationPipeline
            MaestEmbeddingPipeline = pipelines.MaestEmbeddingPipeline
        return {
            "MaestAudioClassificationPipeline": MaestAudioClassificationPipeline,
            "MaestEmbeddingPipeline": MaestEmbeddingPipeline,
        }[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MaestPreTrainedModel",
    "MaestModel",
    "MaestForAudioClassification",
    "MaestAudioClassifierOutput",
    "WindowPlan",
    "check_input_values",
    "pool_window_logits",
    "window_starts",
]
