"""Tests of feature_extraction_maest: Essentia parity, decoding, input forms and errors.

The reference is Essentia itself (a declared test dependency): its ``TensorflowInputMusiCNN`` is the
front end every MAEST model was trained on, and ``MelBands`` gives the filterbank weights. Constants
below come from docs/MAEST_FACTS.md, not from the module under test.
"""

import importlib.util
import json
import logging
import math
import re
import subprocess
import sys
import time
import wave

import essentia
import essentia.standard as es
import numpy as np
import pytest
import soxr
import torch
from audio_strategies import signal_arguments
from hypothesis import HealthCheck, given, settings

import audio_maest
import feature_extraction_maest as fem
from feature_extraction_maest import (
    MaestFeatureExtractor,
    load_audio,
    log_mel_spectrogram,
    mel_filterbank,
    num_frames,
    resample,
    to_mono_float32,
)


essentia.log.infoActive = False
essentia.log.warningActive = False

SR = 16000
FACTS_MEAN = 2.06755686098554
FACTS_STD = 1.268292820667291
PARITY_TOL = 1e-4
RNG_SEED = 20231105

# One Essentia front end per process: TensorflowInputMusiCNN is stateless between frames.
_ESSENTIA_FRONT_END = es.TensorflowInputMusiCNN()


def essentia_logmel(audio: np.ndarray) -> np.ndarray:
    """Essentia's MAEST front end: TensorflowInputMusiCNN on each centred 512/256 frame."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    frames = es.FrameGenerator(audio, frameSize=512, hopSize=256, startFromZero=False)
    return np.stack([_ESSENTIA_FRONT_END(frame) for frame in frames])


def essentia_frame_count(num_samples: int) -> int:
    frames = es.FrameGenerator(np.zeros(num_samples, np.float32), frameSize=512, hopSize=256, startFromZero=False)
    return sum(1 for _ in frames)


def ours(audio: np.ndarray) -> np.ndarray:
    return log_mel_spectrogram(np.asarray(audio, dtype=np.float32)).numpy()


def noise(length: int, seed: int = 0, amplitude: float = 1.0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).uniform(-1, 1, length)).astype(np.float32)


def generated_signals() -> dict[str, np.ndarray]:
    t = np.arange(2 * SR) / SR
    n = np.arange(2 * SR)
    impulses = np.zeros(SR, np.float32)
    impulses[[0, 1, 255, 256, 257, 4000, SR - 1]] = [1.0, -1.0, 0.5, 1.0, -0.7, 1.0, 1.0]
    signals = {
        "white_noise": noise(2 * SR, seed=1),
        "quiet_noise": noise(SR, seed=2, amplitude=1e-3),
        "sine_20hz": 0.9 * np.sin(2 * np.pi * 20 * t),
        "sine_1hz": np.sin(2 * np.pi * 1 * t),
        "sine_440hz": 0.5 * np.sin(2 * np.pi * 440 * t + 0.3),
        "sine_7999hz": 0.9 * np.sin(2 * np.pi * 7999 * t),
        "sine_8000hz": 0.9 * np.cos(np.pi * n),  # exactly Nyquist: +-0.9 alternating
        "sine_3156.25hz": np.sin(2 * np.pi * 3156.25 * t),
        "chirp": np.sin(2 * np.pi * (20 * t + (7990 - 20) / (2 * 2.0) * t**2)),
        "silence": np.zeros(SR),
        "impulses": impulses,
        "square_full_scale": np.sign(np.sin(2 * np.pi * 100 * t)),
    }
    for length in (1, 255, 256, 257, 3585, 16001, 159744, 160000):
        signals[f"noise_len_{length}"] = noise(length, seed=length)
    return {name: np.asarray(x, dtype=np.float32) for name, x in signals.items()}


GENERATED = generated_signals()


# ---------------------------------------------------------------------------------------------
# Frame count, filterbank, parity
# ---------------------------------------------------------------------------------------------


def test_num_frames_documented_examples():
    assert num_frames(16000) == 64
    assert num_frames(159744) == 625
    assert num_frames(160000) == 626
    assert num_frames(480000) == 1876
    assert [num_frames(n) for n in (1, 2, 255, 256, 257, 512, 513)] == [2, 2, 2, 2, 3, 3, 4]


def test_num_frames_matches_essentia_frame_generator():
    lengths = list(range(1, 1300)) + [3584, 3585, 16000, 16001, 40001, 159744, 159745, 160000, 480000]
    counts = [(n, num_frames(n), essentia_frame_count(n)) for n in lengths]
    mismatches = [(n, ours_count, reference) for n, ours_count, reference in counts if ours_count != reference]
    assert not mismatches


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_num_frames_rejects_non_positive_or_non_integer(bad):
    with pytest.raises(ValueError, match=r"num_samples"):
        num_frames(bad)


def essentia_filterbank() -> np.ndarray:
    # The MelBands configuration inside TensorflowInputMusiCNN (found by matching its output);
    # one-hot power spectra read off each bin's weights.
    melbands = es.MelBands(
        numberBands=96, sampleRate=16000, lowFrequencyBound=0, highFrequencyBound=8000, inputSize=257,
        warpingFormula="slaneyMel", weighting="linear", normalize="unit_tri", type="power",
    )  # fmt: skip
    return np.stack([melbands(row) for row in np.eye(257, dtype=np.float32)]).astype(np.float64)


def test_essentia_melbands_configuration_is_the_front_end():
    """The MelBands settings used as reference do reproduce TensorflowInputMusiCNN."""
    frames = np.random.default_rng(3).uniform(-1, 1, (8, 512)).astype(np.float32)
    window = es.Windowing(type="hann", normalized=False, zeroPadding=0)
    spectrum = es.Spectrum(size=512)
    melbands = es.MelBands(
        numberBands=96, sampleRate=16000, lowFrequencyBound=0, highFrequencyBound=8000, inputSize=257,
        warpingFormula="slaneyMel", weighting="linear", normalize="unit_tri", type="power",
    )  # fmt: skip
    for frame in frames:
        expected = _ESSENTIA_FRONT_END(frame)
        rebuilt = np.log10(1 + 10000 * melbands(spectrum(window(frame))))
        np.testing.assert_allclose(rebuilt, expected, atol=2e-6, rtol=0)


def test_mel_filterbank_equals_essentia_melbands():
    ours_fb = mel_filterbank()
    assert ours_fb.shape == (257, 96) and ours_fb.dtype == np.float32
    reference = essentia_filterbank()
    assert np.abs(ours_fb.astype(np.float64) - reference).max() <= 1e-8
    assert np.array_equal(ours_fb > 0, reference > 0)


def textbook_slaney_filterbank() -> np.ndarray:
    """librosa-style float64 Slaney filterbank: corners from a float64 linspace on the mel axis."""

    def hz_to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz < 1000, 3 * hz / 200, 15 + 27 * np.log(np.maximum(hz, 1e-10) / 1000) / np.log(6.4))

    def mel_to_hz(mel):
        return np.where(mel < 15, 200 * mel / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))

    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 98))
    bins = np.arange(257)[:, None] * 31.25
    lower, centre, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    weights = np.maximum(0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    return weights * 2 / (upper - lower)


def float64_logmel(audio: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
    """The front end in float64 with numpy, for a given filterbank."""
    audio = np.asarray(audio, dtype=np.float64)
    count = math.ceil(len(audio) / 256) + 1
    padded = np.concatenate([np.zeros(256), audio, np.zeros(256 * count - len(audio))])
    frames = np.lib.stride_tricks.sliding_window_view(padded, 512)[::256][:count]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 511)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return np.log10(1 + 1e4 * (power @ filterbank))


def test_float32_corner_accumulation_matters():
    textbook = textbook_slaney_filterbank()
    reference = essentia_filterbank()
    assert np.abs(textbook - reference).max() > 1e-8  # the weights differ...
    textbook_error, our_error = 0.0, 0.0
    for name in ("chirp", "sine_3156.25hz", "white_noise"):
        audio = GENERATED[name]
        expected = essentia_logmel(audio)
        textbook_error = max(textbook_error, np.abs(float64_logmel(audio, textbook) - expected).max())
        our_error = max(our_error, np.abs(ours(audio) - expected).max())
    assert textbook_error > PARITY_TOL  # ...enough to break parity
    assert our_error <= PARITY_TOL


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_log_mel_matches_essentia_on_generated_signals(name):
    audio = GENERATED[name]
    assert np.abs(audio).max() <= 1.0
    expected = essentia_logmel(audio)
    result = log_mel_spectrogram(audio)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    assert result.shape == expected.shape == (num_frames(len(audio)), 96)
    assert np.abs(result.numpy() - expected).max() <= PARITY_TOL


def test_log_mel_matches_essentia_on_clips(clip_paths):
    assert len(clip_paths) >= 3
    for path in clip_paths:
        audio, _info = load_audio(path)
        expected = essentia_logmel(audio)
        result = ours(audio)
        assert result.shape == expected.shape, path.name
        assert np.abs(result - expected).max() <= PARITY_TOL, path.name


def test_normalised_output_matches_essentia(flac_path):
    extractor = MaestFeatureExtractor()
    for audio in (load_audio(flac_path)[0], GENERATED["white_noise"], GENERATED["chirp"]):
        expected = (essentia_logmel(audio) - FACTS_MEAN) / (2 * FACTS_STD)
        features = extractor(audio, sampling_rate=SR)["input_values"]
        assert features.shape == (1,) + expected.shape
        assert np.abs(features[0] - expected).max() <= PARITY_TOL


def test_log_mel_is_independent_of_block_size():
    audio = noise(20000, seed=7)
    reference = log_mel_spectrogram(audio, block_frames=1024).numpy()
    for block in (1, 7, 16, 80):
        result = log_mel_spectrogram(audio, block_frames=block).numpy()
        np.testing.assert_allclose(result, reference, atol=1e-6, rtol=0)


def test_log_mel_accepts_tensor_and_out_buffer():
    audio = noise(5000, seed=8)
    expected = ours(audio)
    np.testing.assert_array_equal(log_mel_spectrogram(torch.from_numpy(audio).double()).numpy(), expected)
    buffer = torch.full((3, num_frames(5000) + 4, 96), -7.0)
    log_mel_spectrogram(audio, out=buffer[1, : num_frames(5000)])
    np.testing.assert_array_equal(buffer[1, : num_frames(5000)].numpy(), expected)
    assert (buffer[1, num_frames(5000) :] == -7).all() and (buffer[0] == -7).all()
    with pytest.raises(ValueError, match="shape"):
        log_mel_spectrogram(audio, out=torch.empty(3, 96))
    with pytest.raises(ValueError, match="1-D"):
        log_mel_spectrogram(np.zeros((2, 5000), np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_on_cuda_matches_cpu():
    audio = noise(50000, seed=9)
    on_gpu = log_mel_spectrogram(torch.from_numpy(audio).cuda())
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.cpu().numpy(), essentia_logmel(audio), atol=PARITY_TOL, rtol=0)
    features = MaestFeatureExtractor()(audio, sampling_rate=SR, return_tensors="pt", device="cuda")
    assert features["input_values"].device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# Decoding and resampling
# ---------------------------------------------------------------------------------------------


def test_load_audio_ogg_matches_flac(ogg_path, flac_path):
    from_ogg, ogg_info = load_audio(ogg_path)
    from_flac, flac_info = load_audio(flac_path)
    assert from_ogg.dtype == np.float32 and from_ogg.ndim == 1
    assert ogg_info["source_sampling_rate"] == 44100 and ogg_info["source_channels"] == 2
    assert flac_info["source_sampling_rate"] == 16000 and flac_info["source_channels"] == 1
    assert abs(ogg_info["duration_s"] - 30.0) < 0.05 and abs(flac_info["duration_s"] - 30.0) < 0.05
    assert abs(len(from_ogg) - len(from_flac)) <= 2
    common = min(len(from_ogg), len(from_flac))
    a, b = from_flac[:common].astype(np.float64), from_ogg[:common].astype(np.float64)
    snr_db = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
    assert snr_db > 20, snr_db  # ffmpeg's -ac 1 (1.41x louder) would give about 8 dB


def write_wav(path, channels: np.ndarray, rate: int) -> None:
    """Write int16 PCM (channels, samples) with the standard library."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.ascontiguousarray(channels.T).astype("<i2").tobytes())


def test_load_audio_downmixes_as_mean_and_resamples(tmp_path):
    rng = np.random.default_rng(11)
    left = rng.integers(-20000, 20000, 22050).astype(np.int16)
    right = rng.integers(-20000, 20000, 22050).astype(np.int16)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, right]), 22050)
    expected = (left.astype(np.float64) + right.astype(np.float64)) / 2 / 32768
    native, info = load_audio(path, sampling_rate=None)
    assert info == {"source_sampling_rate": 22050, "source_channels": 2, "duration_s": pytest.approx(1.0)}
    np.testing.assert_allclose(native, expected, atol=1e-7, rtol=0)
    at_16k, _ = load_audio(str(path))
    reference = soxr.resample(expected.astype(np.float32), 22050, 16000, quality="VHQ")
    np.testing.assert_allclose(at_16k, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", ["flac", "mp3", "ogg", "opus", "m4a", "aiff"])
def test_load_audio_formats(tmp_path, suffix):
    rate, seconds = 44100, 1.5
    sine = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
    source = tmp_path / "source.wav"
    write_wav(source, np.round(np.stack([sine, sine]) * 32767), rate)
    encoded = tmp_path / f"clip.{suffix}"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(source), str(encoded)], check=True)
    audio, info = load_audio(encoded)
    assert info["source_channels"] == 2
    assert info["source_sampling_rate"] == (48000 if suffix == "opus" else rate)  # Opus decodes at 48 kHz
    assert info["duration_s"] == pytest.approx(seconds, abs=0.06)
    assert audio.dtype == np.float32 and abs(len(audio) - 24000) < 1000
    rms = float(np.sqrt(np.mean(audio[2000:-2000].astype(np.float64) ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)  # the mean of L and R, not 1.41x louder


def test_load_audio_corrupt_file(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(np.random.default_rng(5).bytes(4000))
    with pytest.raises(ValueError) as info:
        load_audio(bad)
    assert str(bad) in str(info.value) and "ffmpeg" in str(info.value)


def test_load_audio_without_audio_stream(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all\n" * 100)
    with pytest.raises(ValueError, match="notes.txt"):
        load_audio(text)


def test_load_audio_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "missing.flac"
    with pytest.raises(FileNotFoundError, match="missing.flac"):
        load_audio(missing)


def test_load_audio_without_ffmpeg(monkeypatch, flac_path):
    monkeypatch.setattr(audio_maest.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"(?s)ffmpeg.*apt-get install ffmpeg"):
        load_audio(flac_path)


def test_resample_is_soxr_vhq():
    audio = noise(44100, seed=12)
    result = resample(audio, 44100, 16000)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, soxr.resample(audio, 44100, 16000, quality="VHQ"))
    np.testing.assert_array_equal(resample(audio, 16000, 16000), audio)


def test_missing_soxr_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)  # makes `import soxr` raise ImportError
    with pytest.raises(ImportError, match="pip install soxr"):
        resample(noise(1000), 44100, 16000)


def test_import_runs_no_subprocess(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("subprocess at import time")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(subprocess, "run", forbidden)
    spec = importlib.util.spec_from_file_location("_audio_import_check", audio_maest.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    spec = importlib.util.spec_from_file_location("_fem_import_check", fem.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.MAEST_MEAN == FACTS_MEAN and module.MAEST_STD == FACTS_STD


# ---------------------------------------------------------------------------------------------
# Input forms
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor() -> MaestFeatureExtractor:
    return MaestFeatureExtractor()


def values(extractor, audio, **kwargs) -> np.ndarray:
    kwargs.setdefault("sampling_rate", SR)
    return extractor(audio, **kwargs)["input_values"]


def test_float_list_and_tensor_inputs_agree(extractor):
    audio = noise(8000, seed=21, amplitude=0.8)
    expected = values(extractor, audio)
    assert expected.dtype == np.float32 and expected.shape == (1, num_frames(8000), 96)
    np.testing.assert_array_equal(values(extractor, audio.astype(np.float64)), expected)
    np.testing.assert_array_equal(values(extractor, audio.tolist()), expected)
    np.testing.assert_array_equal(values(extractor, tuple(audio.tolist())), expected)
    np.testing.assert_array_equal(values(extractor, torch.from_numpy(audio)), expected)
    np.testing.assert_array_equal(values(extractor, torch.from_numpy(audio).double()), expected)


@pytest.mark.parametrize(
    "dtype, to_float",
    [
        (np.int16, lambda pcm: pcm.astype(np.float64) / 32768),
        (np.int32, lambda pcm: pcm.astype(np.float64) / 2147483648),
        (np.uint8, lambda pcm: (pcm.astype(np.float64) - 128) / 128),
        (np.int8, lambda pcm: pcm.astype(np.float64) / 128),
    ],
)
def test_integer_pcm_is_scaled(extractor, dtype, to_float):
    info = np.iinfo(dtype)
    pcm = np.random.default_rng(22).integers(info.min, info.max, 6000, endpoint=True).astype(dtype)
    expected = values(extractor, to_float(pcm).astype(np.float32))
    np.testing.assert_allclose(values(extractor, pcm), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(to_mono_float32(pcm), to_float(pcm), atol=1e-7, rtol=0)
    if dtype in (np.int16, np.uint8):
        np.testing.assert_allclose(values(extractor, torch.from_numpy(pcm)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_a_2d_array_is_a_batch_of_mono_signals(extractor, as_tensor):
    clips = np.stack([noise(7000, seed=41, amplitude=0.4), noise(7000, seed=42, amplitude=0.9)])
    batch = torch.from_numpy(clips) if as_tensor else clips
    result = values(extractor, batch)
    assert result.shape == (2, num_frames(7000), 96)
    for row, clip in enumerate(clips):
        np.testing.assert_allclose(result[row], values(extractor, clip)[0], atol=1e-6, rtol=0)
    # Not a downmix: the mean of the two clips gives other features.
    assert not np.allclose(result[0], values(extractor, clips.mean(axis=0))[0], atol=1e-3)


def test_stereo_in_both_layouts_is_the_mean(extractor):
    left, right = noise(9000, seed=23, amplitude=0.5), noise(9000, seed=24, amplitude=0.9)
    expected = values(extractor, (left + right) / 2)
    channels_first = np.stack([left, right])
    # One multi-channel signal is an item of a list (a bare 2-D array is a batch of mono signals).
    np.testing.assert_allclose(values(extractor, [channels_first]), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(values(extractor, [channels_first.T]), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(values(extractor, [torch.from_numpy(channels_first)]), expected, atol=1e-6, rtol=0)
    # Given to the extractor, a list of lists is a batch; to_mono_float32 reads it as one signal.
    np.testing.assert_allclose(to_mono_float32(channels_first.T.tolist()), (left + right) / 2, atol=1e-7, rtol=0)
    np.testing.assert_allclose(to_mono_float32(np.stack([left, right, left])), (2 * left + right) / 3, atol=1e-7)


@pytest.mark.parametrize("rate", [44100, 22050])
def test_other_sampling_rates_are_resampled_with_soxr(extractor, rate):
    audio = noise(rate, seed=rate, amplitude=0.7)
    expected = values(extractor, soxr.resample(audio, rate, 16000, quality="VHQ"))
    assert expected.shape == (1, num_frames(16000), 96)
    np.testing.assert_array_equal(values(extractor, {"array": audio, "sampling_rate": rate}), expected)
    as_raw = {"raw": audio.astype(np.float64), "sampling_rate": rate, "path": "ignored.wav"}
    np.testing.assert_allclose(values(extractor, as_raw), expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(values(extractor, audio, sampling_rate=rate), expected)
    # A dict carries its own rate: the call's sampling_rate applies to raw arrays only.
    as_dict = {"array": audio, "sampling_rate": rate}
    np.testing.assert_array_equal(values(extractor, as_dict, sampling_rate=8000), expected)


def test_file_paths_are_decoded(extractor, flac_path):
    audio, _ = load_audio(flac_path)
    expected = values(extractor, audio)
    np.testing.assert_array_equal(extractor(flac_path)["input_values"], expected)
    batch = extractor([str(flac_path), audio[:20000]], sampling_rate=SR)
    np.testing.assert_array_equal(batch["input_values"][:1], expected)


def test_torchcodec_audio_decoder(extractor, monkeypatch):
    class FakeSamples:
        def __init__(self, data, sample_rate):
            self.data, self.sample_rate = data, sample_rate

    class AudioDecoder:  # the interface of torchcodec.decoders.AudioDecoder that the extractor uses
        def __init__(self, data, sample_rate):
            self._samples = FakeSamples(data, sample_rate)

        def get_all_samples(self):
            return self._samples

    fake = type(sys)("torchcodec")
    fake.decoders = type(sys)("torchcodec.decoders")
    fake.decoders.AudioDecoder = AudioDecoder
    monkeypatch.setitem(sys.modules, "torchcodec", fake)
    stereo = np.stack([noise(22050, seed=31), noise(22050, seed=32)])  # (channels, samples)
    expected = values(extractor, soxr.resample(stereo.mean(axis=0), 22050, 16000, quality="VHQ"))
    result = extractor(AudioDecoder(torch.from_numpy(stereo), 22050))["input_values"]
    np.testing.assert_allclose(result, expected, atol=1e-6, rtol=0)


def test_batch_padding_and_attention_mask(extractor):
    lengths = [16000, 24001, 5000]
    signals = [noise(n, seed=40 + i) for i, n in enumerate(lengths)]
    frames = [math.ceil(n / 256) + 1 for n in lengths]
    for return_attention_mask in (True, False, None):
        batch = extractor(signals, sampling_rate=SR, return_attention_mask=return_attention_mask)
        assert batch["input_values"].shape == (3, max(frames), 96)
        mask = batch["attention_mask"]  # lengths differ: always returned
        assert mask.dtype == np.int32 and mask.shape == (3, max(frames))
        assert mask.sum(axis=1).tolist() == frames
        for index, (signal, count) in enumerate(zip(signals, frames)):
            alone = values(extractor, signal)[0]
            assert alone.shape[0] == count
            np.testing.assert_allclose(batch["input_values"][index, :count], alone, atol=1e-6, rtol=0)
            assert (batch["input_values"][index, count:] == extractor.padding_value).all()
            assert (mask[index, :count] == 1).all() and (mask[index, count:] == 0).all()


def test_attention_mask_for_equal_lengths_follows_the_flag():
    same = [noise(8000, seed=1), noise(8000, seed=2)]
    with_mask = MaestFeatureExtractor(return_attention_mask=True)
    without_mask = MaestFeatureExtractor(return_attention_mask=False)
    assert "attention_mask" in with_mask(same, sampling_rate=SR)
    assert "attention_mask" not in without_mask(same, sampling_rate=SR)
    assert "attention_mask" in without_mask(same, sampling_rate=SR, return_attention_mask=True)
    assert "attention_mask" not in with_mask(same, sampling_rate=SR, return_attention_mask=False)


def test_three_dimensional_batch_and_padding_value():
    extractor = MaestFeatureExtractor(padding_value=-3.5, do_normalize=False)
    batch_array = np.stack([np.stack([noise(7000, seed=s), noise(7000, seed=s + 1)]) for s in (50, 52)])
    batch = extractor(batch_array, sampling_rate=SR)
    assert batch["input_values"].shape == (2, num_frames(7000), 96)
    np.testing.assert_allclose(batch["input_values"][1], ours(batch_array[1].mean(axis=0)), atol=1e-6, rtol=0)
    ragged = extractor([noise(5000), noise(9000)], sampling_rate=SR)
    assert (ragged["input_values"][0, num_frames(5000) :] == -3.5).all()


def test_return_tensors():
    extractor = MaestFeatureExtractor()
    audio = noise(6000, seed=60)
    as_numpy = extractor(audio, sampling_rate=SR, return_tensors="np")
    as_torch = extractor(audio, sampling_rate=SR, return_tensors="pt")
    assert isinstance(as_numpy["input_values"], np.ndarray)
    assert isinstance(as_torch["input_values"], torch.Tensor) and as_torch["input_values"].dtype == torch.float32
    assert as_torch["attention_mask"].dtype == torch.int32
    np.testing.assert_array_equal(as_torch["input_values"].numpy(), as_numpy["input_values"])
    on_cpu = extractor(audio, sampling_rate=SR, return_tensors="pt", device="cpu")
    assert on_cpu["input_values"].device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_empty_audio_and_empty_batch(extractor):
    with pytest.raises(ValueError, match="empty"):
        extractor(np.array([], np.float32), sampling_rate=SR)
    with pytest.raises(ValueError, match="empty batch"):
        extractor([], sampling_rate=SR)
    with pytest.raises(ValueError, match="empty"):
        extractor(np.zeros((0, 3, 5000)), sampling_rate=SR)


def test_nan_and_inf_samples(extractor):
    audio = noise(10000, seed=70)
    audio[1234] = np.nan
    audio[5000] = np.inf
    audio[6000] = -np.inf
    with pytest.raises(ValueError) as info:
        extractor(audio, sampling_rate=SR)
    message = str(info.value)
    assert "NaN" in message and "3 " in message and "1234" in message
    with pytest.raises(ValueError, match="item 1"):
        extractor([noise(5000), audio], sampling_rate=SR)


def test_audio_too_short_for_one_patch(extractor):
    with pytest.raises(ValueError) as info:
        extractor(noise(3584), sampling_rate=SR)
    message = str(info.value)
    assert "3584" in message and "3585" in message and "0.224" in message
    assert extractor(noise(3585), sampling_rate=SR)["input_values"].shape == (1, 16, 96)
    with pytest.raises(ValueError, match="too short"):
        extractor(noise(9000), sampling_rate=44100)  # 3265 samples at 16 kHz


@pytest.mark.parametrize("rate", [0, -16000, float("nan"), float("inf"), True, "16000", None])
def test_invalid_sampling_rate(extractor, rate):
    if rate is None:  # None means "not given" for the call, but a dict must carry a real rate
        with pytest.raises(ValueError, match="sampling_rate"):
            extractor({"array": noise(5000), "sampling_rate": None})
        return
    with pytest.raises(ValueError) as info:
        extractor(noise(5000), sampling_rate=rate)
    assert "sampling_rate" in str(info.value) and repr(rate) in str(info.value)
    with pytest.raises(ValueError, match=re.escape(repr(rate))):
        extractor({"array": noise(5000), "sampling_rate": rate})


def test_dict_without_sampling_rate(extractor):
    with pytest.raises(ValueError, match="sampling_rate"):
        extractor({"array": noise(5000), "path": "x.wav"})
    with pytest.raises(ValueError, match="'array'"):
        extractor({"samples": noise(5000), "sampling_rate": SR})


def test_rank_and_layout_errors(extractor):
    with pytest.raises(ValueError, match=r"rank 4"):
        extractor(np.zeros((2, 2, 2, 5000), np.float32), sampling_rate=SR)
    with pytest.raises(ValueError, match=r"ambiguous.*\(4000, 4000\)|\(4000, 4000\).*ambiguous"):
        extractor([np.zeros((4000, 4000), np.float32)], sampling_rate=SR)
    with pytest.raises(ValueError) as info:
        extractor([np.zeros((100, 5000), np.float32)], sampling_rate=SR)
    assert "100" in str(info.value) and "64" in str(info.value) and "list" in str(info.value)
    with pytest.raises(ValueError, match="int64"):
        extractor(np.zeros(5000, np.int64), sampling_rate=SR)
    with pytest.raises(ValueError, match="scalar|0-d"):
        extractor(np.float32(0.5), sampling_rate=SR)
    with pytest.raises(ValueError, match="return_tensors"):
        extractor(noise(5000), sampling_rate=SR, return_tensors="tf")


@pytest.mark.parametrize(
    "field, value",
    [
        ("sampling_rate", 22050),
        ("n_fft", 1024),
        ("hop_length", 160),
        ("num_mel_bins", 128),
        ("log_compression", "log"),
        ("std", 0.0),
        ("std", -1.0),
        ("std", float("nan")),
        ("mean", float("nan")),
        ("mean", float("inf")),
    ],
)
def test_constructor_rejects_values_the_front_end_cannot_honour(field, value):
    with pytest.raises(ValueError) as info:
        MaestFeatureExtractor(**{field: value})
    assert field in str(info.value) and repr(value) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Warning, serialisation
# ---------------------------------------------------------------------------------------------


def test_missing_sampling_rate_warns_once(caplog):
    logging.Logger.warning_once.cache_clear()  # transformers' warning_once is an lru_cache
    extractor = MaestFeatureExtractor()
    with caplog.at_level(logging.WARNING, logger=fem.logger.name):
        first = extractor(noise(5000))["input_values"]
        extractor(noise(6000))
        MaestFeatureExtractor()(noise(7000))
        extractor(noise(5000), sampling_rate=SR)
    warnings = [record for record in caplog.records if "sampling_rate" in record.getMessage()]
    assert len(warnings) == 1 and "16000" in warnings[0].getMessage()
    np.testing.assert_array_equal(first, values(extractor, noise(5000)))


def test_save_and_load_round_trip(tmp_path):
    original = MaestFeatureExtractor(padding_value=-2.0, return_attention_mask=False, do_normalize=False)
    original.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["log_compression"] == "logC" and saved["max_length"] == 626
    loaded = MaestFeatureExtractor.from_pretrained(tmp_path)
    for field in ("padding_value", "return_attention_mask", "do_normalize", "mean", "std", "n_fft", "hop_length",
                  "num_mel_bins", "sampling_rate", "max_length", "feature_size", "padding_side"):  # fmt: skip
        assert getattr(loaded, field) == getattr(original, field), field
    signals = [noise(5000, seed=80), noise(7000, seed=81)]
    for key in ("input_values", "attention_mask"):
        np.testing.assert_array_equal(loaded(signals, sampling_rate=SR)[key], original(signals, sampling_rate=SR)[key])


PUBLISHED_CONFIG = {
    "feature_extractor_type": "MAESTFeatureExtractor",
    "auto_map": {"AutoFeatureExtractor": "feature_extraction_maest.MAESTFeatureExtractor"},
    "feature_size": 1,
    "sampling_rate": 16000,
    "num_mel_bins": 96,
    "max_length": 626,
    "padding_value": 0.0,
    "do_normalize": True,
    "mean": 2.06755686098554,
    "std": 1.268292820667291,
    "return_attention_mask": False,
    "n_fft": 512,
    "hop_length": 256,
    "log_compression": "logC",
    "padding_side": "right",
}


def test_published_preprocessor_config_loads(tmp_path):
    config = dict(PUBLISHED_CONFIG, processor_class="SomeProcessor", future_key=3)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    extractor = MaestFeatureExtractor.from_pretrained(tmp_path)
    assert extractor.return_attention_mask is False and extractor.max_length == 626
    audio = GENERATED["noise_len_160000"]
    features = extractor(audio, sampling_rate=SR)
    assert "attention_mask" not in features
    assert features["input_values"].shape == (1, 626, 96)  # the whole signal: never padded/truncated to max_length
    expected = (essentia_logmel(audio) - FACTS_MEAN) / (2 * FACTS_STD)
    assert np.abs(features["input_values"][0] - expected).max() <= PARITY_TOL
    longer = extractor(noise(16000 * 12), sampling_rate=SR)["input_values"]
    assert longer.shape == (1, num_frames(16000 * 12), 96)
    extractor.save_pretrained(tmp_path / "saved")
    reloaded = MaestFeatureExtractor.from_pretrained(tmp_path / "saved")
    np.testing.assert_array_equal(reloaded(audio, sampling_rate=SR)["input_values"], features["input_values"])


# ---------------------------------------------------------------------------------------------
# Properties and long input
# ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**signal_arguments("length_16k", 40000, ["mono", "channels_first", "channels_last"]))
def test_property_shapes_finite_and_batch_independent(length_16k, amplitude, dtype, layout, rate, seed):
    extractor = MaestFeatureExtractor()
    rng = np.random.default_rng(seed)
    # Enough samples at `rate` for >= 3585 samples once resampled to 16 kHz.
    length = max(math.ceil(length_16k * rate / SR), math.ceil(3600 * rate / SR))
    channels = rng.uniform(-amplitude, amplitude, (2, length))
    mono = channels.mean(axis=0) if layout != "mono" else channels[0]
    if dtype == "int16":
        pcm = np.round(channels * 32767).astype(np.int16)
        audio = pcm if layout != "mono" else pcm[0]
        mono = pcm.astype(np.float64).mean(axis=0) / 32768 if layout != "mono" else pcm[0] / 32768
    else:
        audio = channels.astype(dtype) if layout != "mono" else channels[0].astype(dtype)
    if layout == "channels_last":
        audio = audio.T
    expected_samples = len(soxr.resample(mono.astype(np.float32), rate, SR, quality="VHQ")) if rate != SR else length
    alone = extractor([audio], sampling_rate=rate)["input_values"]  # a 2-D item of a list: one multi-channel signal
    assert alone.shape == (1, num_frames(expected_samples), 96)
    assert np.isfinite(alone).all()
    companion = rng.uniform(-0.5, 0.5, length // 2 + math.ceil(3600 * rate / SR)).astype(np.float32)
    batch = extractor([companion, audio], sampling_rate=rate)
    frames = alone.shape[1]
    np.testing.assert_allclose(batch["input_values"][1, :frames], alone[0], atol=1e-5, rtol=0)
    assert batch["attention_mask"][1].sum() == frames


def test_ten_minutes_of_audio():
    audio = noise(16000 * 600, seed=90, amplitude=0.5)
    start = time.perf_counter()
    features = MaestFeatureExtractor()(audio, sampling_rate=SR)["input_values"]
    elapsed = time.perf_counter() - start
    assert features.shape == (1, num_frames(9600000), 96) == (1, 37501, 96)
    assert np.isfinite(features).all()
    assert elapsed < 30, elapsed  # well under 1 s on 2 cores (Essentia's front end: about 0.5 s)
