"""MAEST tags written into audio files (mutagen), safely.

The scheme
----------
Every field is namespaced (``MAEST_...``) and written in the format's native form, so players and library managers
(beets, Navidrome, Jellyfin, Lyrion, Plex) can read them and the user's own tags are never clobbered:

============================  ===============================================  =========================================
format                        field form                                       example
============================  ===============================================  =========================================
MP3, WAV, AIFF (ID3v2.4)      ``TXXX`` frame, description = field name,        ``TXXX:MAEST_STYLES`` = [``Electronic---
                              one text value per item (UTF-8)                  Techno``, ``Electronic---House``]
FLAC, Ogg Vorbis, Opus        Vorbis comment, one comment per item             ``MAEST_STYLES=Electronic---Techno``
M4A (AAC, ALAC)               freeform atom ``----:com.apple.iTunes:<field>``,  ``----:com.apple.iTunes:MAEST_STYLES``
                              one UTF-8 data item per value
============================  ===============================================  =========================================

Fields (every list is a real multi-value field: values are never joined with "/", because Discogs names contain
"/", e.g. ``Funk / Soul---RnB/Swing``, and players split on it):

* ``MAEST_STYLES``: the top styles, best first, as the model's full label ``Genre---Style``.
* ``MAEST_STYLE_SCORES``: ``<label>=<score>`` per top style, same order; the score with 4 decimals (0.0000-1.0000).
* ``MAEST_GENRES``: the top Discogs genres, best first (see `maest_tools.genres`).
* ``MAEST_GENRE_SCORES``: ``<genre>=<score>`` per genre, same order.
* ``MAEST_MODEL``: the model (Hub repo id or folder name); ``MAEST_MODEL_REVISION``: its revision or weights hash.
* ``MAEST_VERSION``: the tool that wrote the tags and its version.
* Only when the standard genre field was touched (``genre_field`` ``"add"`` / ``"replace"``):
  ``MAEST_GENRE_MODE`` (``add`` or ``replace``), ``MAEST_GENRE_WRITTEN`` (the values this tool put into the
  standard field) and, for ``replace``, ``MAEST_GENRE_ORIGINAL`` (the user's values it replaced; absent if the
  field was empty).

The standard genre field (``TCON`` / ``GENRE`` / ``©gen``) is left alone by default (``genre_field="leave"``).
``"add"`` appends the style names (the part after ``---``, without duplicates) of the top styles that the field
does not already hold; ``"replace"`` sets it to those style names and keeps the old values in
``MAEST_GENRE_ORIGINAL``. `remove_tags` deletes every ``MAEST_*`` field and undoes the genre change: it removes
the values it added (``add``), or restores the original values (``replace``) if the field still holds what this
tool wrote (a genre the user edited afterwards is kept).

MP3/WAV/AIFF files are saved as ID3v2.4 (multi-value text needs 2.4; an ID3v2.3 file's other frames are upgraded
by mutagen in the same way). Files other than these formats raise `TagWriteError`.

Safety
------
* The audio data is never touched: mutagen rewrites only the tag blocks (tests decode to PCM before and after).
* Writing is atomic: the file is copied to a hidden temporary file in the same folder
  (``.<name>.maest-tmp-<12 hex>``), the tags are written to the copy, the copy is verified (mutagen opens it as the
  same format, the tags read back exactly, the stream parameters - length, sample rate, channels and the FLAC MD5 -
  are unchanged), fsync'ed, given the original's permissions (and owner, where allowed) and modification time,
  then renamed over the original with ``os.replace`` and the folder fsync'ed. A crash, ``kill -9`` or full disk at
  any point leaves the original file or the complete new one; at worst a temporary file stays behind, which
  `cleanup_temporary_files` recognises and removes.
* Nothing is written when nothing changes: a second identical write leaves the file byte for byte as it was.
* A read-only file (no owner write permission, even for root), a folder where the temporary file cannot be made,
  an unsupported or damaged file raise `TagWriteError` with the reason; the caller records it and goes on.
* A symbolic link is followed (the target file is updated; the link stays). A file with several hard links is
  replaced by a new inode: the other links keep the old content (documented limit of atomic replacement).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field


# The namespaced fields, in writing order.
STYLES = "MAEST_STYLES"
STYLE_SCORES = "MAEST_STYLE_SCORES"
GENRES = "MAEST_GENRES"
GENRE_SCORES = "MAEST_GENRE_SCORES"
MODEL = "MAEST_MODEL"
MODEL_REVISION = "MAEST_MODEL_REVISION"
VERSION = "MAEST_VERSION"
GENRE_MODE = "MAEST_GENRE_MODE"
GENRE_WRITTEN = "MAEST_GENRE_WRITTEN"
GENRE_ORIGINAL = "MAEST_GENRE_ORIGINAL"
MAEST_FIELDS = (
    STYLES, STYLE_SCORES, GENRES, GENRE_SCORES, MODEL, MODEL_REVISION, VERSION, GENRE_MODE, GENRE_WRITTEN,
    GENRE_ORIGINAL,
)
# Key of the standard genre field in the neutral state (`_read_state`); each format maps it to its own field.
STANDARD_GENRE = "GENRE"
GENRE_FIELD_MODES = ("leave", "add", "replace")
MP4_FREEFORM_PREFIX = "----:com.apple.iTunes:"
TEMPORARY_MARK = ".maest-tmp-"
_TEMPORARY_RE = re.compile(r"^\..+\.maest-tmp-[0-9a-f]{12}$")
_SCORE_DECIMALS = 4


class TagWriteError(OSError):
    """Tags could not be read, written or removed for this file; the file is unchanged. ``.path`` names it."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclass(frozen=True)
class MaestTags:
    """What MAEST says about one track, as written into the file.

    Args:
        styles: ``[(label, score), ...]`` best first; labels are the model's ``Genre---Style`` names, scores in
            [0, 1] (written with 4 decimals). Usually the tagger's top-k / threshold selection; may be empty (no
            style passed the threshold): then only the model and version fields are written.
        genres: ``[(genre, score), ...]`` best first (`maest_tools.genres.genre_scores`), may be empty.
        model: the model's Hub repo id or folder name.
        model_revision: its revision (commit) or weights hash; ``None`` if unknown (the field is then not written).
        tool_version: the writing tool and its version, e.g. ``"maest-tag 0.1.0"``.
    """

    styles: Sequence[tuple[str, float]]
    model: str
    tool_version: str
    genres: Sequence[tuple[str, float]] = ()
    model_revision: str | None = None

    def __post_init__(self):
        for kind, pairs in (("style", self.styles), ("genre", self.genres)):
            for pair in pairs:
                if len(pair) != 2:
                    raise ValueError(f"each {kind} must be a (name, score) pair, got {pair!r}")
                name, score = pair
                _check_value(name, kind)
                if not isinstance(score, (int, float)) or not math.isfinite(score) or not 0.0 <= score <= 1.0:
                    raise ValueError(f"score of {kind} {name!r} is {score!r}; expected a number in [0, 1]")
        _check_value(self.model, "model")
        _check_value(self.tool_version, "tool_version")
        if self.model_revision is not None:
            _check_value(self.model_revision, "model_revision")

    @classmethod
    def from_record(cls, record: dict, model: str, tool_version: str, model_revision: str | None = None):
        """From a tagger record (``{"labels": [{"label", "score"}], "genres": {genre: score} | [...], ...}``)."""
        genres = record.get("genres") or ()
        if isinstance(genres, dict):
            genres = list(genres.items())
        else:
            genres = [(item["genre"], item["score"]) if isinstance(item, dict) else tuple(item) for item in genres]
        styles = [(item["label"], float(item["score"])) for item in record.get("labels") or ()]
        return cls(styles=styles, genres=[(g, float(s)) for g, s in genres], model=model,
                   tool_version=tool_version, model_revision=model_revision)


def _check_value(value, what: str):
    if not isinstance(value, str) or not value.strip() or "\x00" in value or "\n" in value:
        raise ValueError(f"{what} {value!r} must be a non-empty one-line string")


@dataclass
class Change:
    """What a write or removal did (or, with ``dry_run``, would do) to one file.

    Attributes:
        path: the file.
        before / after: the ``MAEST_*`` fields and the standard genre field (key ``"GENRE"``) before and after,
            as ``{field: [values]}`` (absent fields left out).
        changed: whether `after` differs from `before` (a file is written only then).
        written: whether the file was actually rewritten (``False`` for a dry run or no change).
    """

    path: str
    before: dict[str, list[str]]
    after: dict[str, list[str]]
    changed: bool
    written: bool
    dry_run: bool = False
    fields_changed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Human-readable lines: ``- FIELD: old`` / ``+ FIELD: new`` per changed field."""
        if not self.changed:
            return f"{self.path}: unchanged"
        lines = [f"{self.path}:{' (dry run, nothing written)' if self.dry_run else ''}"]
        for key in self.fields_changed:
            if key in self.before:
                lines.append(f"  - {key}: {self.before[key]}")
            if key in self.after:
                lines.append(f"  + {key}: {self.after[key]}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Formats: each maps the neutral state {field: [str]} to its native fields
# ---------------------------------------------------------------------------------------------------------------------


def _open(path: str, kind=None):
    """The mutagen file object of `path` (of class `kind` if given); `TagWriteError` if unsupported or damaged."""
    import mutagen
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    try:
        if kind is not None:
            audio = kind(path)
        else:
            audio = mutagen.File(path, options=[MP3, FLAC, OggVorbis, OggOpus, MP4, WAVE, AIFF])
    except (mutagen.MutagenError, OSError, ValueError, EOFError) as error:
        raise TagWriteError(path, f"cannot read the file as audio with tags ({type(error).__name__}: {error})")
    if audio is None:
        raise TagWriteError(
            path, "unsupported format for MAEST tags (supported: MP3, FLAC, Ogg Vorbis, Opus, M4A/AAC/ALAC, WAV, AIFF)"
        )
    return audio


def _family(audio) -> str:
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    if isinstance(audio, (MP3, WAVE, AIFF)):
        return "id3"
    if isinstance(audio, (FLAC, OggVorbis, OggOpus)):
        return "vorbis"
    if isinstance(audio, MP4):
        return "mp4"
    raise TagWriteError(audio.filename, f"unsupported format {type(audio).__name__}")


def _read_state(audio) -> dict[str, list[str]]:
    """The MAEST fields and the standard genre field of an open file, as ``{field: [values]}``."""
    tags, family, state = audio.tags, _family(audio), {}
    if tags is None:
        return state
    for key in MAEST_FIELDS + (STANDARD_GENRE,):
        if family == "id3":
            frames = tags.getall("TCON" if key == STANDARD_GENRE else f"TXXX:{key}")
            values = [str(text) for frame in frames for text in frame.text]
        elif family == "vorbis":
            values = list(tags.get(key, []))
        else:
            atom = "\xa9gen" if key == STANDARD_GENRE else MP4_FREEFORM_PREFIX + key
            raw = tags.get(atom, [])
            values = [bytes(v).decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in raw]
        if values:
            state[key] = values
    return state


def _apply_state(audio, old: dict[str, list[str]], new: dict[str, list[str]]) -> None:
    """Set the fields whose values differ between `old` and `new` (a key missing in `new` is deleted)."""
    family = _family(audio)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    for key in MAEST_FIELDS + (STANDARD_GENRE,):
        if old.get(key) == new.get(key):
            continue
        values = new.get(key)
        if family == "id3":
            from mutagen.id3 import TCON, TXXX, Encoding

            frame_id = "TCON" if key == STANDARD_GENRE else f"TXXX:{key}"
            tags.delall(frame_id)
            if values:
                frame = TCON(encoding=Encoding.UTF8, text=values) if key == STANDARD_GENRE else TXXX(
                    encoding=Encoding.UTF8, desc=key, text=values
                )
                tags.add(frame)
        elif family == "vorbis":
            if key in tags:
                del tags[key]
            if values:
                tags[key] = values
        else:
            from mutagen.mp4 import AtomDataType, MP4FreeForm

            atom = "\xa9gen" if key == STANDARD_GENRE else MP4_FREEFORM_PREFIX + key
            if atom in tags:
                del tags[atom]
            if values:
                tags[atom] = (
                    list(values)
                    if key == STANDARD_GENRE
                    else [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
                )


def _save(audio) -> None:
    if _family(audio) == "id3":
        audio.save(v2_version=4)
    else:
        audio.save()


def _stream_signature(audio) -> tuple:
    """Stream parameters that a tag write must not change (the audio data is never rewritten)."""
    info = audio.info
    keys = ("length", "sample_rate", "channels", "bits_per_sample", "md5_signature", "codec")
    return (type(audio).__name__,) + tuple(getattr(info, key, None) for key in keys)


# ---------------------------------------------------------------------------------------------------------------------
# The state transitions (pure functions on {field: [values]})
# ---------------------------------------------------------------------------------------------------------------------


def _format_score(score: float) -> str:
    return f"{score:.{_SCORE_DECIMALS}f}"


def _without_maest(state: dict[str, list[str]]) -> dict[str, list[str]]:
    """`state` with every MAEST field removed and the standard genre field restored (see the module doc)."""
    result = {key: list(values) for key, values in state.items() if key not in MAEST_FIELDS}
    mode = (state.get(GENRE_MODE) or [None])[0]
    written = state.get(GENRE_WRITTEN, [])
    current = state.get(STANDARD_GENRE, [])
    if mode == "add":
        remaining = list(current)
        for value in written:
            if value in remaining:
                remaining.remove(value)
        genre = remaining
    elif mode == "replace":
        genre = state.get(GENRE_ORIGINAL, []) if current == written else current
    else:
        genre = current
    result.pop(STANDARD_GENRE, None)
    if genre:
        result[STANDARD_GENRE] = list(genre)
    return result


def _with_maest(base: dict[str, list[str]], tags: MaestTags, genre_field: str) -> dict[str, list[str]]:
    """The state after writing `tags` onto `base` (a state without MAEST fields)."""
    from .genres import style_of

    result = {key: list(values) for key, values in base.items()}
    if tags.styles:
        result[STYLES] = [label for label, _ in tags.styles]
        result[STYLE_SCORES] = [f"{label}={_format_score(score)}" for label, score in tags.styles]
    if tags.genres:
        result[GENRES] = [genre for genre, _ in tags.genres]
        result[GENRE_SCORES] = [f"{genre}={_format_score(score)}" for genre, score in tags.genres]
    result[MODEL] = [tags.model]
    if tags.model_revision:
        result[MODEL_REVISION] = [tags.model_revision]
    result[VERSION] = [tags.tool_version]
    if genre_field == "leave" or not tags.styles:
        return result
    names = list(dict.fromkeys(style_of(label) if "---" in label else label for label, _ in tags.styles))
    current = base.get(STANDARD_GENRE, [])
    if genre_field == "add":
        written = [name for name in names if name not in current]
        if not written:
            return result
        result[STANDARD_GENRE] = current + written
    else:
        written = names
        result[STANDARD_GENRE] = names
        if current:
            result[GENRE_ORIGINAL] = list(current)
    result[GENRE_MODE] = [genre_field]
    result[GENRE_WRITTEN] = written
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def read_tags(path) -> MaestTags | None:
    """The MAEST tags of a file, or ``None`` if it has none (no ``MAEST_MODEL`` field).

    Raises:
        `TagWriteError`: the file cannot be opened as a supported audio format.
    """
    path = os.fspath(path)
    state = _read_state(_open(path))
    if MODEL not in state:
        return None

    def pairs(key):
        result = []
        for item in state.get(key, []):
            name, _, score = item.rpartition("=")
            try:
                result.append((name, float(score)))
            except ValueError:
                raise TagWriteError(path, f"{key} holds {item!r}, not '<name>=<score>'") from None
        return result

    return MaestTags(
        styles=pairs(STYLE_SCORES), genres=pairs(GENRE_SCORES), model=state[MODEL][0],
        tool_version=(state.get(VERSION) or ["unknown"])[0], model_revision=(state.get(MODEL_REVISION) or [None])[0],
    )


def read_state(path) -> dict[str, list[str]]:
    """The ``MAEST_*`` fields and the standard genre field (key ``"GENRE"``) of a file, as ``{field: [values]}``."""
    return _read_state(_open(os.fspath(path)))


def write_tags(path, tags: MaestTags, genre_field: str = "leave", touch: bool = False, dry_run: bool = False) -> Change:
    """Write MAEST tags into an audio file, atomically (see the module doc for the scheme and the guarantees).

    Earlier MAEST tags are replaced as a whole (an earlier genre change is undone first), so writing the same tags
    twice changes nothing the second time: the file is not rewritten at all.

    Args:
        path: the audio file (MP3, FLAC, Ogg Vorbis, Opus, M4A, WAV, AIFF).
        tags (`MaestTags`): what to write.
        genre_field (`str`): ``"leave"`` (default: the standard genre field is not touched), ``"add"`` or
            ``"replace"`` (see the module doc).
        touch (`bool`): give the file the current modification time (default: keep the old one).
        dry_run (`bool`): compute the change and return it without writing anything.

    Returns:
        `Change`.

    Raises:
        `TagWriteError`: the file is read-only, unsupported, damaged, or could not be written (disk full...); the
            file is then unchanged.
    """
    if genre_field not in GENRE_FIELD_MODES:
        raise ValueError(f"genre_field must be one of {GENRE_FIELD_MODES}, got {genre_field!r}")
    if not isinstance(tags, MaestTags):
        raise TypeError(f"tags must be a MaestTags, got {type(tags).__name__}")
    return _update(path, lambda state: _with_maest(_without_maest(state), tags, genre_field), touch, dry_run)


def remove_tags(path, touch: bool = False, dry_run: bool = False) -> Change:
    """Remove every ``MAEST_*`` field and undo the genre change of an earlier ``add`` / ``replace`` write.

    A file without MAEST tags is left untouched (``Change.changed`` is ``False``). Same safety as `write_tags`.
    """
    return _update(path, _without_maest, touch, dry_run)


def _update(path, transform, touch: bool, dry_run: bool) -> Change:
    path = os.fspath(path)
    target = os.path.realpath(path)
    audio = _open(target)
    before = _read_state(audio)
    after = transform(before)
    keys = [key for key in MAEST_FIELDS + (STANDARD_GENRE,) if before.get(key) != after.get(key)]
    change = Change(path=path, before=before, after=after, changed=bool(keys), written=False, dry_run=dry_run,
                    fields_changed=keys)
    if not keys or dry_run:
        return change
    _atomic_write(target, audio, before, after, touch)
    change.written = True
    return change


def _atomic_write(target: str, audio, before: dict, after: dict, touch: bool) -> None:
    info = os.stat(target)
    if not stat.S_ISREG(info.st_mode):
        raise TagWriteError(target, "not a regular file")
    if not info.st_mode & stat.S_IWUSR or not os.access(target, os.W_OK):
        raise TagWriteError(target, "the file is read-only; make it writable (chmod u+w) to write tags")
    folder = os.path.dirname(target) or "."
    temporary = os.path.join(folder, f".{os.path.basename(target)}{TEMPORARY_MARK}{secrets.token_hex(6)}")
    kind = type(audio)
    signature = _stream_signature(audio)
    try:
        try:
            shutil.copyfile(target, temporary)
        except OSError as error:
            raise TagWriteError(target, f"cannot make a temporary copy in {folder} ({error.strerror or error})")
        copy_audio = _open(temporary, kind)
        _apply_state(copy_audio, _read_state(copy_audio), after)
        try:
            _save(copy_audio)
        except Exception as error:
            raise TagWriteError(target, f"writing the tags failed ({type(error).__name__}: {error})") from error
        check = _open(temporary, kind)
        if _read_state(check) != after:
            raise TagWriteError(target, "verification failed: the tags did not read back as written")
        if _stream_signature(check) != signature:
            raise TagWriteError(target, "verification failed: the audio stream parameters changed")
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            os.chown(temporary, info.st_uid, info.st_gid)
        except OSError:
            pass  # only root may give a file away; an ordinary user's file is theirs already.
        # Permission bits, extended attributes and access/modification times of the original.
        shutil.copystat(target, temporary)
        if touch:
            os.utime(temporary)
        os.replace(temporary, target)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, Exception) and not isinstance(error, TagWriteError):
            reason = f"writing failed ({type(error).__name__}: {error}); the file is unchanged"
            raise TagWriteError(target, reason) from error
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic.
    finally:
        os.close(descriptor)


def is_temporary_file(name) -> bool:
    """Whether a file name is one of this module's temporary copies (``.<name>.maest-tmp-<12 hex>``)."""
    return bool(_TEMPORARY_RE.match(os.path.basename(os.fspath(name))))


def cleanup_temporary_files(folder, recursive: bool = True, dry_run: bool = False) -> list[str]:
    """Delete the temporary copies that an interrupted write (crash, ``kill -9``) left in `folder`.

    Only files named like `is_temporary_file` are touched: the originals are always intact (the copy is renamed
    over the original only when complete), so a leftover copy is garbage. Do not run it while a write is in
    progress in the same folder. Returns the paths removed (or, with `dry_run`, that would be).
    """
    found = []
    walker = os.walk(os.fspath(folder)) if recursive else [(os.fspath(folder), [], os.listdir(os.fspath(folder)))]
    for root, _, names in walker:
        for name in names:
            candidate = os.path.join(root, name)
            if is_temporary_file(name) and os.path.isfile(candidate) and not os.path.islink(candidate):
                if not dry_run:
                    os.unlink(candidate)
                found.append(candidate)
    return sorted(found)


__all__ = [
    "MaestTags", "Change", "TagWriteError", "write_tags", "remove_tags", "read_tags", "read_state",
    "cleanup_temporary_files", "is_temporary_file", "MAEST_FIELDS", "GENRE_FIELD_MODES",
]
