# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""The MAEST pipelines: `pipeline("audio-classification")` tags whole tracks, `pipeline("feature-extraction")`
returns the paper's track embeddings. config.json's `custom_pipelines` points at these classes."""

import importlib

import numpy as np
from transformers.pipelines.audio_classification import AudioClassificationPipeline
from transformers.pipelines.base import Pipeline


# --- Compatibility with transformers 4.48 - 5.x (see docs/compatibility.md) ---------------------------------------
try:  # loaded as Hugging Face remote code (a package)
    from .audio_maest import is_number
except ImportError:  # imported from the repository root as a plain module (tests, scripts)
    # Spelled with importlib: transformers 4.48 - 4.50 take every `from x import` left after a try body for a
    # package the remote code needs, and refuse to load it when no package `audio_maest` is installed.
    is_number = importlib.import_module("audio_maest").is_number


def _fill_feature_extractor(args, kwargs):
    """Give a MAEST pipeline the model's own feature extractor when `pipeline()` passed none (transformers 4.48 - 4.53).

    Those releases load a feature extractor only for configs registered in transformers (MAEST's is remote code);
    from 4.54 `pipeline()` follows the pipeline class's `_load_feature_extractor`, and this does nothing. Reads the
    model's preprocessor_config.json from where the model came from (repo id or folder, the HF cache when offline).
    """
    if kwargs.get("feature_extractor") is not None:
        return
    try:
        from .feature_extraction_maest import MaestFeatureExtractor
    except ImportError:  # a plain module (tests, scripts); importlib for transformers 4.48 - 4.50, as above
        MaestFeatureExtractor = importlib.import_module("feature_extraction_maest").MaestFeatureExtractor
    source = getattr(kwargs.get("model", args[0] if args else None), "name_or_path", None)
    kwargs["feature_extractor"] = MaestFeatureExtractor.from_pretrained(source) if source else MaestFeatureExtractor()


def _model_dtype(pipeline):
    """The dtype of the pipeline's model: `Pipeline.dtype` exists only from transformers 4.54 (4.48 - 4.53)."""
    return getattr(pipeline.model, "dtype", None)


# --- End of compatibility block ----------------------------------------------------------------------------------


def _one_signal(inputs):
    """The pipelines take one input at a time, so a single 2-D array or tensor is ONE multi-channel signal: it is
    handed to the extractor inside a list, where a 2-D item is a multi-channel signal (a bare 2-D array is a batch
    of mono signals for the extractor)."""
    return [inputs] if getattr(inputs, "ndim", None) == 2 else inputs




_UNSET = object()


def _signal_or_batch(inputs):
    """A list of numbers is one signal, not a batch (an empty list is an empty batch: it gives `[]`)."""
    if isinstance(inputs, list) and inputs and all(is_number(value) for value in inputs):
        return np.asarray(inputs, dtype=np.float64)
    return inputs


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
            A list of `{"label": str, "score": float}`, best first (a list of those lists for a batch; `[]` for an
            empty batch).
        """
        inputs = _signal_or_batch(inputs)
        return [] if isinstance(inputs, list) and not inputs else super().__call__(inputs, **kwargs)

    def preprocess(self, inputs, sampling_rate=None):
        processed = self.feature_extractor(
            _one_signal(inputs), sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True
        )
        dtype = _model_dtype(self)  # `self.dtype` from transformers 4.54 (see the compatibility block)
        if dtype is not None:
            processed["input_values"] = processed["input_values"].to(dtype=dtype)
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
    `block` (0-based, default the middle block `num_hidden_layers // 2`: 6, the 7th block, for MAEST), 3 x
    hidden_size = 2304 values, averaged over the track's windows,
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
            block (`int`, *optional*): 0-based block whose output is embedded; defaults to the model's middle block
                (`num_hidden_layers // 2`, 6 for MAEST).
            per_window (`bool`, *optional*, defaults to `False`): one embedding per analysis window.
            sampling_rate (`int`, *optional*): rate in Hz of raw arrays.
            return_tensors (`bool`, *optional*, defaults to `False`): return torch tensors instead of lists.

        Returns:
            A list of 2304 floats (a tensor `(2304,)` with `return_tensors=True`); with `per_window=True` a list of
            such lists, one per window in time order (a tensor `(windows, 2304)`).
        """
        inputs = _signal_or_batch(inputs)
        return [] if isinstance(inputs, list) and not inputs else super().__call__(inputs, **kwargs)

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
        return self.feature_extractor(
            _one_signal(inputs), sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True
        )

    def _forward(self, model_inputs, block=None, per_window=False):
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


__all__ = ["MaestAudioClassificationPipeline", "MaestEmbeddingPipeline"]
