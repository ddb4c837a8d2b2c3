#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Time from upload to result in the demo (app.py) for a 4-minute track, through the real server and gradio_client.

A MAEST of the full published size (`discogs-maest-10s-fs-129e`: ViT-Base, 768 wide, 12 blocks, 10 s windows every
625 frames, the 400 Discogs styles) with RANDOM weights is saved to a temporary folder (the time does not depend on
the weights), `python app.py` serves it on 127.0.0.1 with ``MAEST_MODEL`` pointing at it, and the track (the shared
4-minute track cut to `--seconds` with ffmpeg, or the test clips looped) is sent `--repeats` times with
``Client.submit``. Each run is timed from the call (the upload of the file is part of it) to the last output, and
the progress messages the page shows are recorded with their times (``job.status()``, polled every 0.2 s).

Writes benchmarks/results/app-<label>.json and .md; the load average of the machine is recorded before and after
(the machine may be shared).

    python benchmarks/bench_app.py                      # 240 s, 3 runs
    python benchmarks/bench_app.py --seconds 60 --repeats 1
    python benchmarks/bench_app.py --dtype bfloat16 --label amd-epyc-2core-bf16   # MAEST_DTYPE=bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LONG_TRACK = ROOT.parent / "shared" / "audio" / "long_orchestral_wesnoth_weight_of_revenge_16k_mono.flac"
PRESET = "discogs-maest-10s-fs-129e"


def save_full_size_model(folder: Path) -> Path:
    """A random MAEST with the sizes of `PRESET` (MaestConfig's defaults are ViT-Base) and the real 400 labels."""
    import torch

    from configuration_maest import MAEST_PRESETS, MaestConfig
    from feature_extraction_maest import MaestFeatureExtractor
    from modeling_maest import MaestForAudioClassification

    preset = MAEST_PRESETS[PRESET]
    labels = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())
    assert len(labels) == preset["num_labels"]
    config = MaestConfig(
        max_length=preset["max_length"], window_hop=preset["window_hop"], id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, problem_type="multi_label_classification",
    )
    torch.manual_seed(0)
    model = MaestForAudioClassification(config).eval()
    model.save_pretrained(folder)
    MaestFeatureExtractor().save_pretrained(folder)
    return folder


def make_track(path: Path, seconds: float) -> Path:
    """`seconds` of the shared long track (looped if shorter), else of the test clips looped, as 16 kHz FLAC."""
    source = LONG_TRACK if LONG_TRACK.exists() else ROOT / "tests" / "data" / "audio" / "orchestral_wesnoth_northerners_16k_mono.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source), "-t", f"{seconds}",
                    "-c:a", "flac", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browser_run(url: str, track: Path, screenshot: str) -> dict:
    """One analysis in headless Chromium: upload, Analyse, wait for the styles; screenshot while it works."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        deadline = time.monotonic() + 60
        while not driver.find_elements(By.CSS_SELECTOR, "#audio input[type=file]"):
            if time.monotonic() > deadline:
                raise SystemExit("the page has no file input after 60 s")
            time.sleep(0.25)
        begin = time.perf_counter()
        driver.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(str(track))
        while not driver.find_elements(By.CSS_SELECTOR, "#audio audio, #audio .waveform-container"):
            time.sleep(0.1)
        driver.find_element(By.ID, "analyse").click()
        progress, shot = [], False
        while "Top styles:" not in driver.find_element(By.ID, "summary").text:
            # Gradio's progress overlay: the step's description, the fraction and the elapsed / estimated time.
            lines = driver.find_element(By.TAG_NAME, "body").text.splitlines()
            keys = ("Decoding", "Analysing", "Analysed", "Drawing", "queue")
            shows = " | ".join(dict.fromkeys(line.strip() for line in lines
                                             if line.startswith(keys) or "In queue" in line))
            if shows and (not progress or progress[-1]["shows"] != shows):
                progress.append({"t_s": round(time.perf_counter() - begin, 2), "shows": shows})
                if not shot and "of 24 windows" in shows:
                    driver.save_screenshot(screenshot)
                    shot = True
            if time.perf_counter() - begin > 600:
                raise SystemExit("no result in the page after 600 s")
            time.sleep(0.5)
        seconds = time.perf_counter() - begin
        if not shot:
            driver.save_screenshot(screenshot)
        return {"seconds": round(seconds, 2), "progress": progress, "screenshot": screenshot}
    finally:
        driver.quit()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0, help="track length in seconds (default 240)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--label", default=platform.node() or "local", help="result file label (default: host name)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="MAEST_DTYPE of the server (default float32)")
    parser.add_argument("--browser-screenshot", metavar="PNG",
                        help="also run once in headless Chromium (Selenium, /usr/bin/chromium): time from the upload "
                        "to the result in the page, and a screenshot of the page while it works")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    import torch

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-app-") as temporary:
        temporary = Path(temporary)
        started = time.perf_counter()
        model = save_full_size_model(temporary / "maest-full-size")
        track = make_track(temporary / f"track-{args.seconds:g}s.flac", args.seconds)
        print(f"model and track ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        port = free_port()
        env = dict(os.environ, MAEST_MODEL=str(model), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
                   GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(temporary / "gradio"), HF_HUB_OFFLINE="1",
                   MAEST_DTYPE=args.dtype)
        url = f"http://127.0.0.1:{port}/"
        log = open(temporary / "server.log", "wb")
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            launch = time.perf_counter()
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"app.py exited: {(temporary / 'server.log').read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except OSError:
                    time.sleep(0.5)
                if time.perf_counter() - launch > 300:
                    raise SystemExit("app.py did not start within 300 s")
            startup_s = time.perf_counter() - launch
            client = Client(url, verbose=False, download_files=str(temporary / "downloads"))
            runs = []
            for repeat in range(args.repeats):
                messages = []
                begin = time.perf_counter()
                job = client.submit(handle_file(str(track)), 6, api_name="/analyse")
                while not job.done():
                    status = job.status()
                    progress = status.progress_data[-1] if status.progress_data else None
                    text = f"{status.code.name}"
                    if progress is not None:
                        fraction = f"{progress.progress:.2f}" if progress.progress is not None else "?"
                        text += f": {progress.desc} ({fraction})" if progress.desc else f" {progress}"
                    if not messages or messages[-1]["shows"] != text:
                        messages.append({"t_s": round(time.perf_counter() - begin, 2), "shows": text})
                    time.sleep(0.2)
                outputs = job.result(timeout=600)
                elapsed = time.perf_counter() - begin
                windows = json.loads(Path(outputs[6]).read_text())
                runs.append({"seconds": round(elapsed, 2), "windows": len(windows["windows"]), "progress": messages})
                print(f"run {repeat + 1}: {elapsed:.1f} s, {len(windows['windows'])} windows", file=sys.stderr)
            browser = browser_run(url, track, args.browser_screenshot) if args.browser_screenshot else None
        finally:
            if server.poll() is None:
                os.killpg(server.pid, 15)
                server.wait(timeout=30)
            log.close()

    times = [run["seconds"] for run in runs]
    record = {
        "what": f"upload to result in app.py, {args.seconds:g} s track, {PRESET} sizes (random weights), CPU {args.dtype}",
        "track_seconds": args.seconds,
        "server_start_s": round(startup_s, 1),
        "median_s": statistics.median(times),
        "runs": runs,
        "browser": browser,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"app-{args.label}.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# Demo: upload to result ({args.label})", "",
        f"{record['what']}; {record['machine']['cpus']} CPU cores, torch {torch.__version__}.", "",
        "| run | seconds | windows |", "|---|---|---|",
        *[f"| {i + 1} | {run['seconds']:.1f} | {run['windows']} |" for i, run in enumerate(runs)],
        "", f"Median {record['median_s']:.1f} s. Server start (model load + Gradio) {startup_s:.1f} s.",
        f"Load average before {load_before[0]:.2f}, after {record['machine']['loadavg_after'][0]:.2f} "
        "(the machine is shared: other work slows the runs).", "",
        "What the page shows during the last run (polled every 0.2 s):", "",
        *[f"- {message['t_s']:.1f} s: {message['shows']}" for message in runs[-1]["progress"]], "",
    ]
    if browser:
        lines += [
            f"In headless Chromium: {browser['seconds']:.1f} s from choosing the file to the styles in the page "
            "(upload, Analyse, result). The progress text the page showed (sampled every 0.5 s):", "",
            *[f"- {item['t_s']:.1f} s: {item['shows']}" for item in browser["progress"]], "",
        ]
    (results / f"app-{args.label}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
