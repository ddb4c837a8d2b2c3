# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Decoding one audio file into MAEST's input frames, the same way for every tool.

A file is decoded with ffmpeg (mean downmix to mono, soxr resampling to the extractor's rate; the root module's
`load_audio`) and turned into normalised log-mel frames `(frames, num_mel_bins)` float32 by `MaestFeatureExtractor`
(the Essentia-exact front end), the frames the pipeline feeds the model.
"""

from __future__ import annotations

import logging
import os

import numpy as np


logger = logging.getLogger("maest.features")


class UnusableAudio(ValueError):
    """The file decoded, but the front end cannot use its audio (shorter than one patch, 0.224 s...).

    ``info`` is `load_audio`'s description of the decoded audio (``duration_s``, ``source_sampling_rate``,
    ``source_channels``), so a record can still say what the file holds.
    """

    def __init__(self, message: str, info: dict):
        super().__init__(message)
        self.info = info


def decode_features(
    path: str | os.PathLike, feature_extractor, name_file: bool = True
) -> tuple[np.ndarray, dict]:
    """`(input_values, info)` of the audio file `path`.

    Args:
        path: an audio file ffmpeg decodes.
        feature_extractor: the model's `MaestFeatureExtractor` (see `load_feature_extractor`).
        name_file: start a front-end error's message with the file's path (off where the caller reports the path
            itself, as the tagger's records do).

    Returns:
        `input_values`: float32 `(frames, num_mel_bins)`, normalised log-mel frames of the whole file.
        `info`: `load_audio`'s description of the source: `duration_s` (seconds), `source_sampling_rate` (Hz),
        `source_channels`.

    Raises:
        ValueError: the file cannot be decoded; the message names the file.
        UnusableAudio: (a ValueError) it decoded but is shorter than the front end needs; ``info`` describes it.
        FileNotFoundError: no such file.
    """
    from feature_extraction_maest import load_audio

    waveform, info = load_audio(path, sampling_rate=feature_extractor.sampling_rate)
    try:
        features = feature_extractor(
            waveform, sampling_rate=feature_extractor.sampling_rate, return_tensors="np", return_attention_mask=False
        )["input_values"][0]
    except ValueError as error:
        message = str(error) if not name_file else f"{os.fspath(path)!r}: {error}"
        raise UnusableAudio(message, info) from None
    return np.ascontiguousarray(features, dtype=np.float32), info


def load_feature_extractor(model_name_or_path: str | None = None):
    """The model's `MaestFeatureExtractor`, or the default one when the model has no preprocessor_config.json."""
    from feature_extraction_maest import MaestFeatureExtractor

    if model_name_or_path is None:
        return MaestFeatureExtractor()
    try:
        return MaestFeatureExtractor.from_pretrained(model_name_or_path)
    except OSError:
        logger.warning("%s has no preprocessor_config.json; using MaestFeatureExtractor's defaults.",
                       model_name_or_path)  # fmt: skip
        return MaestFeatureExtractor()
