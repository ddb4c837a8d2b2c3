# Copyright 2025 The MAEST remote-code contributors. Licensed under the Apache License, Version 2.0.
"""Feature extractor for MAEST (Music Audio Efficient Spectrogram Transformer).

MAEST was trained on log-mel spectrograms computed by Essentia's ``TensorflowInputMusiCNN``. This
module re-implements that front end in float32 torch, so that the published checkpoints see exactly
the input they were trained on, and wraps it in a transformers ``SequenceFeatureExtractor``.

The front end, for a mono waveform at 16 kHz:

* framing: frame ``k`` holds the 512 samples centred on sample ``256 * k`` (samples ``256 * k - 256``
  to ``256 * k + 255``); samples outside the signal are zeros. ``N`` samples give
  ``ceil(N / 256) + 1`` frames (see `num_frames`).
* window: symmetric Hann ``0.5 - 0.5 * cos(2 * pi * i / 511)``, ``i = 0 .. 511``, not normalised.
* power spectrum: ``|rfft(frame * window)|**2``, 257 bins of 31.25 Hz, no scaling.
* 96 Slaney mel bands between 0 and 8000 Hz (see `mel_filterbank`).
* ``log10(1 + 10000 * band)`` ("logC" compression).
* normalisation of the extractor: ``(logmel - MAEST_MEAN) / (2 * MAEST_STD)``.

Everything is computed in float32, in blocks of frames, on CPU or on any torch device.

Decoding files, resampling and the coercion of arrays, tensors, lists, dicts and decoders into mono
signals live in `audio_maest.py`; this module is the front end and the extractor class. Only the
standard library, numpy, torch and transformers are imported at module import time.
"""

import importlib
import math
from numbers import Integral
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging


# --- Compatibility with transformers 4.48 - 5.x (see docs/compatibility.md) ---------------------------------------
try:  # loaded as Hugging Face remote code (a package)
    from .audio_maest import SAMPLING_RATE, check_finite, check_sampling_rate, is_number, load_input, to_mono_float32
    from .audio_maest import load_audio, resample  # re-exported: `from feature_extraction_maest import load_audio`
except ImportError:  # imported from the repository root as a plain module (tests, scripts)
    # Spelled with importlib: transformers 4.48 - 4.50 take every `from x import` left after a try body for a
    # package the remote code needs, and refuse to load it when no package `audio_maest` is installed.
    _audio_maest = importlib.import_module("audio_maest")
    SAMPLING_RATE = _audio_maest.SAMPLING_RATE
    check_finite = _audio_maest.check_finite
    check_sampling_rate = _audio_maest.check_sampling_rate
    is_number = _audio_maest.is_number
    load_input = _audio_maest.load_input
    to_mono_float32 = _audio_maest.to_mono_float32
    load_audio = _audio_maest.load_audio
    resample = _audio_maest.resample


# transformers 4.48 - 4.52 give the auto_map of a feature extractor read from a hub repo a `<repo id>--` prefix and
# keep it in save_pretrained; a saved MAEST folder carries its own code, so the saved references drop it (a no-op
# from 4.53, which does not write the prefix).
class SequenceFeatureExtractor(SequenceFeatureExtractor):  # noqa: F811
    def to_dict(self):
        output = super().to_dict()
        if isinstance(output.get("auto_map"), dict):
            output["auto_map"] = {
                name: reference.split("--", 1)[-1] if isinstance(reference, str) else reference
                for name, reference in output["auto_map"].items()
            }
        return output


# --- End of compatibility block ----------------------------------------------------------------------------------


logger = logging.get_logger(__name__)

MAEST_MEAN = 2.06755686098554
"""Mean of the training log-mel values (``log10(1 + 1e4 * mel_power)``), used to normalise inputs."""

MAEST_STD = 1.268292820667291
"""Standard deviation of the training log-mel values; inputs are divided by ``2 * MAEST_STD``."""

N_FFT = 512
"""Frame length and FFT size, in samples."""

HOP_LENGTH = 256
"""Distance between the centres of two consecutive frames, in samples."""

NUM_MEL_BINS = 96
"""Number of mel bands."""

PATCH_FRAMES = 16
"""Frames spanned by one MAEST patch: the fewest frames the model can take."""

MIN_NUM_SAMPLES = (PATCH_FRAMES - 2) * HOP_LENGTH + 1
"""Fewest samples at 16 kHz that give `PATCH_FRAMES` frames (3585 samples, 0.224 s)."""

_LOG_COMPRESSION = "logC"
_LOG_COMPRESSION_SCALE = 10000.0

# ---------------------------------------------------------------------------------------------
# Frame arithmetic
# ---------------------------------------------------------------------------------------------


def num_frames(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Number of log-mel frames the front end produces for a signal.

    Frames are centred on samples ``0, hop_length, 2 * hop_length, ...`` and the last frame is the
    first one whose centre is at or beyond the last sample, so ``N`` samples give
    ``ceil(N / hop_length) + 1`` frames (the count of Essentia's ``FrameGenerator`` with
    ``startFromZero=False``). Examples at hop 256: 1..256 samples -> 2 frames, 16000 -> 64,
    159744 -> 625, 160000 -> 626, 480000 -> 1876.

    Args:
        num_samples (`int`):
            Length of the signal in samples (at the front end's rate, 16 kHz). Must be at least 1.
        hop_length (`int`, *optional*, defaults to 256):
            Hop between frame centres, in samples.

    Returns:
        `int`: the number of frames.

    Raises:
        ValueError: if ``num_samples`` is not an integer >= 1 or ``hop_length`` not an integer >= 1.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, Integral):
        raise ValueError(f"num_samples must be an integer number of samples, got {num_samples!r}.")
    if isinstance(hop_length, bool) or not isinstance(hop_length, Integral) or hop_length < 1:
        raise ValueError(f"hop_length must be an integer >= 1 (in samples), got {hop_length!r}.")
    if num_samples < 1:
        raise ValueError(
            f"num_samples must be >= 1: an empty signal has no frames (got {num_samples})."
        )
    return -(-int(num_samples) // int(hop_length)) + 1


# ---------------------------------------------------------------------------------------------
# Window and mel filterbank
# ---------------------------------------------------------------------------------------------


def hann_window(window_length: int = N_FFT) -> np.ndarray:
    """Symmetric, unnormalised Hann window ``0.5 - 0.5 * cos(2 * pi * i / (L - 1))``, ``i = 0 .. L-1``.

    This is the window of Essentia's front end. It differs from the periodic Hann window of
    ``torch.hann_window`` (denominator ``L``), which moves the log-mel by up to 0.2.

    Args:
        window_length (`int`, *optional*, defaults to 512):
            Window length ``L`` in samples (>= 2).

    Returns:
        `np.ndarray`: float32 array of shape ``(L,)``; both end points are 0.
    """
    if isinstance(window_length, bool) or not isinstance(window_length, Integral) or window_length < 2:
        raise ValueError(f"window_length must be an integer >= 2, got {window_length!r}.")
    index = np.arange(window_length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * index / (window_length - 1))).astype(np.float32)


_F32 = np.float32
# Slaney mel scale: linear below 1000 Hz (mel = 0.015 * Hz, i.e. 3 * Hz / 200), logarithmic above
# (15 mel at 1000 Hz, 27 mel per factor 6.4).
_SLANEY_MIN_LOG_HZ = _F32(1000.0)
_SLANEY_MIN_LOG_MEL = _F32(15.0)
_SLANEY_MEL_PER_HZ = _F32(0.015)


def _exp_f32(value: np.float32) -> np.float32:
    # Correctly rounded float32 exp (double precision, then rounded); numpy's own float32 exp may be
    # one ulp away, which moves a filterbank corner by one ulp.
    return _F32(math.exp(float(value)))


def _log_f32(value: np.float32) -> np.float32:
    return _F32(math.log(float(value)))


def _slaney_log_step_f32() -> np.float32:
    return _F32(_log_f32(_F32(6.4)) / _F32(27.0))


def _hz_to_mel_f32(hz: float) -> np.float32:
    hz = _F32(hz)
    if hz < _SLANEY_MIN_LOG_HZ:
        return _F32(hz * _SLANEY_MEL_PER_HZ)
    return _F32(_SLANEY_MIN_LOG_MEL + _F32(_log_f32(_F32(hz / _SLANEY_MIN_LOG_HZ)) / _slaney_log_step_f32()))


def _mel_to_hz_f32(mel: np.float32) -> np.float32:
    mel = _F32(mel)
    if mel < _SLANEY_MIN_LOG_MEL:
        return _F32(mel / _SLANEY_MEL_PER_HZ)
    return _F32(_SLANEY_MIN_LOG_HZ * _exp_f32(_F32(_slaney_log_step_f32() * _F32(mel - _SLANEY_MIN_LOG_MEL))))


def mel_band_edges(
    num_mel_bins: int = NUM_MEL_BINS, f_min: float = 0.0, f_max: float = SAMPLING_RATE / 2
) -> np.ndarray:
    """The ``num_mel_bins + 2`` corner frequencies (Hz) of the Slaney mel triangles, in float32.

    The corners are equally spaced on the Slaney mel scale (``mel = 3 * Hz / 200`` below 1000 Hz,
    ``mel = 15 + 27 * ln(Hz / 1000) / ln(6.4)`` above), computed the way Essentia does: the step
    ``(mel(f_max) - mel(f_min)) / (num_mel_bins + 1)`` is ADDED REPEATEDLY in float32, starting
    from ``mel(f_min)``, and every conversion is a float32 evaluation. A float64 textbook grid
    differs by up to 2 float32 ulps per corner, which moves the log-mel by a few 1e-4.

    Args:
        num_mel_bins (`int`, *optional*, defaults to 96): number of mel bands.
        f_min (`float`, *optional*, defaults to 0.0): lower edge of the first band, in Hz.
        f_max (`float`, *optional*, defaults to 8000.0): upper edge of the last band, in Hz.

    Returns:
        `np.ndarray`: float32 array of shape ``(num_mel_bins + 2,)``, increasing, in Hz.
    """
    mel_low = _hz_to_mel_f32(f_min)
    mel_step = _F32(_F32(_hz_to_mel_f32(f_max) - mel_low) / _F32(num_mel_bins + 1))
    edges = np.empty(num_mel_bins + 2, dtype=np.float32)
    mel = mel_low
    for index in range(num_mel_bins + 2):
        edges[index] = _mel_to_hz_f32(mel)
        mel = _F32(mel + mel_step)
    return edges


def mel_filterbank(
    num_mel_bins: int = NUM_MEL_BINS,
    n_fft: int = N_FFT,
    sampling_rate: int = SAMPLING_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """Slaney mel filterbank of Essentia's ``MelBands`` as used by ``TensorflowInputMusiCNN``.

    That is ``MelBands(numberBands=96, sampleRate=16000, lowFrequencyBound=0,
    highFrequencyBound=8000, inputSize=257, warpingFormula="slaneyMel", weighting="linear",
    normalize="unit_tri", type="power")``. Band ``i`` is a triangle, linear in Hz, over the FFT
    bins ``j`` with frequencies ``f = j * sampling_rate / n_fft`` between the corners
    ``f_i < f_{i+1} < f_{i+2}`` of `mel_band_edges`: ``(f - f_i) / (f_{i+1} - f_i)`` on the rising
    side, ``(f_{i+2} - f) / (f_{i+2} - f_{i+1})`` on the falling side, scaled by
    ``2 / (f_{i+2} - f_i)`` (unit area). Apply it to a POWER spectrum (magnitude squared).

    Only the default arguments are the MAEST front end (equal to Essentia's weights within 4e-9,
    their float32 rounding); the others are provided for experiments (within about 1e-7 of
    Essentia's ``MelBands`` with the same settings).

    Args:
        num_mel_bins (`int`, *optional*, defaults to 96): number of mel bands.
        n_fft (`int`, *optional*, defaults to 512): FFT size in samples; there are
            ``n_fft // 2 + 1`` frequency bins.
        sampling_rate (`int`, *optional*, defaults to 16000): sampling rate in Hz.
        f_min (`float`, *optional*, defaults to 0.0): lower edge of the first band, in Hz.
        f_max (`float`, *optional*, defaults to ``sampling_rate / 2``): upper edge of the last
            band, in Hz.

    Returns:
        `np.ndarray`: float32 weights of shape ``(n_fft // 2 + 1, num_mel_bins)`` = (257, 96), so that
        ``mel_power = power_spectrum @ weights``.
    """
    if f_max is None:
        f_max = sampling_rate / 2
    if not 0 <= f_min < f_max <= sampling_rate / 2:
        raise ValueError(
            f"Need 0 <= f_min < f_max <= sampling_rate / 2 (Hz); got f_min={f_min}, f_max={f_max}, "
            f"sampling_rate={sampling_rate}."
        )
    num_bins = n_fft // 2 + 1
    edges = mel_band_edges(num_mel_bins, f_min, f_max).astype(np.float64)
    bin_hz = np.arange(num_bins, dtype=np.float64)[:, None] * (sampling_rate / n_fft)
    lower, centre, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    weights = np.where(bin_hz <= centre, rising, falling)
    weights = np.where((bin_hz >= lower) & (bin_hz <= upper), weights, 0.0)
    weights *= 2.0 / (upper - lower)
    return weights.astype(np.float32)


# Window and filterbank tensors, one pair per (device, dtype).
_FRONT_END_TENSORS: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def _front_end_tensors(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    key = (device, dtype)
    tensors = _FRONT_END_TENSORS.get(key)
    if tensors is None:
        window = torch.from_numpy(hann_window(N_FFT)).to(device=device, dtype=dtype)
        filterbank = torch.from_numpy(mel_filterbank()).to(device=device, dtype=dtype).contiguous()
        tensors = _FRONT_END_TENSORS[key] = (window, filterbank)
    return tensors


# ---------------------------------------------------------------------------------------------
# Log-mel spectrogram
# ---------------------------------------------------------------------------------------------


def log_mel_spectrogram(
    waveform: "np.ndarray | torch.Tensor",
    *,
    block_frames: int = 1024,
    device: "str | torch.device | None" = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Un-normalised log-mel spectrogram of Essentia's ``TensorflowInputMusiCNN``, in float32.

    ``log10(1 + 10000 * mel_power)`` per frame, where frame ``k`` is centred on sample
    ``256 * k`` (zeros outside the signal), windowed by the symmetric Hann window, transformed by a
    512-point real FFT, squared (power) and projected on the 96 Slaney bands of `mel_filterbank`.
    No normalisation: see `MAEST_MEAN` / `MAEST_STD`.

    Frames are computed ``block_frames`` at a time, so the working memory stays bounded (about
    5 KiB per frame of a block, 5 MiB at the default) whatever the length; only the output grows
    with the signal.

    Args:
        waveform (`np.ndarray` or `torch.Tensor`):
            Mono signal of shape ``(num_samples,)`` at 16 kHz, in [-1, 1] (any real dtype, converted
            to float32; integers are NOT rescaled: use `to_mono_float32` for PCM). ``num_samples``
            must be at least 1. Non-finite samples propagate.
        block_frames (`int`, *optional*, defaults to 1024):
            Frames per block (>= 1). Affects speed and memory only, never the values.
        device (`str` or `torch.device`, *optional*):
            Device to compute on. Defaults to the waveform's device (CPU for numpy arrays). Works
            on CUDA (only torch operations are used). With CUDA, matmul TF32 must stay disabled
            (the torch default) for float32 accuracy.
        out (`torch.Tensor`, *optional*):
            A float32 tensor of shape ``(num_frames(num_samples), 96)`` on the compute device to
            write into (it may be a view, e.g. one item of a padded batch).

    Returns:
        `torch.Tensor`: float32 tensor of shape ``(num_frames(num_samples), 96)`` = (frames, mel
        bins) on the compute device (``out`` itself when given).
    """
    if isinstance(block_frames, bool) or not isinstance(block_frames, Integral) or block_frames < 1:
        raise ValueError(f"block_frames must be an integer >= 1, got {block_frames!r}.")
    if isinstance(waveform, np.ndarray):
        waveform = np.ascontiguousarray(waveform, dtype=np.float32)
        if not waveform.flags.writeable:  # torch.from_numpy warns about read-only arrays
            waveform = waveform.copy()
        waveform = torch.from_numpy(waveform)
    elif not isinstance(waveform, torch.Tensor):
        raise TypeError(
            f"waveform must be a numpy array or a torch tensor, got {type(waveform).__name__}; "
            "use to_mono_float32() to convert other inputs."
        )
    if waveform.ndim != 1:
        raise ValueError(
            f"waveform must be 1-D (num_samples,), got shape {tuple(waveform.shape)}; use "
            "to_mono_float32() to downmix multi-channel audio."
        )
    if waveform.is_complex():
        raise ValueError("waveform must be real-valued, got a complex tensor.")
    compute_device = torch.device(device) if device is not None else waveform.device
    waveform = waveform.to(device=compute_device, dtype=torch.float32)
    compute_device = waveform.device  # resolves "cuda" to "cuda:<index>" for the cache key
    num_samples = waveform.shape[0]
    frames_total = num_frames(num_samples)
    if out is None:
        out = torch.empty((frames_total, NUM_MEL_BINS), dtype=torch.float32, device=compute_device)
    elif out.shape != (frames_total, NUM_MEL_BINS) or out.dtype != torch.float32 or out.device != compute_device:
        raise ValueError(
            f"out must be a float32 tensor of shape {(frames_total, NUM_MEL_BINS)} on {compute_device}, got "
            f"{out.dtype} {tuple(out.shape)} on {out.device}."
        )
    window, filterbank = _front_end_tensors(compute_device, torch.float32)
    half = N_FFT // 2
    inv_ln10 = 1.0 / math.log(10.0)
    with torch.no_grad():
        for first in range(0, frames_total, block_frames):
            last = min(frames_total, first + block_frames)
            # Frames first..last-1 cover samples [HOP * first - half, HOP * (last - 1) + half).
            start = HOP_LENGTH * first - half
            stop = HOP_LENGTH * (last - 1) + half
            segment = waveform[max(start, 0) : min(stop, num_samples)]
            if start < 0 or stop > num_samples:
                segment = torch.nn.functional.pad(segment, (max(0, -start), max(0, stop - num_samples)))
            frames = segment.unfold(0, N_FFT, HOP_LENGTH)
            spectrum = torch.view_as_real(torch.fft.rfft(frames * window))
            # real**2 + imag**2: a sum over the last axis of size 2 is several times slower.
            power = spectrum[..., 0].square()
            power.addcmul_(spectrum[..., 1], spectrum[..., 1])
            block_out = out[first:last]
            if block_out.is_contiguous():
                torch.matmul(power, filterbank, out=block_out)
            else:
                block_out.copy_(power @ filterbank)
            # log10(1 + C x) through log1p: exact where C x is small.
            block_out.mul_(_LOG_COMPRESSION_SCALE).log1p_().mul_(inv_ln10)
    return out


# ---------------------------------------------------------------------------------------------
# Feature extractor
# ---------------------------------------------------------------------------------------------


class MaestFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Feature extractor for MAEST: the log-mel front end of Essentia's ``TensorflowInputMusiCNN``.

    It turns audio into the normalised 96-band log-mel "image" the MAEST checkpoints were trained
    on: 16 kHz mono, frames of 512 samples centred every 256 samples (``ceil(N / 256) + 1`` frames
    for ``N`` samples, zeros outside the signal), symmetric Hann window, 512-point power spectrum,
    96 Slaney mel bands over 0-8000 Hz, ``log10(1 + 10000 * x)``, then ``(x - mean) / (2 * std)``.

    Unlike the extractor published with the ``mtg-upf/discogs-maest-*`` checkpoints, this one never
    pads or truncates to ``max_length``: the whole signal is returned and long audio is the model's
    job (windowing). Items of a batch are padded to the longest one with ``padding_value``.

    The constructor accepts every field of the published ``preprocessor_config.json``; the values
    the front end cannot honour raise a ``ValueError``.

    Args:
        feature_size (`int`, *optional*, defaults to 1):
            Channels of the raw audio the extractor expects (mono); kept for transformers.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Rate in Hz of the front end. Must be 16000; other input rates are resampled in
            ``__call__``.
        num_mel_bins (`int`, *optional*, defaults to 96):
            Mel bands per frame. Must be 96.
        max_length (`int`, *optional*, defaults to 626):
            Frames in one 10 s model window, kept for compatibility with the published
            configuration only: this extractor never pads or truncates to it.
        padding_value (`float`, *optional*, defaults to 0.0):
            Value of ``input_values`` in the padded frames of a batch (after normalisation).
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to return ``(logmel - mean) / (2 * std)`` instead of the raw log-mel.
        mean (`float`, *optional*, defaults to `MAEST_MEAN` = 2.06755686098554):
            Mean of the training log-mel values. Must be finite.
        std (`float`, *optional*, defaults to `MAEST_STD` = 1.268292820667291):
            Standard deviation of the training log-mel values; the divisor is ``2 * std``. Must be
            finite and > 0.
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Whether ``__call__`` returns ``attention_mask`` by default. A batch whose items have
            different lengths ALWAYS gets one, whatever this says, because the model cannot tell
            padding from audio otherwise.
        n_fft (`int`, *optional*, defaults to 512):
            Frame length and FFT size in samples. Must be 512.
        hop_length (`int`, *optional*, defaults to 256):
            Hop between frame centres in samples. Must be 256.
        log_compression (`str`, *optional*, defaults to `"logC"`):
            Log compression of the mel power; ``"logC"`` (``log10(1 + 10000 * x)``) is the only
            accepted value.
        kwargs:
            Passed to ``SequenceFeatureExtractor`` (e.g. ``padding_side``); keys such as
            ``feature_extractor_type``, ``processor_class`` or ``auto_map`` are accepted.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = SAMPLING_RATE,
        num_mel_bins: int = NUM_MEL_BINS,
        max_length: int = 626,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        mean: float = MAEST_MEAN,
        std: float = MAEST_STD,
        return_attention_mask: bool = True,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        log_compression: str = _LOG_COMPRESSION,
        **kwargs,
    ):
        fixed = {"sampling_rate": (sampling_rate, SAMPLING_RATE), "n_fft": (n_fft, N_FFT),
                 "hop_length": (hop_length, HOP_LENGTH), "num_mel_bins": (num_mel_bins, NUM_MEL_BINS)}  # fmt: skip
        for field, (value, required) in fixed.items():
            if isinstance(value, bool) or not is_number(value) or value != required:
                raise ValueError(
                    f"MaestFeatureExtractor: {field}={value!r} is not supported; MAEST's Essentia front end "
                    f"uses {field}={required}. Set {field}={required} (audio at other rates is resampled "
                    "when you pass its sampling_rate to the extractor)."
                )
        if log_compression != _LOG_COMPRESSION:
            raise ValueError(
                f"MaestFeatureExtractor: log_compression={log_compression!r} is not supported; the only "
                f"accepted value is {_LOG_COMPRESSION!r} (log10(1 + 10000 * mel_power)). Set "
                f"log_compression={_LOG_COMPRESSION!r}."
            )
        if not is_number(mean) or not math.isfinite(float(mean)):
            raise ValueError(
                f"MaestFeatureExtractor: mean={mean!r} must be a finite number; MAEST uses mean={MAEST_MEAN}."
            )
        if not is_number(std) or not math.isfinite(float(std)) or std <= 0:
            raise ValueError(
                f"MaestFeatureExtractor: std={std!r} must be a finite number > 0 (inputs are divided by "
                f"2 * std); MAEST uses std={MAEST_STD}."
            )
        if not is_number(padding_value) or not math.isfinite(float(padding_value)):
            raise ValueError(f"MaestFeatureExtractor: padding_value={padding_value!r} must be a finite number.")
        super().__init__(
            feature_size=feature_size,
            sampling_rate=int(sampling_rate),
            padding_value=float(padding_value),
            return_attention_mask=bool(return_attention_mask),
            **kwargs,
        )
        self.num_mel_bins = int(num_mel_bins)
        self.max_length = max_length
        self.do_normalize = bool(do_normalize)
        self.mean = float(mean)
        self.std = float(std)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.log_compression = log_compression

    # -- input handling ------------------------------------------------------------------------

    @staticmethod
    def _split_batch(raw_audio: Any) -> list[Any]:
        """The list of signals in ``raw_audio`` (one element when it is a single signal)."""
        if isinstance(raw_audio, (list, tuple)):
            if len(raw_audio) == 0:
                raise ValueError("Got an empty batch (a list with no signals): pass at least one signal.")
            numbers = [is_number(element) for element in raw_audio]
            if all(numbers):
                return [raw_audio]  # a list of floats is one signal
            if any(numbers):
                raise ValueError(
                    "A list mixes numbers and other objects: pass either one signal as a list of numbers, "
                    "or a batch as a list of signals (arrays, tensors, lists, dicts or file paths)."
                )
            return list(raw_audio)
        if isinstance(raw_audio, (np.ndarray, torch.Tensor)):
            if isinstance(raw_audio, np.ndarray) and raw_audio.dtype == object:
                if raw_audio.ndim != 1 or raw_audio.size == 0:
                    raise ValueError(
                        f"An object array must be a non-empty 1-D batch of signals, got shape {raw_audio.shape}."
                    )
                return list(raw_audio)
            if raw_audio.ndim == 0:
                raise ValueError(f"Audio must be an array of samples, got a 0-d array ({raw_audio!r}).")
            if raw_audio.ndim > 3:
                raise ValueError(
                    f"Audio arrays must have rank 1 (one signal), 2 (a batch of mono signals) or 3 (a batch of "
                    f"multi-channel signals); got rank {raw_audio.ndim} with shape {tuple(raw_audio.shape)}."
                )
            if raw_audio.ndim in (2, 3):
                # transformers' convention: the first axis of a 2-D (or 3-D) array is the batch. One multi-channel
                # signal is passed as an item of a list: [stereo].
                if raw_audio.shape[0] == 0:
                    shape = tuple(raw_audio.shape)
                    raise ValueError(f"Got an empty batch ({raw_audio.ndim}-D array of shape {shape}).")
                return list(raw_audio)
        return [raw_audio]

    def _signal_at_16k(self, item: Any, sampling_rate: float | None, index: int, batched: bool) -> np.ndarray:
        """One signal as mono float32 at 16 kHz, validated."""
        name = f"Audio item {index}" if batched else "Audio"
        loaded = load_input(item, name)
        if loaded is not None:
            # Files and bytes come already at 16 kHz (decoded in blocks: bounded memory); dicts and decoders at theirs.
            audio, rate, name, source_rate, source_samples = loaded
        else:  # raw samples: their rate is the caller's sampling_rate
            if sampling_rate is None:
                logger.warning_once(
                    "MaestFeatureExtractor received audio samples without a sampling_rate and assumes 16000 Hz. "
                    "Pass `sampling_rate=<rate in Hz>` (or a dict {'array': ..., 'sampling_rate': ...}) so that "
                    "audio at another rate is resampled instead of silently misread."
                )
                source_rate = SAMPLING_RATE
            else:
                source_rate = sampling_rate
            audio = to_mono_float32(item)
            rate, source_samples = source_rate, audio.shape[0]
        if audio.size == 0:
            raise ValueError(f"{name} is empty (0 samples): pass at least {MIN_NUM_SAMPLES} samples at 16 kHz.")
        check_finite(audio, name)
        if rate != SAMPLING_RATE:
            audio = resample(audio, rate, SAMPLING_RATE)
        if audio.shape[0] < MIN_NUM_SAMPLES:
            raise ValueError(
                f"{name} is too short: {source_samples} samples at {source_rate} Hz = {audio.shape[0]} samples "
                f"at 16 kHz ({audio.shape[0] / SAMPLING_RATE:.4f} s) gives {num_frames(max(audio.shape[0], 1))} "
                f"frames, but one MAEST patch needs {PATCH_FRAMES} frames, i.e. at least {MIN_NUM_SAMPLES} "
                f"samples at 16 kHz ({MIN_NUM_SAMPLES / SAMPLING_RATE:.4f} s). Pad the audio or pass a longer clip."
            )
        return audio

    # -- call ----------------------------------------------------------------------------------

    def __call__(
        self,
        raw_audio: Any,
        sampling_rate: int | None = None,
        return_tensors: "str | None" = None,
        return_attention_mask: bool | None = None,
        device: "str | torch.device | None" = None,
        **kwargs,
    ) -> BatchFeature:
        """Compute MAEST input features for one signal or a batch.

        Args:
            raw_audio:
                One signal or a batch. A signal is: a 1-D array/tensor/list of floats; integer PCM
                (see `to_mono_float32`); a file path (`str` / `os.PathLike`) or the bytes of an
                encoded file (decoded by `load_audio`); a ``datasets`` dict ``{"array": ...,
                "sampling_rate": ...}`` (or ``"raw"`` instead of ``"array"``; other keys ignored); a
                ``torchcodec`` ``AudioDecoder``; or, as an item of a list, a 2-D multi-channel array
                (channel axis = shorter axis, at most 64 channels, downmixed as the mean). A batch is
                a list/tuple of signals (a list of NUMBERS is one signal), a 2-D array or tensor
                ``(batch, samples)`` of mono signals (transformers' convention: ``np.stack(clips)``)
                or a 3-D array ``(batch, ...)`` of multi-channel signals. So one stereo array is
                passed as ``[stereo]``; a bare 2-D array is never downmixed.
            sampling_rate (`int`, *optional*):
                Rate in Hz of the raw arrays/tensors/lists; they are resampled with soxr when it is
                not 16000. Dicts, decoders and files carry their own rate. When raw arrays come
                without it, 16000 Hz is assumed and a warning is logged once per process.
            return_tensors (`str`, *optional*):
                ``None`` or ``"np"`` for numpy arrays, ``"pt"`` for torch tensors.
            return_attention_mask (`bool`, *optional*):
                Whether to return ``attention_mask``; defaults to the constructor's value. It is
                returned anyway when the items of the batch have different lengths.
            device (`str` or `torch.device`, *optional*):
                Torch device to compute the spectrograms on (e.g. ``"cuda"``); CPU by default.
                ``"pt"`` tensors are returned on it.
            kwargs:
                Ignored with a warning (``padding``, ``truncation``, ``max_length``... have no
                effect: items are padded to the longest and never truncated).

        Returns:
            [`BatchFeature`] with
            - ``input_values``: float32 of shape ``(batch, max_frames, 96)``, the log-mel frames
              (normalised when ``do_normalize``) of each item followed by ``padding_value`` up to
              the longest item. An item of ``N`` samples at 16 kHz has ``num_frames(N)`` frames.
            - ``attention_mask`` (see above): int32 of shape ``(batch, max_frames)``, 1 on real
              frames and 0 on padding.

        Raises:
            ValueError: empty audio or batch, NaN/Inf samples, audio shorter than 3585 samples at
                16 kHz (one patch of 16 frames), an invalid sampling rate, arrays of rank > 3, bad
                channel layouts, unsupported ``return_tensors``.
        """
        if kwargs:
            logger.warning_once(
                f"MaestFeatureExtractor ignores the arguments {sorted(kwargs)}: it never truncates and pads a "
                "batch to its longest item."
            )
        if return_tensors is not None:
            return_tensors = getattr(return_tensors, "value", return_tensors)
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}.")
        if sampling_rate is not None:
            sampling_rate = check_sampling_rate(sampling_rate)
        items = self._split_batch(raw_audio)
        batched = len(items) > 1 or raw_audio is not items[0]
        signals = [self._signal_at_16k(item, sampling_rate, index, batched) for index, item in enumerate(items)]

        lengths = [num_frames(signal.shape[0]) for signal in signals]
        max_frames = max(lengths)
        compute_device = torch.device(device) if device is not None else torch.device("cpu")
        input_values = torch.full(
            (len(signals), max_frames, NUM_MEL_BINS), self.padding_value, dtype=torch.float32, device=compute_device
        )
        for index, (signal, length) in enumerate(zip(signals, lengths)):
            features = log_mel_spectrogram(signal, device=compute_device, out=input_values[index, :length])
            if self.do_normalize:
                features.sub_(self.mean).div_(2.0 * self.std)
            # Finite samples can still overflow float32 in the power spectrum (|x| beyond about 1e13).
            if not all(bool(torch.isfinite(block).all()) for block in features.split(4096, dim=0)):
                name = f"Audio item {index}" if len(signals) > 1 or raw_audio is not items[0] else "Audio"
                raise ValueError(
                    f"{name} is so loud that its spectrum overflows float32 (peak |sample| "
                    f"{float(np.abs(signal).max()):.3g}; MAEST expects samples in [-1, 1]). Scale it into [-1, 1], "
                    "e.g. divide integer PCM stored as float by its full scale (32768 for 16-bit)."
                )
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        data: dict[str, Any] = {"input_values": input_values}
        if return_attention_mask or len(set(lengths)) > 1:
            frame_index = torch.arange(max_frames, device=compute_device)
            lengths_tensor = torch.tensor(lengths, device=compute_device)
            data["attention_mask"] = (frame_index[None, :] < lengths_tensor[:, None]).to(torch.int32)
        if return_tensors != "pt":
            data = {key: value.cpu().numpy() for key, value in data.items()}
        return BatchFeature(data=data)


# `save_pretrained` writes `auto_map` {"AutoFeatureExtractor": "feature_extraction_maest.MaestFeatureExtractor"}
# (= configuration_maest.MAEST_FEATURE_EXTRACTOR_AUTO_MAP) into preprocessor_config.json and copies this module and
# the root modules it imports beside it, transformers' standard mechanism for remote code (4.x and 5.x): a folder
# holding a saved extractor and a MAEST model then loads through `AutoFeatureExtractor` and both pipelines.
MaestFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

# The published mtg-upf configurations name this class MAESTFeatureExtractor in their auto_map.
MAESTFeatureExtractor = MaestFeatureExtractor

__all__ = [
    "MAEST_MEAN",
    "MAEST_STD",
    "MaestFeatureExtractor",
    "MAESTFeatureExtractor",
    "hann_window",
    "load_audio",
    "log_mel_spectrogram",
    "mel_band_edges",
    "mel_filterbank",
    "num_frames",
    "resample",
    "to_mono_float32",
]
