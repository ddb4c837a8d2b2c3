# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""maest-tag: tag (and embed) a music collection with MAEST, on one machine or many.

    maest-tag ~/Music --output tags.jsonl        # or: python -m maest_tools.tag ...

The library entry is `main(argv)` (returns the exit status); `cli()` is the installed command.

Every audio file found (files, folders searched recursively by extension, or a ``--file-list``) is decoded with
ffmpeg (mean downmix to mono, soxr resampling to 16 kHz) in DataLoader worker processes, turned into MAEST's
log-mel frames by the project's `MaestFeatureExtractor` (the Essentia-exact front end), and analysed as a whole track
by `MaestForAudioClassification` (10 s windows every `window_hop` frames, track score = mean of the window
probabilities). One record per input file is written:

    {"path": "...", "duration_s": 30.0, "source_sampling_rate": 44100, "source_channels": 2,
     "labels": [{"label": "Electronic---Techno", "score": 0.62}, ...], "error": null,
     "embedding_ref": "tags.jsonl.embeddings/3f/3f0c...e1.npy"}            # only with --embeddings

* ``path``: the file's path as found (a command-line path, a folder joined with the path inside it, or a line of
  the file list), normalised with ``os.path.normpath``; records are sorted by it.
* ``duration_s`` (seconds), ``source_sampling_rate`` (Hz), ``source_channels``: of the decoded audio stream.
* ``labels``: best first, each ``{"label": config.id2label[i], "score": s}``; the score is the track logit through
  sigmoid for multi-label models (MAEST: independent probabilities in [0, 1]), softmax for single-label models and
  the raw value for regression. ``--top-k`` best (default 5), or every label with ``score >= --threshold``.
* ``error``: ``null``, or why the file could not be tagged (it could not be decoded, is shorter than one patch,
  0.224 s...); then ``labels`` is ``null``, and so are ``duration_s``, ``source_sampling_rate`` and
  ``source_channels`` unless the file was decoded. A bad file never stops the run.
* ``embedding_ref``: with ``--embeddings``, the ``.npy`` file holding the embedding, relative to the output's
  folder (see "Embeddings" below).
* ``path_bytes_b64``: only for a file name that is not valid UTF-8: the name's exact bytes in base64, while
  ``path`` shows it with U+FFFD for each undecodable byte (`maest_tools.records.portable_record`), so that every
  format stays valid UTF-8 for strict readers.

Music library (`maest_tools.library`, docs/tagger.md): ``--timeline`` adds ``timeline`` (the windows in time order,
``{"start_s", "end_s", "labels"}``), ``--genres`` adds ``genres`` (``[{"genre", "score"}]``, best first),
``--write-tags`` writes the results into the audio files once each record is journaled, ``--plots DIR`` draws one
picture per track; ``--remove-tags`` and ``--write-tags-from`` run without the model.

Output formats, chosen by the extension of ``--output``: ``.jsonl`` (one JSON object per line), ``.csv`` (one row
per file; ``labels`` is a JSON string, empty cells are nulls) and ``.parquet`` (needs pyarrow; ``labels`` is a
list of ``{label, score}`` structs).

Crash safety. Records are appended to a JSONL journal and flushed one by one (fsync'ed every few seconds): the
output itself for a ``.jsonl`` run on one process, ``OUTPUT.partial.jsonl`` for ``.csv`` / ``.parquet``, and
``OUTPUT.shard-I-of-N.jsonl`` per shard for distributed runs. At the end every journal is merged into OUTPUT
(written to a temporary file, then renamed) and removed. An interrupted run keeps everything it wrote: rerun the
same command with ``--resume`` and only the missing files are processed. Without ``--resume`` the script refuses
to touch an existing output or journal (``--overwrite`` starts over).

Embeddings. ``--embeddings track`` stores the paper's embedding of each track (after block ``--block``, 0-based,
before the final norm: concat(CLS, distillation, mean of the patch tokens), ``3 * hidden_size`` = 2304 float32
values for MAEST, averaged over the windows) as a ``(3 * hidden_size,)`` array; ``--embeddings windows`` stores
one row per analysis window, ``(windows, 3 * hidden_size)``, window ``w`` starting at frame
``window_starts(frames, max_length, window_hop)[w]`` (``configuration_maest.FRAMES_PER_SECOND`` = 62.5 frames per
second). Each track gets its own file ``OUTPUT.embeddings/<h[:2]>/<h>.npy`` where ``h`` is the SHA-1 of the
record's path (UTF-8), so shards and machines never collide and folders from several machines merge by copying.
The records and their files are handled by `maest_tools.records`.

Distribution. With ``torchrun --nproc_per_node N -m maest_tools.tag ...`` (one or many nodes) the sorted inputs
are cut into blocks of ``--batch-size`` files and rank ``r`` of ``W`` takes the blocks ``b`` with ``b % W == r``;
each rank writes its own shard journal, and rank 0 merges every shard into OUTPUT once all ranks are done (OUTPUT
must be in a folder every node sees). Without torchrun, ``--shard I/N`` takes the same split for manual use on N
machines and ``--merge OUTPUT`` combines the shard journals afterwards. A block is one model batch whatever the
split, so the records are bit-for-bit those of a one-process run on the same kind of machine and thread count.

Provenance and exclusion. ``OUTPUT.meta.json`` records the model (weights SHA-256), dtype, hop, embedding mode and
block, label rule and tool version (`maest_tools.provenance`); ``--resume`` with other settings stops with the list
of differences. ``OUTPUT.lock`` (an flock holding the PID, `maest_tools.lock`) keeps a second run off the output.
Loading is strict: missing, unexpected or mismatched weights stop the run (`check_loading_info`).

Exit status: 0 when every file was tagged, 1 when any file failed (the records say why) or --merge dropped lines,
2 for a usage or setup error (bad option, no audio files found, model not found or not matching its config, output
already exists, --resume with other settings, another run on the output, unwritable output, disk full...), 130 when
interrupted.
A summary line ``N files: X tagged, Y failed (Z s of audio, W s)`` goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass

from .cli import (
    DEFAULT_MODEL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_block_argument,
    add_hop_argument,
    add_model_arguments,
    error_message,
    finite_float,
    non_negative_int,
    positive_int,
    resolve_block,
)
from .cli import EXIT_FAILED as EXIT_FAILED_FILES
from .devices import DTYPES, resolve_device, resolve_dtype
from .discovery import AUDIO_EXTENSIONS, find_audio_files, parse_extensions
from .features import UnusableAudio, decode_features, load_feature_extractor
from .files import save_npy
from . import library
from .files import remove_stale_temporaries
from .lock import acquire_output_locks, release_all
from .provenance import (
    check_resume,
    meta_path,
    model_weight_files,
    run_settings,
    weight_files,
    weights_sha256,
    write_meta,
)
from .timeline import select_labels
from .records import (
    RECORD_FIELDS,
    JsonlJournal,
    collect_records,
    embedding_ref,
    embeddings_folder,
    merge_output,
    output_format,
    portable_record,
    record_key,
    partial_journal_path,
    record_sources,
    repair_jsonl_tail,
    require_pyarrow,
    shard_journal_path,
    shard_journals,
)


MAX_BATCH_FRAMES = 1 << 19
"""Most mel frames in one padded batch (``batch x longest track``, 2.3 hours of audio, 200 MB of float32 input).
A batch is sent to the model early rather than grow past it; a longer track is analysed alone."""

FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Write errors that stop the run (exit status 2, the records so far kept) instead of failing one file: disk full,
quota, read-only or unwritable output folder."""

DIST_TIMEOUT = datetime.timedelta(days=7)
"""How long a rank waits at a barrier for the slowest rank (the ranks only meet at the start and the end)."""


def plural(count: int, noun: str) -> str:
    """``"1 file"``, ``"2 files"``: a count and its noun, singular or plural."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


def shard_of(paths: list[str], index: int, count: int, block: int = 1) -> list[tuple[int, str]]:
    """The part of ``paths`` for shard ``index`` of ``count``, as ``(position in paths, path)`` pairs.

    The sorted paths are cut into blocks of ``block`` consecutive files (block ``b`` = files ``b * block`` to
    ``(b + 1) * block - 1``) and shard ``index`` takes the blocks ``b`` with ``b % count == index``. Blocks are
    the model's batches, so every batch holds the same files whatever the number of shards, and the scores are
    bit-for-bit those of a one-process run (a batch's padding and window chunks would otherwise change the float
    rounding by about 1e-7).
    """
    return [(position, path) for position, path in enumerate(paths) if (position // block) % count == index]


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N with integers, e.g. 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected I/N with N >= 1 and 0 <= I <= N-1 (0-based), got {text!r}")
    return index, count


# ---------------------------------------------------------------------------------------------------------------------
# Decoding (DataLoader workers)
# ---------------------------------------------------------------------------------------------------------------------


class AudioFileDataset:
    """A map-style dataset of audio files: item ``i`` is ``paths[i]`` decoded and turned into MAEST input frames.

    Decoding (`maest_tools.features.decode_features`: ffmpeg, mean downmix, soxr resampling) and the log-mel front
    end run here, so both happen in the DataLoader's worker processes while the model works.
    The features (``0.375`` floats per sample) are smaller than the waveform they replace.

    ``items`` are ``(position in the sorted input list, path)`` pairs (see `shard_of`). Items are dicts with
    ``index`` (that position), ``path`` and either ``input_values`` (float32 `(frames, 96)`, normalised),
    ``duration_s``, ``source_sampling_rate``, ``source_channels`` and ``error=None``, or ``error`` (the message)
    for a file that cannot be used.
    """

    def __init__(self, items: list[tuple[int, str]], feature_extractor, in_flight=None):
        self.items = items
        self.feature_extractor = feature_extractor
        # Shared with the parent: slot 2w holds worker w's PID, slot 2w+1 the item it is decoding (-1: none), so
        # that the file a dead worker was decoding can be named (see `DeathTolerantLoader`).
        self.in_flight = in_flight

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item_number = index
        index, path = self.items[index]
        worker = None
        if self.in_flight is not None:
            from torch.utils.data import get_worker_info

            worker = get_worker_info()
        if worker is not None:
            self.in_flight[2 * worker.id] = os.getpid()
            self.in_flight[2 * worker.id + 1] = item_number
            if os.environ.get(KILL_DECODER_TEST_ENV) == os.path.basename(path):
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: a decoder killed like the OOM killer does
        try:
            return self._decode(index, path)
        finally:
            if worker is not None:
                self.in_flight[2 * worker.id + 1] = -1

    def _decode(self, index: int, path: str) -> dict:
        import torch

        try:
            features, info = decode_features(path, self.feature_extractor, name_file=False)
        except UnusableAudio as error:  # decoded: its duration is known
            return {
                "index": index,
                "path": path,
                "error": error_message(error),
                "duration_s": float(error.info["duration_s"]),
                "source_sampling_rate": int(error.info["source_sampling_rate"]),
                "source_channels": int(error.info["source_channels"]),
            }
        except Exception as error:  # any failure of one file becomes its error record
            return {"index": index, "path": path, "error": error_message(error)}
        return {
            "index": index,
            "path": path,
            "input_values": torch.from_numpy(features),
            "duration_s": float(info["duration_s"]),
            "source_sampling_rate": int(info["source_sampling_rate"]),
            "source_channels": int(info["source_channels"]),
            "error": None,
        }


def _identity(item):
    return item


KILL_DECODER_TEST_ENV = "MAEST_TAG_TEST_KILL_DECODER"
"""Test hook: a decoding worker (never the main process) kills itself with SIGKILL on the file of this base name."""

WORKER_DIED = (
    "the decoding process died while decoding this file (killed by the system: out of memory? or a crash in the "
    "decoder); the run went on without it"
)


class DeathTolerantLoader:
    """Decoded items of ``todo`` in order, from DataLoader worker processes that may die.

    A worker killed while decoding (the OOM killer, a segfault) makes PyTorch's DataLoader raise "DataLoader
    worker ... exited unexpectedly". Here that file becomes an error item (`WORKER_DIED`), named from the slot the
    dead worker wrote before decoding it, and a new DataLoader goes on over the files not received yet. If the
    dead worker cannot be matched to a file (no PID in the message), every file in flight gets the error: none is
    ever decoded twice into a crash loop. With ``num_workers=0`` decoding runs in this process, which such a kill
    ends (--resume then continues after the files already written).
    """

    def __init__(self, todo: list[tuple[int, str]], feature_extractor, num_workers: int):
        self.todo = todo
        self.feature_extractor = feature_extractor
        self.num_workers = num_workers

    def _loader(self, items, in_flight):
        from torch.utils.data import DataLoader

        dataset = AudioFileDataset(items, self.feature_extractor, in_flight)
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_identity,
                          prefetch_factor=4 if self.num_workers else None)  # fmt: skip

    def __iter__(self):
        import multiprocessing
        import re

        remaining = list(self.todo)
        in_flight = multiprocessing.get_context().Array("q", 2 * max(1, self.num_workers), lock=False)
        while remaining:
            for slot in range(len(in_flight)):
                in_flight[slot] = -1
            received = 0
            iterator = iter(self._loader(remaining, in_flight if self.num_workers else None))
            try:
                for item in iterator:
                    received += 1
                    yield item
                return
            except RuntimeError as error:
                shutdown = getattr(iterator, "_shutdown_workers", None)
                if shutdown is not None:  # stop the surviving workers before new ones start
                    shutdown()
                found = re.search(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly", str(error))
                if found is None:
                    raise
                dead = {int(pid) for pid in found.group(1).split(",") if pid.strip()}
                slots = [(in_flight[2 * w], in_flight[2 * w + 1]) for w in range(len(in_flight) // 2)]
                culprits = {number for pid, number in slots if pid in dead and number >= 0}
                if not culprits:
                    culprits = {number for _pid, number in slots if number >= 0}
                if not culprits:  # died between files: blame the next file, so that the run always moves on
                    culprits = {received}
                for number in sorted(culprits):
                    position, path = remaining[number]
                    yield {"index": position, "path": path, "error": WORKER_DIED}
                # Items are yielded in order, so the first `received` are done; the culprits are recorded.
                remaining = [entry for number, entry in enumerate(remaining)
                             if number >= received and number not in culprits]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------

def _looks_like_path(model: str) -> bool:
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or model.count("/") > 1
        or "\\" in model
        or os.path.exists(model)
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick TCP connection to the Hub's endpoint (``HF_ENDPOINT``, default https://huggingface.co): whether a
    download can work at all. Checked once, so that a machine without network fails in seconds, not after the Hub
    client's retries."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _hub_offline_mode() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached(model_name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_name, "config.json"), str)
    except Exception:  # not a valid repo id: from_pretrained will say so
        return False


def _short_keys(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def check_loading_info(model_name: str, info: dict) -> None:
    """Refuse a checkpoint whose weights do not match the model exactly (the tagger never runs random weights).

    Raises:
        UsageError: missing, unexpected or mismatched keys (each named), or loading errors.
    """
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing weights (would be random): {_short_keys(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected weights (not in this model): {_short_keys(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        shown = []
        for entry in sorted(info["mismatched_keys"], key=str):
            if isinstance(entry, (tuple, list)) and len(entry) == 3:
                key, checkpoint_shape, model_shape = entry
                shown.append(f"{key} (checkpoint {tuple(checkpoint_shape)}, model {tuple(model_shape)})")
            else:
                shown.append(str(entry))
        problems.append(f"weights of the wrong shape: {_short_keys(shown)}")
    if info.get("error_msgs"):
        problems.append(f"errors: {'; '.join(str(message) for message in info['error_msgs'][:3])}")
    if problems:
        raise UsageError(
            f"--model {model_name!r}: the checkpoint does not match the model's config.json: "
            + "; ".join(problems)
            + ". The tagger only runs complete, matching weights: use the folder maest-convert or save_pretrained "
            "wrote, unchanged."
        )


def load_model(model_name: str, allow_pickle: bool = False, quiet: bool = False):
    """`MaestForAudioClassification.from_pretrained`, strict, with the errors a user can act on.

    Args:
        model_name: a local folder (``config.json`` + ``model.safetensors``) or a Hugging Face repo id.
        allow_pickle: when the model has no ``model.safetensors``, also load a pickled ``pytorch_model.bin``
            (``use_safetensors=None``: safetensors first; transformers reads the pickle with
            ``torch.load(weights_only=True)``, which refuses anything but tensors).
        quiet: hide the Hub's download progress bars too (transformers' weight-loading bar is always hidden).

    Raises:
        UsageError: no such folder; no weights; a corrupt, truncated or malicious weight file; weights missing,
            unexpected or of the wrong shape (`check_loading_info`); a bad config.json value; no network for a
            repo id that is not in the cache.
    """
    from modeling_maest import MaestForAudioClassification

    expanded = os.path.expanduser(model_name)
    is_path = _looks_like_path(model_name)
    if is_path and not os.path.isdir(expanded):
        reason = "a symlink loop" if os.path.islink(expanded) and not os.path.exists(expanded) else "no such folder"
        raise UsageError(
            f"--model {model_name!r}: {reason}. Pass a folder holding config.json and model.safetensors (e.g. "
            f"one made by maest-convert) or a Hugging Face repo id such as {DEFAULT_MODEL!r}."
        )
    offline_hint = (
        f"A repo id such as the default {DEFAULT_MODEL!r} is downloaded on first use (and cached), which needs network "
        "access. Either run once with network access{unset}, or point --model at a local folder holding config.json "
        "and model.safetensors, e.g. `--model /path/to/discogs-maest-10s-fs-129e` (a download of the repository, or "
        "a folder made by maest-convert)."
    )
    offline = _hub_offline_mode()
    if not is_path and not offline and not _cached(model_name) and not _hub_reachable():
        raise UsageError(
            f"Could not load the model {model_name!r}: it is not in the Hugging Face cache and the Hub cannot be "
            "reached (no network connection?).\n" + offline_hint.format(unset="")
        )
    if is_path and not weight_files(expanded):
        raise UsageError(
            f"--model {model_name!r}: the folder has no weights (no model.safetensors"
            + (" or pytorch_model.bin" if allow_pickle else "")
            + "). A model folder holds config.json and model.safetensors, as written by save_pretrained or "
            "maest-convert."
        )
    if is_path and not allow_pickle and not weight_files(expanded)[0].endswith(".safetensors"):
        raise UsageError(
            f"--model {model_name!r} has no model.safetensors, only pickled weights (pytorch_model.bin). Convert "
            "them once (maest-convert, or load and save_pretrained with safetensors), or "
            "pass --allow-pickle if you trust the file."
        )
    from transformers.utils import logging as transformers_logging

    # Our own bar is the one to watch: hide transformers' weight-loading bar (keep the Hub's download bars), and
    # its load report (a mismatch is refused below, with the keys named).
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    if not quiet and bars_were_enabled:
        import huggingface_hub.utils

        huggingface_hub.utils.enable_progress_bars()
    try:
        model, info = MaestForAudioClassification.from_pretrained(
            expanded if is_path else model_name,
            use_safetensors=None if allow_pickle else True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # so that the mismatched keys are listed (and refused) below
        )
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # corrupt file, bad config value, network...: one message, never a traceback
        text = " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
        first_line = (text[:500] + "...") if len(text) > 500 else (text or type(error).__name__)
        if "use_safetensors=False" in str(error):
            raise UsageError(
                f"--model {model_name!r} has no model.safetensors, only pickled weights (pytorch_model.bin). Convert "
                "them once (maest-convert, or load and save_pretrained with safetensors), or "
                "pass --allow-pickle if you trust the file."
            ) from None
        if "weights_only" in str(error) or type(error).__name__ == "UnpicklingError":
            raise UsageError(
                f"--model {model_name!r}: the pickled weights (pytorch_model.bin) hold more than tensors, so "
                "torch.load(weights_only=True) refused them: the file may run code when loaded. Do not use it; get "
                "model.safetensors from a source you trust."
            ) from None
        if is_path:
            raise UsageError(
                f"--model {model_name!r}: the folder is not a loadable MAEST model ({type(error).__name__}: "
                f"{first_line}). It needs a valid config.json and complete model.safetensors, as written by "
                "save_pretrained or maest-convert."
            ) from None
        reason = "HF_HUB_OFFLINE is set" if offline else "no network connection, or the repo id does not exist"
        raise UsageError(
            f"Could not load the model {model_name!r} from the Hugging Face Hub ({reason}): {first_line}\n"
            + offline_hint.format(unset=" (unset HF_HUB_OFFLINE)" if offline else "")
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()
    check_loading_info(model_name, info)
    return model.eval()


def scores_from_logits(logits, problem_type: str | None):
    """Scores from track logits, as `MaestAudioClassificationPipeline.postprocess`: sigmoid for multi-label models
    (``problem_type`` None or ``"multi_label_classification"``), softmax for ``"single_label_classification"``, the
    logits themselves for ``"regression"``. Computed in float32."""
    logits = logits.float()
    if problem_type == "single_label_classification":
        return logits.softmax(-1)
    if problem_type == "regression":
        return logits
    return logits.sigmoid()


# ---------------------------------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    """The torchrun context of this process (one process: rank 0 of 1, inactive)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    active: bool = False

    @classmethod
    def from_env(cls) -> "Distributed":
        """Read torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        except ValueError:
            raise UsageError(
                "RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun), got "
                f"RANK={os.environ.get('RANK')!r} "
                f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}."
            ) from None
        return cls(rank, world, local_rank, local_world, active=world > 1)

    def init(self) -> None:
        """Join the process group (gloo: the ranks only meet at barriers, so no GPU collective is needed)."""
        if self.active:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=DIST_TIMEOUT)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunStats:
    """What this process did: records written, seconds of audio tagged."""

    records: int = 0
    audio_s: float = 0.0


class Tagger:
    """Runs the model on batches of decoded tracks and writes one record per file to a journal."""

    def __init__(self, model, feature_extractor, args, device, output: str, journal: JsonlJournal, progress,
                 features: "library.LibraryFeatures | None" = None):
        self.model = model
        self.library = features
        self.padding_value = float(feature_extractor.padding_value)
        self.args = args
        self.device = device
        self.output = output
        self.journal = journal
        self.progress = progress
        self.stats = RunStats()
        self.started = time.monotonic()
        id2label = {int(key): value for key, value in model.config.id2label.items()}
        self.label_names = [id2label[index] for index in range(len(id2label))]
        self._batch = None
        self._advanced = 0.0
        if progress is not None:
            self._watch_windows()

    # -- records ------------------------------------------------------------------------------------------------------

    def _emit(self, record: dict, advance: bool = True) -> None:
        """Journal ``record``; ``advance``: move the bar by one file (the model's files moved it window by window)."""
        if self.args.embeddings != "none":
            record.setdefault("embedding_ref", None)
        self.journal.append(portable_record(record))
        self.stats.records += 1
        if record.get("duration_s") is not None and record["error"] is None:
            self.stats.audio_s += record["duration_s"]
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.progress.set_postfix_str(f"audio {self.stats.audio_s / elapsed:.1f} s/s", refresh=False)
            if advance:
                self.progress.update(1)

    # -- progress within a model call ---------------------------------------------------------------------------------

    def _watch_windows(self) -> None:
        """Move the bar as the model works through the windows of a batch: a forward hook on the patch embedding
        (run once per chunk of windows) advances it by ``windows in the chunk / windows in the batch x files in the
        batch``, so a long track or a big batch moves the bar window by window instead of jumping at its end."""
        from modeling_maest import MaestPatchEmbeddings

        self._batch = None  # (files, windows) of the batch in the model
        self._advanced = 0.0

        def on_chunk(_module, inputs, _output):
            if self._batch is None or self.progress is None:
                return
            files, windows = self._batch
            step = min(inputs[0].shape[0] / windows * files, files - self._advanced)
            if step > 0:
                self._advanced += step
                self.progress.update(step)

        for module in self.model.modules():
            if isinstance(module, MaestPatchEmbeddings):
                module.register_forward_hook(on_chunk)
                break

    def _batch_started(self, lengths: list[int]) -> None:
        from modeling_maest import window_starts

        config = self.model.config
        windows = sum(len(window_starts(length, config.max_length, config.window_hop)) for length in lengths)
        self._batch = (len(lengths), max(1, windows))
        self._advanced = 0.0

    def _batch_ended(self, succeeded: bool) -> None:
        """Make the batch count exactly its files (success), or take its partial advance back (a failure: its files
        are retried one by one, and count then)."""
        if self.progress is not None and self._batch is not None:
            self.progress.update((self._batch[0] - self._advanced) if succeeded else -self._advanced)
        self._batch = None
        self._advanced = 0.0

    def emit_error(self, item: dict, message: str, advance: bool = True) -> None:
        record = {"path": item["path"]}
        for name in RECORD_FIELDS[1:]:
            record[name] = None
        record["error"] = message
        if item.get("duration_s") is not None:
            record.update(
                duration_s=item["duration_s"],
                source_sampling_rate=item["source_sampling_rate"],
                source_channels=item["source_channels"],
            )
        self._emit(record, advance)

    # -- model --------------------------------------------------------------------------------------------------------

    def _forward(self, items: list[dict]):
        import torch

        lengths = [item["input_values"].shape[0] for item in items]
        longest = max(lengths)
        input_values = torch.full((len(items), longest, items[0]["input_values"].shape[1]), self.padding_value)
        for row, item in enumerate(items):
            input_values[row, : lengths[row]] = item["input_values"]
        attention_mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int32)
        input_values = input_values.to(self.device, non_blocking=True)
        attention_mask = attention_mask.to(self.device, non_blocking=True)
        self._batch_started(lengths)
        with torch.inference_mode():
            # One pass gives the scores and, with --embeddings, the embedding after block --block.
            block = self.args.block if self.args.embeddings != "none" else None
            output = self.model(input_values=input_values, attention_mask=attention_mask, embedding_block=block)
            scores = scores_from_logits(output.logits, self.model.config.problem_type).cpu()
            track_windows = None
            if self.library is not None and self.library.needs_windows:  # --timeline / --plots: the same pass
                track_windows = self.library.split_windows(
                    scores_from_logits(output.window_logits, self.model.config.problem_type).cpu(),
                    output.window_mask.cpu(), output.window_starts.cpu(), lengths,
                )
            embeddings = None
            if self.args.embeddings == "track":
                track = output.embedding.float().cpu()
                embeddings = [track[row] for row in range(len(items))]
            elif self.args.embeddings == "windows":
                windows, window_mask = output.window_embeddings.float().cpu(), output.window_mask.cpu()
                embeddings = [windows[row, window_mask[row]] for row in range(len(items))]
        return scores, embeddings, track_windows

    def _save_embedding(self, path: str, embedding) -> str:
        import numpy as np

        reference = embedding_ref(self.output, path)
        target = os.path.join(os.path.dirname(os.path.abspath(self.output)), reference)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        save_npy(target, embedding.numpy().astype(np.float32, copy=False))
        return reference

    def run_batch(self, items: list[dict]) -> None:
        """Tag ``items`` in one model call; on a failure retry them one by one, so one bad track fails alone."""
        import torch

        try:
            scores, embeddings, track_windows = self._forward(items)
        except Exception as error:  # e.g. out of memory on a huge track
            self._batch_ended(succeeded=False)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) > 1:
                for item in items:
                    self.run_batch([item])
                return
            self.emit_error(items[0], f"the model failed on this track: {error_message(error)}")
            return
        self._batch_ended(succeeded=True)
        for row, item in enumerate(items):
            if not bool(torch.isfinite(scores[row]).all()):
                hint = " (float16 overflow? use --dtype bfloat16 or float32)" if self.args.dtype == "float16" else ""
                self.emit_error(item, f"the model produced non-finite scores{hint}", advance=False)
                continue
            record = {
                "path": item["path"],
                "duration_s": item["duration_s"],
                "source_sampling_rate": item["source_sampling_rate"],
                "source_channels": item["source_channels"],
                "labels": select_labels(scores[row].float().numpy(), self.label_names, self.args.top_k, self.args.threshold),
                "error": None,
            }
            windows_row = track_windows[row] if track_windows is not None else None
            if self.library is not None:
                record.update(self.library.record_fields(windows_row, scores[row].float().numpy()))
            if embeddings is not None:
                try:
                    record["embedding_ref"] = self._save_embedding(item["path"], embeddings[row])
                except OSError as error:
                    if error.errno in FATAL_WRITE_ERRNOS:  # every later file would fail the same way: stop
                        raise
                    self.emit_error(item, f"could not write its embedding: {error_message(error)}", advance=False)
                    continue
            self._emit(record, advance=False)
            if self.library is not None:
                # Tags and pictures only once the record is safe in the journal; a failure is journaled as a later
                # record of the same path (it replaces the first at the merge) and the run goes on.
                problem = self.library.after_record({**record, "path": item["path"]}, windows_row, scores[row].float().numpy())
                if problem is not None:
                    self.journal.append({**record, "error": problem})

    def run(self, loader) -> None:
        """Consume the DataLoader, batching the decoded tracks of each block of ``--batch-size`` input files (see
        `shard_of`); a batch is also cut before it exceeds `MAX_BATCH_FRAMES` padded frames."""
        pending: list[dict] = []
        pending_block = None
        longest = 0
        for item in loader:
            if item["error"] is not None:
                self.emit_error(item, item["error"])
                continue
            frames = item["input_values"].shape[0]
            block = item["index"] // self.args.batch_size
            if pending and (block != pending_block or (len(pending) + 1) * max(longest, frames) > MAX_BATCH_FRAMES):
                self.run_batch(pending)
                pending, longest = [], 0
            pending.append(item)
            pending_block = block
            longest = max(longest, frames)
        if pending:
            self.run_batch(pending)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _top_k(text: str) -> int | str:
    if text.strip().lower() == "all":
        return "all"
    return positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option documented with its unit and default)."""
    parser = argparse.ArgumentParser(
        prog="maest-tag",
        description="Tag (and embed) every audio file of a music collection with MAEST. One record per file: path, "
        "duration_s, source_sampling_rate, source_channels, labels (best first), error, and with --embeddings "
        "embedding_ref. Run it under torchrun to use several processes or machines.",
        epilog="Exit status: 0 all files tagged, 1 some files failed (see their 'error'), 2 usage or setup error, "
        "130 interrupted. Example: maest-tag ~/Music --output tags.jsonl",
    )
    add = parser.add_argument
    add("inputs", nargs="*", metavar="PATH",
        help="audio files (any extension) and folders (searched recursively for audio extensions; hidden files and "
        "folders skipped)")  # fmt: skip
    add("--file-list", metavar="TXT",
        help="text file with one path (file or folder) per line, relative to the current directory; blank lines and "
        "'#' comments ignored; '-' reads stdin")  # fmt: skip
    add("--output", "-o", metavar="PATH", help="output file, .jsonl, .csv or .parquet (by extension); required")
    add_model_arguments(parser)
    add("--top-k", type=_top_k, default=None, metavar="K",
        help="keep the K best labels; 'all' keeps every label (default 5, or no limit with --threshold)")  # fmt: skip
    add("--threshold", type=finite_float, default=None, metavar="T",
        help="keep every label with score >= T (an independent probability for MAEST)")  # fmt: skip
    add("--embeddings", choices=("none", "track", "windows"), default="none",
        help="also store embeddings: one (3*hidden,) vector per track (mean of the windows), or one row per window, "
        "(windows, 3*hidden); float32 .npy files in OUTPUT.embeddings/ (default: none)")  # fmt: skip
    add_block_argument(parser, "the embedding (with --embeddings)")
    add_hop_argument(parser)
    add("--batch-size", type=positive_int, default=8, metavar="N",
        help="tracks per model call (default 8); their windows run in chunks of --windows-per-batch")  # fmt: skip
    add("--windows-per-batch", type=positive_int, default=None, metavar="N",
        help="windows per forward pass (default: the model's max_windows_per_batch, 8); raise it on a GPU")
    add("--num-workers", type=non_negative_int, default=None, metavar="N",
        help="decoding processes per rank (default: CPUs per process on this node - 1, between 1 and 4; 0 decodes in "
        "the main process)")  # fmt: skip
    add("--device", default="auto",
        help="torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N (default auto; under torchrun "
        "cuda means cuda:LOCAL_RANK)")  # fmt: skip
    add("--dtype", choices=DTYPES, default="float32",
        help="model weight dtype (default float32; the features stay float32 up to the model)")  # fmt: skip
    add("--extensions", type=parse_extensions, default=frozenset(AUDIO_EXTENSIONS), metavar="LIST",
        help="comma-separated extensions searched for in folders, case-insensitive (default: "
        + ",".join(AUDIO_EXTENSIONS) + ")")  # fmt: skip
    add("--resume", action="store_true",
        help="continue an interrupted run: skip the files already in the output or its journals")  # fmt: skip
    add("--retry-errors", action="store_true", help="with --resume, process the files whose record has an error again")
    add("--overwrite", action="store_true",
        help="start over: delete an existing output, its journals and its embeddings folder")  # fmt: skip
    add("--shard", type=_parse_shard, default=None, metavar="I/N",
        help="process only shard I of N (0-based: blocks of --batch-size sorted files b with b %% N == I) into "
        "OUTPUT.shard-I-of-N.jsonl; combine the shards with --merge OUTPUT")  # fmt: skip
    add("--merge", metavar="OUTPUT",
        help="merge the shard journals of OUTPUT into OUTPUT and exit (no other arguments)")  # fmt: skip
    add("--quiet", "-q", action="store_true", help="no progress bars")
    library.add_arguments(parser)
    return parser


def _default_num_workers(dist: Distributed) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(4, cpus // max(1, dist.local_world_size) - 1))


def _audio_seconds(records: dict[str, dict], paths: set[str]) -> float:
    """Seconds of audio of the successfully tagged ``paths``."""
    tagged = [records[path] for path in paths if path in records and records[path].get("error") is None]
    return sum(record.get("duration_s") or 0.0 for record in tagged)


def _summary(
    inputs: list[str], records: dict[str, dict], skipped: int, audio_s: float, wall_s: float
) -> tuple[str, int, list]:
    """The summary line, the exit status and the ``(path, error)`` of the failed files."""
    tagged = failed = missing = 0
    failures = []
    for path in inputs:
        record = records.get(path)
        if record is None:
            missing += 1
        elif record.get("error") is None:
            tagged += 1
        else:
            failed += 1
            failures.append((path, record["error"]))
    line = f"{plural(len(inputs), 'file')}: {tagged} tagged, {failed} failed ({audio_s:.1f} s of audio, {wall_s:.1f} s)"
    if skipped:
        line += f"; {skipped} of them {'was' if skipped == 1 else 'were'} already in the output"
    if missing:
        line += f"; {missing} {'has' if missing == 1 else 'have'} no record yet"
    return line, (EXIT_FAILED_FILES if failed or missing else EXIT_OK), failures


def _report(line: str, failures: list) -> None:
    for path, error in failures[:10]:
        _log(f"failed: {path}: {error}")
    if len(failures) > 10:
        _log(f"... and {plural(len(failures) - 10, 'more failed file')} (see the 'error' field of their records)")
    _log(line)


def _run_merge(output: str) -> int:
    output_format(output)
    locks = acquire_output_locks(output)
    try:
        return _merge_locked(output)
    finally:
        release_all(locks)


def _merge_locked(output: str) -> int:
    journals = shard_journals(output)
    if not journals and not os.path.exists(partial_journal_path(output)):
        if not os.path.exists(output):
            raise UsageError(
                f"--merge {output!r}: neither the output nor any shard journal ({output}.shard-I-of-N.jsonl) exists."
            )
    counts = {count for _index, count in journals}
    status = EXIT_OK
    for count in sorted(counts):
        absent = [index for index in range(count) if (index, count) not in journals]
        if absent:
            _log(
                f"warning: shards {absent} of {count} are missing ({shard_journal_path(output, absent[0], count)}...): "
                "their files are not in the output yet; copy those journals here and run --merge again."
            )
            status = EXIT_FAILED_FILES
    dropped: list[str] = []
    records = merge_output(output, dropped)
    failures = [(record_key(record), record["error"]) for record in records if record.get("error") is not None]
    line = (f"{plural(len(records), 'file')}: {len(records) - len(failures)} tagged, {len(failures)} failed "
            f"(merged into {output})")  # fmt: skip
    _report(line, failures)
    if dropped:
        _report_dropped(dropped)
        status = EXIT_FAILED_FILES
    return max(status, EXIT_FAILED_FILES if failures else EXIT_OK)


def _report_dropped(dropped: list[str]) -> None:
    for line in dropped[:10]:
        _log(f"dropped: {line}")
    if len(dropped) > 10:
        _log(f"... and {len(dropped) - 10} more dropped lines")
    _log(
        f"warning: {plural(len(dropped), 'journal line')} could not be merged (listed above), so the journals are "
        "kept. Their files have no record in the output yet: fix or delete the malformed lines (a torn last line needs "
        "nothing), then rerun the tagging command with --resume to redo those files."
    )


def _check_arguments(args) -> None:
    if library.runs_without_model(args):
        return
    if args.merge is not None:
        extra = [name for name in ("inputs", "file_list", "output", "shard") if getattr(args, name)]
        if extra:
            raise UsageError(f"--merge takes no other inputs or outputs (got {', '.join(extra)}); run it on its own.")
        return
    if args.output is None:
        raise UsageError("--output PATH is required (a .jsonl, .csv or .parquet file).")
    if not args.inputs and args.file_list is None:
        raise UsageError("No input: pass audio files or folders, or --file-list TXT.")
    if args.top_k == "all":
        args.top_k = None
    elif args.top_k is None and args.threshold is None:
        args.top_k = 5
    if args.retry_errors and not args.resume:
        raise UsageError("--retry-errors only makes sense with --resume.")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one of them.")
    for path in (args.output, args.merge):
        if path is not None and os.path.isdir(path):
            raise UsageError(f"--output {path!r} is a folder; the output is a file (.jsonl, .csv or .parquet).")
    library.check_tagging_arguments(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.held_locks = []
    try:
        _check_arguments(args)
        if library.runs_without_model(args):
            return library.run_without_model(args)
        if args.merge is not None:
            return _run_merge(args.merge)
        return _tag(args)
    except UsageError as error:
        _log(f"maest-tag: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # outside the tagging loop, which reports its own interruption
        if getattr(args, "writing", False):
            _log("maest-tag: interrupted; the records written so far are kept: rerun with --resume to finish.")
        else:
            _log("maest-tag: interrupted; nothing was written.")
        return EXIT_INTERRUPTED
    except OSError as error:  # disk full, unwritable folder... (records already written stay in their journal)
        _log(f"maest-tag: error: {error_message(error)}. {_os_error_hint(error, args)}")
        return EXIT_USAGE
    finally:
        release_all(args.held_locks)


def _os_error_hint(error: OSError, args) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "The disk is full"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = "The output's folder is not writable"
    else:
        what = "Writing the output failed"
    return (
        f"{what}: the records written so far are kept in the output's journal; fix the problem, then rerun the same "
        "command with --resume."
        if getattr(args, "output", None)
        else f"{what}."
    )


def _prepare_output(args, dist: Distributed, journal: str) -> None:
    """Refuse to clobber earlier results unless --resume / --overwrite; with --overwrite, clear them.

    A --shard run only looks at (and clears) its own journal: the other shards may be running on other machines.
    Otherwise rank 0 clears the output, every journal of it and its embeddings folder.
    """
    output = args.output
    if args.shard is not None and args.shard[1] > 1:
        existing = [journal] if os.path.exists(journal) else []
    else:
        existing = record_sources(output)
        if os.path.isdir(embeddings_folder(output)):
            existing.append(embeddings_folder(output) + os.sep)
    if not existing or args.resume:
        return
    if not args.overwrite:
        shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise UsageError(
            f"{shown} already exist(s) (results of an earlier or interrupted run). Pass --resume to continue it, "
            "--overwrite to start over, or choose another --output."
        )
    if args.shard is not None and args.shard[1] > 1:
        os.remove(journal)
    elif dist.rank == 0:
        if os.path.exists(meta_path(output)):
            os.remove(meta_path(output))
        for path in existing:
            if path.endswith(os.sep):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def _record_provenance(args, config, output: str, manual_shard: bool) -> None:
    """Check (--resume, or a manual shard joining an output) and write ``OUTPUT.meta.json``; remove the temporary
    files of crashed runs (the locks are held: no live run of this output can own them)."""
    is_path = _looks_like_path(args.model)
    weights = weights_sha256(model_weight_files(args.model, is_path, getattr(config, "_commit_hash", None)))
    settings = run_settings(args, config, args.model, is_path, weights)
    has_records = bool(record_sources(output))
    if args.resume or (manual_shard and not args.overwrite):
        warning = check_resume(output, settings, has_records and args.resume)
        if warning:
            _log(warning)
    write_meta(output, settings)
    if not manual_shard:  # other machines' shards may be writing embeddings right now
        folder = embeddings_folder(output)
        removed = remove_stale_temporaries(output, (folder,) if os.path.isdir(folder) else ())
        if removed:
            _log(f"Removed {plural(len(removed), 'temporary file')} left by an interrupted run.")


def _tag(args) -> int:
    import torch

    started = time.monotonic()
    output = args.output
    output_format(output)
    if output_format(output) == "parquet":
        require_pyarrow()
    if shutil.which("ffmpeg") is None:
        raise UsageError(
            "ffmpeg is not on PATH; it decodes the audio files. Install it (`apt-get install ffmpeg`, "
            "`conda install -c conda-forge ffmpeg` or `brew install ffmpeg`)."
        )
    dist = Distributed.from_env()

    inputs = find_audio_files(args.inputs, args.file_list, args.extensions)
    if not inputs:
        where = ", ".join(repr(path) for path in args.inputs) or repr(args.file_list)
        raise UsageError(
            f"No audio files found in {where} (extensions searched in folders: {','.join(sorted(args.extensions))}). "
            "Check the paths, or pass --extensions."
        )

    # The split: --shard I/N first, then the torchrun ranks inside it: shard g of `total` takes the blocks
    # b % total == g, i.e. b % N == I and (b // N) % world_size == rank.
    shard_index, shard_count = args.shard or (0, 1)
    total = shard_count * dist.world_size
    global_shard = shard_index + shard_count * dist.rank
    my_inputs = shard_of(inputs, global_shard, total, args.batch_size)
    sharded = total > 1
    manual_shard = args.shard is not None and shard_count > 1
    journal_path = (
        shard_journal_path(output, global_shard, total)
        if sharded
        else (output if output_format(output) == "jsonl" else partial_journal_path(output))
    )
    parent = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--output {output!r}: cannot create its folder ({error_message(error)}).") from None
    for path in (journal_path, meta_path(output)):
        if os.path.isdir(path):
            raise UsageError(f"{path!r} is a folder, where maest-tag keeps a file of {output!r}; move it away.")
    # One run at a time per output (rank 0 holds the locks for its torchrun job; released by `main`).
    if dist.rank == 0:
        args.held_locks = acquire_output_locks(output, args.shard if manual_shard else None)

    # Model and options (validated on every rank before anything is written).
    model = load_model(args.model, allow_pickle=args.allow_pickle, quiet=args.quiet)
    config = model.config
    if args.hop is not None:
        if args.hop > config.max_length:
            raise UsageError(
                f"--hop {args.hop}: the hop (frames) must be between 1 and the window length max_length="
                f"{config.max_length} frames of this model, or audio between windows would be skipped."
            )
        config.window_hop = args.hop
    if args.windows_per_batch is not None:
        config.max_windows_per_batch = args.windows_per_batch
    args.block = resolve_block(args.block, config.num_hidden_layers)
    device = resolve_device(args.device, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # float32 means float32: no TF32 in the patch-embedding convolution (matmuls default to no TF32 already).
        torch.backends.cudnn.allow_tf32 = False
    model.to(device=device, dtype=resolve_dtype(args.dtype))

    feature_extractor = load_feature_extractor()
    id2label = {int(key): value for key, value in config.id2label.items()}
    features = library.LibraryFeatures(args, args.model, config, [id2label[index] for index in range(len(id2label))])

    dist.init()
    try:
        args.writing = True  # from here on, an interruption may leave records (kept for --resume)
        _prepare_output(args, dist, journal_path)
        if dist.rank == 0:
            features.prepare(inputs)
            _record_provenance(args, config, output, manual_shard)
        dist.barrier()  # rank 0 has cleared the old results (--overwrite) and checked the settings (--resume)
        done = collect_records(output) if args.resume else {}
        dist.barrier()  # every rank has read what was done before any rank writes

        def is_done(path: str) -> bool:
            record = done.get(path)
            if record is None:
                return False
            if record.get("error") is not None:
                return not args.retry_errors
            return (args.embeddings == "none" or bool(record.get("embedding_ref"))) and all(
                field in record for field, asked in (("timeline", args.timeline), ("genres", args.genres)) if asked
            )

        todo = [(position, path) for position, path in my_inputs if not is_done(path)]

        progress = None
        if not args.quiet and dist.local_rank == 0 and todo:
            from tqdm import tqdm

            description = f"rank {dist.rank} of {dist.world_size}" if dist.active else "tagging"
            progress = tqdm(
                total=len(todo), unit="file", desc=description, file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
                # Fractional counts: the bar moves window by window inside a model call (see Tagger._watch_windows).
                bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} files [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
            )

        journal = JsonlJournal(journal_path)
        tagger = Tagger(model, feature_extractor, args, device, output, journal, progress, features)
        try:
            if todo:
                workers = args.num_workers if args.num_workers is not None else _default_num_workers(dist)
                tagger.run(DeathTolerantLoader(todo, feature_extractor, workers))
        except KeyboardInterrupt:
            journal.close()
            if progress is not None:
                progress.close()
            _log(
                f"Interrupted: {tagger.stats.records} new records are safe in {journal_path}. Run the same "
                "command with --resume to continue."
            )
            return EXIT_INTERRUPTED
        journal.close()
        if progress is not None:
            progress.close()

        dist.barrier()  # every rank has finished its part
        if dist.rank != 0:
            # Rank 0 reports for every rank: a rank's non-zero exit makes torchrun stop the others, so only rank 0
            # (after merging) exits with 1 when files failed.
            if not manual_shard:
                dist.barrier()
            return EXIT_OK

        processed = [path for path in inputs if not is_done(path)]
        skipped_all = len(inputs) - len(processed)
        if manual_shard:
            # Other machines hold the other shards: report this machine's part, merge later.
            part = [path for _position, path in shard_of(inputs, shard_index, shard_count, args.batch_size)]
            records = collect_records(output)
            processed_part = set(processed).intersection(part)
            audio_s = _audio_seconds(records, processed_part)
            skipped_part = len(part) - len(processed_part)
            line, status, failures = _summary(part, records, skipped_part, audio_s, time.monotonic() - started)
            _report(line, failures)
            written = journal_path if not dist.active else f"{output}.shard-*-of-{total}.jsonl"
            _log(
                f"Wrote shard {shard_index} of {shard_count} to {written}; once every shard "
                f"is done, run `maest-tag --merge {output}` where all the shard files are."
            )
            return status

        if dist.active:
            absent = [shard_journal_path(output, rank, total) for rank in range(total)
                      if not os.path.exists(shard_journal_path(output, rank, total))]  # fmt: skip
            if absent:
                _log(
                    f"error: rank 0 cannot see the shard files {absent[:3]}: OUTPUT must be in a folder shared by "
                    "every node. Copy those files next to the output and run --merge."
                )
        # This run redid every file without a record, so a torn last line of a journal (a crash of an earlier run)
        # is no loss any more: cut it, so that the journals are merged and removed.
        for source in record_sources(output):
            if source != output:
                repair_jsonl_tail(source)
        dropped: list[str] = []
        records = {record_key(record): record for record in merge_output(output, dropped)}
        if dropped:
            _report_dropped(dropped)
        dist.barrier()  # the other ranks end only after the merge (see above)
        audio_s = _audio_seconds(records, set(processed))
        line, status, failures = _summary(inputs, records, skipped_all, audio_s, time.monotonic() - started)
        _report(line, failures)
        _log(f"Wrote {plural(len(records), 'record')} to {output}")
        return max(status, EXIT_FAILED_FILES) if dropped else status
    finally:
        dist.close()


def cli(argv: list[str] | None = None) -> int:
    """The `maest-tag` command: `main` with a polite stop (SIGTERM from a scheduler) handled like Ctrl-C (journals
    closed, nothing lost); returns the exit status."""

    def _interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
