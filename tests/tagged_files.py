"""Real audio files in every taggable format, made from the test clips with ffmpeg (for the file-tag tests and the
tag-writing benchmark), and an independent view of a file's tags, pictures and decoded audio."""

import hashlib
import struct
import subprocess
import zlib
from pathlib import Path

from conftest import TEST_AUDIO


SOURCE = TEST_AUDIO / "electronic_nexuiz_digital_pursuit_16k_mono.flac"
# name -> (extension, ffmpeg codec arguments, whether ffmpeg can embed a cover in this container)
FORMATS = {
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-b:a", "64k", "-id3v2_version", "3"], True),
    "flac": (".flac", ["-c:a", "flac"], True),
    "ogg": (".ogg", ["-c:a", "libvorbis", "-q:a", "2"], False),
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "32k"], False),
    "m4a": (".m4a", ["-c:a", "aac", "-b:a", "64k"], True),
    "alac": (".m4a", ["-c:a", "alac"], False),
    "wav": (".wav", ["-c:a", "pcm_s16le"], False),
    "aiff": (".aiff", ["-c:a", "pcm_s16be", "-write_id3v2", "1"], False),
}
USER_TAGS = {"title": "Digital Pursuit", "artist": "Nexuiz Team", "album": "Test Clips", "genre": "Soundtrack"}


def tiny_png(path: Path, width: int = 8, height: int = 8) -> bytes:
    """A small red-green gradient PNG, written by hand (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 30 % 256, y * 30 % 256, 90)) for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return data


def make_file(folder: Path, name: str, fmt: str, seconds: float = 3.0, cover: bool = True, user_tags: bool = True,
              offset: float = 5.0) -> Path:
    """`folder/name.<ext>`: `seconds` of the electronic test clip (from `offset` s) in format `fmt`, with the
    user's own tags (title, artist, album and a genre) and, where asked, an embedded cover picture."""
    extension, codec, ffmpeg_cover = FORMATS[fmt]
    out = folder / f"{name}{extension}"
    command = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-ss", str(offset), "-t", str(seconds)]
    command += ["-i", str(SOURCE)]  # looped, so that files longer than the 30 s clip can be made
    png = folder / f".{name}-cover.png"
    if cover and ffmpeg_cover:
        tiny_png(png)
        command += ["-i", str(png), "-map", "0:a", "-map", "1:v", "-c:v", "copy", "-disposition:v", "attached_pic"]
    else:
        command += ["-map", "0:a"]
    command += codec
    if user_tags:
        for key, value in USER_TAGS.items():
            command += ["-metadata", f"{key}={value}"]
    subprocess.run(command + [str(out)], check=True)
    if cover and not ffmpeg_cover and fmt in {"ogg", "opus"}:
        # ffmpeg cannot embed a picture in Ogg: add it the way taggers do (METADATA_BLOCK_PICTURE).
        import base64

        from mutagen import File
        from mutagen.flac import Picture

        picture = Picture()
        picture.type, picture.mime, picture.desc, picture.data = 3, "image/png", "front", tiny_png(png)
        audio = File(out)
        audio["METADATA_BLOCK_PICTURE"] = [base64.b64encode(picture.write()).decode("ascii")]
        audio.save()
    png.unlink(missing_ok=True)
    return out


def decoded_pcm(path) -> bytes:
    """The audio stream decoded by ffmpeg to raw 32-bit float PCM (an independent check of the audio data)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a", "-c:a", "pcm_f32le", "-f", "f32le", "-"],
        check=True, capture_output=True,
    )
    assert len(result.stdout) > 0
    return result.stdout


def all_tags(path) -> dict:
    """Every tag of the file as mutagen reads it: ``{key: repr(values)}`` (pictures included, as bytes' hashes)."""
    from mutagen import File

    audio = File(path)
    result = {}
    if audio.tags is None:
        return result
    for key in audio.tags.keys():
        value = audio.tags[key]
        if hasattr(value, "data"):  # ID3 APIC
            result[key] = hashlib.sha256(value.data).hexdigest()
        elif key == "covr":
            result[key] = [hashlib.sha256(bytes(v)).hexdigest() for v in value]
        elif hasattr(value, "text"):
            result[key] = [str(t) for t in value.text]
        elif isinstance(value, list):
            result[key] = [bytes(v).hex() if isinstance(v, bytes) else str(v) for v in value]
        else:
            result[key] = repr(value)
    for picture in getattr(audio, "pictures", []):  # FLAC picture blocks
        result["flac-picture"] = hashlib.sha256(picture.data).hexdigest()
    return result


def pictures(path) -> list[str]:
    """SHA-256 of every embedded picture, whatever the format."""
    tags = all_tags(path)
    found = []
    for key, value in tags.items():
        if key.startswith("APIC") or key == "flac-picture":
            found.append(value)
        elif key == "covr":
            found += value
        elif key.lower() == "metadata_block_picture":
            found += value
    return found
