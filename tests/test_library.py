"""maest-tag's music-library features on real files of every format: --write-tags, --remove-tags, --write-tags-from,
--dry-run, --timeline (jsonl, csv, parquet), --genres, --plots, and the maest-plot command.

One tagging run (a tiny random MAEST with the 400 Discogs labels and 10 s windows) over a folder of MP3, FLAC,
Ogg Vorbis, Opus and M4A files made from a test clip with ffmpeg (the user's own tags, covers where the format takes
one) and a read-only MP3. Expected values are computed independently: the model run by hand on each window's frames,
window times from the track's frame count, genre scores by a plain maximum per genre, tags read in each format's
native form by mutagen, and the audio decoded to PCM by ffmpeg.
"""

import csv
import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch

pytest.importorskip("mutagen")

from hub_utils import save_tiny_repo  # noqa: E402
from tagged_files import all_tags, decoded_pcm, make_file, pictures  # noqa: E402
from test_filetags import native_values, without_maest  # noqa: E402

from configuration_maest import FRAMES_PER_SECOND  # noqa: E402
from feature_extraction_maest import MaestFeatureExtractor, load_audio  # noqa: E402
from modeling_maest import MaestForAudioClassification  # noqa: E402

from maest_tools import library  # noqa: E402
from maest_tools import plot_command  # noqa: E402
from maest_tools import records as tag_records  # noqa: E402
from maest_tools import tag as maest_tag  # noqa: E402


FORMATS = ["mp3", "flac", "ogg", "opus", "m4a"]
SECONDS = {"mp3": 12.0, "flac": 21.5, "ogg": 10.0, "opus": 13.3, "m4a": 25.0}  # 1 to 3 windows, odd ends
WINDOW, HOP = 626, 625  # the tiny model's max_length and window_hop (hub_utils.save_tiny_repo)


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_main(args, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = maest_tag.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_repo(tmp_path_factory.mktemp("model") / "discogs-maest-tiny")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Pristine files: one per format, and the read-only MP3's source."""
    folder = tmp_path_factory.mktemp("originals")
    files = {fmt: make_file(folder, fmt, fmt, seconds=SECONDS[fmt]) for fmt in FORMATS}
    files["readonly"] = make_file(folder, "readonly", "mp3", seconds=4.0)
    return files


def fresh_library(originals, folder):
    """A copy of the original files in `folder` (the read-only one without write permission)."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = {}
    for name, source in originals.items():
        copies[name] = folder / source.name
        shutil.copy2(source, copies[name])
    os.chmod(copies["readonly"], 0o444)
    return copies


@pytest.fixture(scope="module")
def tagged(model_dir, originals, tmp_path_factory):
    """`maest-tag DIR --write-tags --timeline --genres --plots P` over the folder, in-process; what it saw before."""
    root = tmp_path_factory.mktemp("run")
    files = fresh_library(originals, root / "music")
    before = {name: {"pcm": decoded_pcm(p), "tags": all_tags(p), "pictures": pictures(p), "sha": sha256(p),
                     "mtime": p.stat().st_mtime_ns} for name, p in files.items()}  # fmt: skip
    output = root / "tags.jsonl"
    code = maest_tag.main([str(root / "music"), "--model", str(model_dir), "--output", str(output), "--write-tags",
                           "--timeline", "--genres", "--plots", str(root / "plots"), "--num-workers", "0", "--quiet"])  # fmt: skip
    records = {os.path.basename(r["path"]).split(".")[0]: r for r in tag_records.read_jsonl(output)}
    return {"code": code, "files": files, "before": before, "output": output, "records": records, "root": root}


@pytest.fixture(scope="module")
def reference(model_dir, originals):
    """Per file, computed by hand: frames, the window starts, each window's scores (the model on that window's frames
    alone) and the track scores (the model's track logits)."""
    model = MaestForAudioClassification.from_pretrained(model_dir).eval()
    extractor = MaestFeatureExtractor()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    result = {}
    for fmt in FORMATS:
        waveform, _info = load_audio(str(originals[fmt]))
        features = extractor(waveform, sampling_rate=16000, return_tensors="pt")["input_values"]
        frames = features.shape[1]
        starts = list(range(0, frames - WINDOW + 1, HOP)) if frames > WINDOW else [0]
        if starts[-1] + WINDOW < frames:
            starts.append(frames - WINDOW)  # the last window ends with the track
        with torch.no_grad():
            windows = [model(input_values=features[:, s : s + WINDOW]).logits[0].sigmoid().numpy() for s in starts]
            track = model(input_values=features).logits[0].sigmoid().numpy()
        result[fmt] = {"frames": frames, "starts": starts, "windows": np.array(windows), "track": track}
    return {"labels": labels, "tracks": result}


def top(scores, labels, k=5):
    order = np.argsort(-scores, kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_command_tags_every_format(tagged):
    assert tagged["code"] == 1  # the read-only file failed; the others were tagged
    for fmt in FORMATS:
        path, record, before = tagged["files"][fmt], tagged["records"][fmt], tagged["before"][fmt]
        assert record["error"] is None
        styles = [item["label"] for item in record["labels"]]
        assert len(styles) == 5
        # The tags, read in the format's native form: real multi-value fields.
        assert native_values(path, "MAEST_STYLES") == styles
        assert native_values(path, "MAEST_STYLE_SCORES") == [f"{i['label']}={i['score']:.4f}" for i in record["labels"]]
        genres = list(dict.fromkeys(label.split("---")[0] for label in styles))
        best = {g: max(i["score"] for i in record["labels"] if i["label"].startswith(g + "---")) for g in genres}
        assert native_values(path, "MAEST_GENRES") == genres
        assert native_values(path, "MAEST_GENRE_SCORES") == [f"{g}={best[g]:.4f}" for g in genres]
        assert native_values(path, "MAEST_MODEL") == ["discogs-maest-tiny"]
        assert native_values(path, "MAEST_VERSION")[0].startswith("maest-tag ")
        # Safety: audio bit-identical, the user's tags and pictures kept, the modification time kept.
        assert decoded_pcm(path) == before["pcm"]
        assert without_maest(all_tags(path)) == without_maest(before["tags"])
        assert pictures(path) == before["pictures"]
        assert path.stat().st_mtime_ns == before["mtime"]


@pytest.mark.slow
def test_model_revision_is_the_weights_hash(tagged, model_dir):
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert native_values(tagged["files"]["flac"], "MAEST_MODEL_REVISION") == [f"sha256:{digest[:16]}"]


@pytest.mark.slow
def test_read_only_file_gets_an_error_record_and_is_unchanged(tagged):
    path, record = tagged["files"]["readonly"], tagged["records"]["readonly"]
    assert record["error"].startswith("tags not written:") and "read-only" in record["error"]
    assert record["labels"]  # the analysis itself succeeded and is kept
    assert sha256(path) == tagged["before"]["readonly"]["sha"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


@pytest.mark.slow
def test_timeline_times_and_scores(tagged, reference):
    labels = reference["labels"]
    for fmt in FORMATS:
        expected, timeline = reference["tracks"][fmt], tagged["records"][fmt]["timeline"]
        frames, starts = expected["frames"], expected["starts"]
        assert [w["start_s"] for w in timeline] == [s / 62.5 for s in starts]
        assert [w["end_s"] for w in timeline] == [min(s + WINDOW, frames) / 62.5 for s in starts]
        assert timeline[-1]["end_s"] == frames / FRAMES_PER_SECOND  # the last window ends with the track
        assert abs(timeline[-1]["end_s"] - tagged["records"][fmt]["duration_s"]) < 2 / 62.5
        for window, scores in zip(timeline, expected["windows"]):
            want = top(scores, labels)
            assert [i["label"] for i in window["labels"]] == [label for label, _ in want]
            np.testing.assert_allclose([i["score"] for i in window["labels"]], [s for _, s in want], atol=1e-5)


@pytest.mark.slow
def test_genres_are_the_max_over_styles(tagged, reference):
    labels = reference["labels"]
    for fmt in FORMATS:
        track = reference["tracks"][fmt]["track"]
        best = {}
        for label, score in zip(labels, track):
            genre = label[: label.index("---")]
            best[genre] = max(best.get(genre, 0.0), float(score))
        got = tagged["records"][fmt]["genres"]
        assert len(got) == 15 and {g["genre"] for g in got} == set(best)
        assert [g["score"] for g in got] == sorted((g["score"] for g in got), reverse=True)
        np.testing.assert_allclose([g["score"] for g in got], [best[g["genre"]] for g in got], atol=1e-5)


@pytest.mark.slow
def test_plots_one_png_per_track(tagged):
    from PIL import Image

    plots = sorted((tagged["root"] / "plots").iterdir())
    assert len(plots) == len(FORMATS) + 1  # the read-only file's analysis is drawn too
    assert len({p.name for p in plots}) == len(plots)
    for fmt in FORMATS:
        name = library.plot_file_name(tagged["records"][fmt]["path"])
        with Image.open(tagged["root"] / "plots" / name) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
        assert pixels.shape[1] >= 800 and pixels.shape[0] >= 300
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, a heatmap, bars: not blank
        assert (pixels < 128).any() and (pixels > 200).any()


@pytest.mark.slow
def test_timeline_and_genres_in_csv_and_parquet(tagged, model_dir, originals, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    music = fresh_library({fmt: originals[fmt] for fmt in ("flac", "m4a")} | {"readonly": originals["readonly"]},
                          tmp_path / "music")  # fmt: skip
    jsonl_records = {}
    for extension in ("jsonl", "csv", "parquet"):
        output = tmp_path / f"tags.{extension}"
        # With window embeddings too: one row per timeline window (the same windows of the same pass).
        code, _, err = run_main([music["flac"], music["m4a"], "--model", model_dir, "--output", output, "--timeline",
                                 "--genres", "--embeddings", "windows", "--num-workers", "0", "--quiet"], capsys)  # fmt: skip
        assert code == 0, err
        records = {os.path.basename(r["path"]): r for r in tag_records.read_records(str(output))}
        for record in records.values():
            rows = np.load(tmp_path / record["embedding_ref"])
            assert rows.shape[0] == len(record["timeline"])
        if extension == "jsonl":
            jsonl_records = records
            continue
        assert records.keys() == jsonl_records.keys()
        for name, record in records.items():
            other = jsonl_records[name]
            assert [(w["start_s"], w["end_s"]) for w in record["timeline"]] == [
                (w["start_s"], w["end_s"]) for w in other["timeline"]
            ]
            for window, window_other in zip(record["timeline"], other["timeline"]):
                assert window["labels"] == window_other["labels"]
            assert record["genres"] == other["genres"]
        if extension == "csv":
            with open(output, newline="", encoding="utf-8") as handle:
                row = next(csv.DictReader(handle))
            assert isinstance(json.loads(row["timeline"]), list) and isinstance(json.loads(row["genres"]), list)
        else:
            schema = pq.read_schema(output)
            assert schema.field("timeline").type == pa.list_(pa.struct([
                ("start_s", pa.float64()), ("end_s", pa.float64()),
                ("labels", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
            ]))  # fmt: skip
            assert schema.field("genres").type == pa.list_(pa.struct([("genre", pa.string()), ("score", pa.float64())]))
    # The tagged run's timeline agrees with this one (other batches: float rounding only).
    for name, record in jsonl_records.items():
        key = name.split(".")[0]
        assert [i["label"] for i in record["timeline"][0]["labels"]] == [
            i["label"] for i in tagged["records"][key]["timeline"][0]["labels"]
        ]


@pytest.mark.slow
@pytest.mark.parametrize("extension", ["jsonl", "csv", "parquet"])
def test_write_tags_from_every_output_format_without_the_model(tagged, originals, tmp_path, capsys, monkeypatch,
                                                                extension):  # fmt: skip
    if extension == "parquet":
        pytest.importorskip("pyarrow")
    files = fresh_library(originals, tmp_path / "music")
    # The records of the tagged run, pointed at these copies and written in the format under test.
    records = [dict(r, path=str(files[key])) for key, r in sorted(tagged["records"].items())]
    records[[r["path"] for r in records].index(str(files["readonly"]))]["error"] = "skipped"
    source = tmp_path / f"tags.{extension}"
    tag_records.write_records(str(source), records)

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(maest_tag, "load_model", no_model)
    code, _, err = run_main(["--write-tags-from", source, "--model", "mtg-upf/discogs-maest-10s-fs-129e",
                             "--genre-field", "replace"], capsys)  # fmt: skip
    assert code == 0, err
    assert "1 records without labels" in err
    for fmt in FORMATS:
        path, record = files[fmt], tagged["records"][fmt]
        assert native_values(path, "MAEST_STYLES") == [i["label"] for i in record["labels"]]
        assert native_values(path, "MAEST_MODEL") == ["mtg-upf/discogs-maest-10s-fs-129e"]
        assert decoded_pcm(path) == tagged["before"][fmt]["pcm"]

    # --remove-tags restores every file: the user's genre comes back, the MAEST fields go.
    code, _, err = run_main([tmp_path / "music", "--remove-tags"], capsys)
    assert code == 0, err  # the read-only file has no MAEST tags: nothing to remove, no error
    for fmt in FORMATS:
        assert all_tags(files[fmt]) == tagged["before"][fmt]["tags"]  # every tag as before, the genre included
        assert native_values(files[fmt], "MAEST_STYLES") == []
    from maest_tools.filetags import read_state

    assert read_state(files["flac"])["GENRE"] == ["Soundtrack"]


@pytest.mark.slow
def test_dry_run_writes_nothing(tagged, originals, tmp_path, capsys):
    files = fresh_library(originals, tmp_path / "music")
    digests = {name: sha256(p) for name, p in files.items()}
    source = tmp_path / "tags.jsonl"
    tag_records.write_records(str(source), [dict(r, path=str(files[k])) for k, r in tagged["records"].items()
                                            if k != "readonly"])  # fmt: skip
    code, out, _ = run_main(["--write-tags-from", source, "--dry-run", "--genre-field", "add"], capsys)
    assert code == 0
    assert out.count("(dry run, nothing written)") == len(FORMATS) and "+ MAEST_STYLES" in out
    assert {name: sha256(p) for name, p in files.items()} == digests
    assert not [p for p in (tmp_path / "music").iterdir() if ".maest-tmp-" in p.name]

    # The same for removal after a real write: nothing changes on disk.
    run_main(["--write-tags-from", source], capsys)
    digests = {name: sha256(p) for name, p in files.items()}
    code, out, _ = run_main([tmp_path / "music", "--remove-tags", "--dry-run"], capsys)
    assert code == 0 and "- MAEST_STYLES" in out
    assert {name: sha256(p) for name, p in files.items()} == digests


def test_remove_tags_leaves_untouched_files_and_cleans_leftovers(originals, tmp_path, capsys):
    folder = tmp_path / "music"
    folder.mkdir()
    path = folder / originals["flac"].name
    shutil.copy2(originals["flac"], path)
    digest = sha256(path)
    stale = folder / f".{path.name}.maest-tmp-0123456789ab"
    stale.write_bytes(b"half a copy")
    os.utime(stale, (0, 0))
    code, _, err = run_main([folder, "--remove-tags"], capsys)
    assert code == 0 and "0 cleaned, 1 unchanged" in err
    assert sha256(path) == digest
    # The leftover is younger than STALE_TEMPORARY_S (its inode changed just now): it may be another writer's.
    assert stale.exists()
    assert library.clean_leftovers([str(path)], older_than_s=-1) == [str(stale)]
    assert not stale.exists()


def test_usage_errors(tmp_path, capsys):
    clip = tmp_path / "a.flac"
    clip.write_bytes(b"")
    for args, message in [
        ([clip, "--remove-tags", "--output", tmp_path / "x.jsonl"], "takes no --output"),
        ([clip, "--remove-tags", "--write-tags-from", tmp_path / "x.jsonl"], "contradict"),
        (["--remove-tags"], "needs the audio files"),
        (["--write-tags-from", tmp_path / "missing.jsonl"], "no such file"),
        ([clip, "--write-tags-from", tmp_path / "x.jsonl"], "input paths"),
        ([clip, "--output", tmp_path / "x.jsonl", "--dry-run"], "add --write-tags"),
        ([clip, "--output", tmp_path / "x.jsonl", "--genre-field", "add"], "add --write-tags"),
    ]:
        code, _, err = run_main(args, capsys)
        assert code == 2 and message in err, (args, err)


def test_plot_file_names_are_unique_and_never_overwrite_other_files(tmp_path):
    names = {library.plot_file_name(p) for p in ["a/song.flac", "b/song.flac", "song.flac", "a/so ng.flac"]}
    assert len(names) == 4 and all(name.endswith(".png") and "/" not in name for name in names)
    assert library.plot_file_name("Música/Ünïcode?.mp3").startswith("_n_code_.mp3-")
    assert len(library.plot_file_name("x/" + "é" * 300 + ".flac")) == 80 + len("-0123456789.png")
    times = [(0.0, 10.0), (9.0, 19.0)]
    scores = np.array([[0.2, 0.9], [0.8, 0.1]])
    unrelated = tmp_path / library.plot_file_name("x.flac")
    unrelated.write_bytes(b"my holiday picture")
    with pytest.raises(FileExistsError, match="not drawn by maest-tag"):
        library.save_plot(str(tmp_path), "x.flac", scores, times, ["A---a", "B---b"], np.array([0.5, 0.5]))
    assert unrelated.read_bytes() == b"my holiday picture"
    unrelated.unlink()
    first = library.save_plot(str(tmp_path), "x.flac", scores, times, ["A---a", "B---b"], np.array([0.5, 0.5]))
    again = library.save_plot(str(tmp_path), "x.flac", scores, times, ["A---a", "B---b"], np.array([0.6, 0.5]))
    assert first == again and os.path.getsize(first) > 1000  # its own earlier picture is replaced


@pytest.mark.slow
def test_maest_plot_from_audio_and_from_a_record(tagged, model_dir, tmp_path, capsys):
    from PIL import Image

    audio_png, record_png = tmp_path / "audio.png", tmp_path / "record.png"
    assert plot_command.main([str(tagged["files"]["m4a"]), "-o", str(audio_png), "--model", str(model_dir)]) == 0
    record_path = tagged["records"]["m4a"]["path"]
    assert plot_command.main([str(tagged["output"]), "--path", record_path, "-o", str(record_png)]) == 0
    for png in (audio_png, record_png):
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
        assert pixels.shape[1] >= 800 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    # The same analysis: the audio picture equals the --plots picture of the tagging run.
    with Image.open(tagged["root"] / "plots" / library.plot_file_name(record_path)) as image:
        plotted = np.asarray(image.convert("RGB"))
    with Image.open(audio_png) as image:
        assert np.asarray(image.convert("RGB")).shape == plotted.shape
    capsys.readouterr()
    assert plot_command.main([str(tagged["output"]), "-o", str(tmp_path / "x.png")]) == 2
    assert "pick one with --path" in capsys.readouterr().err
    assert plot_command.main([str(tagged["output"]), "--path", "nope.flac", "-o", str(tmp_path / "x.png")]) == 2
