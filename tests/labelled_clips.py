"""Small labelled audio data sets for the fine-tuning and probing tests, cut from the shipped test clips."""

import csv
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_AUDIO
from hub_utils import save_tiny_repo

from feature_extraction_maest import load_audio


# Source clip -> genre label. The OGG is the orchestral FLAC's segment at 44.1 kHz stereo: same music, other coding.
SOURCES = {
    "electronic_nexuiz_digital_pursuit_16k_mono.flac": "electronic",
    "orchestral_wesnoth_northerners_16k_mono.flac": "orchestral",
    "orchestral_wesnoth_northerners_orig44k_stereo.ogg": "orchestral",
}


def write_wav(path: Path, audio: np.ndarray, sampling_rate: int = 16000) -> Path:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV with the standard library."""
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sampling_rate)
        handle.writeframes(pcm.tobytes())
    return path


def cut_clips(folder: Path, seconds: float = 5.0) -> list[dict]:
    """Cut every test clip into `seconds`-long 16 kHz WAV pieces.

    Returns one dict per piece: `path`, `genre` ("electronic" / "orchestral"), `source` (clip file name) and `part`
    (0-based index of the piece in its clip). 30 s clips give 6 pieces of 5 s each: 18 files in all.
    """
    pieces = []
    size = int(seconds * 16000)
    for name, genre in SOURCES.items():
        audio, _ = load_audio(TEST_AUDIO / name)
        for part in range(len(audio) // size):
            path = write_wav(folder / f"{Path(name).stem}_{part}.wav", audio[part * size : (part + 1) * size])
            pieces.append({"path": path, "genre": genre, "source": name, "part": part})
    return pieces


def multi_label_sets(piece: dict) -> list[str]:
    """Multi-label targets of a piece: its genre, plus "opening" for the first half of its clip."""
    return [piece["genre"]] + (["opening"] if piece["part"] < 3 else [])


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Write a `path,labels` CSV from (path, labels-with-';') rows."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels"])
        writer.writerows(rows)
    return path


def labelled_fixtures(name: str, **repo_overrides):
    """The module fixtures of the fine-tuning and probing tests: `workdir` (a temporary folder named `name`),
    `pieces` (`cut_clips` there) and `base_repo` (a tiny MAEST folder, `save_tiny_repo(**repo_overrides)`, saved
    as a user would publish it). Assign them to module names: `workdir, pieces, base_repo = labelled_fixtures(...)`.
    """

    @pytest.fixture(scope="module")
    def workdir(tmp_path_factory):
        return tmp_path_factory.mktemp(name)

    @pytest.fixture(scope="module")
    def pieces(workdir):
        return cut_clips(workdir / "clips")

    @pytest.fixture(scope="module")
    def base_repo(workdir):
        return save_tiny_repo(workdir / "base-model", **repo_overrides)

    return workdir, pieces, base_repo
