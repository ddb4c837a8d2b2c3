"""Every ```python block of README.md and docs/*.md runs as written, against a tiny random model folder.

How the blocks are run:

- The blocks of one markdown file run in order, in one namespace (as a reader pastes them into one session), in a
  temporary working directory. The names the documentation uses are real files and folders there: the model
  folders (`discogs-maest-10s-fs-129e`, `demo-model`, ...) are the README's path c, a random-weights folder written
  by `maest-convert --random-weights` (`build_model_folder`, at test size), and the audio files (`song.mp3`,
  `a.flac`, `b.mp3`, `c.ogg`) are made from the test clips with ffmpeg. Files that a page's shell commands write
  before its Python blocks (`maest.onnx`, a probe folder) are written by those tools first (`PREPARE`). So the text
  is run unchanged; `PLACEHOLDERS` lists the few replacements the test makes.
- A block preceded by `<!-- no-test: REASON -->` (on the line just above its fence, blank lines allowed) is not
  run. Such blocks are visible in the markdown and counted here: `EXPECTED_NOT_RUN` must match the markers, so a
  block cannot silently stop being tested. Markers whose reason contains "lead: enable after merge" wait for a
  feature that other work adds; remove the marker (and lower the count) once it exists.
- Shell (```bash), JSON and CSV blocks are not run by this test.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_AUDIO


DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Model folder names the documentation uses for a local MAEST folder: each becomes a tiny random folder.
MODEL_FOLDERS = ("discogs-maest-10s-fs-129e", "demo-model", "my-maest")

# Audio file names the documentation uses, and the test clip each is made from (ffmpeg picks the codec from the
# extension, so "song.mp3" really is an MP3).
AUDIO_FILES = {
    "song.mp3": "electronic_nexuiz_digital_pursuit_16k_mono.flac",
    "a.flac": "orchestral_wesnoth_northerners_16k_mono.flac",
    "b.mp3": "electronic_nexuiz_digital_pursuit_16k_mono.flac",
    "c.ogg": "orchestral_wesnoth_northerners_orig44k_stereo.ogg",
}

# Text replacements made before a block runs: `{token}` is formatted with the working paths.
PLACEHOLDERS = {
    "~/Music": "{music}",
}

# Blocks marked `<!-- no-test: ... -->`, per file (path relative to the repository root). Update this when a marker
# is added or removed: the test fails when the markers and this table disagree.
EXPECTED_NOT_RUN = {
    "README.md": 0,
    "docs/tagger.md": 0,
    "docs/distributed.md": 0,
    "docs/finetune-probe.md": 0,
    "docs/convert.md": 1,  # downloads a published repository
    "docs/export.md": 0,
    "docs/benchmark.md": 0,
    "docs/demo.md": 0,
    "docs/library.md": 0,
    "docs/model.md": 0,
    # Written by other work; listed so that the test runs their blocks once they exist.
    "docs/compatibility.md": 0,
    "docs/file-tags.md": 0,
}
PENDING_PAGES = {"docs/compatibility.md", "docs/demo.md", "docs/file-tags.md", "docs/library.md"}

FENCE = re.compile(r"^```(\w*)\s*$")
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(.+?)\s*-->\s*$")


def extract_blocks(path: Path) -> list[dict]:
    """Every fenced block of a markdown file: language, code, first line number and the no-test reason (or None)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index].strip()) if lines[index].lstrip() == lines[index] else None
        if match is None:
            index += 1
            continue
        language, start = match.group(1), index
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: code fence never closed")
        reason, above = None, start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above >= 0 and (marker := NO_TEST.match(lines[above].strip())):
            reason = marker.group(1)
        blocks.append({"language": language, "code": "\n".join(lines[start + 1 : end]), "line": start + 1, "reason": reason})
        index = end + 1
    return blocks


# The README's path c at test size: `maest-convert --random-weights --arch discogs-maest-10s-fs-129e` (10 s windows,
# 626 frames every 625, the 400 Discogs labels, MAEST's 12 blocks so the documented blocks 6 and 4 exist), with the
# test suite's small widths so that every snippet runs in seconds. The full-size command is tested in test_convert.
DOCS_ARCH = "discogs-maest-10s-fs-129e"
TEST_SIZES = dict(hidden_size=32, num_attention_heads=2, intermediate_size=37)


def build_model_folder(folder: Path) -> Path:
    """A complete random-weights MAEST folder, written by `maest-convert --random-weights` (test sizes)."""
    from maest_tools.convert import write_random_folder

    write_random_folder(folder, DOCS_ARCH, log=lambda line: None, **TEST_SIZES)
    assert json.loads((folder / "config.json").read_text())["random_weights"] is True
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert "AutoFeatureExtractor" in preprocessor.get("auto_map", {}), "the feature extractor's auto_map is missing"
    return folder


def prepare_probe(workdir: Path) -> None:
    """`maest-probe --data my_tracks.csv --output-dir probe-block6` (the page's first command), on the audio files."""
    from maest_tools import probe

    rows = ["path,labels", "song.mp3,electronic", "b.mp3,electronic", "a.flac,orchestral", "c.ogg,orchestral",
            "Music/a.flac,orchestral"]  # fmt: skip
    (workdir / "my_tracks.csv").write_text("\n".join(rows) + "\n")
    # Validation files distinct from the training files (copies), each label present in one and absent in the other.
    shutil.copy2(workdir / "a.flac", workdir / "val-1.flac")
    shutil.copy2(workdir / "song.mp3", workdir / "val-2.mp3")
    (workdir / "val.csv").write_text("path,labels\nval-1.flac,orchestral\nval-2.mp3,electronic\n")
    probe.main(["--data", "my_tracks.csv", "--output-dir", "probe-block6", "--model", "discogs-maest-10s-fs-129e",
                "--epochs", "2", "--val-data", "val.csv", "--no-progress", "--device", "cpu"])  # fmt: skip


def prepare_onnx(workdir: Path) -> None:
    """`maest-export-onnx --model discogs-maest-10s-fs-129e --output maest.onnx` (the page's first command)."""
    from maest_tools import export_onnx

    status = export_onnx.main(["--model", "discogs-maest-10s-fs-129e", "--output", "maest.onnx"])
    assert status == 0 and (workdir / "maest.onnx").exists()


# What a page's shell blocks write before its Python blocks run, per page.
PREPARE = {"docs/finetune-probe.md": prepare_probe, "docs/export.md": prepare_onnx}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The files and folders every page's working directory starts with, made once per test module."""
    folder = tmp_path_factory.mktemp("docs-template")
    model = build_model_folder(folder / MODEL_FOLDERS[0])
    for name in MODEL_FOLDERS[1:]:
        shutil.copytree(model, folder / name)
    for name, clip in AUDIO_FILES.items():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(TEST_AUDIO / clip), str(folder / name)],
            check=True,
        )
    (folder / "Music").mkdir()
    shutil.copy2(folder / "a.flac", folder / "Music" / "a.flac")
    return folder


@pytest.fixture()
def workdir(tmp_path, template, monkeypatch) -> Path:
    """A working directory holding every file and folder name the documentation uses (a fresh copy per page)."""
    workdir = tmp_path / "work"
    shutil.copytree(template, workdir)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MAEST_MODEL", "demo-model")  # the demo app's model (docs/demo.md): the path-c folder
    return workdir


def write_tagger_output(workdir: Path) -> None:
    """`tags.jsonl` with track embeddings, as `maest-tag Music --output tags.jsonl --embeddings track` writes it."""
    command = shutil.which("maest-tag")
    command = [command] if command else [sys.executable, "-m", "maest_tools.tag"]
    arguments = ["Music", "--output", "tags.jsonl", "--model", "demo-model", "--embeddings", "track"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        command + arguments + ["--num-workers", "0", "--quiet"], cwd=workdir, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, f"the tagger failed: {result.stderr[-2000:]}"


def fill_placeholders(code: str, workdir: Path) -> str:
    for text, replacement in PLACEHOLDERS.items():
        code = code.replace(text, replacement.format(music=workdir / "Music"))
    return code


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_doc_file_is_listed():
    """A new page must be added to EXPECTED_NOT_RUN (with its count of marked blocks), so it is seen here."""
    present = {relative(p) for p in DOC_FILES}
    assert present - set(EXPECTED_NOT_RUN) == set(), "pages missing from EXPECTED_NOT_RUN in tests/test_docs.py"
    assert set(EXPECTED_NOT_RUN) - present <= PENDING_PAGES, "EXPECTED_NOT_RUN lists pages that do not exist"


@pytest.mark.parametrize("path", DOC_FILES, ids=relative)
def test_markers_are_counted_and_precede_python_blocks(path):
    blocks = extract_blocks(path)
    marked = [b for b in blocks if b["reason"] is not None]
    for block in marked:
        assert block["language"] == "python", f"{relative(path)}:{block['line']}: no-test marker above a non-python block"
    markers = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if NO_TEST.match(line.strip()))
    assert markers == len(marked), f"{relative(path)}: a no-test marker is not directly above a code block"
    assert len(marked) == EXPECTED_NOT_RUN.get(relative(path)), (
        f"{relative(path)}: {len(marked)} blocks marked no-test "
        f"({[(b['line'], b['reason']) for b in marked]}), EXPECTED_NOT_RUN says {EXPECTED_NOT_RUN.get(relative(path))}"
    )


@pytest.mark.slow  # builds a model folder and runs every snippet: about 30 s on 2 cores
@pytest.mark.parametrize("path", DOC_FILES, ids=relative)
def test_python_blocks_run(path, workdir):
    blocks = [b for b in extract_blocks(path) if b["language"] == "python"]
    if any("tags.jsonl" in b["code"] for b in blocks if b["reason"] is None):
        write_tagger_output(workdir)
    if relative(path) in PREPARE:
        PREPARE[relative(path)](workdir)
    namespace = {"__name__": "__doc_snippets__"}
    ran, not_run = [], []
    for block in blocks:
        if block["reason"] is not None:
            not_run.append(block["line"])
            continue
        code = fill_placeholders(block["code"], workdir)
        try:
            exec(compile(code, f"{relative(path)}:{block['line']}", "exec"), namespace)
        except Exception as error:  # name the block: the traceback alone points into a compiled string
            raise AssertionError(f"{relative(path)}, block at line {block['line']} failed: {error!r}") from error
        ran.append(block["line"])
    assert len(not_run) == EXPECTED_NOT_RUN[relative(path)]
    print(f"{relative(path)}: {len(ran)} python blocks ran, {len(not_run)} marked no-test (lines {not_run})")
