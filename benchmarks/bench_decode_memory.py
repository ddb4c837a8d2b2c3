#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Peak resident memory of `load_audio` (`audio_maest`, re-exported by `feature_extraction_maest`) on a long track
(not a test).

Generates a WAV with ffmpeg (by default 2 hours of a 440 Hz sine at 44.1 kHz, stereo, 16-bit: about 1.3 GB) in a
temporary folder, decodes it to 16 kHz mono float32 in a fresh Python process, and prints JSON: that process's
peak RSS (``ru_maxrss``) right after importing the module and after the decode, the size of the output signal,
and the wall time. The WAV is deleted afterwards (``--keep`` keeps it). ``--entry load_input`` decodes through
`audio_maest.load_input` instead, the path the feature extractor and the pipelines take for files.

    python benchmarks/bench_decode_memory.py                          # this checkout, 2 hours
    python benchmarks/bench_decode_memory.py --code-root ../main      # another checkout (e.g. before a change)
    python benchmarks/bench_decode_memory.py --minutes 20 --rate 48000 --channels 6
    python benchmarks/bench_decode_memory.py --entry load_input       # the feature extractor's path

Needs ffmpeg on PATH and the free disk space of the WAV in the temporary folder (``--tmp-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: import the module (torch included) first, so that the baseline holds the imports.
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import feature_extraction_maest as fem
baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if sys.argv[3] == "load_input":  # what MaestFeatureExtractor calls for a file
    import audio_maest
    loaded = audio_maest.load_input(sys.argv[2])
    audio, info = loaded.audio, {"sampling_rate": loaded.sampling_rate, "source_samples": loaded.source_samples}
else:
    audio, info = fem.load_audio(sys.argv[2])
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_rss_mb": baseline_kb / 1024, "peak_rss_mb": peak_kb / 1024, "samples": int(audio.shape[0]),
                  "signal_mb": audio.nbytes / 2**20, "decode_s": seconds, "info": info}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0, help="length of the generated track (default 120)")
    parser.add_argument("--rate", type=int, default=44100, help="its sampling rate in Hz (default 44100)")
    parser.add_argument("--channels", type=int, default=2, help="its channel count (default 2)")
    parser.add_argument("--code-root", type=Path, default=ROOT, help="checkout whose feature_extraction_maest.py runs")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the WAV is written (default: the system's)")
    parser.add_argument(
        "--entry", choices=("load_audio", "load_input"), default="load_audio", help="what decodes (default load_audio)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated WAV (its path is in the JSON)")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="maest-bench-decode-", dir=args.tmp_dir)
    wav = Path(folder) / f"sine_{args.minutes:g}min_{args.rate}hz_{args.channels}ch.wav"
    try:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"sine=f=440:r={args.rate}",
             "-ac", str(args.channels), "-t", str(args.minutes * 60), "-c:a", "pcm_s16le", str(wav)],
            check=True,
        )  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.code_root.resolve()), str(wav), args.entry],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            sys.exit(f"load_audio failed in the child process:\n{run.stderr[-3000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        result.update(
            code_root=str(args.code_root.resolve()),
            entry=args.entry,
            source={
                "minutes": args.minutes, "rate_hz": args.rate, "channels": args.channels, "bytes": wav.stat().st_size
            },
            growth_mb=result["peak_rss_mb"] - result["baseline_rss_mb"],
            wav=str(wav) if args.keep else None,
        )
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            wav.unlink(missing_ok=True)
            os.rmdir(folder)


if __name__ == "__main__":
    main()
