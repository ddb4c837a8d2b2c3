"""The demo app (app.py): `analyse` against the pipelines and the model, its messages for bad input, the real server
through gradio_client, and the real page in headless Chromium (Debian's `chromium` + `chromium-driver`).

The server and browser tests need requirements-app.txt and the two Debian packages. Without them they are skipped,
unless ``MAEST_REQUIRE_DEMO_TESTS=1`` (set by .ci/run), where a missing piece is a failure. Set
``MAEST_DEMO_SCREENSHOT=docs/demo-screenshot.png`` to write the browser test's screenshot there (the README's picture).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TEST_AUDIO
from hub_utils import save_tiny_repo

import app
from configuration_maest import MAEST_CODE_FILES
from feature_extraction_maest import load_audio
from modeling_maest import MaestForAudioClassification, window_starts


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SERVER_START_S = 120  # model load + Gradio import on a loaded 2-core machine
RESULT_WAIT_S = 90


def require(condition: bool, what: str) -> None:
    """Skip when a demo dependency is missing, or fail when MAEST_REQUIRE_DEMO_TESTS=1 (CI installs everything)."""
    if condition:
        return
    if os.environ.get("MAEST_REQUIRE_DEMO_TESTS") == "1":
        pytest.fail(f"{what} is missing but MAEST_REQUIRE_DEMO_TESTS=1: install it (see .ci/run)")
    pytest.skip(f"{what} is not installed (pip install -r requirements-app.txt; apt-get install chromium chromium-driver)")


def importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A tiny random MAEST folder with the real 400 labels, 10 s windows, chunks of 3 windows and the code files."""
    folder = save_tiny_repo(tmp_path_factory.mktemp("app") / "tiny-maest", max_windows_per_batch=3)
    assert all((folder / name).exists() for name in MAEST_CODE_FILES)
    return folder


@pytest.fixture(scope="module")
def analyser(repo):
    return app.MaestAnalyser(str(repo), device="cpu")


@pytest.fixture(scope="module")
def pipelines(repo):
    from transformers import pipeline

    return (
        pipeline("audio-classification", model=str(repo), trust_remote_code=True),
        pipeline("feature-extraction", model=str(repo), trust_remote_code=True),
    )


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# ---------------------------------------------------------------------------------------------------------------------
# analyse(): the pipeline's numbers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["orchestral_wesnoth_northerners_16k_mono.flac",
                                  "orchestral_wesnoth_northerners_orig44k_stereo.ogg"])
def test_track_scores_are_the_pipeline_scores(analyser, pipelines, clip):
    path = TEST_AUDIO / clip
    result = app.analyse(str(path), model=analyser)
    expected = pipelines[0](str(path), top_k=None)
    scores = dict(zip(result.labels, result.scores.tolist()))
    assert len(scores) == 400 == len(expected)
    for item in expected:
        assert scores[item["label"]] == pytest.approx(item["score"], abs=1e-6)
    assert [item["label"] for item in result.top] == [item["label"] for item in expected[: app.TOP_K]]
    # Genres: the highest style score per genre, computed here from the pipeline's list.
    genres = {}
    for item in expected:
        genre = item["label"].split("---")[0]
        genres[genre] = max(genres.get(genre, 0.0), item["score"])
    assert result.genres == pytest.approx(genres, abs=1e-6)
    assert list(result.genres) == sorted(genres, key=lambda genre: -genres[genre])


@pytest.mark.slow
def test_windows_embedding_and_progress_of_a_long_track(repo, analyser, pipelines):
    # 95 s from the clips: windows every 10 s plus one aligned to the end, run in chunks of 3.
    clips = [load_audio(path)[0] for path in sorted(TEST_AUDIO.glob("*16k_mono.flac"))]
    audio = np.concatenate([clips[0], clips[1], clips[0], clips[1][: 5 * 16000]])
    calls = []
    result = app.analyse(audio, sampling_rate=16000, block=0, model=analyser,
                         progress=lambda fraction, text: calls.append((fraction, text)))

    extractor = analyser.feature_extractor
    features = extractor(audio, sampling_rate=16000, return_tensors="pt")["input_values"]
    frames = features.shape[1]
    starts = window_starts(frames, 626, 625)
    assert len(starts) == 10 and starts[-1] == frames - 626
    model = MaestForAudioClassification.from_pretrained(str(repo)).eval()
    with torch.no_grad():  # every window alone, by hand
        manual = torch.stack([model(features[:, s : s + 626]).logits.sigmoid()[0] for s in starts]).numpy()
    np.testing.assert_allclose(result.window_scores, manual, atol=1e-5)
    np.testing.assert_allclose(result.scores, manual.mean(axis=0), atol=1e-5)
    assert result.window_starts == starts
    assert result.window_times[0] == (0.0, 626 / 62.5) and result.window_times[-1][1] == frames / 62.5
    assert result.duration_s == pytest.approx(len(audio) / 16000, abs=0.02)

    # The embedding of block 0 from the same pass is the embedding pipeline's.
    expected = np.asarray(pipelines[1]({"array": audio, "sampling_rate": 16000}, block=0))
    assert result.embedding.shape == (96,) and result.embedding.dtype == np.float32
    np.testing.assert_allclose(result.embedding, expected, atol=1e-5)
    assert app.analyse(audio[:80000], sampling_rate=16000, model=analyser).block == 1  # default: middle of 2 blocks

    # Progress: 0, then one tick per chunk of 3 windows (3, 6, 9, 10 of 10), then the picture.
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [text for _, text in calls if text.startswith("Analysed")] == [
        f"Analysed {n} of 10 windows" for n in (3, 6, 9, 10)
    ]


def test_saved_files(tmp_path, analyser, flac_path):
    result = app.analyse(str(flac_path), block=0, top_k=4, model=analyser)
    files = result.save_files(tmp_path)
    assert np.array_equal(np.load(files["embedding"]), result.embedding)
    data = json.loads(Path(files["json"]).read_text())
    assert data["embedding_block"] == 0 and len(data["labels"]) == 400
    assert [item["label"] for item in data["track"]] == [item["label"] for item in result.top] and len(data["track"]) == 4
    assert len(data["windows"]) == 3 and data["windows"][1]["start_s"] == 10.0
    for window, row in zip(data["windows"], result.window_scores):
        np.testing.assert_allclose(window["scores"], row, atol=1e-6)
        best = np.argsort(-row, kind="stable")[:4]
        assert [item["label"] for item in window["labels"]] == [result.labels[i] for i in best]
    from PIL import Image

    with Image.open(files["timeline"]) as image:
        assert image.format == "PNG" and image.size[0] > 800


# ---------------------------------------------------------------------------------------------------------------------
# analyse(): messages for bad input
# ---------------------------------------------------------------------------------------------------------------------


def test_clear_messages_for_bad_input(tmp_path, analyser):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("these are not sounds\n" * 50)
    short = write_wav(tmp_path / "click.wav", np.sin(np.arange(1600) / 5.0) * 0.5)  # 0.1 s
    cases = [
        (None, ["No audio", "upload"]),
        ("", ["No audio"]),
        (str(empty), ["'empty.mp3' is empty (0 bytes)"]),
        (str(text), ["Could not read 'notes.mp3' as audio", "ffmpeg could not decode"]),
        (str(short), ["'click.wav' is too short", "0.2241 s", "16 frames"]),
        (str(tmp_path / "gone.flac"), ["'gone.flac' was not found"]),
    ]
    for audio, parts in cases:
        with pytest.raises(app.AnalysisError) as caught:
            app.analyse(audio, model=analyser)
        message = str(caught.value)
        for part in parts:
            assert part in message, (audio, message)
        assert str(tmp_path) not in message  # the server's temporary folder is not shown
    with pytest.raises(app.AnalysisError, match=r"blocks 0 to 1"):
        app.analyse(str(short), block=2, model=analyser)


def test_bfloat16_on_request(repo, analyser, flac_path):
    half = app.MaestAnalyser(str(repo), device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16 and analyser.model.dtype == torch.float32  # auto on a CPU: float32
    fast, exact = app.analyse(str(flac_path), model=half), app.analyse(str(flac_path), model=analyser)
    assert fast.scores.dtype == np.float32 and fast.embedding.dtype == np.float32
    np.testing.assert_allclose(fast.scores, exact.scores, atol=0.02)
    assert not np.array_equal(fast.scores, exact.scores)  # it did run in bfloat16
    with pytest.raises(RuntimeError, match=r"MAEST_DTYPE='float8' is not one of auto, float32, bfloat16"):
        app.MaestAnalyser(half.model, device="cpu", dtype="float8")


def test_a_model_that_does_not_load_is_one_clear_message(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    for source in (str(tmp_path / "missing"), str(tmp_path)):
        with pytest.raises(RuntimeError) as caught:
            app.MaestAnalyser(source, device="cpu")
        message = str(caught.value)
        assert f"Could not load the MAEST model {source!r}" in message and "MAEST_MODEL" in message, message


# ---------------------------------------------------------------------------------------------------------------------
# The real server (python app.py) and the real page
# ---------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    """`python app.py` on 127.0.0.1 with the tiny model; yields its URL; killed at the end whatever happens."""
    require(importable("gradio") and importable("gradio_client"), "gradio (requirements-app.txt)")
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    env = dict(os.environ, MAEST_MODEL=str(repo), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(folder / "gradio"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = folder / "server.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with status {process.returncode} before serving:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)


@pytest.mark.slow
def test_gradio_client_runs_a_whole_analysis(server, pipelines, electronic_path, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path))
    bars, summary, genres, timeline, hover, embedding, windows = client.predict(
        handle_file(str(electronic_path)), 0, api_name="/analyse"
    )
    expected = pipelines[0](str(electronic_path), top_k=app.TOP_K)
    data = json.loads(Path(windows).read_text())
    assert [item["label"] for item in data["track"]] == [item["label"] for item in expected]
    np.testing.assert_allclose([item["score"] for item in data["track"]], [item["score"] for item in expected],
                               atol=1e-6)
    rows = bars["value"]["data"] if "value" in bars else bars["data"]
    assert [row[1] for row in rows] == [round(item["score"], 4) for item in expected]
    assert app._style_text(expected[0]["label"]) in summary
    assert genres["label"] == expected[0]["label"].split("---")[0]
    embed = np.asarray(pipelines[1](str(electronic_path), block=0))
    np.testing.assert_allclose(np.load(embedding), embed, atol=1e-5)
    assert Path(timeline).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hover_rows = hover["value"]["data"] if "value" in hover else hover["data"]
    assert len(hover_rows) == 3 * app.TOP_K  # 3 windows x the top styles

    # A clip shorter than one patch: the page's message, not a traceback.
    short = write_wav(tmp_path / "click.wav", np.zeros(1000))
    with pytest.raises(Exception) as caught:
        client.predict(handle_file(str(short)), 1, api_name="/analyse")
    assert "too short" in str(caught.value) and "Traceback" not in str(caught.value)


@pytest.mark.slow
def test_browser_uploads_a_clip_and_sees_the_results(server, pipelines, flac_path, tmp_path):
    require(importable("selenium"), "selenium (requirements-app.txt)")
    require(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,2600", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    expected = pipelines[0](str(flac_path), top_k=app.TOP_K)

    def wait(condition, what, seconds=RESULT_WAIT_S):
        try:
            return WebDriverWait(driver, seconds, poll_frequency=0.25).until(lambda _: condition())
        except TimeoutException:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            page = driver.find_element(By.TAG_NAME, "body").text[-2000:]
            pytest.fail(f"the page did not show {what} within {seconds} s (screenshot {tmp_path / 'failure.png'}); "
                        f"page text:\n{page}")

    try:
        driver.get(server)
        file_input = wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#audio input[type=file]"), "the file input",
                          60)[0]
        file_input.send_keys(str(flac_path))
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#audio audio, #audio .waveform-container, #audio wave"),
             "the uploaded clip's player", 60)
        driver.find_element(By.ID, "analyse").click()

        top_style = app._style_text(expected[0]["label"])
        wait(lambda: top_style in driver.find_element(By.ID, "summary").text, f"the top style {top_style!r}")
        images = wait(lambda: [image for image in driver.find_elements(By.CSS_SELECTOR, "#timeline img")
                               if image.get_attribute("src") and image.get_property("naturalWidth") > 800],
                      "the timeline image")
        assert images[0].get_property("naturalHeight") > 200
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#top-styles canvas, #top-styles svg"), "the bar chart")
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#timeline-hover canvas, #timeline-hover svg"),
             "the hover chart")
        genre = expected[0]["label"].split("---")[0]
        wait(lambda: genre in driver.find_element(By.ID, "genres").text, f"the genre {genre!r}")
        summary = driver.find_element(By.ID, "summary").text
        for item in expected[:3]:
            assert f"{item['score']:.3f}" in summary
        assert "not a distribution" in driver.find_element(By.ID, "explanation").text
        assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
        time.sleep(1.0)  # let the charts finish their entry animation before the picture
        screenshot = Path(os.environ.get("MAEST_DEMO_SCREENSHOT") or tmp_path / "demo-screenshot.png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(screenshot))
        from PIL import Image

        with Image.open(screenshot) as picture:
            assert picture.size[0] >= 1000 and len(picture.convert("RGB").getcolors(1 << 20) or []) > 100
    finally:
        driver.quit()


def test_space_files_match_the_app():
    """The Space's requirements are requirements-app.txt plus the runtime of everything app.py imports."""
    def requirements(path):
        lines = (ROOT / path).read_text().splitlines()
        return {line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()}

    space = requirements("space/requirements.txt")
    assert requirements("requirements-app.txt") <= space
    runtime = {line for line in requirements("requirements.txt")
               if line.split(">")[0].split("=")[0] in {"torch", "transformers", "huggingface_hub", "safetensors",
                                                        "numpy", "soxr", "matplotlib"}}
    assert len(runtime) == 7 and runtime <= space
    header = (ROOT / "space" / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in header and "app_file: app.py" in header
    assert "sdk_version: " + requirements("requirements-app.txt").pop().split("==")[1] in header
    assert (ROOT / "space" / "packages.txt").read_text().split() == ["ffmpeg"]
