"""maest_tools.tag (maest-tag): tagging a collection, resume, shards, torchrun, output formats, embeddings, errors.

Every run uses a tiny random MAEST saved to a temporary folder (10 s windows, the 400 Discogs labels) and a small
collection built from the test clips: two 30 s FLACs, the 44.1 kHz stereo OGG, a generated 7 s stereo WAV at
22.05 kHz, a too-short WAV, a corrupt "mp3" and files that must be ignored. Scores are checked against the model and
the feature extractor run by hand, one file at a time.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest
import torch
from conftest import ROOT, TEST_AUDIO
from hub_utils import save_tiny_repo

from feature_extraction_maest import MaestFeatureExtractor, load_audio
from modeling_maest import MaestForAudioClassification

from maest_tools import discovery
from maest_tools import records as tag_records
from maest_tools import tag as maest_tag


# The command as a subprocess runs it: the package from this checkout, whatever the working directory.
COMMAND = ["-m", "maest_tools.tag"]
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
GOOD = ["electronic.flac", "orchestral.flac", "sub/deeper/noise.wav", "sub/orchestral.ogg"]
BAD = ["bad.mp3", "sub/tiny.wav"]
FIELDS = ["path", "duration_s", "source_sampling_rate", "source_channels", "labels", "error"]


def _write_wav(path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(samples.shape[1])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_repo(tmp_path_factory.mktemp("model") / "discogs-maest-tiny")


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("music") / "music"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    shutil.copy(TEST_AUDIO / "electronic_nexuiz_digital_pursuit_16k_mono.flac", root / "electronic.flac")
    shutil.copy(TEST_AUDIO / "orchestral_wesnoth_northerners_16k_mono.flac", root / "orchestral.flac")
    shutil.copy(TEST_AUDIO / "orchestral_wesnoth_northerners_orig44k_stereo.ogg", root / "sub" / "orchestral.ogg")
    shutil.copy(TEST_AUDIO / "orchestral_wesnoth_northerners_16k_mono.flac", root / ".hidden" / "skipped.flac")
    shutil.copy(TEST_AUDIO / "orchestral_wesnoth_northerners_16k_mono.flac", root / "sub" / "._resource_fork.flac")
    rng = np.random.default_rng(0)
    _write_wav(root / "sub" / "deeper" / "noise.wav", rng.normal(0, 3000, (7 * 22050, 2)), 22050)
    _write_wav(root / "sub" / "tiny.wav", rng.normal(0, 3000, (800, 1)), 16000)  # 0.05 s: shorter than one patch
    (root / "bad.mp3").write_bytes(rng.bytes(6000))  # not audio at all
    (root / "notes.txt").write_text("not audio\n")
    return root


def _paths(collection, names):
    return [os.path.normpath(os.path.join(str(collection), name)) for name in names]


def run_main(args, capsys) -> tuple[int, str]:
    """Run maest_tag.main in this process; returns (exit status, stderr)."""
    capsys.readouterr()
    code = maest_tag.main([str(arg) for arg in args])
    return code, capsys.readouterr().err


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def reference(model_dir, collection):
    """Track scores of every good file computed by hand: decoder, feature extractor and model, one file at a time."""
    model = MaestForAudioClassification.from_pretrained(model_dir).eval()
    extractor = MaestFeatureExtractor()
    scores, info, features = {}, {}, {}
    for path in _paths(collection, GOOD):
        waveform, info[path] = load_audio(path)
        inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")
        features[path] = inputs["input_values"]
        with torch.no_grad():
            scores[path] = model(**inputs).logits[0].sigmoid()
    return {"model": model, "scores": scores, "info": info, "features": features}


def _expected_labels(scores: torch.Tensor, id2label, top_k=None, threshold=None):
    order = np.argsort(-scores.numpy(), kind="stable")
    labels = [(id2label[int(i)], float(scores[i])) for i in order]
    if threshold is not None:
        labels = [(name, score) for name, score in labels if score >= threshold]
    return labels[:top_k] if top_k is not None else labels


@pytest.fixture(scope="module")
def full_run(model_dir, collection, tmp_path_factory):
    """One single-process run over the folder (one torch thread, as the torchrun test's ranks), batches of 3."""
    output = tmp_path_factory.mktemp("full") / "tags.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = maest_tag.main([str(collection), "--model", str(model_dir), "--output", str(output), "--batch-size", "3",
                               "--num-workers", "1", "--quiet"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return code, output, read_jsonl(output)


def _assert_records_match(records, expected):
    """Same paths, metadata, errors and label names; scores within float32 rounding of another batch layout."""
    assert [r["path"] for r in records] == [r["path"] for r in expected]
    for record, other in zip(records, expected):
        assert {k: v for k, v in record.items() if k != "labels"} == {k: v for k, v in other.items() if k != "labels"}
        if other["labels"] is None:
            assert record["labels"] is None
            continue
        assert [x["label"] for x in record["labels"]] == [x["label"] for x in other["labels"]]
        np.testing.assert_allclose([x["score"] for x in record["labels"]], [x["score"] for x in other["labels"]],
                                   rtol=0, atol=1e-6)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_records_match_an_independent_computation(full_run, collection, reference, model_dir):
    code, output, records = full_run
    assert code == 1  # two files cannot be tagged
    assert [r["path"] for r in records] == sorted(_paths(collection, GOOD + BAD))  # hidden files and .txt skipped
    id2label = reference["model"].config.id2label
    for record in records:
        assert list(record) == FIELDS
        if record["path"] in reference["scores"]:
            info = reference["info"][record["path"]]
            assert record["error"] is None
            assert record["duration_s"] == pytest.approx(info["duration_s"])
            assert (record["source_sampling_rate"], record["source_channels"]) == (
                info["source_sampling_rate"], info["source_channels"])  # fmt: skip
            expected = _expected_labels(reference["scores"][record["path"]], id2label, top_k=5)
            assert [x["label"] for x in record["labels"]] == [name for name, _ in expected]
            scores = [x["score"] for x in record["labels"]]
            np.testing.assert_allclose(scores, [s for _, s in expected], rtol=0, atol=1e-6)
            assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
        else:
            assert record["labels"] is None and isinstance(record["error"], str) and record["error"]
    by_path = {r["path"]: r for r in records}
    ogg = by_path[_paths(collection, ["sub/orchestral.ogg"])[0]]
    assert (ogg["source_sampling_rate"], ogg["source_channels"], ogg["duration_s"]) == (44100, 2, pytest.approx(30.0))
    noise = by_path[_paths(collection, ["sub/deeper/noise.wav"])[0]]
    assert (noise["source_sampling_rate"], noise["source_channels"], noise["duration_s"]) == (22050, 2, 7.0)
    assert "ffmpeg could not decode" in by_path[_paths(collection, ["bad.mp3"])[0]]["error"]
    tiny = by_path[_paths(collection, ["sub/tiny.wav"])[0]]
    # Decoded but too short for one patch: the error says so, and what was decoded is still described (800 samples).
    assert "too short" in tiny["error"] and tiny["labels"] is None
    assert (tiny["duration_s"], tiny["source_sampling_rate"], tiny["source_channels"]) == (800 / 16000, 16000, 1)
    # The FLAC and the OGG of the same music get nearly the same tags (different codecs, same front end).
    flac = by_path[_paths(collection, ["orchestral.flac"])[0]]
    assert flac["labels"][0]["label"] == ogg["labels"][0]["label"]


@pytest.mark.slow
def test_summary_line_exit_status_and_no_overwrite(full_run, collection, model_dir, capsys):
    _code, output, _records = full_run
    code, err = run_main([collection, "--model", model_dir, "--output", output, "-q"], capsys)
    assert code == 2 and "already exist" in err and "--resume" in err and "--overwrite" in err
    good = _paths(collection, ["orchestral.flac"])
    out = output.parent / "one.jsonl"
    code, err = run_main([*good, "--model", model_dir, "--output", out, "-q"], capsys)
    assert code == 0
    assert re.search(r"^1 file: 1 tagged, 0 failed \(30\.0 s of audio, [0-9.]+ s\)$", err, re.M), err
    code, err = run_main([*good, "--model", model_dir, "--output", out, "-q", "--overwrite", "--top-k", "2"], capsys)
    assert code == 0 and len(read_jsonl(out)[0]["labels"]) == 2


def test_threshold_and_top_k(collection, model_dir, reference, tmp_path, capsys):
    files = _paths(collection, ["orchestral.flac", "sub/deeper/noise.wav"])
    scores = reference["scores"][files[0]]
    threshold = float(scores.sort(descending=True).values[11])  # 12 labels of the first file reach it
    id2label = reference["model"].config.id2label
    code, _ = run_main([*files, "--model", model_dir, "--output", tmp_path / "t.jsonl", "-q",
                        "--threshold", threshold], capsys)  # fmt: skip
    assert code == 0
    records = read_jsonl(tmp_path / "t.jsonl")
    for record in records:
        expected = _expected_labels(reference["scores"][record["path"]], id2label, threshold=threshold)
        assert [x["label"] for x in record["labels"]] == [name for name, _ in expected]
    assert len(records[1]["labels"]) >= 12 or len(records[0]["labels"]) >= 12
    code, _ = run_main([*files, "--model", model_dir, "--output", tmp_path / "t3.jsonl", "-q", "--threshold",
                        threshold, "--top-k", "3"], capsys)  # fmt: skip
    assert all(len(r["labels"]) <= 3 for r in read_jsonl(tmp_path / "t3.jsonl"))
    code, _ = run_main([files[0], "--model", model_dir, "--output", tmp_path / "all.jsonl", "-q", "--top-k", "all"],
                       capsys)  # fmt: skip
    labels = read_jsonl(tmp_path / "all.jsonl")[0]["labels"]
    assert len(labels) == 400 and sorted(x["label"] for x in labels) == sorted(id2label.values())


@pytest.mark.slow
@pytest.mark.parametrize("extension", [".csv", ".parquet"])
def test_output_formats_round_trip(full_run, collection, model_dir, tmp_path, capsys, extension):
    _code, _output, expected = full_run
    output = tmp_path / f"tags{extension}"
    code, _ = run_main([collection, "--model", model_dir, "--output", output, "--batch-size", "3", "-q"], capsys)
    assert code == 1
    assert not os.path.exists(tag_records.partial_journal_path(str(output)))  # the journal was converted and removed
    records = tag_records.read_records(str(output))
    _assert_records_match(records, expected)
    if extension == ".csv":
        with open(output, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == FIELDS
        assert json.loads(rows[1]["labels"]) == records[1]["labels"] and rows[0]["labels"] == ""
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(output)
        assert table.column_names == FIELDS
        assert str(table.schema.field("labels").type) == "list<element: struct<label: string, score: double>>"


def test_a_failed_final_write_keeps_the_journal(collection, model_dir, tmp_path, capsys):
    # The final write cannot happen: its temporary name is taken by a folder. (Non-UTF-8 names, which used to fail
    # here, are written fine now: see test_tag_integrity.py.)
    path = _paths(collection, ["orchestral.flac"])[0]
    output = tmp_path / "tags.parquet"
    blocker = tmp_path / f"tags.parquet.tmp-{os.getpid()}"
    blocker.mkdir()
    code, err = run_main([path, "--model", model_dir, "--output", output, "-q"], capsys)
    assert code == 2 and "Could not write" in err and "Traceback" not in err and not output.exists()
    journal = tag_records.partial_journal_path(str(output))
    assert [r["path"] for r in read_jsonl(journal)] == [path]
    blocker.rmdir()
    code, _ = run_main(["--merge", output], capsys)
    assert code == 0 and [r["path"] for r in tag_records.read_records(str(output))] == [path]
    assert not os.path.exists(journal)


@pytest.mark.slow
def test_resume_redoes_only_missing_records(full_run, collection, model_dir, tmp_path, capsys):
    _code, _output, expected = full_run
    output = tmp_path / "tags.jsonl"
    kept = [dict(record) for record in expected[:3]]
    kept[1]["labels"] = [{"label": "sentinel", "score": 0.5}]  # a re-done file would lose it
    with open(output, "w", encoding="utf-8") as handle:
        for record in kept:
            handle.write(json.dumps(record) + "\n")
        handle.write('{"path": "torn by a cra')  # the last write of an interrupted run
    args = [collection, "--model", model_dir, "--output", output, "--batch-size", "3", "-q", "--resume"]
    code, err = run_main(args, capsys)
    assert code == 1 and "3 of them were already in the output" in err
    records = read_jsonl(output)
    assert records[1]["labels"] == [{"label": "sentinel", "score": 0.5}]
    _assert_records_match([records[0], *records[2:]], [expected[0], *expected[2:]])
    # --retry-errors processes the failed files again (their records are replaced, not duplicated), no other file.
    assert records[0]["path"].endswith("bad.mp3")
    records[0]["error"] = "sentinel error"
    tag_records.write_records(str(output), records)
    code, err = run_main([*args, "--retry-errors"], capsys)
    again = read_jsonl(output)
    assert code == 1 and "4 of them were already in the output" in err
    assert len(again) == len(expected) and again[0]["error"] == expected[0]["error"]
    assert again[1]["labels"] == [{"label": "sentinel", "score": 0.5}]


@pytest.mark.slow
def test_interrupted_csv_run_loses_nothing(full_run, collection, model_dir, tmp_path, capsys, monkeypatch):
    _code, _output, expected = full_run
    output = tmp_path / "tags.csv"
    original = maest_tag.Tagger.run_batch
    calls = []

    def interrupt_second_batch(self, items):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, items)

    monkeypatch.setattr(maest_tag.Tagger, "run_batch", interrupt_second_batch)
    args = [collection, "--model", model_dir, "--output", output, "--batch-size", "2", "--num-workers", "0", "-q"]
    code, err = run_main(args, capsys)
    assert code == 130 and "--resume" in err
    journal = tag_records.partial_journal_path(str(output))
    written = read_jsonl(journal)
    assert not output.exists() and len(written) >= 2  # the first batch and the errors met so far are safe
    monkeypatch.setattr(maest_tag.Tagger, "run_batch", original)
    code, err = run_main([*args, "--resume"], capsys)
    assert code == 1 and f"{len(written)} of them were already in the output" in err
    assert not os.path.exists(journal)
    _assert_records_match(tag_records.read_records(str(output)), expected)


@pytest.mark.slow
def test_shards_and_merge_equal_the_full_run(full_run, collection, model_dir, tmp_path, capsys):
    _code, _output, expected = full_run
    output = tmp_path / "tags.jsonl"
    base = [collection, "--model", model_dir, "--output", output, "--batch-size", "3", "-q"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codes = [run_main([*base, "--shard", f"{i}/2"], capsys)[0] for i in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert not output.exists()
    parts = [read_jsonl(tag_records.shard_journal_path(str(output), i, 2)) for i in range(2)]
    # Blocks of 3 sorted files: shard 0 holds files 0-2, shard 1 files 3-5.
    assert [r["path"] for r in parts[0]] == [r["path"] for r in expected[:3]]
    assert sorted(r["path"] for r in parts[1]) == [r["path"] for r in expected[3:]]
    assert codes == [1, 1]  # each shard holds one of the two bad files
    code, err = run_main(["--merge", output], capsys)
    assert code == 1 and "6 files: 4 tagged, 2 failed" in err
    assert read_jsonl(output) == expected  # bit-for-bit: the same batches as the one-process run
    assert tag_records.shard_journals(str(output)) == {}


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(full_run, collection, model_dir, tmp_path):
    _code, _output, expected = full_run
    output = tmp_path / "tags.jsonl"
    env = {**SUBPROCESS_ENV, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *COMMAND,
               str(collection), "--model", str(model_dir), "--output", str(output), "--batch-size", "3",
               "--num-workers", "1"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # some files failed
    assert read_jsonl(output) == expected  # same records, same scores, same order
    assert tag_records.shard_journals(str(output)) == {}
    assert "6 files: 4 tagged, 2 failed" in result.stderr
    assert "file/s" in result.stderr and "audio" in result.stderr  # rank 0's progress bar


@pytest.mark.slow
def test_embeddings_track_and_windows(collection, model_dir, reference, tmp_path, capsys):
    files = _paths(collection, ["orchestral.flac", "sub/deeper/noise.wav", "bad.mp3"])
    model = reference["model"]
    for mode in ("track", "windows"):
        output = tmp_path / f"{mode}.jsonl"
        code, _ = run_main([*files, "--model", model_dir, "--output", output, "-q", "--embeddings", mode,
                            "--block", "1", "--batch-size", "2"], capsys)  # fmt: skip
        assert code == 1
        records = {r["path"]: r for r in read_jsonl(output)}
        assert records[files[2]]["embedding_ref"] is None and records[files[2]]["error"]
        for path in files[:2]:
            reference_path = output.parent / records[path]["embedding_ref"]
            assert records[path]["embedding_ref"] == tag_records.embedding_ref(str(output), path)
            assert records[path]["embedding_ref"].startswith(f"{mode}.jsonl.embeddings/")
            stored = np.load(reference_path)
            assert stored.dtype == np.float32
            with torch.no_grad():
                if mode == "track":
                    expected = model.embed(reference["features"][path], block=1)[0]
                else:
                    windows, mask = model.embed(reference["features"][path], block=1, per_window=True)
                    expected = windows[0, mask[0]]
            assert stored.shape == tuple(expected.shape)
            np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-5, atol=1e-5)
        assert np.load(output.parent / records[files[0]]["embedding_ref"]).shape == (
            (96,) if mode == "track" else (3, 96))  # fmt: skip
    # Without --block: the model's middle block (2 // 2 = 1 for the tiny model, 6 for MAEST's 12 blocks).
    output = tmp_path / "default.jsonl"
    code, _ = run_main([files[0], "--model", model_dir, "--output", output, "-q", "--embeddings", "track"], capsys)
    assert code == 0
    stored = np.load(output.parent / read_jsonl(output)[0]["embedding_ref"])
    with torch.no_grad():
        middle = model.embed(reference["features"][files[0]], block=1)[0]
        first = model.embed(reference["features"][files[0]], block=0)[0]
    np.testing.assert_allclose(stored, middle.numpy(), rtol=1e-5, atol=1e-5)
    assert float(np.abs(stored - first.numpy()).max()) > 1e-3  # block 0 would be told apart
    code, err = run_main([files[0], "--model", model_dir, "--output", tmp_path / "x.jsonl", "--embeddings", "track",
                          "--block", "6"], capsys)  # fmt: skip
    assert code == 2 and "--block 6 is outside the model's 2 blocks: use 0..1" in err


def test_resume_adds_missing_embeddings(collection, model_dir, tmp_path, capsys):
    files = _paths(collection, ["orchestral.flac", "sub/deeper/noise.wav"])
    output = tmp_path / "tags.jsonl"
    assert run_main([*files, "--model", model_dir, "--output", output, "-q"], capsys)[0] == 0
    code, err = run_main([*files, "--model", model_dir, "--output", output, "-q", "--resume", "--embeddings", "track",
                          "--block", "0"], capsys)  # fmt: skip
    assert code == 0 and "already in the output" not in err
    assert all(os.path.exists(output.parent / r["embedding_ref"]) for r in read_jsonl(output))


def test_file_list_and_folder_recursion(collection, model_dir, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    missing = os.path.join(str(collection), "missing.flac")
    listing.write_text(f"# my files\n{collection / 'orchestral.flac'}\n\n{collection / 'sub'}\n{missing}\n")
    output = tmp_path / "tags.jsonl"
    code, _ = run_main(["--file-list", listing, "--model", model_dir, "--output", output, "-q"], capsys)
    records = {r["path"]: r for r in read_jsonl(output)}
    expected = _paths(collection, ["orchestral.flac", "sub/orchestral.ogg", "sub/deeper/noise.wav", "sub/tiny.wav"])
    assert sorted(records) == sorted(expected + [missing])
    assert code == 1 and "not found" in records[missing]["error"]
    only_ogg = discovery.find_audio_files([str(collection)], extensions=["OGG"])
    assert only_ogg == _paths(collection, ["sub/orchestral.ogg"])


def test_options_change_the_analysis(collection, model_dir, reference, tmp_path, capsys):
    path = _paths(collection, ["electronic.flac"])[0]
    model = reference["model"]
    # --hop: windows every 313 frames (5 windows instead of 3 for 30 s).
    code, _ = run_main([path, "--model", model_dir, "--output", tmp_path / "hop.jsonl", "-q", "--hop", "313"], capsys)
    model.config.window_hop = 313
    try:
        with torch.no_grad():
            scores = model(reference["features"][path]).logits[0].sigmoid()
    finally:
        model.config.window_hop = 625
    labels = read_jsonl(tmp_path / "hop.jsonl")[0]["labels"]
    expected = _expected_labels(scores, model.config.id2label, top_k=5)
    assert [x["label"] for x in labels] == [name for name, _ in expected]
    np.testing.assert_allclose([x["score"] for x in labels], [s for _, s in expected], atol=1e-6)
    default_hop = reference["scores"][path].sort(descending=True).values[:5]
    assert not np.allclose([s for _, s in expected], default_hop, atol=1e-6)
    # --dtype bfloat16 on CPU: finite scores close to float32.
    code, _ = run_main([path, "--model", model_dir, "--output", tmp_path / "bf16.jsonl", "-q", "--dtype", "bfloat16",
                        "--top-k", "all"], capsys)  # fmt: skip
    assert code == 0
    got = {x["label"]: x["score"] for x in read_jsonl(tmp_path / "bf16.jsonl")[0]["labels"]}
    full = reference["scores"][path]
    np.testing.assert_allclose([got[model.config.id2label[i]] for i in range(400)], full.numpy(), atol=2e-2)
    code, err = run_main([path, "--model", model_dir, "--output", tmp_path / "h.jsonl", "--hop", "700"], capsys)
    assert code == 2 and "--hop 700" in err and "626" in err


def test_pickled_weights_need_allow_pickle(collection, model_dir, tmp_path, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(model_dir, folder)
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    path = _paths(collection, ["orchestral.flac"])[0]
    code, err = run_main([path, "--model", folder, "--output", tmp_path / "a.jsonl", "-q"], capsys)
    assert code == 2 and "--allow-pickle" in err and "Traceback" not in err
    code, _ = run_main([path, "--model", folder, "--output", tmp_path / "b.jsonl", "-q", "--allow-pickle"], capsys)
    assert code == 0 and read_jsonl(tmp_path / "b.jsonl")[0]["labels"]


def test_usage_errors_are_clear(collection, model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    cases = [
        ([empty, "--output", tmp_path / "o.jsonl"], "No audio files found"),
        ([collection, "--output", tmp_path / "o.txt"], "use .jsonl, .csv or .parquet"),
        ([tmp_path / "nowhere", "--output", tmp_path / "o.jsonl"], "Input path not found"),
        ([collection, "--output", tmp_path / "o.jsonl", "--model", tmp_path / "no_model"], "no such folder"),
        ([collection], "--output PATH is required"),
        (["--merge", tmp_path / "none.jsonl"], "neither the output nor any shard journal"),
        ([collection, "--output", tmp_path / "o.jsonl", "--device", "cuda:99"], "--device"),
    ]
    for args, message in cases:
        if "--model" not in args and "--merge" not in args:
            args = [*args, "--model", model_dir]
        code, err = run_main(args, capsys)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    with pytest.raises(SystemExit) as exit_info:  # argparse validates the shapes of values
        maest_tag.main([str(collection), "--output", "o.jsonl", "--shard", "2/2"])
    assert exit_info.value.code == 2 and "0 <= I <= N-1" in capsys.readouterr().err


@pytest.mark.slow
def test_offline_default_model_error(collection, tmp_path):
    env = {**SUBPROCESS_ENV, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty_cache"),
           "HF_HOME": str(tmp_path)}  # fmt: skip
    command = [sys.executable, *COMMAND, str(collection / "orchestral.flac"), "--output", str(tmp_path / "o.jsonl")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "mtg-upf/discogs-maest-10s-fs-129e" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
    assert "--model /path/to" in result.stderr and "network" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
