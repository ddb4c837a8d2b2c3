# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Configuration of MAEST (Music Audio Efficient Spectrogram Transformer, Alonso-Jiménez et al., ISMIR 2023)."""

import dataclasses
import inspect


# --- Compatibility with transformers 4.48 - 5.x (see docs/compatibility.md) ---------------------------------------
# transformers >= 5.0 names the base class PreTrainedConfig; 4.48 - 4.57 name it PretrainedConfig.
try:
    from transformers import PreTrainedConfig
except ImportError:
    from transformers import PretrainedConfig as PreTrainedConfig

# transformers >= 5.4: PreTrainedConfig is a dataclass and a config declares its fields as annotated class attributes,
# validated by huggingface_hub's `@strict`. transformers 4.48 - 5.3: configs are `__init__`-style (5.0 - 5.3 refuse
# `@strict` on a class that is not a dataclass). For those, `_ConfigBase` builds the `__init__` from the same annotated
# fields, so the field list, defaults, docs and `__post_init__` validation stay in one place.
DATACLASS_CONFIGS = dataclasses.is_dataclass(PreTrainedConfig)

if DATACLASS_CONFIGS:
    from huggingface_hub.dataclasses import strict

    _ConfigBase = PreTrainedConfig
else:

    def strict(cls):
        """transformers 4.48 - 5.3: no strict dataclass configs; `__post_init__` validates the values."""
        return cls

    class _ConfigBase(PreTrainedConfig):
        """transformers 4.48 - 5.3: an `__init__(**kwargs)` made from the subclass's annotated fields."""

        def __init__(self, **kwargs):
            fields = {}
            for klass in reversed(type(self).__mro__[: type(self).__mro__.index(_ConfigBase)]):
                for name in inspect.get_annotations(klass):
                    fields[name] = kwargs.pop(name, getattr(klass, name))
            # The base __init__ first (it sets the inherited fields, and in 4.x a generation max_length of 20), then
            # the MAEST fields, then the checks of __post_init__ as in the dataclass world.
            super().__init__(**kwargs)
            for name, value in fields.items():
                setattr(self, name, value)
            self.__post_init__()

        def __post_init__(self, **kwargs):
            pass

        # MAEST does not generate: `max_length` is its window in frames, not a generation length. transformers 4.x
        # (`_get_non_default_generation_parameters`, a warning) and 5.0 - 5.3 (`_get_generation_parameters`, an error
        # in save_pretrained) would otherwise read it as one.
        def _get_non_default_generation_parameters(self):
            return {}

        def _get_generation_parameters(self):
            return {}

        def to_dict(self):
            """transformers 4.48 - 4.52 keep the `<repo id>--` prefix they give remote-code references read from a hub
            repo (auto_map, custom_pipelines) when saving; a saved MAEST folder carries its own code, so drop it."""
            output = super().to_dict()
            local = lambda reference: reference.split("--", 1)[-1] if isinstance(reference, str) else reference  # noqa: E731
            if isinstance(output.get("auto_map"), dict):
                output["auto_map"] = {name: local(reference) for name, reference in output["auto_map"].items()}
            if isinstance(output.get("custom_pipelines"), dict):
                output["custom_pipelines"] = {
                    task: {**entry, "impl": local(entry.get("impl"))} if isinstance(entry, dict) else entry
                    for task, entry in output["custom_pipelines"].items()
                }
            return output


# --- End of compatibility block ----------------------------------------------------------------------------------


# Essentia's `TensorflowPredictMAEST` hop (in mel frames) for the window lengths of the published models:
# the window is a few frames longer than the hop, so consecutive windows overlap by 1 to 6 frames.
ESSENTIA_WINDOW_HOPS = {316: 313, 626: 625, 1256: 1250, 1876: 1875}

# Mel frames per second of the front end: 16000 Hz / 256 samples per hop.
FRAMES_PER_SECOND = 62.5

# The remote-code files of a MAEST model folder: save_pretrained, the converter and fine-tuning copy exactly these.
# (transformers finds the last three through the relative imports of the first three.)
MAEST_CODE_FILES = (
    "configuration_maest.py",
    "modeling_maest.py",
    "feature_extraction_maest.py",
    "audio_maest.py",
    "pipeline_maest.py",
)

# `auto_map` of config.json and preprocessor_config.json: the Auto classes that load this code with
# `trust_remote_code=True`.
MAEST_AUTO_MAP = {
    "AutoConfig": "configuration_maest.MaestConfig",
    "AutoModel": "modeling_maest.MaestModel",
    "AutoModelForAudioClassification": "modeling_maest.MaestForAudioClassification",
}
MAEST_FEATURE_EXTRACTOR_AUTO_MAP = {"AutoFeatureExtractor": "feature_extraction_maest.MaestFeatureExtractor"}

# `custom_pipelines` of config.json: `pipeline("audio-classification")` tags, `pipeline("feature-extraction")` embeds.
MAEST_CUSTOM_PIPELINES = {
    "audio-classification": {
        "impl": "pipeline_maest.MaestAudioClassificationPipeline",
        "pt": ["AutoModelForAudioClassification"],
        "type": "audio",
    },
    "feature-extraction": {"impl": "pipeline_maest.MaestEmbeddingPipeline", "pt": ["AutoModel"], "type": "audio"},
}

# The eight published MAEST models (all ViT-Base: 768 wide, 12 blocks, 12 heads, 96 mel bins). `max_length` is the
# window in mel frames, `window_hop` Essentia's hop in frames, `num_labels` the size of the Discogs style list
# (400 or 519, whose orders differ), `time_positions` the time columns of the position table.
MAEST_PRESETS = {
    "discogs-maest-5s-pw-129e": {"max_length": 316, "window_hop": 313, "num_labels": 400, "time_positions": 31},
    "discogs-maest-10s-fs-129e": {"max_length": 626, "window_hop": 625, "num_labels": 400, "time_positions": 62},
    "discogs-maest-10s-pw-129e": {"max_length": 626, "window_hop": 625, "num_labels": 400, "time_positions": 62},
    "discogs-maest-10s-dw-75e": {"max_length": 626, "window_hop": 625, "num_labels": 400, "time_positions": 62},
    "discogs-maest-20s-pw-129e": {"max_length": 1256, "window_hop": 1250, "num_labels": 400, "time_positions": 125},
    "discogs-maest-30s-pw-129e": {"max_length": 1876, "window_hop": 1875, "num_labels": 400, "time_positions": 187},
    "discogs-maest-30s-pw-73e-ts": {"max_length": 1876, "window_hop": 1875, "num_labels": 400, "time_positions": 187},
    "discogs-maest-30s-pw-129e-519l": {"max_length": 1876, "window_hop": 1875, "num_labels": 519, "time_positions": 187},
}


# Sizes no real model has, refused before anything is allocated (a typo such as max_length=10**9 would otherwise ask
# for a position table of hundreds of GB). MAEST itself has 400 or 519 labels and about 87M parameters.
MAX_NUM_LABELS = 1_000_000
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights, 23 times ViT-Base


def _check_num_labels(num_labels) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or not 1 <= num_labels <= MAX_NUM_LABELS:
        raise ValueError(
            f"num_labels must be a whole number from 1 to {MAX_NUM_LABELS:,}, got {num_labels!r}; MAEST's Discogs "
            "models have 400 or 519 labels. Pass the size of your label list (or id2label)."
        )


def num_patches(num_frames: int, num_mel_bins: int, patch_size: int, frequency_stride: int, time_stride: int):
    """Size of the patch grid that the patch embedding makes of a window.

    Args:
        num_frames (`int`): window length in mel frames.
        num_mel_bins (`int`): mel bands per frame.
        patch_size (`int`): side of the square patch, in bins and frames.
        frequency_stride (`int`): patch step along the mel axis, in bins.
        time_stride (`int`): patch step along time, in frames.

    Returns:
        `tuple[int, int]`: (frequency rows, time columns), 0 where the input is smaller than one patch.
    """
    frequency = (num_mel_bins - patch_size) // frequency_stride + 1 if num_mel_bins >= patch_size else 0
    time = (num_frames - patch_size) // time_stride + 1 if num_frames >= patch_size else 0
    return frequency, time


@strict
class MaestConfig(_ConfigBase):
    r"""
    Configuration of a MAEST model ([`MaestModel`], [`MaestForAudioClassification`]).

    MAEST is a ViT over normalised log-mel spectrograms (96 bands, 62.5 frames per second) with PaSST-style
    factorised positions, a CLS and a distillation token, and a LayerNorm + Linear head on their mean. The field
    names of `ASTConfig` are kept where the meaning is the same, so the `config.json` of the published
    `mtg-upf/discogs-maest-*` checkpoints loads into this class unchanged. Defaults describe
    `discogs-maest-10s-fs-129e`.

    Args:
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the tokens.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 12):
            Attention heads per block; `hidden_size` must be a multiple of it (every MAEST model uses 64 per head).
        intermediate_size (`int`, *optional*, defaults to 3072):
            Width of the MLP inside each block.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            MLP activation, a key of `transformers.activations.ACT2FN` (`"gelu"` is the exact erf GELU).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on the embeddings and on the outputs of attention and MLP, in training only.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities, in training only.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of new weights.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the LayerNorms in the blocks and of the final norm.
        head_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorm of the classification head. The trained MAEST models use 1e-5 there (the
            published AST port uses 1e-6, a small deviation from the trained model).
        patch_size (`int`, *optional*, defaults to 16):
            Side of the square spectrogram patches, in mel bins and in frames.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether the query, key and value projections have a bias.
        frequency_stride (`int`, *optional*, defaults to 10):
            Step between patches along the mel axis, in bins (at most `patch_size`).
        time_stride (`int`, *optional*, defaults to 10):
            Step between patches along time, in frames (at most `patch_size`).
        max_length (`int`, *optional*, defaults to 626):
            Window length in mel frames (626 frames = 10 s). It sets the size of the time position table: a window of
            T frames has `(T - patch_size) // time_stride + 1` time patches, and a shorter window uses the first
            positions of the table. Longer audio is analysed in windows of this length.
        num_mel_bins (`int`, *optional*, defaults to 96):
            Mel bands per frame of `input_values`.
        window_hop (`int`, *optional*):
            Step between the starts of consecutive analysis windows of long audio, in mel frames, between 1 and
            `max_length`. `None` picks Essentia's hop for the published window lengths (316 -> 313, 626 -> 625,
            1256 -> 1250, 1876 -> 1875) and `max_length` (no overlap) for any other length.
        max_windows_per_batch (`int`, *optional*, defaults to 8):
            Most windows run through the transformer in one forward pass when a batch of long audio is analysed;
            bounds the activation memory. Does not change results.
        inference_patchout_time (`int`, *optional*, defaults to 1):
            Inference patchout along time: keep every n-th time column of the patch grid (columns 0, n, 2n, ...),
            after the positions are added. 1 keeps all (off). Applies at inference and in training.
        inference_patchout_freq (`int`, *optional*, defaults to 1):
            Inference patchout along frequency: keep every n-th frequency row of the patch grid. 1 keeps all (off).
        train_patchout_time (`int`, *optional*, defaults to 0):
            Training-time structured patchout (PaSST): number of random time columns of the patch grid dropped per
            batch, in training mode only (at least one column is always kept). 0 is off.
        train_patchout_freq (`int`, *optional*, defaults to 0):
            Training-time structured patchout: number of random frequency rows dropped per batch, training mode only.
        train_patchout_unstructured (`int`, *optional*, defaults to 0):
            Training-time unstructured patchout: number of random patch tokens dropped per batch, training mode only.
        train_random_time_offset (`bool`, *optional*, defaults to `False`):
            In training mode, a window with fewer time patches than the position table uses positions starting at a
            random offset (one per batch) instead of the first ones. Evaluation always uses the first positions.

    Inherited fields used by MAEST: `id2label` / `label2id` (the style names, in output order), `num_labels` and
    `problem_type`: `"multi_label_classification"` (independent sigmoid score per label, as MAEST was trained;
    also what `None` means for scoring), `"single_label_classification"` (softmax) or `"regression"`.
    """

    model_type = "maest"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    head_layer_norm_eps: float = 1e-5
    patch_size: int | list[int] | tuple[int, int] = 16
    qkv_bias: bool = True
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 626
    num_mel_bins: int = 96
    window_hop: int | None = None
    max_windows_per_batch: int = 8
    inference_patchout_time: int = 1
    inference_patchout_freq: int = 1
    train_patchout_time: int = 0
    train_patchout_freq: int = 0
    train_patchout_unstructured: int = 0
    train_random_time_offset: bool = False

    def __post_init__(self, **kwargs):
        # The published AST-layout checkpoints store patch_size as an int, older configs sometimes as a pair.
        if isinstance(self.patch_size, (list, tuple)):
            if len(set(self.patch_size)) != 1:
                raise ValueError(f"MAEST uses square patches; got patch_size={self.patch_size}. Use one int.")
            self.patch_size = int(self.patch_size[0])
        if self.window_hop is None and isinstance(self.max_length, int):
            self.window_hop = ESSENTIA_WINDOW_HOPS.get(self.max_length, self.max_length)
        super().__post_init__(**kwargs)
        # Checked here too (not only by @strict's validators) so that a bad value raises a plain ValueError.
        self.validate_values()

    @property
    def num_labels(self) -> "int | None":
        """Number of labels: the length of `id2label` (`None` without labels)."""
        return PreTrainedConfig.num_labels.fget(self)

    @num_labels.setter
    def num_labels(self, num_labels: int):
        # Checked before transformers builds an id2label dict of that size.
        _check_num_labels(num_labels)
        PreTrainedConfig.num_labels.fset(self, num_labels)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Read a config.json; the published `mtg-upf/discogs-maest-*` ones (AST layout) are read as MAEST configs.

        Their `model_type` is `"audio-spectrogram-transformer"`: it is mapped to `"maest"` (the fields are the same),
        so loading them needs no conversion and prints no model-type warning.
        """
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "audio-spectrogram-transformer":
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    def validate_values(self):
        """Raise a `ValueError` naming the field, the value seen and the fix for any value MAEST cannot use.

        Runs at construction and again before saving (huggingface_hub's `@strict` calls every `validate_*`).
        """
        self._validate_sizes()
        self._validate_geometry()

    def _validate_sizes(self):
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "patch_size",
            "frequency_stride",
            "time_stride",
            "max_length",
            "num_mel_bins",
            "window_hop",
            "max_windows_per_batch",
            "inference_patchout_time",
            "inference_patchout_freq",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MaestConfig.{name} must be a positive integer, got {value!r}.")
        for name in ("train_patchout_time", "train_patchout_freq", "train_patchout_unstructured"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"MaestConfig.{name} must be an integer >= 0 (0 = off), got {value!r}.")
        for name in ("layer_norm_eps", "head_layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"MaestConfig.{name} must be a positive number, got {value!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"MaestConfig.{name} is a probability in [0, 1), got {value!r}.")

    def _validate_geometry(self):
        """Heads divide the width, strides fit the patch, a window holds at least one patch, hops leave no gap."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); MAEST models use hidden_size // 64 heads."
            )
        for name in ("frequency_stride", "time_stride"):
            if getattr(self, name) > self.patch_size:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) is larger than patch_size ({self.patch_size}): patches would "
                    f"skip part of the spectrogram. Use a stride of at most {self.patch_size}."
                )
        if self.num_mel_bins < self.patch_size:
            raise ValueError(
                f"num_mel_bins ({self.num_mel_bins}) is smaller than patch_size ({self.patch_size}): no patch fits."
            )
        if self.max_length < self.patch_size:
            raise ValueError(
                f"max_length ({self.max_length} frames) is shorter than one patch ({self.patch_size} frames)."
            )
        if self.window_hop > self.max_length:
            raise ValueError(
                f"window_hop ({self.window_hop} frames) is larger than the window (max_length={self.max_length}): "
                "audio between windows would be ignored. Use a hop of at most max_length."
            )
        if self.num_labels is not None:
            _check_num_labels(self.num_labels)
        self._validate_scale()

    def _validate_scale(self):
        """An activation the model knows, and a parameter count a machine can hold, checked before any allocation
        (a config with `max_length: 10**9` would otherwise try to allocate a 230 GB position table)."""
        from transformers.activations import ACT2FN

        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            known = ", ".join(sorted(name for name in ACT2FN if isinstance(name, str))[:12])
            raise ValueError(
                f"MaestConfig.hidden_act {self.hidden_act!r} is not an activation transformers knows "
                f"(for example {known}); MAEST uses \"gelu\"."
            )
        frequency_patches, time_patches = num_patches(
            self.max_length, self.num_mel_bins, self.patch_size, self.frequency_stride, self.time_stride
        )
        sizes = {
            "the position table (hidden_size x patches of max_length)": self.hidden_size
            * (frequency_patches * time_patches + 2),
            "the blocks (num_hidden_layers x hidden_size x (4 hidden_size + 2 intermediate_size))": self.num_hidden_layers
            * self.hidden_size
            * (4 * self.hidden_size + 2 * self.intermediate_size),
            "the head (hidden_size x num_labels)": self.hidden_size * (self.num_labels or 1),
            "the patch embedding (hidden_size x patch_size^2)": self.hidden_size * self.patch_size**2,
        }
        total = sum(sizes.values())
        if total > MAX_PARAMETERS:
            largest = max(sizes, key=sizes.get)
            raise ValueError(
                f"This configuration asks for {total:,} parameters ({total * 4 / 1e9:,.1f} GB in float32), more than "
                f"any real model ({MAX_PARAMETERS:,} allowed); most of them in {largest}. Check hidden_size="
                f"{self.hidden_size}, num_hidden_layers={self.num_hidden_layers}, intermediate_size="
                f"{self.intermediate_size}, max_length={self.max_length} and num_labels={self.num_labels}."
            )

    @property
    def num_frequency_patches(self) -> int:
        """Frequency rows of the patch grid (9 for 96 mel bins)."""
        return num_patches(self.max_length, self.num_mel_bins, self.patch_size, self.frequency_stride, self.time_stride)[0]

    @property
    def num_time_positions(self) -> int:
        """Time columns of the position table, i.e. of a full window (62 for 626 frames)."""
        return num_patches(self.max_length, self.num_mel_bins, self.patch_size, self.frequency_stride, self.time_stride)[1]

    @property
    def window_seconds(self) -> float:
        """Window length in seconds at the front end's 62.5 frames per second."""
        return self.max_length / FRAMES_PER_SECOND


__all__ = ["MaestConfig", "num_patches", "ESSENTIA_WINDOW_HOPS", "FRAMES_PER_SECOND", "MAEST_PRESETS"]
