# Copyright 2025 The MAEST remote-code contributors. Licensed under the Apache License, Version 2.0.
"""Audio input of MAEST: decoding files with ffmpeg, resampling with soxr, and turning the inputs users pass (arrays,
tensors, integer PCM, lists, `datasets` dicts, torchcodec decoders) into mono float32 signals.

The log-mel front end lives in `feature_extraction_maest.py`; it calls this module for everything that is not
already a signal. Only the standard library, numpy and torch are imported at module import time. ``soxr`` is
imported when a signal is resampled, and ``ffmpeg`` runs in a subprocess only when a file is decoded.
"""

import math
import os
import shutil
import struct
import subprocess
import sys
from numbers import Real
from typing import Any

import numpy as np
import torch


SAMPLING_RATE = 16000
"""Sampling rate (Hz) of the waveform MAEST's front end works on; every input is resampled to it."""

MAX_CHANNELS = 64
"""Most channels a multi-channel signal may have (the shorter axis of a 2-D array)."""


# ---------------------------------------------------------------------------------------------
# Resampling and decoding
# ---------------------------------------------------------------------------------------------


def check_sampling_rate(value: Any, name: str = "sampling_rate") -> float | int:
    """Return ``value`` if it is a finite positive real number of Hz, else raise a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise ValueError(
            f"{name} must be a positive number of Hz (e.g. 16000), got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of Hz (e.g. 16000), got {value!r}.")
    return int(value) if float(value).is_integer() else float(value)


def resample(audio: np.ndarray, orig_sr: float, target_sr: float = SAMPLING_RATE) -> np.ndarray:
    """Resample with soxr at its "VHQ" (very high quality) setting, in float32.

    Args:
        audio (`np.ndarray`):
            Signal of shape ``(num_samples,)`` (mono) or ``(num_samples, channels)``.
        orig_sr (`int` or `float`): its sampling rate in Hz.
        target_sr (`int` or `float`, *optional*, defaults to 16000): the rate wanted, in Hz.

    Returns:
        `np.ndarray`: float32 signal at ``target_sr`` (a float32 copy when the rates are equal);
        about ``num_samples * target_sr / orig_sr`` samples.

    Raises:
        ImportError: if the ``soxr`` package is not installed (``pip install soxr``).
        ValueError: for a non-positive or non-finite rate.
    """
    orig_sr = check_sampling_rate(orig_sr, "orig_sr")
    target_sr = check_sampling_rate(target_sr, "target_sr")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"resample expects (num_samples,) or (num_samples, channels), got shape {audio.shape}.")
    if orig_sr == target_sr:
        return audio.copy()
    try:
        import soxr
    except ImportError as error:
        raise ImportError(
            f"Resampling from {orig_sr} Hz to {target_sr} Hz needs the `soxr` package: `pip install soxr` "
            "(or pass audio that is already at 16000 Hz)."
        ) from error
    return np.asarray(soxr.resample(np.ascontiguousarray(audio), orig_sr, target_sr, quality="VHQ"), dtype=np.float32)


def _ffmpeg_error_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(ffmpeg printed no message)"


def _parse_wav_stream(data: bytes, path: str) -> tuple[np.ndarray, int, int]:
    """Parse the float32 WAV that ffmpeg writes to a pipe (its size fields may be unknown)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"Could not decode {path!r}: ffmpeg did not produce a WAV stream.")
    position, channels, rate = 12, None, None
    while position + 8 <= len(data):
        chunk_id, chunk_size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        body = position + 8
        if chunk_id == b"fmt ":
            _format_tag, channels, rate = struct.unpack("<HHI", data[body : body + 8])
        elif chunk_id == b"data":
            if channels is None or rate is None or channels < 1:
                break
            # A pipe cannot be rewound, so ffmpeg leaves the data size unknown: read to the end.
            payload = data[body:]
            usable = len(payload) // (4 * channels) * (4 * channels)
            samples = np.frombuffer(payload[:usable], dtype="<f4").reshape(-1, channels)
            return samples, int(rate), int(channels)
        position = body + chunk_size + (chunk_size & 1)
    raise ValueError(f"Could not decode {path!r}: ffmpeg's WAV stream has no audio data.")


def load_audio(
    path: "str | os.PathLike | bytes", sampling_rate: int | None = SAMPLING_RATE
) -> tuple[np.ndarray, dict]:
    """Decode an audio file with ffmpeg, downmix it to mono and resample it.

    Any file ffmpeg can read works (wav, flac, mp3, ogg/vorbis, opus, m4a/aac, aiff, video files
    with an audio track...). The first audio stream is decoded as float32 at its own rate with all
    its channels, downmixed as the MEAN of the channels (ffmpeg's ``-ac 1`` sums with a gain and is
    about 1.41x louder for stereo) and resampled with soxr "VHQ". ``ffmpeg`` must be on ``PATH``;
    it runs in a subprocess at call time.

    Args:
        path (`str`, `os.PathLike` or `bytes`): the file to decode, or the encoded content of one (the bytes of
            an mp3/flac/... file, fed to ffmpeg through a pipe).
        sampling_rate (`int`, *optional*, defaults to 16000):
            Output rate in Hz. ``None`` keeps the source rate.

    Returns:
        `tuple[np.ndarray, dict]`: the mono float32 signal of shape ``(num_samples,)``, and
        ``{"source_sampling_rate": int (Hz), "source_channels": int, "duration_s": float}``, the
        decoded stream's rate, channel count and duration in seconds (before resampling).

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: ffmpeg is not installed.
        ValueError: ffmpeg cannot decode the file, or it holds no audio stream or no samples (the
            message names the file and quotes ffmpeg's last error line).
    """
    content = None
    if isinstance(path, (bytes, bytearray, memoryview)):
        content = bytes(path)
        if not content:
            raise ValueError("The audio bytes are empty: pass the content of an audio file.")
        path_str = f"<{len(content)} bytes of encoded audio>"
    else:
        path_str = os.fspath(path)
        if not os.path.exists(path_str):
            raise FileNotFoundError(2, f"Audio file not found: {path_str!r}", path_str)
        if os.path.isdir(path_str):
            raise ValueError(f"Expected an audio file, got the directory {path_str!r}.")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError(
            f"Decoding {path_str!r} needs the ffmpeg program, which is not on PATH. Install it "
            "(`apt-get install ffmpeg`, `conda install -c conda-forge ffmpeg` or `brew install ffmpeg`), "
            "or pass the decoded samples as an array with their sampling_rate."
        )
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error",
        "-i", "pipe:0" if content is not None else path_str,
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1", "-bitexact",
        "-c:a", "pcm_f32le", "-f", "wav", "-",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            input=content,
            stdin=None if content is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    except OSError as error:
        raise RuntimeError(f"Could not run ffmpeg ({ffmpeg}) to decode {path_str!r}: {error}.") from None
    if result.returncode != 0:
        raise ValueError(
            f"ffmpeg could not decode {path_str!r} (is it an audio file with an audio stream?): "
            f"{_ffmpeg_error_line(result.stderr)}"
        )
    samples, source_rate, channels = _parse_wav_stream(result.stdout, path_str)
    if samples.shape[0] == 0:
        raise ValueError(
            f"{path_str!r} decoded to 0 audio samples (ffmpeg: {_ffmpeg_error_line(result.stderr)})."
        )
    mono = samples[:, 0].copy() if channels == 1 else samples.mean(axis=1, dtype=np.float32)
    info = {
        "source_sampling_rate": source_rate,
        "source_channels": channels,
        "duration_s": samples.shape[0] / source_rate,
    }
    del samples
    if sampling_rate is not None:
        mono = resample(mono, source_rate, sampling_rate)
    return mono, info


# ---------------------------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------------------------

# Integer PCM: (offset, scale) so that float = (pcm - offset) / scale lies in [-1, 1).
_PCM_SCALES = {
    np.dtype(np.int8): (0, 128.0),
    np.dtype(np.uint8): (128, 128.0),
    np.dtype(np.int16): (0, 32768.0),
    np.dtype(np.int32): (0, 2147483648.0),
}


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.is_complex():
        raise ValueError(f"Audio must be real-valued, got a complex tensor ({tensor.dtype}).")
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)  # float16 / bfloat16 have no numpy equivalent
    return tensor.to("cpu").numpy()


def to_mono_float32(audio: Any) -> np.ndarray:
    """Convert one signal to a mono float32 numpy array of shape ``(num_samples,)``.

    Accepted inputs:

    * numpy arrays and torch tensors (on any device; moved to CPU), of shape ``(num_samples,)``
      or 2-D multi-channel (see below); floating dtypes are taken as is (expected in [-1, 1]);
    * integer PCM, scaled to [-1, 1): int16 ``/ 32768``, int32 ``/ 2147483648``, int8 ``/ 128``,
      uint8 ``(x - 128) / 128``; other integer dtypes (int64...) are refused because their scale is
      unknown;
    * Python lists/tuples of numbers (or of equal-length lists for multi-channel), read as floats.

    This function takes ONE signal, so a 2-D array here is one multi-channel signal (the feature
    extractor reads a bare 2-D array as a batch of mono signals and a 2-D item of a list as one
    multi-channel signal, which it hands to this function). The channel axis is the SHORTER axis,
    so both ``(channels, samples)`` and ``(samples, channels)`` work; it may have at most 64 entries, and a square array is refused as ambiguous. Channels are
    downmixed as their mean.

    Args:
        audio: the signal, as above.

    Returns:
        `np.ndarray`: contiguous float32 array of shape ``(num_samples,)``.

    Raises:
        ValueError: empty audio, rank 0 or > 2, ambiguous or too many channels, unsupported dtype.
        TypeError: an object that is not an array, tensor or list.
    """
    if is_number(audio):
        raise ValueError(f"Audio must be an array of samples, got a scalar ({audio!r}).")
    if isinstance(audio, torch.Tensor):
        array = tensor_to_numpy(audio)
    elif isinstance(audio, np.ndarray):
        array = audio
    elif isinstance(audio, (list, tuple)):
        try:
            array = np.asarray(audio, dtype=np.float64)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "A list given as audio must hold numbers (one signal) or equal-length lists of numbers "
                f"(one multi-channel signal); converting it failed: {error}"
            ) from None
    else:
        raise TypeError(
            f"Unsupported audio type {type(audio).__name__}: pass a numpy array, a torch tensor or a list of floats."
        )
    if array.dtype in _PCM_SCALES:
        offset, scale = _PCM_SCALES[array.dtype]
        array = array.astype(np.float32)
        if offset:
            array -= offset
        array *= np.float32(1.0 / scale)
    elif array.dtype.kind == "b":
        raise ValueError("Audio must be numeric samples, got a boolean array.")
    elif array.dtype.kind in "iu":
        raise ValueError(
            f"Integer audio of dtype {array.dtype} has no known PCM scale: pass int16, int32, int8 or uint8 "
            "PCM, or floats in [-1, 1]."
        )
    elif array.dtype.kind == "c":
        raise ValueError(f"Audio must be real-valued, got dtype {array.dtype}.")
    elif array.dtype.kind != "f":
        raise ValueError(f"Audio must be numeric samples, got an array of dtype {array.dtype}.")
    if array.ndim == 0:
        raise ValueError(f"Audio must be an array of samples, got a scalar ({array!r}).")
    if array.ndim > 2:
        raise ValueError(
            f"One signal must be 1-D (samples) or 2-D (channels and samples), got shape {array.shape}. "
            "A batch is a list of signals (or a 3-D array given to the feature extractor)."
        )
    if array.size == 0:
        raise ValueError(f"Audio is empty (0 samples, shape {array.shape}): pass a signal with samples.")
    if array.ndim == 2:
        rows, columns = array.shape
        if rows == columns:
            raise ValueError(
                f"A 2-D audio array of shape {array.shape} is ambiguous: the channel axis is taken to be "
                "the shorter axis, and here both axes have the same length. Pass (channels, samples) "
                "with more samples than channels, or a 1-D mono signal."
            )
        channel_axis = 0 if rows < columns else 1
        channels = array.shape[channel_axis]
        if channels > MAX_CHANNELS:
            raise ValueError(
                f"A 2-D audio array is ONE multi-channel signal whose channel axis is its shorter axis; "
                f"shape {array.shape} would have {channels} channels, more than the {MAX_CHANNELS} allowed. "
                "A batch of mono signals is a list of 1-D arrays or a bare 2-D array (batch, samples) given to "
                "the feature extractor."
            )
        array = array.mean(axis=channel_axis) if channels > 1 else array.reshape(-1)
    return np.ascontiguousarray(array, dtype=np.float32)


def check_finite(audio: np.ndarray, description: str) -> None:
    finite = np.isfinite(audio)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{description} has {bad.size} NaN or infinite sample(s) (first at index {int(bad[0])}); "
            "clean or replace them (e.g. np.nan_to_num) before extracting features."
        )


# ---------------------------------------------------------------------------------------------
# Input types
# ---------------------------------------------------------------------------------------------




def is_audio_decoder(value: Any) -> bool:
    # torchcodec is only looked up if the caller already imported it (importing it is slow).
    torchcodec = sys.modules.get("torchcodec")
    if torchcodec is None:
        return False
    decoders = getattr(torchcodec, "decoders", None)
    decoder_class = getattr(decoders, "AudioDecoder", None) or getattr(torchcodec, "AudioDecoder", None)
    return isinstance(decoder_class, type) and isinstance(value, decoder_class)


def is_number(value: Any) -> bool:
    """True for one real number (Python or numpy scalar), False for bools, arrays and everything else."""
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def load_input(item: Any, name: str = "Audio") -> "tuple[np.ndarray, float | int, str] | None":
    """Decode one input that carries its own rate: a file path, the bytes of an encoded file, a `datasets` dict
    ``{"array" (or "raw"): samples, "sampling_rate": Hz}`` or a torchcodec ``AudioDecoder``.

    Args:
        item: the input.
        name (`str`, *optional*): how error messages name it (e.g. ``"Audio item 3"``).

    Returns:
        ``(mono float32 samples, their rate in Hz, name)`` (the name gains the path of a file), or ``None`` when
        ``item`` is raw samples (array, tensor, list), whose rate only the caller knows.
    """
    if isinstance(item, (str, os.PathLike)):
        audio, info = load_audio(item, sampling_rate=None)
        return audio, info["source_sampling_rate"], f"{name} ({os.fspath(item)!r})"
    if isinstance(item, (bytes, bytearray)):
        audio, info = load_audio(item, sampling_rate=None)
        return audio, info["source_sampling_rate"], name
    if isinstance(item, dict):
        key = "array" if "array" in item else "raw" if "raw" in item else None
        if key is None:
            raise ValueError(
                f"{name} is a dict without an 'array' or 'raw' entry (keys: {sorted(map(str, item))}); "
                "pass {'array': samples, 'sampling_rate': rate_in_hz}."
            )
        if "sampling_rate" not in item:
            raise ValueError(
                f"{name} is a dict without 'sampling_rate' (keys: {sorted(map(str, item))}); add the rate "
                "of its samples in Hz, e.g. {'array': samples, 'sampling_rate': 44100}."
            )
        source_rate = check_sampling_rate(item["sampling_rate"], f"{name}['sampling_rate']")
        return to_mono_float32(item[key]), source_rate, name
    if is_audio_decoder(item):
        decoded = item.get_all_samples()
        source_rate = check_sampling_rate(decoded.sample_rate, f"{name} (AudioDecoder) sample_rate")
        data = tensor_to_numpy(decoded.data)  # (channels, samples)
        if data.ndim != 2 or data.size == 0:
            raise ValueError(f"{name}: the AudioDecoder returned no samples (shape {tuple(data.shape)}).")
        return np.ascontiguousarray(data.mean(axis=0), dtype=np.float32), source_rate, name
    return None


__all__ = [
    "MAX_CHANNELS",
    "SAMPLING_RATE",
    "check_finite",
    "check_sampling_rate",
    "is_audio_decoder",
    "is_number",
    "load_audio",
    "load_input",
    "resample",
    "tensor_to_numpy",
    "to_mono_float32",
]
