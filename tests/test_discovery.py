"""maest_tools.discovery: one audio extension list, so the tagger and the fine-tuner see the same files in a folder."""

import os

import pytest

from maest_tools import discovery, labelled
from maest_tools.cli import UsageError


def make_tree(root):
    names = ["a.FLAC", "b.mp3", "c.webm", "d.wv", "sub/e.Opus", "sub/deep/f.wav", "notes.txt", "cover.jpg",
             ".hidden.flac", "sub/._fork.mp3", ".git/g.flac", "noextension"]  # fmt: skip
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return {"a.FLAC", "b.mp3", "c.webm", "d.wv", "sub/e.Opus", "sub/deep/f.wav"}


def test_tagger_and_fine_tuner_find_the_same_files(tmp_path):
    expected = make_tree(tmp_path / "music" / "rock")
    make_tree(tmp_path / "music" / "jazz")
    found = discovery.find_audio_files([str(tmp_path / "music" / "rock")])
    assert {os.path.relpath(path, tmp_path / "music" / "rock") for path in found} == expected
    paths, labels = labelled.read_folder_data(tmp_path / "music")
    rock = {os.path.relpath(path, tmp_path / "music" / "rock") for path, (label,) in zip(paths, labels)
            if label == "rock"}  # fmt: skip
    assert rock == expected and len(paths) == 2 * len(expected)


def test_extension_list_is_lower_case_without_dots_and_unique():
    extensions = discovery.AUDIO_EXTENSIONS
    assert len(set(extensions)) == len(extensions)
    assert all(extension == extension.lower().strip(".") for extension in extensions)
    assert discovery.parse_extensions(" .FLAC, mp3 ,") == {"flac", "mp3"}


def test_missing_input_and_file_list(tmp_path):
    with pytest.raises(UsageError, match="Input path not found: 'nowhere'"):
        discovery.find_audio_files(["nowhere"])
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\nmissing.flac\n" + str(tmp_path) + "\n")
    (tmp_path / "x.ogg").write_bytes(b"")
    found = discovery.find_audio_files([], file_list=str(listing))
    assert found == sorted(["missing.flac", str(tmp_path / "x.ogg")])  # a listed missing file is kept
