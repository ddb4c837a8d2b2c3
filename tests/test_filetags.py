"""MAEST tags written into real audio files of every format: the scheme, and every safety promise."""

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mutagen")

from conftest import ROOT  # noqa: E402
from tagged_files import FORMATS, USER_TAGS, all_tags, decoded_pcm, make_file, pictures  # noqa: E402

from maest_tools.filetags import (  # noqa: E402
    MAEST_FIELDS,
    MaestTags,
    TagWriteError,
    cleanup_temporary_files,
    is_temporary_file,
    read_state,
    read_tags,
    remove_tags,
    write_tags,
)


TAGS = MaestTags(
    styles=[("Funk / Soul---RnB/Swing", 0.81234), ("Electronic---Techno", 0.5), ("Rock---Pop Rock", 0.25)],
    genres=[("Funk / Soul", 0.81234), ("Electronic", 0.5), ("Rock", 0.25)],
    model="mtg-upf/discogs-maest-10s-fs-129e",
    model_revision="0123abcd",
    tool_version="maest-tag test",
)
OTHER_TAGS = MaestTags(styles=[("Jazz---Bop", 0.9)], model="my-maest", tool_version="maest-tag test")
ALL_FORMATS = list(FORMATS)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One file per format (3 s, the user's tags incl. a genre, a cover where the format takes one)."""
    folder = tmp_path_factory.mktemp("originals")
    return {fmt: make_file(folder, fmt, fmt) for fmt in ALL_FORMATS}


@pytest.fixture
def fresh(originals, tmp_path):
    """A function giving a private copy of the original file of a format."""

    def copy(fmt):
        target = tmp_path / originals[fmt].name
        shutil.copy2(originals[fmt], target)
        return target

    return copy


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def without_maest(tags: dict) -> dict:
    """The tag dump without this tool's fields (in any format's spelling) and without the genre field."""
    return {
        key: value for key, value in tags.items()
        if not any(name in key.upper() for name in MAEST_FIELDS) and key.upper() not in {"TCON", "GENRE", "\xa9GEN"}
    }


def native_values(path, field: str) -> list[str]:
    """The values of a MAEST field read directly in the format's native form (independent of the module)."""
    from mutagen import File

    tags = File(path).tags
    if hasattr(tags, "getall") and not hasattr(tags, "vendor"):  # ID3
        return [str(t) for frame in tags.getall(f"TXXX:{field}") for t in frame.text]
    if hasattr(tags, "vendor"):  # Vorbis comment: one comment per value
        return [value for key, value in tags if key == field]
    return [bytes(v).decode("utf-8") for v in tags.get(f"----:com.apple.iTunes:{field}", [])]


def probed_tags(path) -> dict:
    """Every tag that ffprobe sees (container and streams; WAV's RIFF INFO included): a second, independent reader."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    )
    data = json.loads(result.stdout)
    tags = {f"format:{k}": v for k, v in data.get("format", {}).get("tags", {}).items()}
    for index, stream in enumerate(data.get("streams", [])):
        tags.update({f"stream{index}:{k}": v for k, v in stream.get("tags", {}).items()})
    assert tags, "ffprobe found no tags at all: the user's tags should be there"
    return tags


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_write_every_format(fresh, fmt):
    path = fresh(fmt)
    os.chmod(path, 0o640)
    old_mtime = time.time() - 86400 * 400
    os.utime(path, (old_mtime, old_mtime))
    pcm, before, pics, mode = decoded_pcm(path), all_tags(path), pictures(path), stat.S_IMODE(path.stat().st_mode)
    mtime_ns = path.stat().st_mtime_ns
    probed_tags_before = probed_tags(path)

    change = write_tags(path, TAGS)

    assert change.changed and change.written
    # The scheme, read without the module: real multi-value fields, never joined with "/".
    assert native_values(path, "MAEST_STYLES") == ["Funk / Soul---RnB/Swing", "Electronic---Techno", "Rock---Pop Rock"]
    assert native_values(path, "MAEST_STYLE_SCORES") == [
        "Funk / Soul---RnB/Swing=0.8123", "Electronic---Techno=0.5000", "Rock---Pop Rock=0.2500"
    ]
    assert native_values(path, "MAEST_GENRES") == ["Funk / Soul", "Electronic", "Rock"]
    assert native_values(path, "MAEST_MODEL") == ["mtg-upf/discogs-maest-10s-fs-129e"]
    assert native_values(path, "MAEST_MODEL_REVISION") == ["0123abcd"]
    assert native_values(path, "MAEST_VERSION") == ["maest-tag test"]
    # Safety: audio, the user's tags (genre included: "leave"), pictures, permissions and mtime kept.
    assert decoded_pcm(path) == pcm
    after = all_tags(path)
    assert without_maest(after) == without_maest(before)
    if fmt != "wav":  # WAV: ffmpeg put the user's genre in the RIFF INFO chunk (checked by ffprobe below)
        assert read_state(path)["GENRE"] == [USER_TAGS["genre"]]
    assert without_maest(probed_tags(path)) == without_maest(probed_tags_before)
    assert pictures(path) == pics
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.stat().st_mtime_ns == mtime_ns
    assert not [p for p in path.parent.iterdir() if is_temporary_file(p)]
    # Read back: scores with the 4 decimals written.
    got = read_tags(path)
    assert [label for label, _ in got.styles] == [label for label, _ in TAGS.styles]
    assert [score for _, score in got.styles] == [round(score, 4) for _, score in TAGS.styles]
    assert got.genres[0] == ("Funk / Soul", 0.8123) and got.model == TAGS.model and got.model_revision == "0123abcd"


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_idempotent_and_remove_restores(fresh, fmt):
    path = fresh(fmt)
    before, pcm = all_tags(path), decoded_pcm(path)
    write_tags(path, OTHER_TAGS)
    write_tags(path, TAGS)  # replaces the earlier MAEST tags as a whole
    assert read_tags(path).styles == [(label, round(score, 4)) for label, score in TAGS.styles]
    digest, mtime = sha256(path), path.stat().st_mtime_ns
    second = write_tags(path, TAGS)
    assert not second.changed and not second.written
    assert sha256(path) == digest and path.stat().st_mtime_ns == mtime

    removed = remove_tags(path)
    assert removed.changed and removed.written
    assert all_tags(path) == before
    assert read_tags(path) is None and decoded_pcm(path) == pcm
    assert not remove_tags(path).changed


@pytest.mark.parametrize("fmt", ["mp3", "flac", "m4a", "opus"])
def test_genre_field_add_replace_and_restore(fresh, fmt):
    path = fresh(fmt)
    before = all_tags(path)
    write_tags(path, TAGS, genre_field="add")
    assert read_state(path)["GENRE"] == ["Soundtrack", "RnB/Swing", "Techno", "Pop Rock"]
    assert not write_tags(path, TAGS, genre_field="add").changed  # adding twice adds nothing more

    write_tags(path, TAGS, genre_field="replace")  # from add to replace: the original is still the user's genre
    state = read_state(path)
    assert state["GENRE"] == ["RnB/Swing", "Techno", "Pop Rock"]
    assert state["MAEST_GENRE_ORIGINAL"] == ["Soundtrack"]
    assert not write_tags(path, TAGS, genre_field="replace").changed

    write_tags(path, TAGS, genre_field="leave")  # back to leave: the user's genre comes back
    assert read_state(path)["GENRE"] == ["Soundtrack"]
    write_tags(path, TAGS, genre_field="replace")
    remove_tags(path)
    assert all_tags(path) == before


def test_replace_without_user_genre_and_user_edit_kept(tmp_path):
    path = make_file(tmp_path, "plain", "flac", user_tags=False, cover=False)
    write_tags(path, TAGS, genre_field="replace")
    assert read_state(path)["GENRE"] == ["RnB/Swing", "Techno", "Pop Rock"]
    assert "MAEST_GENRE_ORIGINAL" not in read_state(path)
    remove_tags(path)
    assert "GENRE" not in read_state(path)

    # A genre the user edited after the replacement is theirs: removal keeps it.
    write_tags(path, TAGS, genre_field="replace")
    from mutagen.flac import FLAC

    audio = FLAC(path)
    audio["GENRE"] = ["My Own"]
    audio.save()
    remove_tags(path)
    assert read_state(path) == {"GENRE": ["My Own"]}


@pytest.mark.parametrize("fmt", ["mp3", "flac", "m4a"])
def test_dry_run_writes_nothing(fresh, fmt):
    path = fresh(fmt)
    digest, mtime = sha256(path), path.stat().st_mtime_ns
    change = write_tags(path, TAGS, genre_field="replace", dry_run=True)
    assert change.changed and not change.written and change.dry_run
    assert change.after["MAEST_STYLES"][0] == "Funk / Soul---RnB/Swing" and change.after["GENRE"][0] == "RnB/Swing"
    assert "MAEST_STYLES" in change.describe() and "dry run" in change.describe()
    assert sha256(path) == digest and path.stat().st_mtime_ns == mtime
    write_tags(path, TAGS)
    digest = sha256(path)
    assert remove_tags(path, dry_run=True).changed and sha256(path) == digest
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_touch_sets_mtime(fresh):
    path = fresh("flac")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    write_tags(path, TAGS, touch=True)
    assert path.stat().st_mtime > time.time() - 60


def test_read_only_and_untaggable_files(fresh, tmp_path):
    path = fresh("mp3")
    digest = sha256(path)
    os.chmod(path, 0o444)
    with pytest.raises(TagWriteError, match="read-only"):
        write_tags(path, TAGS)
    assert sha256(path) == digest and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert write_tags(path, TAGS, dry_run=True).changed  # a dry run only reads

    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    with pytest.raises(TagWriteError, match="unsupported|cannot read"):
        write_tags(text, TAGS)
    truncated = tmp_path / "broken.flac"
    truncated.write_bytes(fresh("flac").read_bytes()[:30])
    with pytest.raises(TagWriteError):
        write_tags(truncated, TAGS)
    with pytest.raises(TagWriteError):
        read_tags(tmp_path / "missing.flac")
    assert not [p for p in tmp_path.iterdir() if is_temporary_file(p)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="genre_field"):
        write_tags("x.flac", TAGS, genre_field="merge")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MaestTags(styles=[("Rock---Punk", 1.5)], model="m", tool_version="t")
    with pytest.raises(ValueError, match="nan"):
        MaestTags(styles=[("Rock---Punk", float("nan"))], model="m", tool_version="t")
    with pytest.raises(ValueError, match="non-empty"):
        MaestTags(styles=[("Rock---Punk", 0.5)], model="", tool_version="t")


def test_symlink_is_followed(fresh, tmp_path):
    path = fresh("flac")
    link = tmp_path / "link.flac"
    link.symlink_to(path)
    write_tags(link, TAGS)
    assert link.is_symlink() and read_tags(path).model == TAGS.model


def test_from_record():
    record = {"labels": [{"label": "Rock---Punk", "score": 0.7}], "genres": {"Rock": 0.7}}
    tags = MaestTags.from_record(record, model="m", tool_version="t")
    assert tags.styles == [("Rock---Punk", 0.7)] and tags.genres == [("Rock", 0.7)]


def test_cleanup_temporary_files(tmp_path):
    keep = tmp_path / ".hidden.flac"
    keep.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    leftover = tmp_path / "sub" / ".song.flac.maest-tmp-0123456789ab"
    leftover.write_bytes(b"x")
    assert cleanup_temporary_files(tmp_path, dry_run=True) == [str(leftover)] and leftover.exists()
    assert cleanup_temporary_files(tmp_path) == [str(leftover)]
    assert not leftover.exists() and keep.exists()


KILL_TAGS = [
    MaestTags(styles=[("Rock---Punk", 0.5)], model="model-a", tool_version="t"),
    MaestTags(styles=[("Jazz---Bop", 0.25), ("Funk / Soul---RnB/Swing", 0.75)], model="model-b", tool_version="t"),
]
KILL_WRITER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from maest_tools.filetags import MaestTags, write_tags
paths = json.loads(sys.argv[2])
tags = [  # the same as KILL_TAGS
        MaestTags(styles=[("Rock---Punk", 0.5)], model="model-a", tool_version="t"),
        MaestTags(styles=[("Jazz---Bop", 0.25), ("Funk / Soul---RnB/Swing", 0.75)], model="model-b", tool_version="t")]
print("ready", flush=True)
round = 0
while True:
    for path in paths:
        write_tags(path, tags[round % 2], genre_field="replace" if round % 2 else "add")
    round += 1
"""


@pytest.mark.slow
def test_kill_9_while_writing_leaves_every_file_whole(originals, tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    files, expected_pcm = [], {}
    for fmt in ALL_FORMATS:
        for copy in range(2):
            target = folder / f"{copy}-{originals[fmt].name}"
            shutil.copy2(originals[fmt], target)
            files.append(target)
            expected_pcm[target] = decoded_pcm(target)
    before = {path: all_tags(path) for path in files}
    # The only states a file may be in: untouched, or completely written with tags A or with tags B (whatever came
    # before, a write gives the same result), computed on separate copies.
    allowed = {fmt: [read_state(originals[fmt])] for fmt in ALL_FORMATS}
    for fmt in ALL_FORMATS:
        for tags, mode in ((KILL_TAGS[0], "add"), (KILL_TAGS[1], "replace")):
            probe = tmp_path / f"probe-{fmt}-{mode}{originals[fmt].suffix}"
            shutil.copy2(originals[fmt], probe)
            write_tags(probe, tags, genre_field=mode)
            allowed[fmt].append(read_state(probe))
    rng = random.Random(15)
    leftovers = 0
    for _ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", KILL_WRITER, str(ROOT), json.dumps([str(p) for p in files])],
            stdout=subprocess.PIPE, text=True,
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
        for path in files:
            assert decoded_pcm(path) == expected_pcm[path], path
            fmt = next(f for f in ALL_FORMATS if path.name == f"{path.name[0]}-{originals[f].name}")
            assert read_state(path) in allowed[fmt], path
            assert without_maest(all_tags(path)) == without_maest(before[path]), path
        leftovers += len(cleanup_temporary_files(folder))
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    for path in files:  # after all the kills, removal still gives back the user's tags exactly
        remove_tags(path)
        assert all_tags(path) == before[path], path
    print(f"temporary files left by 6 kills and cleaned: {leftovers}")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mounted tmpfs of 256 KiB (a full disk in miniature); skipped where this process cannot mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command: the full-disk test needs to mount a small tmpfs")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_leaves_the_file_whole(small_tmpfs, tmp_path):
    path = make_file(small_tmpfs, "song", "flac", seconds=6.0)  # ~170 KB: no room for a second copy
    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    if free >= path.stat().st_size:
        filler.write_bytes(b"\0" * (free - path.stat().st_size // 2))
    before, digest, pcm = all_tags(path), sha256(path), decoded_pcm(path)
    with pytest.raises(TagWriteError, match="No space|space"):
        write_tags(path, TAGS)
    assert sha256(path) == digest and all_tags(path) == before and decoded_pcm(path) == pcm
    assert not [p for p in small_tmpfs.iterdir() if is_temporary_file(p)]
    # With room again, the same write succeeds.
    filler.unlink(missing_ok=True)
    if shutil.disk_usage(small_tmpfs).free > path.stat().st_size + 8192:
        write_tags(path, TAGS)
        assert read_tags(path).model == TAGS.model and decoded_pcm(path) == pcm


def test_extended_attributes_and_owner_kept(fresh):
    path = fresh("opus")
    try:
        os.setxattr(path, "user.maest.test", b"kept")
    except OSError as error:
        pytest.skip(f"this file system has no user extended attributes: {error}")
    owner = (path.stat().st_uid, path.stat().st_gid)
    write_tags(path, TAGS)
    assert os.getxattr(path, "user.maest.test") == b"kept"
    assert (path.stat().st_uid, path.stat().st_gid) == owner


def test_disk_full_while_the_tags_grow_leaves_the_file_whole(small_tmpfs):
    """The temporary copy fits but the larger tags do not: the failure happens inside mutagen's save."""
    labels = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())
    big = MaestTags(styles=[(label, 0.5) for label in labels], model="m", tool_version="t")  # ~25 KB of tags
    path = make_file(small_tmpfs, "song", "flac", seconds=2.0, cover=False)
    page = 4096
    room = shutil.disk_usage(small_tmpfs).free - -(-path.stat().st_size // page) * page  # after the copy
    assert room > 3 * page, "the tmpfs is too small for this test"
    (small_tmpfs / "filler").write_bytes(b"\0" * (room - 2 * page))
    before, digest, pcm = all_tags(path), sha256(path), decoded_pcm(path)
    with pytest.raises(TagWriteError, match="space|writing") as caught:
        write_tags(path, big)
    assert "temporary copy" not in str(caught.value)  # the copy was made: the failure came later
    assert sha256(path) == digest and all_tags(path) == before and decoded_pcm(path) == pcm
    assert not [p for p in small_tmpfs.iterdir() if is_temporary_file(p)]
