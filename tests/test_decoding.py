"""Decoding is bounded and names files literally (issue 13, points 1 and 7): `audio_maest.load_audio`, which
the feature extractor (and so the pipeline) uses for files and bytes.

Every file is generated here with ffmpeg from the test clips or from its signal generators; a fake ``ffmpeg`` put on
PATH simulates a hung decoder deterministically.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soxr

import audio_maest
from audio_maest import load_audio, resample
from feature_extraction_maest import MaestFeatureExtractor

ROOT = Path(__file__).resolve().parents[1]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def sine_file(path: Path, frequency: float, seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=f={frequency}:r={rate}", "-ac", str(channels), "-t", str(seconds), str(path))
    return path


def reference_decode(path: Path) -> tuple[np.ndarray, int]:
    """An independent decode: ffmpeg to raw float32 at the source rate in one piece, the channel mean, soxr VHQ in
    one call (how the library decoded before it streamed)."""
    probe = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:a:0", "-c:a", "pcm_f32le", "-f", "wav", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    data = probe.stdout
    channels, rate = int(np.frombuffer(data[22:24], "<u2")[0]), int(np.frombuffer(data[24:28], "<u4")[0])
    start = data.index(b"data") + 8
    payload = data[start:]
    samples = np.frombuffer(payload[: len(payload) // (4 * channels) * 4 * channels], "<f4").reshape(-1, channels)
    mono = samples.mean(axis=1, dtype=np.float32)
    return soxr.resample(mono, int(rate), 16000, quality="VHQ"), int(rate)


def is_running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting for init to reap it is not running)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def wait_until_dead(pids, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(is_running(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if is_running(pid)]


def call_with_limit(function, seconds: float = 30.0):
    """Run ``function`` in a thread: a regression to a hang fails the test instead of hanging the suite."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: decoding hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "a": sine_file(folder / "a.flac", 440),
        "b": sine_file(folder / "b.flac", 1000),
    }


# -- file names are read literally -----------------------------------------------------------------------------------


PROTOCOL_LOOKING_NAMES = ["concat:six.flac", "http:example.flac", "Intro: Part 1.flac", "file:x.flac", "-i.flac"]


@pytest.mark.parametrize("name", PROTOCOL_LOOKING_NAMES)
def test_protocol_looking_names_are_read_as_local_files(tmp_path, monkeypatch, clips, name):
    # six.flac holds one tone and the oddly named file another: "concat:six.flac" used to decode six.flac.
    shutil.copy(clips["a"], tmp_path / "six.flac")
    shutil.copy(clips["b"], tmp_path / name)
    expected, _ = load_audio(clips["b"])
    other, _ = load_audio(clips["a"])
    assert not np.array_equal(expected, other)
    monkeypatch.chdir(tmp_path)
    by_name, info = call_with_limit(lambda: load_audio(name))
    by_path, _ = call_with_limit(lambda: load_audio(tmp_path / name))
    np.testing.assert_array_equal(by_name, expected)
    np.testing.assert_array_equal(by_path, expected)
    assert info["source_sampling_rate"] == 44100 and info["source_channels"] == 2
    # The feature extractor (and so the pipeline) decodes through the same path.
    features = MaestFeatureExtractor()(name, return_tensors="np")["input_values"]
    np.testing.assert_array_equal(features, MaestFeatureExtractor()(expected, sampling_rate=16000)["input_values"])


def test_names_with_undecodable_bytes_newlines_and_url_characters(tmp_path, monkeypatch, clips):
    name = os.fsdecode(b"caf\xe9 ?#%20\nx.flac")  # not UTF-8: a surrogate-escaped str, like os.listdir gives
    shutil.copy(clips["b"], tmp_path / name)
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(load_audio(name)[0], load_audio(clips["b"])[0])


def test_http_looking_name_never_touches_the_network(tmp_path, monkeypatch, clips):
    shutil.copy(clips["b"], tmp_path / "http:example.flac")
    monkeypatch.chdir(tmp_path)
    # With the protocol whitelist an http URL is refused outright, so no name can reach the network.
    command = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file,pipe",
               "-i", "http://127.0.0.1:9/x.flac", "-f", "null", "-"]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "not on whitelist" in refused.stderr
    audio, _ = call_with_limit(lambda: load_audio("http:example.flac"))
    np.testing.assert_array_equal(audio, load_audio(clips["b"])[0])


def test_bytes_are_decoded_from_a_pipe(clips):
    from_bytes, info = load_audio(clips["b"].read_bytes())
    np.testing.assert_array_equal(from_bytes, load_audio(clips["b"])[0])
    assert info["source_channels"] == 2


# -- only regular files ----------------------------------------------------------------------------------------------


def test_fifo_is_refused_before_decoding(tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"(?s)x\.wav.*FIFO.*not a regular file"):
        call_with_limit(lambda: load_audio(fifo))


def test_symlink_to_dev_urandom_is_refused(tmp_path):
    link = tmp_path / "x.mp3"
    link.symlink_to("/dev/urandom")
    with pytest.raises(ValueError, match=r"(?s)x\.mp3.*symlink to '/dev/urandom'.*character device"):
        call_with_limit(lambda: load_audio(link))


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.wav"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with pytest.raises(ValueError, match="a socket, not a regular file"):
            call_with_limit(lambda: load_audio(path))
    finally:
        server.close()


def test_directory_symlink_loop_and_broken_link_have_their_own_messages(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_audio(tmp_path)
    (tmp_path / "a.flac").symlink_to(tmp_path / "b.flac")
    (tmp_path / "b.flac").symlink_to(tmp_path / "a.flac")
    with pytest.raises(ValueError, match="symlink loop") as loop:
        load_audio(tmp_path / "a.flac")
    assert not isinstance(loop.value, FileNotFoundError) and "not found" not in str(loop.value)
    (tmp_path / "dangling.flac").symlink_to(tmp_path / "nowhere.flac")
    with pytest.raises(FileNotFoundError, match="broken symlink.*nowhere.flac"):
        load_audio(tmp_path / "dangling.flac")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_audio(tmp_path / "missing.flac")


# -- time limits and no orphans (a fake ffmpeg that hangs) -----------------------------------------------------------

FAKE_FFMPEG = """\
#!{python}
# Stands in for a decoder stuck on its input: records its pid (and its child's), then sleeps.
import os, subprocess, sys, time
pids = [os.getpid()]
if os.environ.get("FAKE_FFMPEG_CHILD"):
    pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid)
path = os.environ["FAKE_FFMPEG_PIDS"]
with open(path + ".tmp", "w") as handle:
    handle.write(" ".join(map(str, pids)))
os.replace(path + ".tmp", path)
time.sleep(600)
"""


@pytest.fixture
def hung_ffmpeg(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text(FAKE_FFMPEG.format(python=sys.executable))
    script.chmod(0o755)
    pid_file = tmp_path / "pids"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_FFMPEG_PIDS", str(pid_file))

    def pids(timeout: float = 20.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the fake ffmpeg never started"
            time.sleep(0.02)
        return [int(pid) for pid in pid_file.read_text().split()]

    return pids


def test_hung_decoder_times_out_and_its_process_group_is_killed(hung_ffmpeg, monkeypatch, clips):
    monkeypatch.setenv("FAKE_FFMPEG_CHILD", "1")
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"(?s)a\.flac.*time limit of 1 s.*MAEST_DECODE_TIMEOUT"):
        call_with_limit(lambda: load_audio(clips["a"], timeout_s=1))
    assert time.monotonic() - start < 15
    pids = hung_ffmpeg()
    assert len(pids) == 2
    assert wait_until_dead(pids) == [], "ffmpeg or its child outlived the decode"


def test_timeout_from_the_environment(hung_ffmpeg, monkeypatch, clips):
    monkeypatch.setenv("MAEST_DECODE_TIMEOUT", "0.5")
    with pytest.raises(TimeoutError, match="time limit"):
        call_with_limit(lambda: load_audio(clips["a"]))
    assert wait_until_dead(hung_ffmpeg()) == []
    monkeypatch.setenv("MAEST_DECODE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MAEST_DECODE_TIMEOUT must be a positive number of seconds, got 'soon'"):
        load_audio(clips["a"])


def test_automatic_time_limit_applies_without_any_setting(hung_ffmpeg, monkeypatch, clips):
    monkeypatch.delenv("MAEST_DECODE_TIMEOUT", raising=False)
    # The rule is base + per-second * seconds of audio; shrink it so that the test takes a second.
    monkeypatch.setattr(audio_maest, "_TIMEOUT_BASE_S", 0.5)
    monkeypatch.setattr(audio_maest, "_TIMEOUT_PER_AUDIO_S", 1e-6)
    with pytest.raises(TimeoutError, match="time limit"):
        call_with_limit(lambda: load_audio(clips["a"]))
    assert wait_until_dead(hung_ffmpeg()) == []


def test_keyboard_interrupt_leaves_no_ffmpeg(hung_ffmpeg, monkeypatch, clips):
    monkeypatch.setenv("FAKE_FFMPEG_CHILD", "1")
    pids = []

    def interrupt() -> None:
        pids.extend(hung_ffmpeg())
        # Ctrl-C: SIGINT to the main thread, which is blocked reading ffmpeg's output.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        load_audio(clips["a"], timeout_s=60)
    assert time.monotonic() - start < 30  # interrupted, not ended by its time limit
    thread.join(5)
    assert len(pids) == 2 and wait_until_dead(pids) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_sigterm_in_library_use_leaves_no_orphan(hung_ffmpeg, clips):
    # SIGTERM's default action ends Python without running any `finally`: the kernel must take ffmpeg down.
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import audio_maest as a; "
        f"a.load_audio({str(clips['a'])!r}, timeout_s=120)"
    )
    user = subprocess.Popen([sys.executable, "-c", code])
    try:
        pids = hung_ffmpeg()
        user.send_signal(signal.SIGTERM)
        assert user.wait(20) == -signal.SIGTERM
        assert wait_until_dead(pids) == [], "ffmpeg was orphaned by a SIGTERM of its user"
    finally:
        if user.poll() is None:
            user.kill()
            user.wait()


# -- truncated, corrupt and valid streams ----------------------------------------------------------------------------


def test_truncated_flac_is_an_error(tmp_path, flac_path):
    six = tmp_path / "six.flac"
    ffmpeg("-i", str(flac_path), "-t", "6", str(six))
    assert six.stat().st_size > 60_000
    cut = tmp_path / "cut.flac"
    cut.write_bytes(six.read_bytes()[:30_000])
    with pytest.raises(ValueError) as error:
        load_audio(cut)
    message = str(error.value)
    assert str(cut) in message and "ffmpeg could not decode" in message and "corrupt or truncated" in message
    assert "decode_frame() failed" in message or "invalid" in message.lower(), message


def test_truncated_mp3_is_an_error_not_a_shorter_track(tmp_path, ogg_path):
    mp3 = tmp_path / "six.mp3"
    ffmpeg("-i", str(ogg_path), "-t", "6", str(mp3))
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 3])
    with pytest.raises(ValueError, match=r"cut\.mp3' is truncated: its header states 6\.\d\d s of audio"):
        load_audio(cut)


def test_corrupt_mp3_is_still_an_error(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(np.random.default_rng(3).bytes(50_000))
    with pytest.raises(ValueError, match=r"ffmpeg could not decode .*bad\.mp3"):
        load_audio(bad)


@pytest.mark.parametrize("suffix", ["ogg", "mp3", "m4a", "flac"])
def test_valid_files_decode_without_error_and_match_one_shot_resampling(tmp_path, ogg_path, suffix):
    """Streaming (blocks of 65536 frames through soxr.ResampleStream) is bit-identical to one-shot soxr.resample."""
    path = ogg_path if suffix == "ogg" else tmp_path / f"clip.{suffix}"
    if suffix != "ogg":
        ffmpeg("-i", str(ogg_path), "-t", "12", str(path))
    audio, info = load_audio(path)
    expected, rate = reference_decode(path)
    assert info["source_sampling_rate"] == rate == 44100 and info["source_channels"] == 2
    assert audio.dtype == np.float32 and audio.shape == expected.shape
    np.testing.assert_array_equal(audio, expected)


def test_multichannel_downmix_is_the_mean(tmp_path):
    path = tmp_path / "six_channels.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=r=48000:a=0.3:seed=4", "-ac", "6", "-t", "3", "-c:a", "pcm_f32le", str(path))
    audio, info = load_audio(path)
    expected, _ = reference_decode(path)
    assert info["source_channels"] == 6
    np.testing.assert_array_equal(audio, expected)


# -- length caps -----------------------------------------------------------------------------------------------------


def test_decoded_length_cap(clips, monkeypatch):
    message = r"(?s)a\.flac' decodes to more than 0.25 s of audio, the cap.*max_duration_s=.*MAEST_MAX_DURATION_S"
    with pytest.raises(ValueError, match=message):
        load_audio(clips["a"], max_duration_s=0.25)
    monkeypatch.setenv("MAEST_MAX_DURATION_S", "0.25")
    with pytest.raises(ValueError, match="decodes to more than"):
        load_audio(clips["a"])
    monkeypatch.setenv("MAEST_MAX_DURATION_S", "2")
    assert load_audio(clips["a"])[0].shape == (16000,)


def test_stream_much_longer_than_its_header_is_stopped(tmp_path, monkeypatch):
    path = tmp_path / "long.flac"
    sine_file(path, 440, seconds=30, rate=16000, channels=1)
    data = bytearray(path.read_bytes())
    # STREAMINFO (file offset 8): bytes 18..25 hold rate, channels, bits and, in the low 36 bits, the total samples.
    fields = int.from_bytes(data[18:26], "big")
    assert fields & (2**36 - 1) == 30 * 16000
    data[18:26] = ((fields & ~(2**36 - 1)) | 16000).to_bytes(8, "big")  # the header now says 1 s
    path.write_bytes(bytes(data))
    assert load_audio(path)[0].shape == (30 * 16000,)  # 30 s is within 2 x 1 s + 600 s
    monkeypatch.setattr(audio_maest, "_DURATION_MARGIN_S", 5.0)
    message = r"long\.flac' decodes to more than 7 s of audio, more than twice the 1\.0 s its header states"
    with pytest.raises(ValueError, match=message):
        load_audio(path)


def test_resample_refuses_a_huge_output_before_allocating():
    audio = np.zeros(10**6, dtype=np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"(?s)10+ samples from 1 Hz to 16000 Hz would give about 1\.6e\+10.*cap"):
            resample(audio, 1, 16000)
        with pytest.raises(ValueError, match="Check the sampling rate"):
            MaestFeatureExtractor()(audio, sampling_rate=1)
        with pytest.raises(ValueError, match="cap"):
            MaestFeatureExtractor()({"array": audio, "sampling_rate": 1})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # a 1.6e10-sample float32 output would be 64 GB
    # Within the cap, the same call works.
    assert resample(audio[:100], 1, 16000).shape == (1_600_000,)


# -- the extractor's inputs: files and bytes arrive at 16 kHz -------------------------------------------------------


def test_load_input_decodes_files_and_bytes_straight_to_16k(tmp_path):
    # 3 s of 22.05 kHz stereo: the streaming decoder's 16 kHz output equals the independent one-shot reference, and
    # nothing is left for the caller to resample (the peak memory stays that of the 16 kHz signal).
    path = sine_file(tmp_path / "tone.ogg", 330, seconds=3, rate=22050)
    expected, source_rate = reference_decode(path)
    for item, name in ((path, f"Audio ({os.fspath(path)!r})"), (path.read_bytes(), "Audio")):
        loaded = audio_maest.load_input(item)
        assert (loaded.sampling_rate, loaded.source_sampling_rate, loaded.name) == (16000, source_rate, name)
        np.testing.assert_array_equal(loaded.audio, expected)
        assert abs(loaded.source_samples - 3 * 22050) <= 2048  # the ogg encoder's padding, at most one block
    # Arrays at their own rate are left for the caller to resample.
    dict_input = audio_maest.load_input({"array": np.zeros(441, np.int16), "sampling_rate": 44100})
    assert (dict_input.sampling_rate, dict_input.source_sampling_rate, dict_input.source_samples) == (44100, 44100, 441)
    assert audio_maest.load_input(np.zeros(441, np.float32)) is None


def test_too_short_file_names_its_source_length_and_rate(tmp_path):
    path = sine_file(tmp_path / "short.wav", 440, seconds=0.1, rate=44100)  # 4410 samples -> 1600 at 16 kHz
    with pytest.raises(ValueError, match=r"short\.wav'\) is too short: 4410 samples at 44100 Hz = 1600 samples"):
        MaestFeatureExtractor()(path)


# -- memory does not grow with the source ----------------------------------------------------------------------------

PEAK_CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import audio_maest
audio, info = audio_maest.load_audio(sys.argv[2])
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "samples": int(audio.shape[0])}))
"""


def test_peak_memory_grows_with_the_16k_signal_not_the_source(tmp_path):
    """2 vs 12 minutes of 44.1 kHz stereo: the extra peak is about the extra 16 kHz mono float32 signal (38 MB), far
    below the extra decoded source (211 MB as float32 stereo), which decoding everything at once would hold."""
    peaks = {}
    for minutes in (2, 12):
        wav = tmp_path / f"{minutes}.wav"
        sine_file(wav, 440, seconds=minutes * 60)
        command = [sys.executable, "-c", PEAK_CHILD, str(ROOT), str(wav)]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        wav.unlink()
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["samples"] == minutes * 60 * 16000
        peaks[minutes] = result["peak_kb"] * 1024
    growth = peaks[12] - peaks[2]
    signal_growth = 10 * 60 * 16000 * 4
    source_growth = 10 * 60 * 44100 * 2 * 4
    assert growth < 1.5 * signal_growth + 24 * 2**20, (growth, signal_growth)
    assert growth < source_growth / 2, (growth, source_growth)
