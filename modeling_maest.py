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
from transformers.pipelines.audio_classification import AudioClassificationPipeline
from transformers.pipelines.base import Pipeline
from transformers.utils import ModelOutput, logging


# --- Compatibility with transformers 4.48 - 5.x (see docs/compatibility.md) ---------------------------------------
import importlib  # noqa: E402  (used by the shims below only)
import inspect  # noqa: E402
from functools import partial  # noqa: E402


try:  # loaded as Hugging Face remote code (a package)
    from .configuration_maest import MaestConfig
except ImportError:  # imported from the repository root as a plain module (tests, scripts)
    # Spelled with importlib: transformers 4.48 - 4.50 take every `from x import` left after a try body for a
    # package the remote code needs, and refuse to load it when no package `configuration_maest` is installed.
    MaestConfig = importlib.import_module("configuration_maest").MaestConfig
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


def _fill_feature_extractor(args, kwargs):
    """Give a MAEST pipeline the model's own feature extractor when `pipeline()` passed none (transformers 4.48 - 4.53).

    Those releases load a feature extractor only for configs registered in transformers (MAEST's is remote code);
    from 4.54 `pipeline()` follows the pipeline class's `_load_feature_extractor`. Reads the model's
    preprocessor_config.json from where the model came from (repo id or folder, the HF cache when offline).
    """
    if kwargs.get("feature_extractor") is not None:
        return
    try:
        from .feature_extraction_maest import MaestFeatureExtractor
    except ImportError:  # a plain module (tests, scripts); importlib for transformers 4.48 - 4.50, as above
        MaestFeatureExtractor = importlib.import_module("feature_extraction_maest").MaestFeatureExtractor
    source = getattr(kwargs.get("model", args[0] if args else None), "name_or_path", None)
    kwargs["feature_extractor"] = MaestFeatureExtractor.from_pretrained(source) if source else MaestFeatureExtractor()


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
            First mel frame of each window (divide by 62.5 for seconds); 0 for missing windows.
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
        return grid.permute(0, 2, 3, 1)


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
        grid = grid + table[:, :, offset : offset + num_time]

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

        patches = grid.flatten(1, 2)
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


def _scatter_windows(target, chunk, items, positions, batch, windows):
    """Write per-window rows `chunk` (n, ...) at (items[i], positions[i]) of a (batch, windows, ...) tensor."""
    if target is None:
        target = chunk.new_zeros(batch, windows, *chunk.shape[1:])
    index = (torch.tensor(items, device=chunk.device), torch.tensor(positions, device=chunk.device))
    return target.index_put(index, chunk)


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


class MaestEncoder(nn.Module):
    def __init__(self, config: MaestConfig):
        super().__init__()
        self.layer = nn.ModuleList([MaestLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False


class MaestClassifierHead(nn.Module):
    """LayerNorm (eps `config.head_layer_norm_eps`) then Linear to the labels, on the pooled (CLS + dist) / 2 token."""

    def __init__(self, config: MaestConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.head_layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dense(self.layernorm(pooled))


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
                    "scripts/convert_maest_checkpoint.py."
                ) from error
            raise

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MaestEmbeddings):
            std = self.config.initializer_range
            for parameter in (module.cls_token, module.distillation_token, module.position_embeddings):
                nn.init.trunc_normal_(parameter, std=std)

    # -- input checks shared by every entry point ----------------------------------------------------------------------

    def _check_input_values(self, input_values, attention_mask=None) -> torch.Tensor:
        """Validate `(batch, frames, mel)` input and return the real frames of each item `(batch,)`."""
        config = self.config
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
        if attention_mask is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=input_values.device)
        else:
            if attention_mask.shape != (batch, frames):
                raise ValueError(
                    f"attention_mask must have shape (batch, frames) = {(batch, frames)} like input_values, got "
                    f"{tuple(attention_mask.shape)}."
                )
            lengths = attention_mask.to(input_values.device).long().sum(dim=1)
        too_short = (lengths < config.patch_size).nonzero().flatten().tolist()
        if too_short:
            item = too_short[0]
            raise ValueError(
                f"Item {item} of the batch has {int(lengths[item])} mel frames, fewer than one patch "
                f"({config.patch_size} frames, about {config.patch_size / 62.5:.3f} s of audio). Pass longer audio."
            )
        # Checked in blocks of frames: isfinite() makes temporaries the size of its input (an hour of audio: 86 MB).
        if not all(bool(torch.isfinite(block).all()) for block in input_values.split(4096, dim=1)):
            raise ValueError("input_values contains NaN or Inf; check the audio and the feature extraction.")
        return lengths


class MaestModel(MaestPreTrainedModel):
    """The MAEST encoder: embeddings, `num_hidden_layers` pre-norm blocks and the final LayerNorm.

    `forward` takes one window per item (at most `config.max_length` frames). `embed` analyses whole tracks.
    """

    # Loading the encoder alone from a classification checkpoint leaves its head aside, as expected.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: MaestConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.config = config
        self.embeddings = MaestEmbeddings(config)
        self.encoder = MaestEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> MaestPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def _encode(
        self,
        input_values: torch.Tensor,
        frame_lengths: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        last_block: int | None = None,
        drop_time_indices: Sequence[int] | None = None,
        drop_freq_indices: Sequence[int] | None = None,
        capture_block: int | None = None,
    ):
        """Run the blocks on windows; returns (hidden after `last_block` or all blocks, hidden_states, attentions,
        token_mask, the paper embedding after `capture_block` or None). Hidden states are before the final norm."""
        hidden_states, token_mask = self.embeddings(input_values, frame_lengths, drop_time_indices, drop_freq_indices)
        mask = None
        if token_mask is not None:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=token_mask)
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        embedding = None
        for index, layer in enumerate(self.encoder.layer):
            hidden_states, weights = layer(hidden_states, mask, output_attentions)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (weights,)
            if index == capture_block:
                embedding = self.paper_embedding(hidden_states, token_mask)
            if last_block is not None and index == last_block:
                break
        return hidden_states, all_hidden, all_attentions, token_mask, embedding

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

    def check_block(self, block) -> int:
        """Validate a 0-based block index (negative counts from the end) and return it in 0..layers-1."""
        layers = self.config.num_hidden_layers
        if isinstance(block, bool) or not isinstance(block, int) or not -layers <= block < layers:
            raise ValueError(f"block must be an int in 0..{layers - 1} (or -{layers}..-1), got {block!r}.")
        return block % layers

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
                1 for real frames, 0 for right padding. Patches that reach into padding are masked out of attention,
                so a padded item gives the same result as the item alone.
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
        lengths = self._check_input_values(input_values, attention_mask)
        if input_values.shape[1] > self.config.max_length:
            raise ValueError(
                f"MaestModel.forward takes one window of at most max_length={self.config.max_length} frames "
                f"({self.config.window_seconds:g} s) per item, got {input_values.shape[1]} frames. For whole tracks use "
                "MaestModel.embed(...) or MaestForAudioClassification, which analyse windows every "
                f"window_hop={self.config.window_hop} frames."
            )
        frame_lengths = lengths if attention_mask is not None else None
        hidden, all_hidden, all_attentions, _, _ = self._encode(
            input_values, frame_lengths, output_attentions, output_hidden_states, None, drop_time_indices, drop_freq_indices
        )
        sequence_output = self.layernorm(hidden)
        pooled_output = (sequence_output[:, 0] + sequence_output[:, 1]) / 2
        if not return_dict:
            return tuple(v for v in (sequence_output, pooled_output, all_hidden, all_attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )

    # -- whole tracks --------------------------------------------------------------------------------------------------

    def iter_windows(self, input_values: torch.Tensor, lengths: torch.Tensor, chunk_size: int | None = None):
        """Cut a batch of tracks into analysis windows and yield them in chunks.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): right-padded tracks.
            lengths (`torch.LongTensor` of shape `(batch,)`): real frames of each track.
            chunk_size (`int`, *optional*): windows per chunk, defaults to `config.max_windows_per_batch`.

        Yields:
            `(windows, window_lengths, items, positions, starts)`: `windows` `(n, frames, mel)` (right-padded to the
            longest window of the chunk), `window_lengths` `(n,)` real frames (`None` when all are full), and for
            each window its track index, its index among that track's windows and its start frame (lists of int).
        """
        window_length, hop = self.config.max_length, self.config.window_hop
        chunk_size = chunk_size or self.config.max_windows_per_batch
        plan = []
        for item, length in enumerate(lengths.tolist()):
            for position, start in enumerate(window_starts(length, window_length, hop)):
                plan.append((item, position, start, min(window_length, length)))
        for begin in range(0, len(plan), chunk_size):
            chunk = plan[begin : begin + chunk_size]
            longest = max(size for _, _, _, size in chunk)
            windows = torch.stack([input_values[item, start : start + longest] for item, _, start, _ in chunk])
            sizes = [size for _, _, _, size in chunk]
            window_lengths = None
            if any(size != longest for size in sizes):
                window_lengths = torch.tensor(sizes, device=input_values.device)
            yield (
                windows,
                window_lengths,
                [item for item, _, _, _ in chunk],
                [position for _, position, _, _ in chunk],
                [start for _, _, start, _ in chunk],
            )


    def embed(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        block: int = 6,
        per_window: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The paper's embedding of whole tracks: CLS, distillation and the mean of the patch tokens after a block.

        Each analysis window (cut as in [`MaestForAudioClassification`]) gives
        `concat(h_cls, h_dist, mean of the patch tokens)` of the output of block `block` (0-based, before the final
        norm; 3 x hidden_size = 2304 values for MAEST). Blocks after `block` are not run. A track's embedding is the
        equal-weight mean of its windows' embeddings.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): tracks of any length.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 for real frames.
            block (`int`, *optional*, defaults to 6): 0-based block index (6 = the 7th block, the paper's best region
                is the middle of the network); negative values count from the end (-1 = last block).
            per_window (`bool`, *optional*, defaults to `False`): return every window's embedding instead of the mean.

        Returns:
            `torch.FloatTensor` `(batch, 3 * hidden_size)`; with `per_window=True` a tuple of the window embeddings
            `(batch, windows, 3 * hidden_size)` (zeros for windows an item of a padded batch does not have) and the
            window mask `(batch, windows)` (True where the window exists).
        """
        block = self.check_block(block)
        lengths = self._check_input_values(input_values, attention_mask)
        counts = [len(window_starts(n, self.config.max_length, self.config.window_hop)) for n in lengths.tolist()]
        embeddings = None
        for windows, window_lengths, items, positions, _ in self.iter_windows(input_values, lengths):
            *_, chunk = self._encode(windows, window_lengths, last_block=block, capture_block=block)
            embeddings = _scatter_windows(embeddings, chunk, items, positions, input_values.shape[0], max(counts))
        window_mask = torch.arange(max(counts), device=embeddings.device)[None, :] < torch.tensor(
            counts, device=embeddings.device
        )[:, None]
        if per_window:
            return embeddings, window_mask
        return embeddings.sum(dim=1) / window_mask.sum(dim=1, keepdim=True).to(embeddings.dtype)


class MaestForAudioClassification(MaestPreTrainedModel):
    """MAEST with its classification head, analysing whole tracks in windows.

    Audio longer than one window (`config.max_length` frames) is cut into windows every `config.window_hop` frames
    (see [`window_starts`]: the tail is covered by one more window aligned to the end), run in chunks of at most
    `config.max_windows_per_batch` windows, and pooled as the equal-weight mean of the window probabilities.
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
        **patchout,
    ):
        """Head logits of windows, without input checks or windowing (for export and custom loops).

        Args:
            windows (`torch.FloatTensor` of shape `(n, frames, num_mel_bins)`): one window per row, 16 to
                `config.max_length` frames, right-padded.
            window_lengths (`torch.LongTensor` of shape `(n,)`, *optional*): real frames of each row.
            embedding_block (`int`, *optional*): also return the paper's embedding after this block (validated).

        Returns:
            `(logits (n, num_labels), hidden_states or None, attentions or None, embedding (n, 3*hidden) or None)`.
        """
        maest = self.audio_spectrogram_transformer
        if embedding_block is not None:
            embedding_block = maest.check_block(embedding_block)
        hidden, all_hidden, all_attentions, _, embedding = maest._encode(
            windows, window_lengths, output_attentions, output_hidden_states, None, capture_block=embedding_block, **patchout
        )
        # Only CLS and distillation reach the head: the final norm is applied to those two tokens alone.
        special = maest.layernorm(hidden[:, :2])
        logits = self.classifier((special[:, 0] + special[:, 1]) / 2)
        return logits, all_hidden, all_attentions, embedding

    def embed(self, input_values, attention_mask=None, block: int = 6, per_window: bool = False):
        """The paper's track embedding; see [`MaestModel.embed`]."""
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
                1 for real frames, 0 for right padding: each track is analysed on its own frames only, so a padded
                batch gives the results of its items one by one.
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
        lengths = maest._check_input_values(input_values, attention_mask)
        patchout = {"drop_time_indices": drop_time_indices, "drop_freq_indices": drop_freq_indices}
        if embedding_block is not None:
            patchout["embedding_block"] = maest.check_block(embedding_block)
        batch = input_values.shape[0]

        all_hidden = all_attentions = window_embeddings = None
        if int(lengths.max()) <= self.config.max_length:
            # One window per item: a single pass, however large the batch (the caller chose it).
            frames = int(lengths.max())
            window_lengths = lengths if int(lengths.min()) < frames else None
            window_logits, all_hidden, all_attentions, window_embeddings = self.window_forward(
                input_values[:, :frames], window_lengths, output_attentions, output_hidden_states, **patchout
            )
            window_logits = window_logits[:, None]
            window_embeddings = window_embeddings[:, None] if window_embeddings is not None else None
            window_mask = torch.ones(batch, 1, dtype=torch.bool, device=window_logits.device)
            starts = torch.zeros(batch, 1, dtype=torch.long, device=window_logits.device)
        else:
            if output_attentions or output_hidden_states:
                raise ValueError(
                    "output_attentions / output_hidden_states are returned for inputs of one window per item only "
                    f"(at most max_length={self.config.max_length} frames); this batch has longer items. Cut windows "
                    "with model.audio_spectrogram_transformer.iter_windows(...) and run MaestModel on them."
                )
            counts = [
                len(window_starts(length, self.config.max_length, self.config.window_hop)) for length in lengths.tolist()
            ]
            window_logits = starts = None
            for windows, window_lengths, items, positions, chunk_starts in maest.iter_windows(input_values, lengths):
                chunk_logits, _, _, chunk_embeddings = self.window_forward(windows, window_lengths, **patchout)
                window_logits = _scatter_windows(window_logits, chunk_logits, items, positions, batch, max(counts))
                chunk_starts = torch.tensor(chunk_starts, device=chunk_logits.device)
                starts = _scatter_windows(starts, chunk_starts, items, positions, batch, max(counts))
                if chunk_embeddings is not None:
                    window_embeddings = _scatter_windows(
                        window_embeddings, chunk_embeddings, items, positions, batch, max(counts)
                    )
            window_mask = torch.arange(max(counts), device=window_logits.device)[None, :] < torch.tensor(
                counts, device=window_logits.device
            )[:, None]

        if window_logits.shape[1] == 1:
            logits = window_logits[:, 0]
        else:
            logits = self.pool_windows(window_logits, window_mask)

        embedding = None
        if window_embeddings is not None:
            weights = window_mask[:, :, None].to(window_embeddings.dtype)
            embedding = (window_embeddings * weights).sum(dim=1) / weights.sum(dim=1)

        loss = self.compute_loss(logits, labels) if labels is not None else None

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


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------------


_UNSET = object()


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class MaestAudioClassificationPipeline(AudioClassificationPipeline):
    """`pipeline("audio-classification", model=..., trust_remote_code=True)` for MAEST.

    Differences from the stock pipeline: the 5 best labels by default (`top_k=None` gives all); whole tracks are
    analysed in windows by the model; file paths are decoded with ffmpeg at the source rate, downmixed as the mean of
    the channels and resampled with soxr (the stock pipeline's `-ac 1` downmix is louder); arrays of any rate, with a
    `sampling_rate=` argument or as `{"array", "sampling_rate"}` dicts, are resampled without torchaudio. Scores are
    independent sigmoid probabilities for multi-label models (MAEST), softmax for single-label ones.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("top_k", 5)
        _fill_feature_extractor(args, kwargs)  # transformers 4.48 - 4.53 (see the compatibility block)
        super().__init__(*args, **kwargs)

    def _sanitize_parameters(self, top_k=_UNSET, function_to_apply=None, sampling_rate=None, **kwargs):
        preprocess_params, postprocess_params = {}, {}
        # Only an explicit top_k overrides the default of 5; top_k=None asks for every label.
        if top_k is not _UNSET:
            num_labels = self.model.config.num_labels
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive int or None (all {num_labels} labels), got {top_k!r}.")
            postprocess_params["top_k"] = num_labels if top_k is None else min(top_k, num_labels)
        if function_to_apply is not None:
            if function_to_apply not in ("softmax", "sigmoid", "none"):
                raise ValueError(
                    f"function_to_apply must be 'sigmoid', 'softmax' or 'none', got {function_to_apply!r}."
                )
            postprocess_params["function_to_apply"] = function_to_apply
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        return preprocess_params, {}, postprocess_params

    def __call__(self, inputs, **kwargs):
        """Tag one input or a list of inputs.

        Args:
            inputs: a file path or the bytes of an encoded file (any format ffmpeg decodes); a mono or multi-channel
                numpy array / torch tensor (any device) / list of numbers; integer PCM; a `{"array", "sampling_rate"}`
                dict as `datasets` yields; a torchcodec `AudioDecoder`; or a list of such inputs (a batch).
            sampling_rate (`int`, *optional*): rate in Hz of raw arrays (resampled to 16 kHz); 16 kHz is assumed,
                with a warning, when it is missing.
            top_k (`int` or `None`, *optional*, defaults to 5): number of labels returned, best first; `None` for all.
            function_to_apply (`str`, *optional*): "sigmoid" (default for multi-label models such as MAEST),
                "softmax" (default for single-label models) or "none" (raw logits).

        Returns:
            A list of `{"label": str, "score": float}`, best first (a list of those lists for a batch).
        """
        if isinstance(inputs, list) and inputs and all(_is_number(value) for value in inputs):
            inputs = np.asarray(inputs, dtype=np.float64)  # a list of numbers is one signal, not a batch
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, sampling_rate=None):
        processed = self.feature_extractor(
            inputs, sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True
        )
        # The model's dtype (Pipeline.dtype exists only from transformers 4.54; 4.48 - 4.53 have torch_dtype).
        processed["input_values"] = processed["input_values"].to(dtype=self.model.dtype)
        return processed

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None):
        if function_to_apply is None:
            function_to_apply = {"regression": "none", "single_label_classification": "softmax"}.get(
                self.model.config.problem_type, "sigmoid"
            )
        logits = model_outputs.logits[0].float()
        if function_to_apply == "softmax":
            scores = logits.softmax(-1)
        elif function_to_apply == "sigmoid":
            scores = logits.sigmoid()
        else:
            scores = logits
        scores, ids = scores.topk(min(top_k, scores.shape[-1]))
        id2label = self.model.config.id2label
        return [{"label": id2label[i], "score": s} for s, i in zip(scores.tolist(), ids.tolist())]


class MaestEmbeddingPipeline(Pipeline):
    """`pipeline("feature-extraction", model=..., trust_remote_code=True)`: MAEST track embeddings without model code.

    Returns the paper's embedding of each input: concat(CLS, distillation, mean of the patch tokens) after block
    `block` (0-based, default 6 = the 7th block), 3 x hidden_size = 2304 values, averaged over the track's windows,
    or one per window with `per_window=True`. Inputs are those of [`MaestAudioClassificationPipeline`].
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        _fill_feature_extractor(args, kwargs)  # transformers 4.48 - 4.53 (see the compatibility block)
        super().__init__(*args, **kwargs)

    def __call__(self, inputs, **kwargs):
        """Embed one input or a list of inputs.

        Args:
            inputs: as for [`MaestAudioClassificationPipeline`] (paths, bytes, arrays, tensors, dicts, decoders).
            block (`int`, *optional*, defaults to 6): 0-based block whose output is embedded.
            per_window (`bool`, *optional*, defaults to `False`): one embedding per analysis window.
            sampling_rate (`int`, *optional*): rate in Hz of raw arrays.
            return_tensors (`bool`, *optional*, defaults to `False`): return torch tensors instead of lists.

        Returns:
            A list of 2304 floats (a tensor `(2304,)` with `return_tensors=True`); with `per_window=True` a list of
            such lists, one per window in time order (a tensor `(windows, 2304)`).
        """
        if isinstance(inputs, list) and inputs and all(_is_number(value) for value in inputs):
            inputs = np.asarray(inputs, dtype=np.float64)
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, block=None, per_window=None, sampling_rate=None, return_tensors=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        if block is not None:
            forward_params["block"] = block
        if per_window is not None:
            forward_params["per_window"] = bool(per_window)
        if return_tensors is not None:
            postprocess_params["return_tensors"] = bool(return_tensors)
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, sampling_rate=None):
        return self.feature_extractor(inputs, sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True)

    def _forward(self, model_inputs, block=6, per_window=False):
        input_values, attention_mask = model_inputs["input_values"], model_inputs.get("attention_mask")
        if per_window:
            embeddings, window_mask = self.model.embed(input_values, attention_mask, block=block, per_window=True)
            return {"window_embeddings": embeddings, "window_mask": window_mask}
        return {"embedding": self.model.embed(input_values, attention_mask, block=block)}

    def postprocess(self, model_outputs, return_tensors=False):
        if "window_embeddings" in model_outputs:
            embedding = model_outputs["window_embeddings"][0][model_outputs["window_mask"][0]]
        else:
            embedding = model_outputs["embedding"][0]
        embedding = embedding.float().cpu()
        return embedding if return_tensors else embedding.tolist()


__all__ = [
    "MaestPreTrainedModel",
    "MaestModel",
    "MaestForAudioClassification",
    "MaestAudioClassifierOutput",
    "MaestAudioClassificationPipeline",
    "MaestEmbeddingPipeline",
    "window_starts",
]
