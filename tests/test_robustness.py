"""Robust input handling end to end: every reasonable input form, a clear error for the rest, batch invariance,
safe loading and bounded memory on long input."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soxr
import torch
from conftest import ROOT, tiny_model
from hub_utils import save_tiny_repo
from audio_strategies import signal_arguments
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_extraction_maest import MaestFeatureExtractor, load_audio, num_frames
from modeling_maest import MaestForAudioClassification


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    # Short windows (76 frames every 70) keep the model cheap while every input is many windows long.
    return save_tiny_repo(tmp_path_factory.mktemp("repo") / "tiny", seed=11, max_length=76, window_hop=70)


@pytest.fixture(scope="module")
def pipe(repo, tmp_path_factory):
    from transformers import pipeline

    # The remote code is copied into a private modules cache, and the user's setting is restored afterwards.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_MODULES_CACHE", str(tmp_path_factory.mktemp("modules")))
        yield pipeline("audio-classification", model=str(repo), trust_remote_code=True)


@pytest.fixture(scope="module")
def clip(flac_path):
    return load_audio(flac_path)[0][: 16000 * 8]  # 8 s of real music, 16 kHz mono float32


def scores(result):
    return np.array([r["score"] for r in sorted(result, key=lambda r: r["label"])])


def test_every_input_form_gives_the_reference_scores(pipe, clip, flac_path, tmp_path):
    reference = scores(pipe(clip, sampling_rate=16000, top_k=None))
    pcm16 = np.round(clip * 32767).astype(np.int16)
    exact = {
        "float64": clip.astype(np.float64),
        "list": clip.tolist(),
        "tensor": torch.from_numpy(clip.copy()),
        "stereo, channels first": np.stack([clip, clip]),
        "stereo, channels last": np.stack([clip, clip], axis=1),
        "datasets dict": {"array": clip, "sampling_rate": 16000, "path": "ignored.wav"},
        "raw dict": {"raw": clip, "sampling_rate": 16000},
    }
    for name, value in exact.items():
        np.testing.assert_allclose(scores(pipe(value, sampling_rate=16000, top_k=None)), reference, atol=1e-6, err_msg=name)
    approximately = {
        "int16": pcm16,
        "int32": pcm16.astype(np.int32) << 16,
        "uint8": (np.round(clip * 127) + 128).astype(np.uint8),
        "44.1 kHz dict": {"array": soxr.resample(clip, 16000, 44100, quality="VHQ"), "sampling_rate": 44100},
    }
    for name, value in approximately.items():
        kwargs = {} if isinstance(value, dict) else {"sampling_rate": 16000}
        np.testing.assert_allclose(scores(pipe(value, top_k=None, **kwargs)), reference, atol=2e-3, err_msg=name)
    # A 44.1 kHz array with its rate as an argument is resampled like the dict.
    at_44k = soxr.resample(clip, 16000, 44100, quality="VHQ")
    np.testing.assert_allclose(
        scores(pipe(at_44k, sampling_rate=44100, top_k=None)),
        scores(pipe({"array": at_44k, "sampling_rate": 44100}, top_k=None)),
        atol=1e-7,
    )
    # Files: by path and as bytes decode identically.
    whole = scores(pipe(str(flac_path), top_k=None))
    np.testing.assert_allclose(scores(pipe(flac_path.read_bytes(), top_k=None)), whole, atol=1e-7)


def test_torchcodec_decoder_input(pipe, ogg_path):
    AudioDecoder = pytest.importorskip("torchcodec.decoders").AudioDecoder

    from_decoder = scores(pipe(AudioDecoder(str(ogg_path)), top_k=None))
    from_path = scores(pipe(str(ogg_path), top_k=None))
    assert np.isfinite(from_decoder).all()
    # Two decoders of the same Vorbis stream, the same mean downmix and soxr resampling.
    np.testing.assert_allclose(from_decoder, from_path, atol=1e-3)


@pytest.mark.parametrize(
    "make, kwargs, error, message",
    [
        (lambda c: np.zeros(0, np.float32), {"sampling_rate": 16000}, ValueError, r"empty \(0 samples"),
        (lambda c: np.where(np.arange(c.size) == 7, np.nan, c), {"sampling_rate": 16000}, ValueError, r"NaN.*first at index 7"),
        (lambda c: np.where(np.arange(c.size) == 9, np.inf, c), {"sampling_rate": 16000}, ValueError, r"infinite sample.*first at index 9"),
        (lambda c: c[:3000], {"sampling_rate": 16000}, ValueError, r"too short: 3000 samples.*at least 3585"),
        (lambda c: c, {"sampling_rate": 0}, ValueError, r"sampling_rate.*0"),
        (lambda c: c, {"sampling_rate": -16000}, ValueError, r"sampling_rate.*-16000"),
        (lambda c: c, {"sampling_rate": "abc"}, ValueError, r"sampling_rate.*'abc'"),
        (lambda c: c, {"sampling_rate": float("nan")}, ValueError, r"sampling_rate.*nan"),
        (lambda c: {"array": c}, {}, ValueError, r"without 'sampling_rate'"),
        (lambda c: np.zeros((2, 2, 2, 100)), {"sampling_rate": 16000}, ValueError, r"rank 4"),
        (lambda c: "/nonexistent/song.mp3", {}, FileNotFoundError, r"/nonexistent/song\.mp3"),
    ],
)
def test_bad_input_gets_a_clear_error(pipe, clip, make, kwargs, error, message):
    with pytest.raises(error, match=message):
        pipe(make(clip), **kwargs)


def test_undecodable_file_is_named(pipe, tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(os.urandom(4000))
    with pytest.raises(ValueError, match="broken.flac"):
        pipe(str(bad))


def test_missing_sampling_rate_warns_once(repo, clip):
    # A fresh process: the warning is emitted once per process.
    script = textwrap.dedent(
        f"""
        import sys, logging, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from transformers.utils import logging as hf_logging
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
        hf_logging.get_logger("feature_extraction_maest").addHandler(Keep())
        from feature_extraction_maest import MaestFeatureExtractor
        fe = MaestFeatureExtractor()
        x = np.random.default_rng(0).uniform(-0.5, 0.5, 20000).astype(np.float32)
        fe(x); fe(x); fe(x, sampling_rate=16000)
        print(sum("without a sampling_rate" in m for m in records))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "1"


def test_unworkable_config_values_raise_value_errors(repo, tmp_path):
    config = json.loads((repo / "config.json").read_text())
    config["window_hop"] = 1000
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"window_hop \(1000 frames\) is larger than the window"):
        MaestForAudioClassification.from_pretrained(folder)


# -- determinism and batch invariance -------------------------------------------------------------------------------

EXTRACTOR = MaestFeatureExtractor()


@functools.cache
def shared_model():
    """The tiny model of the property tests, built on first use (not at import time)."""
    return tiny_model(seed=12)


def make_signal(length, amplitude, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    mono = amplitude * (0.6 * np.sin(2 * np.pi * 440 * t) + 0.4 * rng.uniform(-1, 1, length))
    if layout == "stereo-first":
        signal = np.stack([mono, 0.5 * mono])
    elif layout == "stereo-last":
        signal = np.stack([mono, 0.5 * mono], axis=1)
    else:
        signal = mono
    if dtype == "int16":
        return np.round(np.clip(signal, -1, 1) * 32767).astype(np.int16)
    return signal.astype(dtype)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    **signal_arguments("length", 60000, ["mono", "stereo-first", "stereo-last"]),
    companion_seconds=st.floats(0.25, 2.0),
)
def test_any_input_in_any_batch_gives_the_same_result(length, amplitude, dtype, layout, rate, companion_seconds, seed):
    signal = make_signal(length, amplitude, dtype, layout, seed)
    companion = make_signal(int(companion_seconds * rate), 0.3, "float32", "mono", seed + 1)
    try:
        alone = EXTRACTOR([signal], sampling_rate=rate, return_tensors="pt")
    except ValueError as error:  # resampling to 16 kHz can leave less than one patch: a clear error, nothing else
        assert "too short" in str(error) and length * 16000 / rate < 3585 + 2
        return
    frames = alone["input_values"].shape[1]
    expected_samples = length if rate == 16000 else round(length * 16000 / rate)
    assert abs(frames - num_frames(expected_samples)) <= 1
    batch = EXTRACTOR([companion, signal], sampling_rate=rate, return_tensors="pt")
    assert batch["input_values"].shape[2] == 96 and torch.isfinite(batch["input_values"]).all()
    torch.testing.assert_close(batch["input_values"][1, :frames], alone["input_values"][0], atol=1e-5, rtol=0)
    with torch.no_grad():
        one = shared_model()(**alone)
        two = shared_model()(**batch)
    assert torch.isfinite(one.logits).all() and one.logits.shape == (1, 7)
    torch.testing.assert_close(two.logits[1], one.logits[0], atol=1e-5, rtol=0)
    # The track score is the mean of the window probabilities (the tiny model is multi-label).
    mean_probability = one.window_logits[0][one.window_mask[0]].sigmoid().mean(dim=0)
    torch.testing.assert_close(one.logits[0].sigmoid(), mean_probability, atol=1e-6, rtol=0)


# -- safe loading ----------------------------------------------------------------------------------------------------

IMPORT_AUDIT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import numpy, torch, transformers, transformers.pipelines  # third-party imports may do what they like
    events = []
    def audit(event, args):
        if event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "socket.connect", "socket.getaddrinfo"):
            events.append(event)
        elif event == "open" and isinstance(args[0], str) and len(args) > 1 and args[1] and any(c in str(args[1]) for c in "wax+"):
            events.append(("open-for-writing", args[0]))
    sys.addaudithook(audit)
    import configuration_maest, feature_extraction_maest, modeling_maest, audio_maest, pipeline_maest
    print(repr(events))
    """
)


@pytest.mark.slow
def test_importing_the_remote_code_spawns_nothing_and_writes_nothing():
    run = subprocess.run([sys.executable, "-c", IMPORT_AUDIT, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_remote_code_has_no_network_or_process_code_at_module_level():
    """Only audio_maest may run ffmpeg, and only inside load_audio (at call time)."""
    import ast

    from configuration_maest import MAEST_CODE_FILES

    for name in MAEST_CODE_FILES:
        tree = ast.parse((ROOT / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"requests", "httpx", "urllib", "socket", "http"}, name
        if name != "audio_maest.py":
            assert "subprocess" not in imported, name


def test_weights_load_from_safetensors_unless_asked(tmp_path):
    model = tiny_model(seed=13)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="use_safetensors=False"):
        MaestForAudioClassification.from_pretrained(tmp_path)
    loaded = MaestForAudioClassification.from_pretrained(tmp_path, use_safetensors=False).eval()
    x = torch.randn(1, 50, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


# -- long input ------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # ten minutes of audio through the model: over 5 s on one core
def test_ten_minutes_run_in_bounded_chunks():
    """10 minutes of audio: the transformer never sees more than max_windows_per_batch windows at once."""
    model = tiny_model(seed=14, max_windows_per_batch=4)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 600)).astype(np.float32)
    features = EXTRACTOR(audio, sampling_rate=16000, return_tensors="pt")
    assert features["input_values"].shape == (1, num_frames(16000 * 600), 96)
    seen = []
    hook = model.audio_spectrogram_transformer.encoder.layer[0].register_forward_hook(
        lambda module, args, output: seen.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            out = model(**features)
    finally:
        hook.remove()
    windows = out.window_mask.sum().item()
    assert windows == len(seen) * 4 - (4 - windows % 4) % 4 and max(seen) == 4
    assert windows > 500 and torch.isfinite(out.logits).all()


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
    torch.set_num_threads(1)
    from conftest import tiny_model
    minutes = float(sys.argv[2])
    model = tiny_model(seed=15, max_length=626, window_hop=625)
    frames = int(minutes * 60 * 62.5)
    features = torch.randn(1, frames, 96)
    with torch.no_grad():
        model(features)
    # VmHWM: this process's own peak resident memory (ru_maxrss would carry the parent's peak across exec).
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(int(status["VmHWM"].split()[0]) * 1024)
    """
)


@pytest.mark.slow
def test_memory_does_not_grow_with_length_beyond_the_features():
    peaks = {}
    for minutes in (10, 60):
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(ROOT), str(minutes)], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr[-2000:]
        peaks[minutes] = int(run.stdout.strip().splitlines()[-1])
    feature_growth = (60 - 10) * 60 * 62.5 * 96 * 4  # bytes of float32 features added by 50 more minutes
    # Measured: the forward pass adds about 2 MB on top of the features whatever the length; running every window
    # at once (no chunking) would add about 300 MB more for the 50 extra minutes.
    assert peaks[60] - peaks[10] < feature_growth + 32 * 2**20, peaks


def test_audio_loud_enough_to_overflow_the_spectrum_is_refused(clip):
    extractor = MaestFeatureExtractor()
    loud = clip[:16000].astype(np.float64) * 1e30  # finite samples whose power spectrum overflows float32
    assert np.isfinite(loud).all()
    with pytest.raises(ValueError, match=r"so loud that its spectrum overflows float32 \(peak \|sample\| [0-9.]+e\+(29|30)"):
        extractor(loud, sampling_rate=16000)
    with pytest.raises(ValueError, match=r"Audio item 1 is so loud"):
        extractor([clip[:16000], loud], sampling_rate=16000)
    # Loud but representable audio (int16 range as floats) still gives finite features.
    features = extractor(clip[:16000] * 32768.0, sampling_rate=16000, return_tensors="pt")["input_values"]
    assert torch.isfinite(features).all()


def test_input_values_that_overflow_the_logits_are_refused():
    model = tiny_model()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 76, 96)).logits).all()
        with pytest.raises(ValueError, match=r"non-finite logits in torch.float32: .*largest \|value\| 1e\+30"):
            model(torch.full((1, 76, 96), 1e30))
        with pytest.raises(ValueError, match="non-finite logits"):
            model(torch.full((2, 200, 96), 1e30))  # several windows: the pooled score would be NaN


def test_an_empty_batch_gives_an_empty_list(pipe, repo, tmp_path, monkeypatch):
    from transformers import pipeline

    assert pipe([]) == []
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    embedder = pipeline("feature-extraction", model=str(repo), trust_remote_code=True)
    assert embedder([]) == []
