"""maest-tag's integrity guarantees (issue 13): provenance and the --resume check, one run per output, strict model
loading, records valid for any file name, --merge that never loses a line silently, clean failures of the output.

Every run uses a tiny random MAEST and short generated WAVs, decoded in the main process (--num-workers 0) unless
the test is about workers.
"""

import base64
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import wave

import numpy as np
import pytest
import torch
from conftest import ROOT
from hub_utils import save_tiny_repo

from maest_tools import lock as tag_lock
from maest_tools import records as tag_records
from maest_tools import tag as maest_tag


SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _write_wav(path, seconds: float, seed: int = 0, rate: int = 16000) -> None:
    samples = np.random.default_rng(seed).normal(0, 3000, int(seconds * rate)).astype("<i2")
    with wave.open(os.fsdecode(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_repo(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    return save_tiny_repo(tmp_path_factory.mktemp("model") / "tiny-seed-1", seed=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips") / "clips"
    folder.mkdir()
    for index in range(3):
        _write_wav(folder / f"clip{index}.wav", 2.0 + index, seed=index)
    return folder


def run(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = maest_tag.main([os.fsdecode(arg) if isinstance(arg, bytes) else str(arg) for arg in args])
    return code, capsys.readouterr().err


def tag(clips, model_dir, output, capsys, *extra):
    return run([clips, "--model", model_dir, "--output", output, "-q", "--num-workers", "0", *extra], capsys)


# ---------------------------------------------------------------------------------------------------------------------
# Provenance and --resume
# ---------------------------------------------------------------------------------------------------------------------


def test_the_sidecar_records_the_settings(clips, model_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    assert tag(clips, model_dir, output, capsys, "--top-k", "3", "--hop", "313")[0] == 0
    meta = json.loads((tmp_path / "tags.jsonl.meta.json").read_text())
    settings = meta["settings"]
    expected_hash = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert settings["weights_sha256"] == expected_hash
    assert settings["model"] == os.path.abspath(model_dir)
    assert (settings["dtype"], settings["hop"], settings["top_k"], settings["threshold"]) == ("float32", 313, 3, None)
    assert (settings["embeddings"], settings["block"], settings["num_labels"]) == ("none", None, 400)
    assert meta["tool_version"] and meta["format"] == "maest-tag-meta"
    # Nothing else is left beside the output: no lock, no temporary file.
    assert sorted(os.listdir(tmp_path)) == ["tags.jsonl", "tags.jsonl.meta.json"]


@pytest.mark.parametrize(
    "first, second, difference",
    [
        (["--top-k", "2"], ["--top-k", "5"], "top_k: earlier 2, now 5"),
        (["--embeddings", "track"], ["--embeddings", "windows"], "embeddings: earlier 'track', now 'windows'"),
        (["--embeddings", "track", "--block", "0"], ["--embeddings", "track", "--block", "1"],
         "block: earlier 0, now 1"),
        ([], ["--threshold", "0.5"], "threshold: earlier None, now 0.5"),
        ([], ["--dtype", "bfloat16"], "dtype: earlier 'float32', now 'bfloat16'"),
    ],
)
def test_resume_with_other_settings_is_refused(clips, model_dir, tmp_path, capsys, first, second, difference):
    output = tmp_path / "tags.jsonl"
    assert tag(clips, model_dir, output, capsys, *first)[0] == 0
    before = output.read_bytes()
    code, err = tag(clips, model_dir, output, capsys, "--resume", *second)
    assert code == 2 and difference in err and "--overwrite" in err and "Traceback" not in err, err
    assert output.read_bytes() == before
    # --overwrite starts over with the new settings.
    assert tag(clips, model_dir, output, capsys, "--overwrite", *second)[0] == 0


def test_resume_with_another_model_is_refused(clips, model_dir, other_model_dir, tmp_path, capsys):
    output = tmp_path / "tags.csv"
    assert tag(clips, model_dir, output, capsys)[0] == 0
    code, err = tag(clips, other_model_dir, output, capsys, "--resume")
    assert code == 2 and "weights_sha256: earlier" in err and "Traceback" not in err
    # The same weights in another folder are the same model.
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    code, err = tag(clips, copy, output, capsys, "--resume")
    assert code == 0 and "3 of them were already in the output" in err


def test_resume_on_a_malformed_record_is_a_clean_error(clips, model_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    assert tag(clips, model_dir, output, capsys)[0] == 0
    lines = output.read_text().splitlines()
    record = json.loads(lines[1])
    record["duration_s"] = "abc"
    output.write_text("\n".join([lines[0], json.dumps(record), lines[2]]) + "\n")
    code, err = tag(clips, model_dir, output, capsys, "--resume")
    assert code == 2 and "line 2" in err and "'duration_s' is 'abc'" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------------
# One run at a time
# ---------------------------------------------------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from maest_tools.lock import acquire_output_locks
    locks = acquire_output_locks(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_second_run_on_the_same_output_is_refused(clips, model_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output)], env=SUBPROCESS_ENV,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = tag(clips, model_dir, output, capsys)
        assert code == 2 and f"PID {holder.pid}" in err and "Another maest-tag run" in err, err
        assert not output.exists()
        code, err = run(["--merge", output], capsys)
        assert code == 2 and f"PID {holder.pid}" in err
    finally:
        holder.kill()  # like a crash: the kernel releases the flock, the lock file stays with the dead PID
        holder.wait()
    assert (tmp_path / "tags.jsonl.lock").read_text().strip() == str(holder.pid)
    assert tag(clips, model_dir, output, capsys)[0] == 0
    assert not (tmp_path / "tags.jsonl.lock").exists()


def test_manual_shards_and_whole_runs_exclude_each_other(tmp_path):
    output = str(tmp_path / "tags.jsonl")
    shard = tag_lock.acquire_output_locks(output, (0, 2))
    try:
        tag_lock.release_all(tag_lock.acquire_output_locks(output, (1, 2)))  # another shard: fine
        with pytest.raises(tag_lock.UsageError, match=f"PID {os.getpid()}"):
            tag_lock.acquire_output_locks(output)
    finally:
        tag_lock.release_all(shard)
    whole = tag_lock.acquire_output_locks(output)
    try:
        with pytest.raises(tag_lock.UsageError, match="Another maest-tag run"):
            tag_lock.acquire_output_locks(output, (0, 2))
    finally:
        tag_lock.release_all(whole)


@pytest.mark.slow
def test_two_real_runs_on_one_output(clips, model_dir, tmp_path):
    """Two maest-tag processes at once: exactly one writes the output, the other refuses naming its PID."""
    output = tmp_path / "tags.jsonl"
    command = [sys.executable, "-m", "maest_tools.tag", str(clips), "--model", str(model_dir), "--output",
               str(output), "-q", "--num-workers", "0"]  # fmt: skip
    first = subprocess.Popen(command, env=SUBPROCESS_ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "tags.jsonl.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    first_err = first.communicate(timeout=120)[1]
    if first.returncode == 0 and second.returncode == 0:
        pytest.fail("the first run ended before the second started; no concurrency was tested")
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr, second.stderr
    assert len(tag_records.read_jsonl(str(output))) == 3


# ---------------------------------------------------------------------------------------------------------------------
# Strict loading
# ---------------------------------------------------------------------------------------------------------------------


def _variant(model_dir, tmp_path, name, edit_weights=None, edit_config=None):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / name
    shutil.copytree(model_dir, folder)
    if edit_weights is not None:
        weights = load_file(folder / "model.safetensors")
        save_file(edit_weights(weights), folder / "model.safetensors", metadata={"format": "pt"})
    if edit_config is not None:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def _without_head(weights):
    return {key: value for key, value in weights.items() if not key.startswith("classifier.")}


def _wrong_shape(weights):
    weights["classifier.dense.weight"] = torch.zeros(3, weights["classifier.dense.weight"].shape[1])
    return weights


def _extra_key(weights):
    weights["bogus.weight"] = torch.zeros(3)
    return weights


@pytest.mark.parametrize(
    "name, edit_weights, edit_config, expected",
    [
        ("no-head", _without_head, None, ["missing weights", "classifier.dense.weight", "classifier.layernorm.bias"]),
        ("wrong-shape", _wrong_shape, None,
         ["wrong shape", "classifier.dense.weight (checkpoint (3, 32), model (400, 32))"]),
        ("extra", _extra_key, None, ["unexpected weights", "bogus.weight"]),
        ("str-size", None, lambda c: c.update(hidden_size="64"), ["hidden_size", "'64'"]),
        ("bad-act", None, lambda c: c.update(hidden_act="wiggle"), ["hidden_act 'wiggle'"]),
        ("huge", None, lambda c: c.update(max_length=10**9), ["max_length=1000000000", "parameters"]),
    ],
)
def test_bad_checkpoints_are_refused(clips, model_dir, tmp_path, capsys, name, edit_weights, edit_config, expected):
    folder = _variant(model_dir, tmp_path, name, edit_weights, edit_config)
    code, err = tag(clips, folder, tmp_path / "tags.jsonl", capsys)
    assert code == 2 and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    assert len([line for line in err.splitlines() if line.startswith("maest-tag: error")]) == 1
    assert not (tmp_path / "tags.jsonl").exists()


def test_corrupt_weights_no_weights_and_a_malicious_pickle(clips, model_dir, tmp_path, capsys):
    corrupt = _variant(model_dir, tmp_path, "corrupt")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, err = tag(clips, corrupt, tmp_path / "a.jsonl", capsys)
    assert code == 2 and "not a loadable MAEST model" in err and "Traceback" not in err, err

    empty = _variant(model_dir, tmp_path, "empty")
    (empty / "model.safetensors").unlink()
    code, err = tag(clips, empty, tmp_path / "b.jsonl", capsys)
    assert code == 2 and "has no weights" in err and "pickled" not in err, err

    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    code, err = tag(clips, loop, tmp_path / "c.jsonl", capsys)
    assert code == 2 and "symlink loop" in err, err

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    malicious = _variant(model_dir, tmp_path, "malicious")
    (malicious / "model.safetensors").unlink()
    torch.save({"weights": Evil()}, malicious / "pytorch_model.bin")
    code, err = tag(clips, malicious, tmp_path / "d.jsonl", capsys, "--allow-pickle")
    assert code == 2 and "weights_only" in err and "Traceback" not in err and "pwned" not in err, err


def test_ctrl_c_while_loading_the_model(clips, model_dir, tmp_path, capsys, monkeypatch):
    from modeling_maest import MaestForAudioClassification

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MaestForAudioClassification, "from_pretrained", interrupted)
    code, err = tag(clips, model_dir, tmp_path / "tags.jsonl", capsys)
    assert code == 130 and err.strip() == "maest-tag: interrupted; nothing was written."


# ---------------------------------------------------------------------------------------------------------------------
# Any file name
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["jsonl", "csv", "parquet"])
def test_names_that_are_not_utf8(clips, model_dir, tmp_path, capsys, extension):
    folder = tmp_path / "names"
    folder.mkdir()
    raw_name = b"caf\xe9 \xff.wav"  # Latin-1 bytes: not UTF-8
    shutil.copy(clips / "clip0.wav", os.path.join(os.fsencode(folder), raw_name))
    shutil.copy(clips / "clip1.wav", folder / "plain.wav")
    output = tmp_path / f"tags.{extension}"
    assert tag(folder, model_dir, output, capsys)[0] == 0
    raw_path = os.path.join(os.fsencode(folder), raw_name)
    if extension == "jsonl":
        with open(output, encoding="utf-8", errors="strict") as handle:
            rows = [json.loads(line) for line in handle]
    elif extension == "csv":
        import pandas

        frame = pandas.read_csv(output, encoding="utf-8")  # strict decoding
        assert list(frame["path"]) == [row["path"] for row in csv.DictReader(open(output, encoding="utf-8"))]
        with open(output, encoding="utf-8", errors="strict", newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(output).to_pylist()
    by_name = {row["path"]: row for row in rows}
    display = raw_path.decode("utf-8", "replace")
    assert "\ufffd" in display and set(by_name) == {display, os.path.join(str(folder), "plain.wav")}
    assert base64.b64decode(by_name[display]["path_bytes_b64"]) == raw_path
    assert not by_name[os.path.join(str(folder), "plain.wav")].get("path_bytes_b64")
    assert os.path.exists(base64.b64decode(by_name[display]["path_bytes_b64"]))
    # --resume recognises the file by its bytes.
    code, err = tag(folder, model_dir, output, capsys, "--resume")
    assert code == 0 and "2 of them were already in the output" in err, err


# ---------------------------------------------------------------------------------------------------------------------
# --merge
# ---------------------------------------------------------------------------------------------------------------------


def _shards(clips, model_dir, output, capsys):
    for shard in ("0/2", "1/2"):
        code, _ = tag(clips, model_dir, output, capsys, "--shard", shard, "--batch-size", "1")
        assert code == 0
    return [str(output) + ".shard-0-of-2.jsonl", str(output) + ".shard-1-of-2.jsonl"]


def test_merge_keeps_the_shards_when_a_line_is_torn_or_malformed(clips, model_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    first, second = _shards(clips, model_dir, output, capsys)
    shard0 = open(first).read().splitlines()
    assert len(shard0) == 2
    with open(first, "w") as handle:  # a torn last line
        handle.write(shard0[0] + "\n" + shard0[1][: len(shard0[1]) // 2])
    bad = json.loads(open(second).read())
    bad["labels"] = "x"
    with open(second, "w") as handle:
        handle.write(json.dumps(bad) + "\n")
    code, err = run(["--merge", output], capsys)
    assert code == 1 and "torn last line" in err and "'labels' is 'x'" in err and "journals are kept" in err, err
    assert os.path.exists(first) and os.path.exists(second)
    assert len(tag_records.read_jsonl(str(output))) == 1
    # Resuming on the malformed line is refused cleanly; once it is deleted, --resume redoes the dropped files.
    code, err = tag(clips, model_dir, output, capsys, "--resume")
    assert code == 2 and "'labels' is 'x'" in err and "Traceback" not in err
    open(second, "w").close()
    code, err = tag(clips, model_dir, output, capsys, "--resume")
    assert code == 0 and len(tag_records.read_jsonl(str(output))) == 3 and not os.path.exists(first)


def test_record_checks():
    good = {"path": "a.wav", "duration_s": 1.0, "source_sampling_rate": 16000, "source_channels": 1,
            "labels": [{"label": "x", "score": 0.5}], "error": None}  # fmt: skip
    assert tag_records.record_problem(good) is None
    for field, value in [("labels", "x"), ("duration_s", "abc"), ("source_channels", 1.5), ("path", 3),
                         ("labels", [{"label": "x", "score": float("nan")}]), ("error", 5)]:  # fmt: skip
        assert field in tag_records.record_problem({**good, field: value}), (field, value)
    assert "no 'error'" in tag_records.record_problem({key: good[key] for key in good if key != "error"})
    assert tag_records.record_problem({**good, "labels": None}) == "neither 'labels' nor 'error'"


# ---------------------------------------------------------------------------------------------------------------------
# The output's own failures
# ---------------------------------------------------------------------------------------------------------------------


def test_an_output_or_shard_that_is_a_folder(clips, model_dir, tmp_path, capsys):
    (tmp_path / "tags.jsonl").mkdir()
    code, err = tag(clips, model_dir, tmp_path / "tags.jsonl", capsys)
    assert code == 2 and "is a folder" in err and "Traceback" not in err
    (tmp_path / "s.jsonl.shard-0-of-2.jsonl").mkdir()
    code, err = tag(clips, model_dir, tmp_path / "s.jsonl", capsys, "--shard", "0/2")
    assert code == 2 and "is a folder" in err and "Traceback" not in err
    code, err = run(["--merge", tmp_path / "s.jsonl"], capsys)
    assert code == 2 and "is a folder" in err and "Traceback" not in err


def _mount_tmpfs(folder, options: str):
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


def _unmount(folder):
    subprocess.run(["umount", str(folder)], check=False)


def test_read_only_output_folder(clips, model_dir, tmp_path, capsys):
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=64k,ro")
    try:
        code, err = tag(clips, model_dir, folder / "tags.jsonl", capsys)
        assert code == 2 and "writable" in err and "Traceback" not in err, err
    finally:
        _unmount(folder)


def test_disk_full_mid_run(clips, model_dir, tmp_path, capsys):
    folder = tmp_path / "small"
    _mount_tmpfs(folder, "size=256k")
    try:
        # Leave about 40 KB: the first records fit, the run stops cleanly when the disk is full.
        filler = folder / "filler"
        filler.write_bytes(b"\0" * (256 - 40) * 1024)
        output = folder / "tags.jsonl"
        code, err = tag(clips, model_dir, output, capsys, "--top-k", "all", "--batch-size", "1")
        assert code == 2 and "No space left on device" in err and "--resume" in err and "Traceback" not in err, err
        kept = tag_records.read_jsonl(str(output))
        assert 0 < len(kept) < 3  # the records written before the disk filled are kept
        filler.unlink()
        code, err = tag(clips, model_dir, output, capsys, "--top-k", "all", "--batch-size", "1", "--resume")
        assert code == 0 and len(tag_records.read_jsonl(str(output))) == 3, err
    finally:
        _unmount(folder)


def test_leftover_temporary_files_are_removed(clips, model_dir, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    assert tag(clips, model_dir, output, capsys, "--embeddings", "track")[0] == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    sub = tmp_path / "tags.jsonl.embeddings" / "ab"
    sub.mkdir(parents=True, exist_ok=True)
    litter = [tmp_path / f"tags.jsonl.tmp-{dead_pid}", tmp_path / f"tags.jsonl.meta.json.tmp-{dead_pid}",
              sub / f"{'ab' * 20}.npy.tmp-{dead_pid}.npy"]  # fmt: skip
    alive = tmp_path / "tags.jsonl.tmp-1"  # PID 1 is always running: its file is not ours to remove
    for path in [*litter, alive]:
        path.write_bytes(b"partial")
    code, err = tag(clips, model_dir, output, capsys, "--embeddings", "track", "--resume")
    assert code == 0 and "Removed 3 temporary files" in err, err
    assert not any(path.exists() for path in litter) and alive.exists()


# ---------------------------------------------------------------------------------------------------------------------
# Decoding workers that die, and the progress bar
# ---------------------------------------------------------------------------------------------------------------------


def test_a_decoding_worker_killed_on_one_file(clips, model_dir, tmp_path, capsys, monkeypatch):
    reference = tmp_path / "reference.jsonl"
    assert tag(clips, model_dir, reference, capsys)[0] == 0
    expected = {record["path"]: record for record in tag_records.read_jsonl(str(reference))}
    killer = os.path.join(str(clips), "clip1.wav")
    monkeypatch.setenv(maest_tag.KILL_DECODER_TEST_ENV, "clip1.wav")
    output = tmp_path / "tags.jsonl"
    args = [clips, "--model", model_dir, "--output", output, "-q", "--num-workers", "2"]
    code, err = run(args, capsys)
    assert code == 1 and "3 files: 2 tagged, 1 failed" in err, err
    records = {record["path"]: record for record in tag_records.read_jsonl(str(output))}
    assert records[killer]["error"] == maest_tag.WORKER_DIED and records[killer]["labels"] is None
    for path in expected:
        if path != killer:
            assert records[path] == expected[path]
    # --resume does not meet the killer again; --retry-errors meets it and fails the same clean way.
    code, err = run([*args, "--resume"], capsys)
    assert code == 1 and "3 of them were already in the output" in err
    code, err = run([*args, "--resume", "--retry-errors"], capsys)
    assert code == 1 and "1 failed" in err and "Traceback" not in err
    assert tag_records.read_jsonl(str(output))[1]["error"] == maest_tag.WORKER_DIED


def test_the_bar_moves_window_by_window(clips, model_dir, tmp_path, capsys, monkeypatch):
    import tqdm

    seen = []
    original = tqdm.tqdm.update

    def update(self, n=1):
        result = original(self, n)
        seen.append(self.n)
        return result

    monkeypatch.setattr(tqdm.tqdm, "update", update)
    folder = tmp_path / "long"
    folder.mkdir()
    _write_wav(folder / "a.wav", 25.0)  # 3 windows of 10 s every 10 s (the last one aligned to the end)
    _write_wav(folder / "b.wav", 2.0)  # 1 window
    output = tmp_path / "tags.jsonl"
    code, _ = run([folder, "--model", model_dir, "--output", output, "--num-workers", "0", "--batch-size", "2",
                   "--windows-per-batch", "1"], capsys)  # fmt: skip
    assert code == 0
    # One model call, 4 windows in chunks of 1: the bar advanced by 2/4 file per window and ended at 2 files.
    assert seen[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0]), seen
    assert seen[-1] == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------------------------------
# Files that are not regular files, and names that look like ffmpeg protocols
# ---------------------------------------------------------------------------------------------------------------------

import audio_maest  # noqa: E402

bounded_decoding = pytest.mark.skipif(
    not hasattr(audio_maest, "MAX_DURATION_S"),
    reason="needs the library's bounded decoding (audio_maest with regular-file checks, issue 13 point 1)",
)


@bounded_decoding
@pytest.mark.parametrize("workers", ["0", "2"])
def test_fifo_and_device_link_are_per_file_errors(clips, model_dir, tmp_path, workers):
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(clips / "clip0.wav", folder / "good.wav")
    os.mkfifo(folder / "x.wav")
    os.symlink("/dev/urandom", folder / "noise.mp3")
    output = tmp_path / "tags.jsonl"
    command = [sys.executable, "-m", "maest_tools.tag", str(folder), "--model", str(model_dir), "--output",
               str(output), "-q", "--num-workers", workers]  # fmt: skip
    result = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "3 files: 1 tagged, 2 failed" in result.stderr, result.stderr
    records = {os.path.basename(r["path"]): r for r in tag_records.read_jsonl(str(output))}
    assert records["good.wav"]["error"] is None
    assert records["x.wav"]["error"] and records["noise.mp3"]["error"]
    # --resume does not hang on them either.
    result = subprocess.run([*command, "--resume"], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "3 of them were already in the output" in result.stderr


@bounded_decoding
def test_protocol_looking_names_are_read_as_files(clips, model_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "names"
    folder.mkdir()
    shutil.copy(clips / "clip0.wav", folder / "six.wav")
    shutil.copy(clips / "clip1.wav", folder / "concat:six.wav")  # 3 s: must not be read as six.wav (2 s)
    shutil.copy(clips / "clip2.wav", folder / "Intro: Part 1.wav")
    shutil.copy(clips / "clip0.wav", folder / "http:example.wav")  # read as a file, never fetched
    monkeypatch.chdir(folder)
    output = tmp_path / "tags.jsonl"
    code, err = run(["concat:six.wav", "Intro: Part 1.wav", "http:example.wav", "--model", model_dir, "--output",
                     output, "-q", "--num-workers", "0"], capsys)  # fmt: skip
    assert code == 0, err
    records = {r["path"]: r for r in tag_records.read_jsonl(str(output))}
    assert records["concat:six.wav"]["duration_s"] == pytest.approx(3.0)
    assert records["Intro: Part 1.wav"]["duration_s"] == pytest.approx(4.0)
    assert records["http:example.wav"]["duration_s"] == pytest.approx(2.0)


@pytest.mark.slow
def test_no_network_fails_at_once_with_the_right_message(clips, tmp_path):
    # HF_HUB_OFFLINE is not set, the cache is empty and the Hub's endpoint refuses connections (a closed local port).
    env = {key: value for key, value in SUBPROCESS_ENV.items() if key != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path))
    command = [sys.executable, "-m", "maest_tools.tag", str(clips), "--output", str(tmp_path / "o.jsonl")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cannot be reached" in result.stderr, result.stderr
    assert "HF_HUB_OFFLINE" not in result.stderr and "Traceback" not in result.stderr
    assert "mtg-upf/discogs-maest-10s-fs-129e" in result.stderr and "--model /path/to" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the error and its hint: no retry messages
