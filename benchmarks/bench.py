#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Speed of MAEST for transformers against what a user would otherwise run.

One process, a fixed number of threads, every contender of a comparison timed in turn (round-robin, after a
warm-up) and summarised by the median of at least 5 timed runs, so that ratios measured in the same run hold on a
shared, noisy machine. Sections (see benchmarks/README.md for what each number means):

  frontend    seconds of audio per second of the log-mel front end: this project's MaestFeatureExtractor, Essentia
              (FrameGenerator + TensorflowInputMusiCNN) and a numpy transformers.audio_utils implementation (the
              approach of the published port), with their parity to Essentia.
  model       ms per window (10 s and 30 s windows, batch 1 and 4): this project (sdpa, eager) and transformers'
              ASTForAudioClassification (sdpa) with the same weights; achieved GFLOP/s against a large matrix product.
  patchout    inference patchout along time, n = 1, 2, 3: tokens and ms per 10 s window.
  lowprec     bfloat16 and dynamic int8 on CPU (float16 / bfloat16 on CUDA): speed, and the deviation of the track
              probabilities from float32 on real music.
  track       a 4-minute track end to end through `pipeline("audio-classification", ...)`, decoding included and
              excluded, in seconds of audio per second (x real time).
  memory      peak resident memory of a fresh process that tags a 10-minute track.

Writes benchmarks/results/bench-<label>.json and .md (label: --label, default the host name). A --quick run is a
smoke run whose numbers are not measurements: it writes to the temporary folder QUICK_OUTPUT_DIR unless --output-dir
is given, and its console and markdown say so.

    python benchmarks/bench.py                        # full run on CPU (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick                # tiny model, short audio: checks that everything runs
    python benchmarks/bench.py --sections model,lowprec --model path/to/converted-maest
    python benchmarks/bench.py --device cuda --cuda-dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _results import markdown_table  # noqa: E402  (benchmarks/, the script's folder)
from configuration_maest import MaestConfig, num_patches  # noqa: E402
from feature_extraction_maest import (  # noqa: E402
    HOP_LENGTH,
    N_FFT,
    NUM_MEL_BINS,
    SAMPLING_RATE,
    MaestFeatureExtractor,
    load_audio,
    log_mel_spectrogram,
)
from modeling_maest import MaestForAudioClassification, window_starts  # noqa: E402


SCHEMA_VERSION = 1
SECTIONS = ("frontend", "model", "patchout", "lowprec", "track", "compile", "memory")
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
TEST_AUDIO = ROOT / "tests" / "data" / "audio"
LONG_TRACK_NAME = "long_orchestral_wesnoth_weight_of_revenge_16k_mono.flac"
FRONT_END_CLIP_NAME = "orchestral_wesnoth_northerners_16k_mono.flac"
WINDOW_FRAMES = {10: 626, 30: 1876}  # the 10 s and 30 s MAEST windows, in mel frames

# The targets of the speed issue, as (key, description, comparison, threshold).
TARGETS = (
    ("frontend_vs_essentia", "front end throughput / Essentia's (every duration)", ">=", 2.0),
    ("frontend_parity", "front end max abs log-mel error vs Essentia", "<=", 1e-4),
    ("model_vs_ast", "model float32 ms per window / AST-sdpa's (10 s, batch 1)", "<=", 1.0),
    ("model_vs_ceiling", "model float32 GFLOP/s / matmul ceiling (10 s, batch 1)", ">=", 0.85),
    ("lowprec_speedup", "best low-precision path: speed-up over float32 (10 s, batch 1)", ">=", 1.7),
    ("lowprec_deviation", "that path: mean abs probability deviation from float32", "<=", 0.01),
    ("track_realtime", "whole 4-min track, float32, decoding included, x real time", ">=", 15.0),
    ("memory_10min", "peak resident memory tagging a 10-minute track, GB (1e9 bytes)", "<", 2.0),
    ("patchout2_speedup", "inference patchout n=2 speed-up on a 10 s window", ">=", 1.8),
)

RANDOM_WEIGHTS_CAVEAT = (
    "Randomly initialised ViT-Base MAEST (MaestConfig defaults, transformers' default initialisation, 400 labels): "
    "speed does not depend on the weight values, but the low-precision deviations do. A trained model has larger, "
    "outlier-prone activations that bfloat16 / int8 represent less well, so its deviations may be larger; the random "
    "model's probabilities sit near 0.5, where the sigmoid is steepest, so a given logit error shows as the largest "
    "probability error there. Run with --model PATH (converted MAEST weights) for representative deviations."
)

FLOP_FORMULA = (
    "multiply-adds x 2 of the matrix products: patch embedding 2*P*E*16*16 (P = F*T patches) + per block "
    "2*N*(4*E^2 + 2*E*I) (q, k, v, output, MLP) + 4*N^2*E (scores and weighted sum) with N = 2 + kept patches "
    "tokens, E = hidden, I = MLP width, + head 2*E*labels; LayerNorm, softmax, GELU and adds are not counted"
)


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, dict]:
    """Time every contender `repeats` times in turn (round-robin, rotating the order) after `warmup` calls each.

    Returns, per contender, `{"times_s": [...], "median_s": float, "min_s": float}`, or `{"error": message}` when
    its warm-up raised (the other contenders are still timed).
    """
    results: dict[str, dict] = {}
    live = {}
    for name, function in contenders.items():
        try:
            for _ in range(warmup):
                function()
                synchronize(device)
            live[name] = function
            results[name] = {"times_s": []}
        except Exception as error:  # a contender that cannot run is reported, not fatal
            results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    names = list(live)
    for repeat in range(repeats):
        shift = repeat % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            live[name]()
            synchronize(device)
            results[name]["times_s"].append(time.perf_counter() - start)
    for name in names:
        times = results[name]["times_s"]
        results[name]["median_s"] = statistics.median(times)
        results[name]["min_s"] = min(times)
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Machine and inputs
# ---------------------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16")
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def machine_info(device: torch.device, threads: int) -> dict:
    info = {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": threads,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "versions": {
            name: package_version(name)
            for name in ("torch", "transformers", "numpy", "essentia", "onnxruntime", "torchao", "soxr")
        },
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def audio_dir(args) -> Path:
    if args.audio_dir:
        return Path(args.audio_dir)
    if not args.quick and SHARED_AUDIO.is_dir():
        return SHARED_AUDIO
    return TEST_AUDIO


def clip_paths(folder: Path) -> list[Path]:
    """The 30 s clips of an audio folder (every .flac / .ogg except the whole `long_*` tracks)."""
    return sorted(p for p in folder.iterdir() if p.suffix in {".flac", ".ogg"} and not p.name.startswith("long_"))


def audio_of_length(folder: Path, seconds: float) -> tuple[np.ndarray, str]:
    """`seconds` of real music at 16 kHz: the long track (repeated if needed) or, without it, the clips in turn."""
    sources = [folder / LONG_TRACK_NAME] if (folder / LONG_TRACK_NAME).exists() else clip_paths(folder)
    pieces, total, names = [], 0, []
    target = int(round(seconds * SAMPLING_RATE))
    while total < target:
        for path in sources:
            audio, _ = load_audio(path)
            pieces.append(audio)
            names.append(path.name)
            total += audio.shape[0]
            if total >= target:
                break
    description = " + ".join(dict.fromkeys(names)) + (" (repeated)" if len(names) > len(set(names)) else "")
    return np.concatenate(pieces)[:target].astype(np.float32), description


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def model_config(args, max_length: int) -> MaestConfig:
    """Full-size MAEST (MaestConfig defaults) with 400 labels and the given window; tiny under --quick."""
    kwargs = {"max_length": max_length, "num_labels": 400, "problem_type": "multi_label_classification"}
    if args.quick:
        kwargs.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    labels = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())
    if len(labels) == kwargs["num_labels"]:
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {label: index for index, label in enumerate(labels)}
    return MaestConfig(**kwargs)


def random_model(args, max_length: int, seed: int = 0) -> MaestForAudioClassification:
    torch.manual_seed(seed)
    return MaestForAudioClassification(model_config(args, max_length)).eval()


def user_or_random_model(args, max_length: int = 626) -> tuple[MaestForAudioClassification, str]:
    """The --model weights when given (whatever their window), else a random model with a `max_length` window."""
    if args.model:
        model = MaestForAudioClassification.from_pretrained(args.model).eval()
        return model, f"weights from {args.model}"
    return random_model(args, max_length), "random weights (see caveat)"


def save_repo(model: MaestForAudioClassification, folder: Path) -> Path:
    """Save `model` as a remote-code repository (weights, config, feature extractor, this checkout's code)."""
    from maest_tools.hub import save_model_folder

    return save_model_folder(model, folder)


def window_flops(config: MaestConfig, frames: int, time_step: int = 1) -> tuple[int, float]:
    """(tokens, FLOPs) of one window of `frames` frames with inference patchout `time_step`; see FLOP_FORMULA."""
    freq, time_cols = num_patches(
        frames, config.num_mel_bins, config.patch_size, config.frequency_stride, config.time_stride
    )
    kept_time = len(range(0, time_cols, time_step))
    tokens = 2 + freq * kept_time
    hidden, mlp, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    patch = 2 * freq * time_cols * hidden * config.patch_size**2
    block = 2 * tokens * (4 * hidden * hidden + 2 * hidden * mlp) + 4 * tokens * tokens * hidden
    head = 2 * hidden * config.num_labels
    return tokens, float(patch + layers * block + head)


def ast_twin(model: MaestForAudioClassification, folder: Path):
    """transformers' ASTForAudioClassification (sdpa) loaded from `model`'s saved weights, with the same sizes."""
    from transformers import ASTConfig, ASTForAudioClassification

    from maest_tools.convert import AST_CONFIG_FIELDS

    config = model.config
    model.save_pretrained(folder)
    ast_config = ASTConfig(**{name: getattr(config, name) for name in AST_CONFIG_FIELDS})
    ast, info = ASTForAudioClassification.from_pretrained(
        folder, config=ast_config, attn_implementation="sdpa", output_loading_info=True
    )
    bad = {key: sorted(value) for key, value in info.items() if key != "error_msgs" and value}
    if bad:
        raise RuntimeError(f"ASTForAudioClassification did not load the MAEST weights cleanly: {bad}")
    return ast.eval()


# ---------------------------------------------------------------------------------------------------------------------
# a. Front end
# ---------------------------------------------------------------------------------------------------------------------


def essentia_front_end():
    """Essentia's MAEST front end (FrameGenerator + TensorflowInputMusiCNN), or None when essentia is missing."""
    try:
        import essentia
        import essentia.standard as es
    except ImportError:
        return None
    essentia.log.infoActive = False
    essentia.log.warningActive = False
    front_end = es.TensorflowInputMusiCNN()

    def run(audio: np.ndarray) -> np.ndarray:
        frames = es.FrameGenerator(audio, frameSize=N_FFT, hopSize=HOP_LENGTH, startFromZero=False)
        return np.stack([front_end(frame) for frame in frames])

    return run


def audio_utils_front_end():
    """The published port's approach: numpy `transformers.audio_utils.spectrogram` with the same parameters.

    Symmetric Hann (`window_function(512, "hann", periodic=False)`), 512-point power spectrum, transformers' Slaney
    mel filterbank (96 bands, 0-8000 Hz, Slaney norm), centred frames with zero ("constant") padding, then
    `log10(1 + 1e4 x)`. Its centred framing gives `1 + N // 256` frames (one fewer than Essentia's
    `ceil(N / 256) + 1` when N is not a multiple of 256) and its filterbank corners are float64.
    """
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    window = window_function(N_FFT, "hann", periodic=False)
    mel_filters = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=NUM_MEL_BINS,
        min_frequency=0.0,
        max_frequency=SAMPLING_RATE / 2,
        sampling_rate=SAMPLING_RATE,
        norm="slaney",
        mel_scale="slaney",
    )

    def run(audio: np.ndarray) -> np.ndarray:
        power = spectrogram(
            audio,
            window,
            frame_length=N_FFT,
            hop_length=HOP_LENGTH,
            fft_length=N_FFT,
            power=2.0,
            center=True,
            pad_mode="constant",
            mel_filters=mel_filters,
            log_mel=None,
        )  # (mel, frames)
        return np.log10(1.0 + 1e4 * power.T)

    return run


def one_thread(function: Callable[[], object], threads: int):
    """Call `function` with torch limited to one intra-op thread, then restore `threads`."""
    torch.set_num_threads(1)
    try:
        return function()
    finally:
        torch.set_num_threads(threads)


def bench_frontend(args, device: torch.device) -> dict:
    folder = audio_dir(args)
    durations = (5.0, 20.0) if args.quick else (30.0, 300.0)
    essentia_run = essentia_front_end()
    hf_run = audio_utils_front_end()
    extractor = MaestFeatureExtractor()
    names = {
        "maest": "this project: MaestFeatureExtractor (torch, float32, "
        + (f"{args.threads} threads)" if device.type == "cpu" else f"on {device})"),
        "maest_1thread": "this project: MaestFeatureExtractor on 1 thread",
        "essentia": "Essentia: FrameGenerator + TensorflowInputMusiCNN",
        "audio_utils": "transformers.audio_utils (numpy, the published port's approach)",
    }
    rows = []
    for seconds in durations:
        if seconds <= 30 and (folder / FRONT_END_CLIP_NAME).exists():
            audio, _ = load_audio(folder / FRONT_END_CLIP_NAME)
            audio, source = audio[: int(seconds * SAMPLING_RATE)], FRONT_END_CLIP_NAME
        else:
            audio, source = audio_of_length(folder, seconds)

        def ours_front_end(audio=audio):
            return extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", device=device)

        contenders = {"maest": ours_front_end, "audio_utils": lambda audio=audio: hf_run(audio)}
        if device.type == "cpu" and args.threads > 1:
            contenders["maest_1thread"] = lambda: one_thread(ours_front_end, args.threads)
        if essentia_run is not None:
            contenders["essentia"] = lambda audio=audio: essentia_run(audio)
        timings = time_interleaved(contenders, args.repeats, args.warmup, device)
        # Parity on the un-normalised log-mel (the extractor normalises the same values afterwards).
        reference = essentia_run(audio) if essentia_run is not None else None
        ours = log_mel_spectrogram(audio, device=device).cpu().numpy()
        theirs = hf_run(audio)
        errors = {}
        if reference is not None:
            errors["maest"] = float(np.abs(ours - reference).max())
            common = min(len(theirs), len(reference))
            errors["audio_utils"] = float(np.abs(theirs[:common] - reference[:common]).max())
            errors["essentia"] = 0.0
        essentia_speed = None
        if "median_s" in timings.get("essentia", {}):
            essentia_speed = seconds / timings["essentia"]["median_s"]
        errors["maest_1thread"] = errors.get("maest")
        for key in ("maest", "maest_1thread", "essentia", "audio_utils"):
            if key == "maest_1thread" and key not in timings:
                continue
            if key not in timings:
                rows.append(
                    {"contender": names[key], "key": key, "audio_s": seconds, "error": "essentia not installed"}
                )
                continue
            row = {"contender": names[key], "key": key, "audio_s": seconds, "source": source, **timings[key]}
            if "median_s" in row:
                row["audio_s_per_s"] = seconds / row["median_s"]
                row["x_essentia"] = row["audio_s_per_s"] / essentia_speed if essentia_speed else None
            row["frames"] = int(len(ours) if key != "audio_utils" else len(theirs))
            row["max_abs_error_vs_essentia"] = errors.get(key)
            rows.append(row)
    return {
        "device": str(device),
        "note": "float32 everywhere; Essentia and transformers.audio_utils run on the CPU, single-threaded; the "
        "error is the max abs difference of the un-normalised log-mel from Essentia's on the frames both have.",
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------------
# b. Model
# ---------------------------------------------------------------------------------------------------------------------


def model_dtype(args, device: torch.device) -> torch.dtype:
    return (
        {"float16": torch.float16, "bfloat16": torch.bfloat16}[args.cuda_dtype]
        if device.type == "cuda"
        else torch.float32
    )


def matmul_ceiling(args, device: torch.device, dtype: torch.dtype) -> tuple[Callable[[], object], int]:
    """A large square matrix product (the arithmetic ceiling of the device) and its side."""
    size = 512 if args.quick else (8192 if device.type == "cuda" else 4096)
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    right = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    return (lambda: torch.matmul(left, right)), size


def sdpa_context(device: torch.device):
    """On CUDA, force the flash kernel for the sdpa contenders; on the CPU, torch's default choice."""
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return contextlib.nullcontext()


def bench_model(args, device: torch.device, workdir: Path) -> dict:
    dtype = model_dtype(args, device)
    batches = (1, 4)
    result = {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "flop_formula": FLOP_FORMULA,
        "rows": [],
    }
    ceiling_fn, ceiling_size = matmul_ceiling(args, device, dtype)
    features = None
    for window_s, frames in WINDOW_FRAMES.items():
        if args.model and MaestConfig.from_pretrained(args.model).max_length == frames:
            ours, weights = user_or_random_model(args)
        else:
            ours, weights = random_model(args, frames), "random weights"
        folder = workdir / f"model_{window_s}s"
        ast = ast_twin(ours, folder)
        eager = MaestForAudioClassification.from_pretrained(folder, attn_implementation="eager").eval()
        ours, ast, eager = (m.to(device=device, dtype=dtype) for m in (ours, ast, eager))
        if features is None:  # real music: the first 30 s clip, normalised
            clip = clip_paths(audio_dir(args))[0]
            features = MaestFeatureExtractor()(str(clip), return_tensors="pt")["input_values"]
        window = features[:, :frames]
        if window.shape[1] < frames:
            window = torch.cat([window] * math.ceil(frames / window.shape[1]), dim=1)[:, :frames]
        with torch.inference_mode():
            check = window.to(device=device, dtype=dtype)
            ours_logits = ours(check).logits.float()
            ast_logits = ast(check).logits.float()
            eager_logits = eager(check).logits.float()
        agreement = {
            "max_abs_logit_diff_ours_vs_ast": float((ours_logits - ast_logits).abs().max()),
            "max_abs_logit_diff_eager_vs_sdpa": float((ours_logits - eager_logits).abs().max()),
            "note": "ours uses the trained head LayerNorm eps 1e-5, AST 1e-6: a small expected difference",
        }
        limit = 1e-2 if dtype == torch.float32 else 0.5
        if agreement["max_abs_logit_diff_ours_vs_ast"] > limit:
            raise RuntimeError(f"AST twin disagrees with MAEST on the same weights: {agreement}")
        tokens, flop = window_flops(ours.config, frames)
        for batch in batches:
            inputs = window.expand(batch, -1, -1).contiguous().to(device=device, dtype=dtype)

            def run(model, inputs=inputs, flash=False):
                with torch.inference_mode(), sdpa_context(device) if flash else contextlib.nullcontext():
                    return model(inputs).logits

            contenders = {
                "maest_sdpa": lambda run=run, model=ours: run(model, flash=True),
                "maest_eager": lambda run=run, model=eager: run(model),
                "ast_sdpa": lambda run=run, model=ast: run(model, flash=True),
            }
            if window_s == 10 and batch == 1:
                contenders["matmul"] = ceiling_fn
            timings = time_interleaved(contenders, args.repeats, args.warmup, device)
            if "matmul" in timings:
                ceiling = timings.pop("matmul")
                ceiling["what"] = f"torch.matmul of two {ceiling_size}x{ceiling_size} {result['dtype']} matrices"
                if "median_s" in ceiling:
                    ceiling["gflops"] = 2.0 * ceiling_size**3 / ceiling["median_s"] / 1e9
                result["ceiling"] = ceiling
            ast_median = timings.get("ast_sdpa", {}).get("median_s")
            for key, label in (
                ("maest_sdpa", "this project (sdpa)"),
                ("maest_eager", "this project (eager)"),
                ("ast_sdpa", "transformers ASTForAudioClassification (sdpa)"),
            ):
                row = {
                    "contender": label,
                    "key": key,
                    "window_s": window_s,
                    "frames": frames,
                    "batch": batch,
                    "tokens": tokens,
                    "gflop_per_window": flop / 1e9,
                    "weights": weights,
                    **timings[key],
                }
                if "median_s" in row:
                    row["ms_per_window"] = 1e3 * row["median_s"] / batch
                    row["gflops"] = flop * batch / row["median_s"] / 1e9
                    if ast_median:
                        row["time_ratio_vs_ast"] = row["median_s"] / ast_median
                result["rows"].append(row)
            result.setdefault("agreement", {})[f"{window_s}s"] = agreement
        del ours, ast, eager
        gc.collect()
    ceiling = result.get("ceiling", {}).get("gflops")
    for row in result["rows"]:
        if ceiling and "gflops" in row:
            row["fraction_of_ceiling"] = row["gflops"] / ceiling
    return result


# ---------------------------------------------------------------------------------------------------------------------
# e. Inference patchout
# ---------------------------------------------------------------------------------------------------------------------


def bench_patchout(args, device: torch.device) -> dict:
    dtype = model_dtype(args, device)
    base, weights = user_or_random_model(args, 626)
    frames = base.config.max_length
    inputs = torch.randn(1, frames, NUM_MEL_BINS, generator=torch.Generator().manual_seed(0))
    inputs = inputs.to(device=device, dtype=dtype)
    variants, contenders = {}, {}
    for step in (1, 2, 3):
        variant = copy.deepcopy(base)
        variant.config.inference_patchout_time = step
        variants[step] = variant.to(device=device, dtype=dtype)

        def run(model=variants[step]):
            with torch.inference_mode():
                return model(inputs).logits

        contenders[f"n={step}"] = run
    timings = time_interleaved(contenders, args.repeats, args.warmup, device)
    rows = []
    reference = timings["n=1"].get("median_s")
    for step in (1, 2, 3):
        tokens, flop = window_flops(base.config, frames, step)
        row = {
            "inference_patchout_time": step,
            "tokens": tokens,
            "gflop_per_window": flop / 1e9,
            **timings[f"n={step}"],
        }
        if "median_s" in row:
            row["ms_per_window"] = 1e3 * row["median_s"]
            row["speedup_vs_n1"] = reference / row["median_s"] if reference else None
        rows.append(row)
    return {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "window_frames": frames,
        "batch": 1,
        "weights": weights,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------------
# d. Low precision
# ---------------------------------------------------------------------------------------------------------------------


def quantize_int8_torch_ao(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every nn.Linear (weights int8 per tensor, activations quantised per call)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def quantize_int8_torchao(model: torch.nn.Module) -> torch.nn.Module:
    """torchao's int8 dynamic-activation, int8-weight quantisation of the nn.Linear layers (needs torchao)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantized = copy.deepcopy(model)
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return quantized


def bench_low_precision(args, device: torch.device) -> dict:
    base, weights = user_or_random_model(args, 626)
    frames = base.config.max_length
    paths: dict[str, tuple[torch.nn.Module, torch.dtype, str]] = {}
    base = base.to(device)
    paths["float32"] = (base, torch.float32, "model as loaded")
    if device.type == "cuda":
        paths["float16"] = (copy.deepcopy(base).to(torch.float16), torch.float16, "model.to(torch.float16)")
        paths["bfloat16"] = (copy.deepcopy(base).to(torch.bfloat16), torch.bfloat16, "model.to(torch.bfloat16)")
    else:
        paths["bfloat16"] = (copy.deepcopy(base).to(torch.bfloat16), torch.bfloat16, "model.to(torch.bfloat16)")
        int8_paths = {
            "int8_dynamic": (
                quantize_int8_torch_ao,
                "torch.ao.quantization.quantize_dynamic({nn.Linear}, qint8) (fbgemm/x86 kernels)",
            ),
            "int8_dynamic_torchao": (
                quantize_int8_torchao,
                "torchao quantize_(Int8DynamicActivationInt8WeightConfig())",
            ),
        }
        for name, (quantize, how) in int8_paths.items():
            # Optional paths: torch.ao.quantization is deprecated (it may disappear) and torchao is not a dependency.
            try:
                paths[name] = (quantize(base), torch.float32, how)
            except Exception as error:
                paths[name] = (None, torch.float32, f"skipped: {type(error).__name__}: {error}"[:300])

    # Speed: one 10 s window, batch 1.
    window = torch.randn(1, frames, NUM_MEL_BINS, generator=torch.Generator().manual_seed(0)).to(device)
    contenders = {}
    for name, (model, dtype, _) in paths.items():
        if model is None:
            continue

        def run(model=model, inputs=window.to(dtype)):  # noqa: B008 (bound once per path, on purpose)
            with torch.inference_mode():
                return model(inputs).logits

        contenders[name] = run
    timings = time_interleaved(contenders, args.repeats, args.warmup, device)

    # Deviation: track probabilities of real 30 s clips (each analysed in windows), against float32.
    folder = audio_dir(args)
    clips = clip_paths(folder)[: 2 if args.quick else None]
    extractor = MaestFeatureExtractor()
    probabilities: dict[str, list[torch.Tensor]] = {name: [] for name, (m, _, _) in paths.items() if m is not None}
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in probabilities}
    # A float64 copy gives the rounding-free probabilities: float32's own deviation is measured against it.
    float64_model = copy.deepcopy(base).to(torch.float64)
    float64_probabilities = []
    for clip in clips:
        features = extractor(str(clip), return_tensors="pt")["input_values"]
        if args.quick:
            features = features[:, : 2 * frames]
        with torch.inference_mode():
            float64_probabilities.append(float64_model(features.to(device, torch.float64)).logits.cpu().sigmoid())
        for name in probabilities:
            model, dtype, _ = paths[name]
            with torch.inference_mode():
                out = model(features.to(device=device, dtype=dtype)).logits.float().cpu()
            logits[name].append(out)
            probabilities[name].append(out.sigmoid())
    rows = []
    reference_time = timings["float32"].get("median_s")
    reference_probs = torch.cat(probabilities["float32"])
    reference_logits = torch.cat(logits["float32"])
    exact_probs = torch.cat(float64_probabilities)
    del float64_model
    for name, (model, dtype, how) in paths.items():
        row = {"path": name, "how": how, "compute_dtype": str(dtype).replace("torch.", "")}
        if model is None:
            row["error"] = how
            rows.append(row)
            continue
        row.update(timings[name])
        if "median_s" in row:
            row["ms_per_window"] = 1e3 * row["median_s"]
            row["speedup_vs_float32"] = reference_time / row["median_s"] if reference_time else None
        deviation = (torch.cat(probabilities[name]) - reference_probs).abs()
        logit_deviation = (torch.cat(logits[name]) - reference_logits).abs()
        row["prob_max_abs_dev"] = float(deviation.max())
        row["prob_mean_abs_dev"] = float(deviation.mean())
        row["logit_max_abs_dev"] = float(logit_deviation.max())
        row["logit_mean_abs_dev"] = float(logit_deviation.mean())
        row["prob_max_abs_dev_vs_float64"] = float((torch.cat(probabilities[name]).double() - exact_probs).abs().max())
        rows.append(row)
    return {
        "device": str(device),
        "window_frames": frames,
        "batch": 1,
        "weights": weights,
        "clips": [clip.name for clip in clips],
        "deviation_over": f"{len(clips)} clips x {reference_probs.shape[-1]} track probabilities",
        "caveat": None if args.model else RANDOM_WEIGHTS_CAVEAT,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------------
# c. Whole track
# ---------------------------------------------------------------------------------------------------------------------


def bench_track(args, device: torch.device, workdir: Path) -> dict:
    from transformers import pipeline

    folder = audio_dir(args)
    path = folder / LONG_TRACK_NAME
    if not path.exists():  # without the shared clips: one of the test clips
        path = clip_paths(folder)[0]
    model, weights = user_or_random_model(args, 626)
    repo = save_repo(model, workdir / "track_repo")
    del model
    dtype = None if device.type == "cpu" else model_dtype(args, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tagger = pipeline("audio-classification", model=str(repo), trust_remote_code=True, device=device, dtype=dtype)
    audio, info = load_audio(path)
    seconds = audio.shape[0] / SAMPLING_RATE
    extractor = MaestFeatureExtractor()
    frames = int(extractor(audio, sampling_rate=SAMPLING_RATE)["input_values"].shape[1])

    contenders = {
        "pipeline_file": lambda: tagger(str(path)),
        "pipeline_array": lambda: tagger({"array": audio, "sampling_rate": SAMPLING_RATE}),
        "decode": lambda: load_audio(path),
        "features": lambda: extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt"),
    }
    timings = time_interleaved(contenders, args.repeats, args.warmup, device)
    labels = {
        "pipeline_file": "pipeline(path): decoding + features + model (end to end)",
        "pipeline_array": "pipeline(array): features + model (decoding excluded)",
        "decode": "load_audio (ffmpeg decode + soxr) only",
        "features": "MaestFeatureExtractor only",
    }
    rows = []
    for key, label in labels.items():
        row = {"stage": label, "key": key, **timings[key]}
        if "median_s" in row:
            row["audio_s_per_s"] = seconds / row["median_s"]
        rows.append(row)
    config = tagger.model.config
    windows = len(window_starts(frames, config.max_length, config.window_hop))
    return {
        "device": str(device),
        "dtype": str(dtype or torch.float32).replace("torch.", ""),
        "track": path.name,
        "track_s": seconds,
        "frames": frames,
        "windows": windows,
        "weights": weights,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------------
# torch.compile against eager
# ---------------------------------------------------------------------------------------------------------------------


def bench_compile(args, device: torch.device, workdir: Path) -> dict:
    """torch.compile against eager: one 10 s window (batch 1, `torch.compile(model, fullgraph=True)`) and a whole
    track through the pipeline (the per-window path `MaestModel.forward_features` compiled; the windowing stays
    eager). The first compiled call, which compiles, is timed apart from the steady-state calls."""
    from transformers import pipeline

    model, weights = user_or_random_model(args, 626)
    window = torch.randn(1, model.config.max_length, model.config.num_mel_bins, device=device)
    model = model.to(device)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        started = time.perf_counter()
        compiled(window)
        synchronize(device)
        window_compile_s = time.perf_counter() - started
        torch.testing.assert_close(compiled(window).logits, model(window).logits, atol=1e-4, rtol=0)
        window_timings = time_interleaved(
            {"eager": lambda: model(window), "compiled": lambda: compiled(window)}, args.repeats, args.warmup, device
        )

    folder = audio_dir(args)
    path = folder / LONG_TRACK_NAME
    if not path.exists():
        path = clip_paths(folder)[0]
    audio, _ = load_audio(path)
    repo = save_repo(model.cpu(), workdir / "compile_repo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager_tagger = pipeline("audio-classification", model=str(repo), trust_remote_code=True, device=device)
        compiled_tagger = pipeline("audio-classification", model=str(repo), trust_remote_code=True, device=device)
    encoder = compiled_tagger.model.audio_spectrogram_transformer
    encoder.forward_features = torch.compile(encoder.forward_features)
    track_input = {"array": audio, "sampling_rate": SAMPLING_RATE}
    started = time.perf_counter()
    compiled_tagger(track_input)
    track_compile_s = time.perf_counter() - started
    track_timings = time_interleaved(
        {"eager": lambda: eager_tagger(track_input), "compiled": lambda: compiled_tagger(track_input)},
        args.repeats,
        args.warmup,
        device,
    )

    def speedup(timings):
        if "median_s" not in timings["eager"] or "median_s" not in timings["compiled"]:
            return None
        return timings["eager"]["median_s"] / timings["compiled"]["median_s"]

    return {
        "device": str(device),
        "weights": weights,
        "torch": torch.__version__,
        "window_frames": int(window.shape[1]),
        "window": window_timings,
        "window_first_call_s": window_compile_s,
        "window_speedup": speedup(window_timings),
        "track": path.name,
        "track_s": audio.shape[0] / SAMPLING_RATE,
        "track_timings": track_timings,
        "track_first_call_s": track_compile_s,
        "track_speedup": speedup(track_timings),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Peak memory (a fresh process)
# ---------------------------------------------------------------------------------------------------------------------


def proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in bytes; 0 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def vm_rss_bytes() -> int:
    return proc_status_bytes("VmRSS")


def memory_child(args) -> None:
    """Run in a fresh process: load the model, tag `--memory-seconds` of music, print peak RSS as JSON."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rss_start = vm_rss_bytes()
    model = MaestForAudioClassification.from_pretrained(args.memory_child).eval().to(device)
    rss_model = vm_rss_bytes()
    audio, source = audio_of_length(audio_dir(args), args.memory_seconds)
    rss_audio = vm_rss_bytes()
    features = MaestFeatureExtractor()(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", device=device)
    with torch.inference_mode():
        logits = model(**features).logits
    assert torch.isfinite(logits).all()
    # VmHWM is the peak of this process's own address space. ru_maxrss is not used: Linux carries the parent's peak
    # into a child across fork/vfork + exec, so a child of a big parent reports the parent's peak.
    peak = proc_status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "audio_s": audio.shape[0] / SAMPLING_RATE,
        "source": source,
        "frames": int(features["input_values"].shape[1]),
        "rss_after_imports_bytes": rss_start,
        "rss_after_model_bytes": rss_model,
        "rss_after_audio_bytes": rss_audio,
        "peak_rss_bytes": peak,
    }
    if device.type == "cuda":
        out["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    print("MEMORY-JSON " + json.dumps(out))


def bench_memory(args, workdir: Path) -> dict:
    model, weights = user_or_random_model(args, 626)
    folder = workdir / "memory_model"
    model.save_pretrained(folder)
    del model
    seconds = 60.0 if args.quick else 600.0
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-child",
        str(folder),
        "--memory-seconds",
        str(seconds),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    if args.audio_dir:
        command += ["--audio-dir", args.audio_dir]
    if args.quick:
        command.append("--quick")
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("MEMORY-JSON ")]
    if completed.returncode != 0 or not lines:
        return {"error": f"memory child failed ({completed.returncode}): {completed.stderr.strip()[-800:]}"}
    result = json.loads(lines[-1][len("MEMORY-JSON ") :])
    result["peak_rss_gb"] = result["peak_rss_bytes"] / 1e9
    result["weights"] = weights
    result["what"] = (
        "peak resident set (VmHWM) of a fresh process that imports torch + transformers, loads the model, decodes "
        "the audio, computes the features and runs model(**features) over every window (max_windows_per_batch "
        "windows at once)"
    )
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Targets and report
# ---------------------------------------------------------------------------------------------------------------------


def evaluate_targets(results: dict) -> list[dict]:
    values: dict[str, tuple[float | None, str]] = {}
    frontend = results.get("frontend")
    if frontend:
        ours = [row for row in frontend["rows"] if row["key"] == "maest"]
        ratios = [row.get("x_essentia") for row in ours]
        if ratios and all(r is not None for r in ratios):
            values["frontend_vs_essentia"] = (
                min(ratios),
                "lowest over " + ", ".join(f"{r['audio_s']:g} s" for r in ours),
            )
        errors = [row.get("max_abs_error_vs_essentia") for row in ours]
        if errors and all(e is not None for e in errors):
            values["frontend_parity"] = (max(errors), "")
    model = results.get("model")
    if model:
        for row in model["rows"]:
            if row["key"] == "maest_sdpa" and row["window_s"] == 10 and row["batch"] == 1:
                values["model_vs_ast"] = (row.get("time_ratio_vs_ast"), f"{row.get('ms_per_window', 0):.0f} ms")
                values["model_vs_ceiling"] = (row.get("fraction_of_ceiling"), f"{row.get('gflops', 0):.0f} GFLOP/s")
    lowprec = results.get("lowprec")
    if lowprec:
        candidates = [
            row
            for row in lowprec["rows"]
            if row["path"] != "float32" and row.get("speedup_vs_float32") and row["prob_mean_abs_dev"] <= 0.01
        ]
        if not candidates:
            candidates = [row for row in lowprec["rows"] if row["path"] != "float32" and row.get("speedup_vs_float32")]
        if candidates:
            best = max(candidates, key=lambda row: row["speedup_vs_float32"])
            values["lowprec_speedup"] = (best["speedup_vs_float32"], best["path"])
            values["lowprec_deviation"] = (best["prob_mean_abs_dev"], best["path"])
    track = results.get("track")
    if track:
        for row in track["rows"]:
            if row["key"] == "pipeline_file" and "audio_s_per_s" in row:
                values["track_realtime"] = (row["audio_s_per_s"], f"{track['track_s']:.0f} s track")
    memory = results.get("memory")
    if memory and "peak_rss_gb" in memory:
        values["memory_10min"] = (memory["peak_rss_gb"], f"{memory['audio_s']:.0f} s of audio")
    patchout = results.get("patchout")
    if patchout:
        for row in patchout["rows"]:
            if row["inference_patchout_time"] == 2:
                values["patchout2_speedup"] = (row.get("speedup_vs_n1"), f"{row['tokens']} tokens")
    targets = []
    for key, description, comparison, threshold in TARGETS:
        value, detail = values.get(key, (None, "not measured"))
        met = None
        if value is not None:
            met = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[comparison]
        targets.append(
            {
                "key": key,
                "description": description,
                "target": f"{comparison} {threshold:g}",
                "value": value,
                "detail": detail,
                "met": met,
            }
        )
    return targets


def _table_section(title: str, header: list[str], rows: list[dict], cells, before=(), after=()) -> list[str]:
    """The markdown lines of one results section: ``## title``, the ``before`` lines, a table with one line of
    ``cells(row)`` per row, the ``after`` lines and a blank line."""
    return [f"## {title}", "", *before, *markdown_table(header, (cells(row) for row in rows)), *after, ""]


def _fmt(value, spec: str = ".3g", missing: str = "–") -> str:
    if value is None:
        return missing
    if isinstance(value, str):
        return value
    return format(value, spec)


# Where results go: measured runs into the repository's results folder, --quick smoke runs into a temporary folder.
RESULTS_DIR = ROOT / "benchmarks" / "results"
QUICK_OUTPUT_DIR = Path(tempfile.gettempdir()) / "maest-bench-quick"
QUICK_NOTICE = (
    "SMOKE RUN (--quick): tiny random model, short audio, few repeats. It checks that every section runs; its "
    "numbers are not measurements and its targets are not evaluated."
)


def markdown_report(results: dict) -> str:
    machine = results["machine"]
    settings = results["settings"]
    lines = [
        f"# MAEST speed benchmark: {results['label']}",
        "",
        *([f"> **{QUICK_NOTICE}**", ""] if settings["quick"] else []),
        f"Machine: {machine['cpu_model']} ({' '.join(machine['cpu_flags']) or 'no AVX-512'}), "
        f"{machine['cpus_available']} CPUs available, {machine['torch_threads']} "
        f"torch threads, device {machine['device']}{', ' + machine['gpu'] if 'gpu' in machine else ''}; torch "
        f"{machine['versions']['torch']}, transformers {machine['versions']['transformers']}. "
        f"{settings['repeats']} timed runs per contender (median) after {settings['warmup']} warm-up, contenders "
        f"interleaved. Load average at start: {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}. "
        f"Date: {results['created']}."
        + (" QUICK MODE (tiny model, short audio): not a measurement." if settings["quick"] else ""),
        "",
    ]
    targets = results.get("targets", [])
    if targets:
        lines += ["## Targets", ""]
        if settings["quick"]:  # a smoke run's values come from a tiny model: a "no" here says nothing
            lines += ["Smoke run: the values below are not measurements; the last column only shows that every "
                      "target is computed.", ""]  # fmt: skip
        lines += ["| target | value | goal | met |", "|---|---|---|---|"]
        for target in targets:
            met = {True: "yes", False: "no" if settings["quick"] else "**no**", None: "–"}[target["met"]]
            if settings["quick"] and target["met"] is not None:
                met += " (smoke run)"
            detail = f" ({target['detail']})" if target["detail"] else ""
            lines.append(f"| {target['description']} | {_fmt(target['value'])}{detail} | {target['target']} | {met} |")
        lines.append("")
    frontend = results.get("frontend")
    if frontend:
        lines += _table_section(
            "Front end (log-mel)",
            ["audio", "contender", "s of audio / s", "x Essentia", "max abs error vs Essentia"],
            frontend["rows"],
            lambda row: [f"{row['audio_s']:g} s", row["contender"],
                         _fmt(row.get("audio_s_per_s"), ".0f", row.get("error", "–")),
                         _fmt(row.get("x_essentia"), ".2f"), _fmt(row.get("max_abs_error_vs_essentia"), ".2g")],
            before=[frontend["note"], ""],
        )  # fmt: skip
    model = results.get("model")
    if model:
        ceiling = model.get("ceiling", {})
        lines += _table_section(
            f"Model ({model['dtype']}, {model['device']})",
            ["window", "batch", "contender", "ms / window", "GFLOP/s", "of ceiling", "time / AST's"],
            model["rows"],
            lambda row: [f"{row['window_s']} s ({row['tokens']} tokens, {row['gflop_per_window']:.0f} GFLOP)",
                         str(row["batch"]), row["contender"],
                         _fmt(row.get("ms_per_window"), ".0f", row.get("error", "–")), _fmt(row.get("gflops"), ".0f"),
                         _fmt(row.get("fraction_of_ceiling"), ".0%"), _fmt(row.get("time_ratio_vs_ast"), ".2f")],
            before=[f"Ceiling: {ceiling.get('what', '–')}: {_fmt(ceiling.get('gflops'), '.0f')} GFLOP/s. FLOPs per "
                    f"window: {model['flop_formula']}.", ""],
            after=[line for window, agreement in model.get("agreement", {}).items() for line in (
                "", f"Same weights, {window} window: max |logits ours - AST| = "
                f"{agreement['max_abs_logit_diff_ours_vs_ast']:.2g} (head LayerNorm eps 1e-5 vs 1e-6), "
                f"eager vs sdpa {agreement['max_abs_logit_diff_eager_vs_sdpa']:.2g}.")],
        )  # fmt: skip
    patchout = results.get("patchout")
    if patchout:
        lines += _table_section(
            f"Inference patchout (time, {patchout['window_frames']}-frame window, batch 1, {patchout['dtype']})",
            ["n", "tokens", "GFLOP", "ms / window", "speed-up"],
            patchout["rows"],
            lambda row: [str(row["inference_patchout_time"]), str(row["tokens"]), f"{row['gflop_per_window']:.0f}",
                         _fmt(row.get("ms_per_window"), ".0f", row.get("error", "–")),
                         _fmt(row.get("speedup_vs_n1"), ".2f")],
        )  # fmt: skip
    lowprec = results.get("lowprec")
    if lowprec:

        def how(row):  # a path that was built but could not run says why
            return row["how"] + (f" (failed: {row['error']})" if row.get("error", row["how"]) != row["how"] else "")

        lines += _table_section(
            f"Low precision ({lowprec['device']}, {lowprec['window_frames']}-frame window, batch 1)",
            ["path", "how", "ms / window", "speed-up", "prob max abs dev", "prob mean abs dev", "logit max abs dev"],
            lowprec["rows"],
            lambda row: [row["path"], how(row), _fmt(row.get("ms_per_window"), ".0f"),
                         _fmt(row.get("speedup_vs_float32"), ".2f"), _fmt(row.get("prob_max_abs_dev"), ".2g"),
                         _fmt(row.get("prob_mean_abs_dev"), ".2g"), _fmt(row.get("logit_max_abs_dev"), ".2g")],
            before=[f"Deviation from float32 over {lowprec['deviation_over']} ({lowprec['weights']}).", ""],
            after=["", f"Caveat: {lowprec['caveat']}"] if lowprec.get("caveat") else [],
        )  # fmt: skip
    track = results.get("track")
    if track:
        lines += _table_section(
            f"Whole track ({track['track']}, {track['track_s']:.1f} s, {track['frames']} frames, {track['dtype']})",
            ["stage", "s", "s of audio / s (x real time)"],
            track["rows"],
            lambda row: [row["stage"], _fmt(row.get("median_s"), ".2f", row.get("error", "–")),
                         _fmt(row.get("audio_s_per_s"), ".1f")],
        )  # fmt: skip
    compiled = results.get("compile")
    if compiled:
        lines += [
            f"## torch.compile against eager ({compiled['device']}, torch {compiled['torch']}, {compiled['weights']})",
            "",
            "| input | eager s | compiled s | speed-up | first compiled call s (compiles) |",
            "|---|---|---|---|---|",
            f"| one {compiled['window_frames']}-frame window, batch 1, fullgraph | "
            f"{_fmt(compiled['window']['eager'].get('median_s'), '.3f')} | "
            f"{_fmt(compiled['window']['compiled'].get('median_s'), '.3f')} | {_fmt(compiled['window_speedup'], '.2f')} "
            f"| {compiled['window_first_call_s']:.1f} |",
            f"| {compiled['track']} ({compiled['track_s']:.0f} s) through the pipeline | "
            f"{_fmt(compiled['track_timings']['eager'].get('median_s'), '.2f')} | "
            f"{_fmt(compiled['track_timings']['compiled'].get('median_s'), '.2f')} | "
            f"{_fmt(compiled['track_speedup'], '.2f')} | {compiled['track_first_call_s']:.1f} |",
            "",
        ]
    memory = results.get("memory")
    if memory:
        lines += ["## Peak memory", ""]
        if "error" in memory:
            lines.append(f"Failed: {memory['error']}")
        else:
            lines.append(
                f"{memory['audio_s']:.0f} s of audio ({memory['frames']} frames): peak RSS "
                f"{memory['peak_rss_gb']:.2f} GB (after imports {memory['rss_after_imports_bytes'] / 1e9:.2f} GB, "
                f"after loading the model {memory['rss_after_model_bytes'] / 1e9:.2f} GB). {memory['what']}."
            )
        lines.append("")
    loads = [(name, results[name].get("load_average_before_after")) for name in SECTIONS if name in results]
    if any(load for _, load in loads):
        lines += [
            "Load average (1 min) before / after each section (the machine has "
            f"{machine['cpus_available']} CPUs; higher means other processes competed): "
            + ", ".join(f"{name} {load[0][0]:.1f} / {load[1][0]:.1f}" for name, load in loads if load)
            + ".",
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, short audio, 2 timed runs: checks that the benchmark runs (not a measurement)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per contender (default 5; 2 with --quick)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per contender (default 1)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: the CPUs this process may use)"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of this project's model and front end: cpu or cuda"
    )
    parser.add_argument(
        "--cuda-dtype",
        default="float16",
        choices=("float16", "bfloat16"),
        help="model dtype of the model section on CUDA (default float16)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="folder of converted MAEST weights (MaestForAudioClassification.from_pretrained); default: random weights",
    )
    parser.add_argument(
        "--audio-dir",
        default=None,
        help="folder of music clips (default ../shared/audio, or tests/data/audio with --quick)",
    )
    parser.add_argument("--label", default=None, help="name of the result files (default: the host name)")
    parser.add_argument(
        "--output-dir",
        default=None,
        help=f"where the JSON and markdown go (default {RESULTS_DIR.relative_to(ROOT)}; with --quick "
        f"{QUICK_OUTPUT_DIR}, so smoke runs stay out of the repository)",
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.output_dir is None:
        args.output_dir = str(QUICK_OUTPUT_DIR if args.quick else RESULTS_DIR)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error(
            f"--repeats >= 1, --warmup >= 0 and --threads >= 1 (got {args.repeats}, {args.warmup}, {args.threads})"
        )
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in sections]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch.cuda.is_available() is False on this machine")
    if args.model and not (Path(args.model) / "config.json").exists():
        parser.error(f"--model {args.model}: no config.json there; pass a folder saved with save_pretrained")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return {}
    if args.quick:
        print(f"[bench] {QUICK_NOTICE} Results go to {args.output_dir}.", file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    label = args.label or socket.gethostname()
    results: dict = {
        "schema_version": SCHEMA_VERSION,
        "label": label,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(device, args.threads),
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sections": args.sections,
            "model": args.model or ("tiny random model" if args.quick else "random ViT-Base MAEST, 400 labels"),
            "audio_dir": str(audio_dir(args)),
        },
    }
    runners = {
        "frontend": lambda work: bench_frontend(args, device),
        "model": lambda work: bench_model(args, device, work),
        "patchout": lambda work: bench_patchout(args, device),
        "lowprec": lambda work: bench_low_precision(args, device),
        "track": lambda work: bench_track(args, device, work),
        "compile": lambda work: bench_compile(args, device, work),
        "memory": lambda work: bench_memory(args, work),
    }
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maest-bench-") as workdir:
        for section in args.sections:
            started = time.perf_counter()
            print(f"[bench] {section} ...", file=sys.stderr, flush=True)
            section_dir = Path(workdir) / section
            section_dir.mkdir()
            load_before = list(os.getloadavg())
            results[section] = runners[section](section_dir)
            results[section]["section_wall_s"] = time.perf_counter() - started
            # Other processes on the machine distort timings (multi-threaded ones most): keep a trace of the load.
            results[section]["load_average_before_after"] = [load_before, list(os.getloadavg())]
            print(f"[bench] {section} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            gc.collect()
    results["targets"] = evaluate_targets(results)
    json_path = output_dir / f"bench-{label}.json"
    md_path = output_dir / f"bench-{label}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown_report(results) + "\n")
    print(f"[bench] wrote {json_path} and {md_path}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
