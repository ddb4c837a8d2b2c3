# Copyright 2025 The MAEST remote-code contributors. Licensed under the Apache License, Version 2.0.
"""Audio input of MAEST: decoding files with ffmpeg, resampling with soxr, and turning the inputs users pass (arrays,
tensors, integer PCM, lists, `datasets` dicts, torchcodec decoders) into mono float32 signals.

The log-mel front end lives in `feature_extraction_maest.py`; it calls this module for everything that is not
already a signal. Only the standard library, numpy and torch are imported at module import time. ``soxr`` is
imported when a signal is resampled, and ``ffmpeg`` runs in a subprocess only when a file is decoded.
"""

import collections
import errno
import functools
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from numbers import Real
from typing import Any, NamedTuple

import numpy as np
import torch


SAMPLING_RATE = 16000
"""Sampling rate (Hz) of the waveform MAEST's front end works on; every input is resampled to it."""

MAX_CHANNELS = 64
"""Most channels a multi-channel signal may have (the shorter axis of a 2-D array)."""


# ---------------------------------------------------------------------------------------------
# Resampling and decoding (one contiguous block, from here to "Input normalisation")
# ---------------------------------------------------------------------------------------------


# Limits of decoding (see `load_audio`). Each can be overridden per call (an argument) or per process (the
# environment variable named next to it).
MAX_DURATION_S = 10 * 3600.0
"""Hard cap on the length of decoded or resampled audio, in seconds (10 hours: 576 million samples, 2.3 GB of
float32 at 16 kHz). `load_audio` stops a decode that goes past it; `resample` refuses an output longer than
``MAX_DURATION_S * 16000`` samples per channel before allocating it. Override: the ``max_duration_s`` argument of
`load_audio` or the environment variable ``MAEST_MAX_DURATION_S`` (seconds)."""
MAX_DURATION_ENV = "MAEST_MAX_DURATION_S"
DECODE_TIMEOUT_ENV = "MAEST_DECODE_TIMEOUT"
"""Environment variable that replaces the automatic decoding time limit by a fixed number of seconds."""

# Automatic time limit of one decode: _TIMEOUT_BASE_S + _TIMEOUT_PER_AUDIO_S * (seconds of audio), where the seconds
# of audio are the duration in the stream header, or (before it is known, or when ffmpeg only estimates it) the
# size of the input at _ASSUMED_BYTES_PER_S (128 kbit/s, so lossless and PCM files get more time than they need).
# Decoding and VHQ resampling run at 50x real time or more on one core; 0.5 s per second of audio is 2x real time.
_TIMEOUT_BASE_S = 60.0
_TIMEOUT_PER_AUDIO_S = 0.5
_ASSUMED_BYTES_PER_S = 16000.0
# A stream may decode to at most _DURATION_MARGIN_FACTOR * header duration + _DURATION_MARGIN_S (when the header
# gives a duration ffmpeg does not call an estimate), and a stream that decodes to less than
# _SHORTFALL_FACTOR * header duration - _SHORTFALL_S is reported as truncated.
_DURATION_MARGIN_FACTOR = 2.0
_DURATION_MARGIN_S = 600.0
_SHORTFALL_FACTOR = 0.9
_SHORTFALL_S = 1.0
# Frames of ffmpeg output (at the source rate) downmixed and resampled at a time: 1.5 s at 44.1 kHz.
_BLOCK_FRAMES = 1 << 16


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


def _positive_seconds(value: Any, name: str) -> float:
    """``value`` as a positive finite number of seconds, else a ValueError naming ``name``."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    return seconds


def _seconds_setting(value: Any, name: str, env_name: str, default: float | None) -> float | None:
    """A setting in seconds: ``value`` (the argument called ``name``), else the environment variable ``env_name``,
    else ``default``; a set value must be a positive finite number of seconds."""
    if value is not None:
        return _positive_seconds(value, name)
    from_env = os.environ.get(env_name)
    if from_env is not None and from_env.strip():
        return _positive_seconds(from_env.strip(), f"The environment variable {env_name}")
    return default


def _max_duration_s(max_duration_s: Any = None) -> float:
    """The cap on audio length in seconds: the argument, else ``$MAEST_MAX_DURATION_S``, else `MAX_DURATION_S`."""
    return _seconds_setting(max_duration_s, "max_duration_s", MAX_DURATION_ENV, MAX_DURATION_S)


def resample(
    audio: np.ndarray, orig_sr: float, target_sr: float = SAMPLING_RATE, max_duration_s: float | None = None
) -> np.ndarray:
    """Resample with soxr at its "VHQ" (very high quality) setting, in float32.

    Args:
        audio (`np.ndarray`):
            Signal of shape ``(num_samples,)`` (mono) or ``(num_samples, channels)``.
        orig_sr (`int` or `float`): its sampling rate in Hz.
        target_sr (`int` or `float`, *optional*, defaults to 16000): the rate wanted, in Hz.
        max_duration_s (`float`, *optional*):
            Cap on the output, in seconds at 16 kHz: at most ``max_duration_s * 16000`` samples per channel. Defaults
            to ``$MAEST_MAX_DURATION_S``, else `MAX_DURATION_S` (10 hours).

    Returns:
        `np.ndarray`: float32 signal at ``target_sr`` (a float32 copy when the rates are equal);
        about ``num_samples * target_sr / orig_sr`` samples.

    Raises:
        ImportError: if the ``soxr`` package is not installed (``pip install soxr``).
        ValueError: for a non-positive or non-finite rate, or an output longer than the cap (refused before
            anything is allocated; e.g. 10**6 samples declared at 1 Hz would become 1.6e10 samples at 16 kHz).
    """
    orig_sr = check_sampling_rate(orig_sr, "orig_sr")
    target_sr = check_sampling_rate(target_sr, "target_sr")
    cap_samples = int(_max_duration_s(max_duration_s) * SAMPLING_RATE)
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(f"resample expects (num_samples,) or (num_samples, channels), got shape {audio.shape}.")
    output_samples = math.ceil(audio.shape[0] * (target_sr / orig_sr))
    if output_samples > cap_samples:
        raise ValueError(
            f"Resampling {audio.shape[0]} samples from {orig_sr} Hz to {target_sr} Hz would give about "
            f"{output_samples:.4g} samples, more than the cap of {cap_samples} ({cap_samples / SAMPLING_RATE / 3600:g} "
            f"hours at 16 kHz). Check the sampling rate (is {orig_sr} Hz really the rate of these samples?), or raise "
            f"the cap with max_duration_s= or the environment variable {MAX_DURATION_ENV} (seconds)."
        )
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return audio.copy()
    soxr = _import_soxr(orig_sr, target_sr)
    return np.asarray(soxr.resample(np.ascontiguousarray(audio), orig_sr, target_sr, quality="VHQ"), dtype=np.float32)


def _import_soxr(orig_sr: float, target_sr: float):
    try:
        import soxr
    except ImportError as error:
        raise ImportError(
            f"Resampling from {orig_sr} Hz to {target_sr} Hz needs the `soxr` package: `pip install soxr` "
            "(or pass audio that is already at 16000 Hz)."
        ) from error
    return soxr


def _describe_file_type(mode: int) -> str | None:
    """A phrase naming a non-regular file type (``None`` for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, phrase in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return phrase
    return "not a regular file"


def _regular_file(path_str: str) -> tuple[str, int]:
    """Check that ``path_str`` names a regular file (symlinks followed); return its absolute path and size in bytes.

    Devices, FIFOs and sockets are refused before ffmpeg sees them: reading one can block forever (a FIFO with no
    writer) or never end (/dev/urandom), whatever its name says.
    """
    absolute = os.path.abspath(path_str)
    try:
        info = os.stat(absolute)
    except FileNotFoundError:
        if os.path.islink(absolute):
            raise FileNotFoundError(
                errno.ENOENT,
                f"Audio file {path_str!r} is a broken symlink: it points to {os.readlink(absolute)!r}, "
                "which does not exist",
                path_str,
            ) from None
        raise FileNotFoundError(errno.ENOENT, f"Audio file not found: {path_str!r}", path_str) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(
                f"Cannot read {path_str!r}: it is a symlink loop (symbolic links that point back to each other, "
                "never reaching a file). Fix or remove the links."
            ) from None
        if error.errno == errno.ENAMETOOLONG:
            raise ValueError(f"Cannot read {path_str!r}: the path is too long ({error.strerror}).") from None
        raise
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(
            f"Expected an audio file, got the directory {path_str!r} (it is a directory). Pass the files inside it."
        )
    kind = _describe_file_type(info.st_mode)
    if kind is not None:
        target = os.path.realpath(absolute)
        through = f" (a symlink to {target!r})" if target != absolute else ""
        raise ValueError(
            f"Refusing to decode {path_str!r}{through}: it is {kind}, not a regular file. Reading it could block "
            "forever or never end. Copy the audio into a regular file, or pass its bytes or samples."
        )
    return absolute, int(info.st_size)


def _decode_timeout_s(timeout_s: Any) -> float | None:
    """A fixed time limit in seconds (the argument, else ``$MAEST_DECODE_TIMEOUT``), or ``None`` (automatic rule)."""
    return _seconds_setting(timeout_s, "timeout_s", DECODE_TIMEOUT_ENV, None)


def _automatic_timeout_s(audio_seconds: float) -> float:
    return _TIMEOUT_BASE_S + _TIMEOUT_PER_AUDIO_S * audio_seconds


def _strip_ffmpeg_prefix(line: str) -> str:
    """ffmpeg's message without its ``[component @ 0x...]`` and ``[level]`` prefixes."""
    return _FFMPEG_PREFIX.sub("", line).strip()


# With -loglevel level+..., each line of ffmpeg's log starts with an optional "[demuxer @ 0x55...] " then "[level] ".
_FFMPEG_PREFIX = re.compile(
    r"^(?:\[[^\]]* @ 0x[0-9a-fA-F]+\] )?\[(?:quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] "
)
_FFMPEG_ERROR = re.compile(r"^(?:\[[^\]]* @ 0x[0-9a-fA-F]+\] )?\[(?:panic|fatal|error)\] ")
_FFMPEG_DURATION = re.compile(r"^\[info\]\s+Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


class _FfmpegLog:
    """Reads ffmpeg's stderr in a thread (so that it can never fill its pipe and block ffmpeg), keeping the header
    duration, whether ffmpeg called it an estimate, its error lines and its last lines (both bounded)."""

    def __init__(self, stream) -> None:
        self.duration_s: float | None = None
        self.duration_estimated = False
        self.errors: list[str] = []
        self.tail: collections.deque = collections.deque(maxlen=8)
        self.probed = threading.Event()  # set once the input has been described (or the log ended)
        self._thread = threading.Thread(target=self._read, args=(stream,), name="maest-ffmpeg-stderr", daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line.strip():
                    continue
                self.tail.append(line)
                if _FFMPEG_ERROR.match(line):
                    if len(self.errors) < 8:
                        self.errors.append(line)
                elif self.duration_s is None and (match := _FFMPEG_DURATION.match(line)):
                    hours, minutes, seconds = match.groups()
                    self.duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
                elif "Estimating duration from bitrate" in line:
                    self.duration_estimated = True
                elif line.startswith("[info] Stream mapping:"):
                    self.probed.set()
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the process is being torn down
        finally:
            self.probed.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def message(self) -> str:
        lines = self.errors or list(self.tail)
        text = "; ".join(dict.fromkeys(_strip_ffmpeg_prefix(line) for line in lines if _strip_ffmpeg_prefix(line)))
        return text or "(ffmpeg printed no message)"


@functools.lru_cache(maxsize=1)
def _child_dies_with_parent():
    """preexec_fn for Linux: the kernel sends SIGKILL to ffmpeg if this process dies (even by SIGTERM or SIGKILL,
    when no ``finally`` runs), so that a decode never leaves an orphaned ffmpeg behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return set_death_signal


def _kill_process_group(process: subprocess.Popen) -> None:
    """Kill ffmpeg and anything it started (it runs in its own session), then reap it."""
    if process.poll() is None:
        try:
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
        pass


def _read_exactly(stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_wav_header(stream, path_str: str) -> tuple[int, int] | None:
    """Read the header of the float32 WAV that ffmpeg writes to a pipe, up to the start of the samples.

    Returns ``(sampling_rate_hz, channels)``, or ``None`` if the stream ended first (ffmpeg failed: its log says
    why). The data size field is not used: a pipe cannot be rewound, so ffmpeg leaves it unknown.
    """
    riff = _read_exactly(stream, 12)
    if len(riff) < 12:
        return None
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError(f"Could not decode {path_str!r}: ffmpeg did not produce a WAV stream.")
    channels = rate = None
    while True:
        chunk = _read_exactly(stream, 8)
        if len(chunk) < 8:
            return None
        chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"data":
            if not channels or not rate:
                raise ValueError(f"Could not decode {path_str!r}: ffmpeg's WAV stream has no format chunk.")
            return int(rate), int(channels)
        if chunk_size > 1 << 20:
            raise ValueError(
                f"Could not decode {path_str!r}: ffmpeg's WAV stream has a {chunk_size}-byte header chunk."
            )
        body = _read_exactly(stream, chunk_size + (chunk_size & 1))
        if chunk_id == b"fmt " and len(body) >= 8:
            _format_tag, channels, rate = struct.unpack("<HHI", body[:8])


class _GrowableSignal:
    """A float32 buffer filled block by block, grown in place (``ndarray.resize`` reallocates, which for large buffers
    remaps pages instead of copying), and trimmed in place at the end: the peak stays about the final length."""

    def __init__(self, capacity: int) -> None:
        self.array = np.empty(max(int(capacity), 1024), dtype=np.float32)
        self.size = 0

    def append(self, block: np.ndarray) -> None:
        needed = self.size + block.shape[0]
        if needed > self.array.shape[0]:
            self.array.resize(max(needed, int(self.array.shape[0] * 1.5)), refcheck=False)
        self.array[self.size : needed] = block
        self.size = needed

    def finish(self) -> np.ndarray:
        self.array.resize(self.size, refcheck=False)
        return self.array


def load_audio(
    path: "str | os.PathLike | bytes",
    sampling_rate: int | None = SAMPLING_RATE,
    *,
    timeout_s: float | None = None,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Decode an audio file with ffmpeg, downmix it to mono and resample it, in blocks and within limits.

    Any file ffmpeg can read works (wav, flac, mp3, ogg/vorbis, opus, m4a/aac, aiff, video files
    with an audio track...). The first audio stream is decoded as float32 at its own rate with all
    its channels, downmixed as the MEAN of the channels (ffmpeg's ``-ac 1`` sums with a gain and is
    about 1.41x louder for stereo) and resampled with soxr "VHQ". ``ffmpeg`` must be on ``PATH``;
    it runs in a subprocess at call time.

    Decoding streams: ffmpeg's output is read, downmixed and resampled (soxr's streaming resampler, whose output is
    bit-identical to one-shot `resample`) 65536 source frames at a time, so the peak memory is about the output
    signal itself (16 kHz mono float32: 230 MB per hour), whatever the source rate and channel count.

    Safety:

    * a path is always read as a local file: ffmpeg gets ``file:`` and the absolute path, and may open only files
      and pipes, so names such as ``concat:a.flac``, ``http:x.flac`` or ``Intro: Part 1.flac`` are read literally;
    * the path must be a regular file (symlinks are followed): FIFOs, devices and sockets are refused before
      decoding, as are directories and symlink loops;
    * time limit: ``60 s + 0.5 s per second of audio`` (the duration in the stream header; before it is known, or
      when ffmpeg only estimates it, the input size counted at 16 000 bytes per second), or ``timeout_s`` /
      ``$MAEST_DECODE_TIMEOUT`` (seconds) when set. A decode past its limit is killed;
    * length cap: at most ``2 x header duration + 600 s`` (when the header gives a duration ffmpeg does not call
      an estimate) and at most ``max_duration_s`` (default ``$MAEST_MAX_DURATION_S``, else `MAX_DURATION_S`,
      10 hours) of audio;
    * truncated or corrupt streams are errors: ffmpeg runs with ``-xerror``, any error it logs fails the decode,
      and a stream that ends before ``0.9 x header duration - 1 s`` is reported as truncated;
    * ffmpeg runs in its own process group, killed and reaped on any error, timeout or KeyboardInterrupt; on
      Linux it is also killed by the kernel if this process dies (SIGTERM, SIGKILL). No ffmpeg is left behind.

    Args:
        path (`str`, `os.PathLike` or `bytes`): the file to decode, or the encoded content of one (the bytes of
            an mp3/flac/... file, fed to ffmpeg through a pipe).
        sampling_rate (`int`, *optional*, defaults to 16000):
            Output rate in Hz. ``None`` keeps the source rate.
        timeout_s (`float`, *optional*):
            Fixed time limit of the whole decode, in seconds, instead of the automatic one above.
        max_duration_s (`float`, *optional*):
            Cap on the decoded length, in seconds (default ``$MAEST_MAX_DURATION_S``, else 10 hours).

    Returns:
        `tuple[np.ndarray, dict]`: the mono float32 signal of shape ``(num_samples,)``, and
        ``{"source_sampling_rate": int (Hz), "source_channels": int, "duration_s": float}``, the
        decoded stream's rate, channel count and duration in seconds (before resampling).

    Raises:
        FileNotFoundError: the file does not exist (or is a broken symlink).
        RuntimeError: ffmpeg is not installed or cannot be started.
        TimeoutError: the decode ran past its time limit.
        ValueError: not a regular file (directory, FIFO, device, socket, symlink loop); ffmpeg cannot decode the
            file, reports an error, or the stream is truncated; it holds no audio stream or no samples; or the
            audio is longer than the cap. The message names the file and quotes ffmpeg's error lines.
    """
    if sampling_rate is not None:
        sampling_rate = check_sampling_rate(sampling_rate)
    fixed_timeout_s = _decode_timeout_s(timeout_s)
    hard_cap_s = _max_duration_s(max_duration_s)
    content = None
    if isinstance(path, (bytes, bytearray, memoryview)):
        content = bytes(path)
        if not content:
            raise ValueError("The audio bytes are empty: pass the content of an audio file.")
        path_str = f"<{len(content)} bytes of encoded audio>"
        input_size = len(content)
        ffmpeg_input = ["-protocol_whitelist", "pipe", "-i", "pipe:0"]
    else:
        path_str = os.fsdecode(os.fspath(path))
        absolute, input_size = _regular_file(path_str)
        # "file:" + an absolute path: never read as another protocol ("concat:", "http:") or an option.
        ffmpeg_input = ["-protocol_whitelist", "file,pipe", "-i", "file:" + absolute]
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError(
            f"Decoding {path_str!r} needs the ffmpeg program, which is not on PATH. Install it "
            "(`apt-get install ffmpeg`, `conda install -c conda-forge ffmpeg` or `brew install ffmpeg`), "
            "or pass the decoded samples as an array with their sampling_rate."
        )
    command = [
        ffmpeg, "-hide_banner", "-nostats", "-loglevel", "repeat+level+info", "-xerror",
        *(["-nostdin"] if content is None else []),
        *ffmpeg_input,
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1", "-bitexact",
        "-c:a", "pcm_f32le", "-f", "wav", "pipe:1",
    ]  # fmt: skip
    start = time.monotonic()
    deadline = start + (fixed_timeout_s or _automatic_timeout_s(input_size / _ASSUMED_BYTES_PER_S))
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if content is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_child_dies_with_parent(),
        )
    except OSError as error:
        raise RuntimeError(f"Could not run ffmpeg ({ffmpeg}) to decode {path_str!r}: {error}.") from None
    timed_out = threading.Event()
    finished = threading.Event()

    def watchdog() -> None:
        while not finished.wait(min(max(deadline - time.monotonic(), 0.0), 1.0)):
            if time.monotonic() >= deadline:
                timed_out.set()
                _kill_process_group(process)
                return

    def feed() -> None:
        try:
            process.stdin.write(content)
        except (OSError, ValueError):
            pass  # ffmpeg stopped reading (an error, or it had enough): its log says why
        finally:
            try:
                process.stdin.close()
            except (OSError, ValueError):
                pass

    helpers = [threading.Thread(target=watchdog, name="maest-ffmpeg-watchdog", daemon=True)]
    log = None
    if content is not None:
        helpers.append(threading.Thread(target=feed, name="maest-ffmpeg-stdin", daemon=True))
    try:
        log = _FfmpegLog(process.stderr)
        for thread in helpers:
            thread.start()

        def limit_message() -> str:
            return (
                f"Decoding {path_str!r} took longer than its time limit of {deadline - start:.0f} s and was stopped. "
                f"If the file is sound and the machine is just slow, raise the limit with timeout_s= or the "
                f"environment variable {DECODE_TIMEOUT_ENV} (seconds)."
            )

        def failure(reason: str) -> ValueError:
            return ValueError(f"ffmpeg could not decode {path_str!r} ({reason}): {log.message()}")

        header = _read_wav_header(process.stdout, path_str)
        if header is None:
            process.wait()
            log.join(10)
            if timed_out.is_set():
                raise TimeoutError(limit_message())
            raise failure("is it an audio file with an audio stream?")
        source_rate, channels = header
        # ffmpeg describes its input (duration included) on stderr before it writes any sample, so the log thread
        # has it, or is about to: a short wait, never a deadlock if the description is missing.
        log.probed.wait(min(max(deadline - time.monotonic(), 0.0), 5.0))
        header_s = log.duration_s if log.duration_s and not log.duration_estimated else None
        if header_s is not None and fixed_timeout_s is None:
            deadline = start + _automatic_timeout_s(header_s)
        cap_s = hard_cap_s
        if header_s is not None:
            cap_s = min(hard_cap_s, _DURATION_MARGIN_FACTOR * header_s + _DURATION_MARGIN_S)
        cap_frames = int(cap_s * source_rate)
        output_rate = sampling_rate if sampling_rate is not None else source_rate
        expected_s = header_s if header_s is not None else (log.duration_s or 60.0)
        output = _GrowableSignal(min(expected_s * 1.01 + 1.0, cap_s) * output_rate)
        resampler = None
        if output_rate != source_rate:
            soxr = _import_soxr(source_rate, output_rate)
            resampler = soxr.ResampleStream(source_rate, output_rate, 1, dtype="float32", quality="VHQ")
        frame_bytes = 4 * channels
        buffer = bytearray(_BLOCK_FRAMES * frame_bytes)
        view = memoryview(buffer)
        frames_read = 0
        while True:
            filled = 0
            while filled < len(buffer):
                count = process.stdout.readinto(view[filled:])
                if not count:
                    break
                filled += count
            usable = filled // frame_bytes
            if usable:
                samples = np.frombuffer(buffer, dtype="<f4", count=usable * channels).reshape(usable, channels)
                # The same mean (float32 sum over the channels, then / channels) as a whole-file downmix.
                mono = samples[:, 0].copy() if channels == 1 else samples.mean(axis=1, dtype=np.float32)
                del samples
                frames_read += usable
                if frames_read > cap_frames:
                    _kill_process_group(process)
                    if cap_s < hard_cap_s:
                        raise ValueError(
                            f"{path_str!r} decodes to more than {cap_s:g} s of audio, more than twice the "
                            f"{header_s:.1f} s its header states plus {_DURATION_MARGIN_S:.0f} s: the header is wrong "
                            "or the stream is corrupt (joined files?); decoding was stopped. Re-encode the file "
                            "(e.g. `ffmpeg -i IN OUT.flac`) so that its header matches its audio."
                        )
                    raise ValueError(
                        f"{path_str!r} decodes to more than {cap_s:g} s of audio, the cap; decoding was stopped. If "
                        "the file is really that long, raise the cap with max_duration_s= or the environment variable "
                        f"{MAX_DURATION_ENV} (seconds), or split the file."
                    )
                output.append(resampler.resample_chunk(mono) if resampler is not None else mono)
            if filled < len(buffer):
                break
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            returncode = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            timed_out.set()
            returncode = None
        log.join(10)
        if timed_out.is_set():
            raise TimeoutError(limit_message())
        if returncode != 0 or log.errors:
            if frames_read:
                raise failure("the stream is corrupt or truncated")
            raise failure("is it an audio file with an audio stream?")
        if frames_read == 0:
            raise ValueError(f"{path_str!r} decoded to 0 audio samples (ffmpeg: {log.message()}).")
        decoded_s = frames_read / source_rate
        if header_s is not None and decoded_s < _SHORTFALL_FACTOR * header_s - _SHORTFALL_S:
            raise ValueError(
                f"{path_str!r} is truncated: its header states {header_s:.2f} s of audio but the stream ends after "
                f"{decoded_s:.2f} s. Re-encode or replace the file."
            )
        if resampler is not None:
            output.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    finally:
        finished.set()
        _kill_process_group(process)
        for thread in helpers:
            if thread.ident is not None:  # started
                thread.join(10)
        if log is not None:
            log.join(10)
        for stream in (process.stdout, process.stderr, process.stdin):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
    info = {"source_sampling_rate": source_rate, "source_channels": channels, "duration_s": decoded_s}
    return output.finish(), info


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


class LoadedInput(NamedTuple):
    """One input decoded by `load_input`: its mono signal, the rate of that signal, and what it was at the source."""

    audio: np.ndarray
    """Mono float32 samples, shape ``(num_samples,)``."""
    sampling_rate: float | int
    """Rate of `audio` in Hz: 16000 for files and bytes (decoded straight to 16 kHz), else the source rate."""
    name: str
    """How error messages name the input (gains the path of a file)."""
    source_sampling_rate: float | int
    """Rate of the source in Hz (the decoded stream's rate for a file)."""
    source_samples: int
    """Length of the source in samples at `source_sampling_rate`."""


def load_input(item: Any, name: str = "Audio") -> "LoadedInput | None":
    """Decode one input that carries its own rate: a file path, the bytes of an encoded file, a `datasets` dict
    ``{"array" (or "raw"): samples, "sampling_rate": Hz}`` or a torchcodec ``AudioDecoder``.

    Files and bytes are decoded, downmixed and resampled to 16 kHz by `load_audio` in blocks, so the peak memory is
    about the 16 kHz signal whatever the source rate and channel count (bit-identical to resampling the whole decoded
    signal at once). Dicts and decoders are returned at their own rate: the caller resamples them.

    Args:
        item: the input.
        name (`str`, *optional*): how error messages name it (e.g. ``"Audio item 3"``).

    Returns:
        `LoadedInput` ``(audio, sampling_rate, name, source_sampling_rate, source_samples)``, or ``None`` when
        ``item`` is raw samples (array, tensor, list), whose rate only the caller knows.
    """
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        audio, info = load_audio(item)
        source_rate = info["source_sampling_rate"]
        if isinstance(item, (str, os.PathLike)):
            name = f"{name} ({os.fspath(item)!r})"
        return LoadedInput(audio, SAMPLING_RATE, name, source_rate, round(info["duration_s"] * source_rate))
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
        audio = to_mono_float32(item[key])
        return LoadedInput(audio, source_rate, name, source_rate, audio.shape[0])
    if is_audio_decoder(item):
        decoded = item.get_all_samples()
        source_rate = check_sampling_rate(decoded.sample_rate, f"{name} (AudioDecoder) sample_rate")
        data = tensor_to_numpy(decoded.data)  # (channels, samples)
        if data.ndim != 2 or data.size == 0:
            raise ValueError(f"{name}: the AudioDecoder returned no samples (shape {tuple(data.shape)}).")
        audio = np.ascontiguousarray(data.mean(axis=0), dtype=np.float32)
        return LoadedInput(audio, source_rate, name, source_rate, audio.shape[0])
    return None


__all__ = [
    "DECODE_TIMEOUT_ENV",
    "LoadedInput",
    "MAX_CHANNELS",
    "MAX_DURATION_ENV",
    "MAX_DURATION_S",
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
