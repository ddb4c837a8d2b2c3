#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune MAEST on your own labelled audio files and save a model folder that loads through the pipeline.

Data (``--data``) is either

- a CSV file with a header row ``path,labels``: one audio file per row, its labels separated by ``;``
  (``rock;guitar;live``). Relative paths are relative to the CSV's folder. Multi-label unless ``--single-label``,
  which requires exactly one label per row; or
- a folder with one sub-folder per label holding that label's audio files (single-label).

Every file is decoded once (ffmpeg + soxr, as the pipeline does) into MAEST's normalised log-mel frames, kept in
memory or in ``--feature-cache``. Each training step takes one random window (``config.max_length`` frames, 10 s for
the default model) of each track in the batch; tracks shorter than a window are used whole (padded, with an
attention mask). Validation analyses whole tracks with the model's windowed track prediction. Training uses
``transformers.Trainer`` (progress bar, evaluation every epoch, early stopping, the best epoch's weights at the end).

Output (``--output-dir``): the fine-tuned model (``config.json`` with the new labels, ``model.safetensors``, the code
files and ``preprocessor_config.json``), loadable with
``pipeline("audio-classification", model=OUTPUT_DIR, trust_remote_code=True)``, plus ``metrics.json`` (validation
metrics per epoch and of the final model) and a ``README.md`` model card.

Example::

    python scripts/finetune.py --data my_tracks.csv --output-dir my-maest --epochs 20 --batch-size 8
    python scripts/finetune.py --data genres/ --output-dir my-genres --freeze-encoder
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from cli_types import non_negative_int, run_main  # noqa: E402

logger = logging.getLogger("maest.finetune")

DEFAULT_MODEL = "mtg-upf/discogs-maest-10s-fs-129e"

# File name endings read as audio in label folders (any format ffmpeg decodes works in a CSV).
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .mp3 .ogg .oga .opus .m4a .aac .aif .aiff .aifc .wma .webm .mp4 .mka .ape .wv".split()
)

# Validation metric that selects the best epoch and drives early stopping, by task.
BEST_METRIC = {False: "roc_auc", True: "accuracy"}


# ---------------------------------------------------------------------------------------------------------------------
# Labelled data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LabelledData:
    """Audio files and their labels.

    Attributes:
        paths (`list[Path]`): absolute paths of the audio files.
        labels (`list[tuple[str, ...]]`): each file's labels (exactly one in single-label data).
        label_names (`list[str]`): every label, sorted; a label's index is its model output index.
        single_label (`bool`): one label per file (softmax, accuracy) instead of multi-label (sigmoid, ROC-AUC).
        source (`str`): where the data came from, for messages.
    """

    paths: list[Path]
    labels: list[tuple[str, ...]]
    label_names: list[str]
    single_label: bool
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def targets(self, label_names: Sequence[str] | None = None) -> np.ndarray:
        """Training targets: class indices `(files,)` int64 (single-label) or multi-hot `(files, labels)` float32."""
        names = list(label_names if label_names is not None else self.label_names)
        index = {name: i for i, name in enumerate(names)}
        if self.single_label:
            return np.array([index[labels[0]] for labels in self.labels], dtype=np.int64)
        targets = np.zeros((len(self.paths), len(names)), dtype=np.float32)
        for row, labels in enumerate(self.labels):
            targets[row, [index[label] for label in labels]] = 1.0
        return targets

    def subset(self, indices: Sequence[int]) -> "LabelledData":
        """The files at `indices`, keeping the full label list (output order must not change)."""
        return LabelledData(
            [self.paths[i] for i in indices], [self.labels[i] for i in indices], self.label_names, self.single_label,
            self.source,
        )


def _split_labels(text: str) -> tuple[str, ...]:
    """`"rock; pop;;rock"` -> `("rock", "pop")`: split on ';', strip, drop empty pieces and repeats, keep order."""
    return tuple(dict.fromkeys(piece.strip() for piece in text.split(";") if piece.strip()))


def read_csv_data(csv_path: Path, single_label: bool) -> tuple[list[Path], list[tuple[str, ...]]]:
    """Read a `path,labels` CSV (labels separated by ';'; paths relative to the CSV's folder)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in (reader.fieldnames or [])]
        if "path" not in columns or "labels" not in columns:
            raise ValueError(
                f"The CSV {str(csv_path)!r} has the columns {columns}, but needs 'path' and 'labels': a header row "
                "`path,labels`, then one audio file per row with its labels separated by ';' (e.g. "
                "`songs/a.mp3,rock;guitar`)."
            )
        reader.fieldnames = columns
        paths, labels = [], []
        for line, row in enumerate(reader, start=2):
            path_text = (row.get("path") or "").strip()
            if not path_text:
                raise ValueError(f"{csv_path}, line {line}: the 'path' column is empty. Give an audio file path.")
            row_labels = _split_labels(row.get("labels") or "")
            if not row_labels:
                raise ValueError(
                    f"{csv_path}, line {line} ({path_text!r}) has no labels (labels column: {row.get('labels')!r}). "
                    "Give at least one label, several separated by ';', or remove the row."
                )
            if single_label and len(row_labels) != 1:
                raise ValueError(
                    f"{csv_path}, line {line} ({path_text!r}) has {len(row_labels)} labels {list(row_labels)}, but "
                    "--single-label takes exactly one label per file. Drop --single-label for multi-label training."
                )
            path = Path(path_text).expanduser()
            paths.append(path if path.is_absolute() else (csv_path.parent / path))
            labels.append(row_labels)
    if not paths:
        raise ValueError(f"The CSV {str(csv_path)!r} has a header but no rows: add one row per audio file.")
    return paths, labels


def read_folder_data(folder: Path) -> tuple[list[Path], list[tuple[str, ...]]]:
    """Read a folder of label folders: `folder/<label>/**/<audio file>` (single-label)."""
    label_folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_folders:
        raise ValueError(
            f"The folder {str(folder)!r} has no sub-folders. Put each label's audio files in a sub-folder named "
            "after the label (e.g. genres/rock/a.mp3, genres/jazz/b.flac), or pass a CSV with columns path,labels."
        )
    paths, labels = [], []
    for label_folder in label_folders:
        files = sorted(
            p for p in label_folder.rglob("*")
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
        )  # fmt: skip
        if not files:
            raise ValueError(
                f"The label folder {str(label_folder)!r} holds no audio files (endings read: "
                f"{' '.join(sorted(AUDIO_EXTENSIONS))}). Add files or remove the folder."
            )
        paths.extend(files)
        labels.extend([(label_folder.name,)] * len(files))
    return paths, labels


def read_data(data: str | os.PathLike, single_label: bool) -> LabelledData:
    """Read labelled audio from a `path,labels` CSV or a folder of label folders, and check it.

    Args:
        data: a CSV file or a folder (see the module docstring).
        single_label: one label per file. Forced to True for folders.

    Raises:
        FileNotFoundError: `data` or listed audio files do not exist.
        ValueError: wrong CSV columns, rows without labels, several labels with `single_label`, duplicate files,
            fewer than two classes.
    """
    source = Path(data).expanduser()
    if not source.exists():
        raise FileNotFoundError(
            f"--data {str(source)!r} does not exist. Pass a CSV with columns path,labels or a folder with one "
            "sub-folder per label."
        )
    if source.is_dir():
        paths, labels = read_folder_data(source)
        single_label = True
    else:
        paths, labels = read_csv_data(source, single_label)
    paths = [p.resolve() for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = "\n  ".join(missing[:5]) + ("\n  ..." if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} audio files listed in {str(source)!r} do not exist:\n  {shown}\n"
            "Fix the paths (relative paths are relative to the CSV's folder) or remove those rows."
        )
    seen: dict[Path, int] = {}
    for index, path in enumerate(paths):
        if path in seen:
            raise ValueError(
                f"{str(path)!r} is listed twice in {str(source)!r} (entries {seen[path] + 1} and {index + 1}); a file "
                "would leak between training and validation. List each file once with all its labels."
            )
        seen[path] = index
    label_names = sorted({label for row in labels for label in row})
    if len(label_names) < 2:
        kind = "single-label" if single_label else "multi-label"
        raise ValueError(
            f"{str(source)!r} has a single label {label_names} for all {len(paths)} files; {kind} classification "
            "needs at least 2 different labels (a model that always answers the same thing learns nothing)."
        )
    return LabelledData(paths, labels, label_names, single_label, str(source))


def split_data(data: LabelledData, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic training / validation split of file indices.

    Single-label data is split per class (each class with at least 2 files gives
    `max(1, round(val_fraction * files))` files to validation, always leaving one for training); multi-label data is
    shuffled and `max(1, round(val_fraction * files))` files go to validation. The same `seed` gives the same split.

    Raises:
        ValueError: too few files for both splits to be non-empty.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    rng = np.random.default_rng(seed)
    val: list[int] = []
    if data.single_label:
        by_class: dict[str, list[int]] = {}
        for index, labels in enumerate(data.labels):
            by_class.setdefault(labels[0], []).append(index)
        for name in data.label_names:
            members = by_class.get(name, [])
            if len(members) < 2:
                continue
            count = min(len(members) - 1, max(1, round(val_fraction * len(members))))
            val.extend(rng.permutation(members)[:count].tolist())
    elif len(data) >= 2:
        count = min(len(data) - 1, max(1, round(val_fraction * len(data))))
        val = rng.permutation(len(data))[:count].tolist()
    val = sorted(val)
    held = set(val)
    train = [i for i in range(len(data)) if i not in held]
    if not val or not train:
        need = "at least 2 files of one class" if data.single_label else "at least 2 files"
        raise ValueError(
            f"{data.source!r} has {len(data)} files: too few for a training and a validation split ({need}). Add "
            "files, or give a separate validation set with --val-data."
        )
    return train, val


def check_validation_labels(train: LabelledData, val: LabelledData) -> list[str]:
    """Check that validation metrics are defined; returns the labels that can be scored (multi-label) or all.

    Multi-label ROC-AUC / PR-AUC of a label need validation files with and without it; labels without both are left
    out of the macro averages (a warning names them). At least one label must be scorable.
    """
    unknown = sorted({label for row in val.labels for label in row} - set(train.label_names))
    if unknown:
        raise ValueError(
            f"The validation data {val.source!r} has labels the training data lacks: {unknown}. The model can only "
            "predict labels it was trained on: add training files with them or remove them from validation."
        )
    if train.single_label:
        return list(train.label_names)
    targets = val.targets(train.label_names)
    positives = targets.sum(axis=0)
    scorable = [name for name, count in zip(train.label_names, positives) if 0 < count < len(val)]
    if not scorable:
        raise ValueError(
            f"No label can be scored on the {len(val)} validation files: ROC-AUC needs, for some label, validation "
            "files with it and without it. Use a larger --val-fraction, another --seed, more files, or --val-data."
        )
    skipped = [name for name in train.label_names if name not in scorable]
    if skipped:
        logger.warning(
            "%d label(s) are all-present or all-absent in the %d validation files and are left out of ROC-AUC / "
            "PR-AUC: %s", len(skipped), len(val), ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
        )
    return scorable


def training_and_validation_data(
    data: str, val_data: str | None, single_label: bool, val_fraction: float, seed: int
) -> tuple[LabelledData, LabelledData, LabelledData]:
    """Read `--data` (and `--val-data`), split off validation when there is no `--val-data`, and check both.

    Returns `(all of --data, training files, validation files)`; the label list (output order) is --data's.
    """
    everything = read_data(data, single_label)
    if val_data:
        val = read_data(val_data, everything.single_label)
        val = LabelledData(val.paths, val.labels, everything.label_names, everything.single_label, val.source)
        overlap = set(everything.paths) & set(val.paths)
        if overlap:
            raise ValueError(
                f"{len(overlap)} file(s) are in both --data and --val-data (e.g. {str(sorted(overlap)[0])!r}); "
                "validation files must not be trained on. Remove them from one of the two."
            )
        train = everything
    else:
        train_index, val_index = split_data(everything, val_fraction, seed)
        train, val = everything.subset(train_index), everything.subset(val_index)
    check_validation_labels(train, val)
    return everything, train, val


def classification_metrics(logits: np.ndarray, targets: np.ndarray, single_label: bool) -> dict[str, float]:
    """Validation metrics of track logits.

    Args:
        logits: `(files, labels)` logits (any monotonic score works: the metrics use ranks or the arg-max).
        targets: class indices `(files,)` (single-label) or multi-hot `(files, labels)` (multi-label).
        single_label: which task.

    Returns:
        Single-label: `{"accuracy"}` (fraction of files whose top label is right). Multi-label: `{"roc_auc",
        "pr_auc", "labels_scored"}`: the macro averages (unweighted mean over labels) of sklearn's `roc_auc_score`
        and `average_precision_score` over the labels present in some but not all files (the others have no defined
        score); `labels_scored` counts them.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(logits).all():
        raise ValueError("The model produced NaN or infinite logits; lower --learning-rate.")
    if single_label:
        return {"accuracy": float((logits.argmax(axis=1) == np.asarray(targets)).mean())}
    from sklearn.metrics import average_precision_score, roc_auc_score

    targets = np.asarray(targets)
    positives = targets.sum(axis=0)
    columns = [j for j in range(targets.shape[1]) if 0 < positives[j] < targets.shape[0]]
    if not columns:
        raise ValueError("No label is present in some but not all files: ROC-AUC is undefined for these targets.")
    roc = [roc_auc_score(targets[:, j], logits[:, j]) for j in columns]
    pr = [average_precision_score(targets[:, j], logits[:, j]) for j in columns]
    return {"roc_auc": float(np.mean(roc)), "pr_auc": float(np.mean(pr)), "labels_scored": len(columns)}


# ---------------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------------


def file_fingerprint(path: str | os.PathLike) -> dict:
    """What identifies a file's content for caches: absolute path, size in bytes and modification time in ns."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write an .npy file so that an interrupted run never leaves a truncated entry behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


class FeatureStore:
    """Normalised log-mel frames `(frames, 96)` float32 of audio files, decoded once.

    Files are decoded with `feature_extraction_maest.load_audio` (ffmpeg, mean downmix, soxr to 16 kHz) and turned
    into `input_values` by the model's feature extractor. Without `cache_dir` the features stay in memory (about
    23 kB per second of audio); with it each file's features are written to `cache_dir/<key>.npy` (key: the file's
    path, size and modification time and the extractor's settings) and read back memory-mapped, also by later runs.
    """

    def __init__(self, feature_extractor, cache_dir: str | os.PathLike | None = None):
        self.feature_extractor = feature_extractor
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        settings = feature_extractor.to_dict()
        self._settings = {k: settings.get(k) for k in ("mean", "std", "do_normalize", "padding_value", "sampling_rate")}
        self.decoded = 0  # files decoded by this store (cache misses)

    def _key(self, path: Path) -> str:
        blob = json.dumps({"file": file_fingerprint(path), "extractor": self._settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _compute(self, path: Path) -> np.ndarray:
        from feature_extraction_maest import load_audio

        audio, _ = load_audio(path)
        try:
            features = self.feature_extractor(audio, sampling_rate=16000, return_tensors="np")["input_values"][0]
        except ValueError as error:
            raise ValueError(f"{str(path)!r}: {error}") from None
        self.decoded += 1
        return np.ascontiguousarray(features, dtype=np.float32)

    def load(self, paths: Sequence[Path], progress: bool = True) -> list[np.ndarray]:
        """Features of every file in `paths` (in order), decoding the ones not cached yet."""
        from tqdm.auto import tqdm

        result = []
        for path in tqdm(paths, desc="Decoding audio", unit="file", disable=not progress):
            if self.cache_dir is None:
                result.append(self._compute(path))
                continue
            entry = self.cache_dir / f"{self._key(path)}.npy"
            if not entry.exists():
                _atomic_save_npy(entry, self._compute(path))
            result.append(np.load(entry, mmap_mode="r"))
        return result


class RandomCropDataset(torch.utils.data.Dataset):
    """Training items: one random window of `window` frames of a track per item (shorter tracks whole).

    Item `i` is track `i % tracks`, so `crops_per_track` > 1 shows every track several times per epoch, each time
    with a new crop. Crop starts are drawn uniformly from all start frames with torch's global generator (seeded by
    the Trainer).
    """

    def __init__(self, features: Sequence[np.ndarray], targets: np.ndarray, window: int, crops_per_track: int = 1):
        self.features, self.targets, self.window, self.crops_per_track = features, targets, window, crops_per_track

    def __len__(self) -> int:
        return len(self.features) * self.crops_per_track

    def __getitem__(self, index: int) -> dict:
        track = index % len(self.features)
        features = self.features[track]
        start = 0
        if features.shape[0] > self.window:
            start = int(torch.randint(0, features.shape[0] - self.window + 1, ()).item())
        crop = np.array(features[start : start + self.window], dtype=np.float32)
        return {"input_values": torch.from_numpy(crop), "labels": torch.as_tensor(self.targets[track])}


class TrackDataset(torch.utils.data.Dataset):
    """Evaluation items: whole tracks (the model cuts them into windows and pools the window predictions)."""

    def __init__(self, features: Sequence[np.ndarray], targets: np.ndarray):
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        features = np.array(self.features[index], dtype=np.float32)
        return {"input_values": torch.from_numpy(features), "labels": torch.as_tensor(self.targets[index])}


def collate(items: Sequence[dict], padding_value: float = 0.0) -> dict:
    """Pad `(frames, 96)` items to the longest; returns input_values `(batch, frames, 96)`, attention_mask
    `(batch, frames)` (1 = real frame) and labels stacked (float multi-hot or int64 indices)."""
    longest = max(item["input_values"].shape[0] for item in items)
    batch = torch.full((len(items), longest, items[0]["input_values"].shape[1]), padding_value, dtype=torch.float32)
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for row, item in enumerate(items):
        frames = item["input_values"].shape[0]
        batch[row, :frames] = item["input_values"]
        mask[row, :frames] = 1
    return {"input_values": batch, "attention_mask": mask, "labels": torch.stack([item["labels"] for item in items])}


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def load_feature_extractor(model_name_or_path: str):
    """The model's `MaestFeatureExtractor`, or the default one when the model has no preprocessor_config.json."""
    from feature_extraction_maest import MaestFeatureExtractor

    try:
        return MaestFeatureExtractor.from_pretrained(model_name_or_path)
    except OSError:
        logger.warning("%s has no preprocessor_config.json; using MaestFeatureExtractor's defaults.", model_name_or_path)
        return MaestFeatureExtractor()


def build_model(
    model_name_or_path: str,
    label_names: Sequence[str],
    single_label: bool,
    patchout: dict | None = None,
    **from_pretrained_kwargs,
):
    """Load MAEST with a head for `label_names`.

    The encoder comes from `model_name_or_path`. The head is kept when the base model has exactly these labels in
    this order (continued training), and is new (random, as `ignore_mismatched_sizes=True` does for a different
    number of labels) otherwise, even when only the names differ. `patchout` sets the `train_patchout_*` /
    `train_random_time_offset` config fields (active in training mode only).
    """
    from configuration_maest import MaestConfig
    from modeling_maest import MaestForAudioClassification

    base_config = MaestConfig.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
    base_labels = [base_config.id2label[i] for i in range(base_config.num_labels)] if base_config.id2label else []
    id2label = dict(enumerate(label_names))
    model = MaestForAudioClassification.from_pretrained(
        model_name_or_path,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        problem_type="single_label_classification" if single_label else "multi_label_classification",
        ignore_mismatched_sizes=True,
        **(patchout or {}),
        **from_pretrained_kwargs,
    )
    if base_labels != list(label_names) and len(base_labels) == len(label_names):
        # Same size, other labels: from_pretrained kept the old rows, which would mean other classes.
        with torch.no_grad():
            torch.nn.init.normal_(model.classifier.dense.weight, std=model.config.initializer_range)
            torch.nn.init.zeros_(model.classifier.dense.bias)
    return model


def save_model_folder(model, feature_extractor, folder: Path) -> None:
    """Save the model the way the published repositories are laid out, so that
    `pipeline("audio-classification", model=folder, trust_remote_code=True)` and the Auto classes load it: weights,
    config with `auto_map` and `custom_pipelines`, the code files, and `preprocessor_config.json`."""
    from configuration_maest import MaestConfig
    from feature_extraction_maest import MaestFeatureExtractor
    from modeling_maest import MaestForAudioClassification

    model.config.custom_pipelines = json.loads((ROOT / "config.json").read_text())["custom_pipelines"]
    MaestConfig.register_for_auto_class()
    MaestForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
    MaestFeatureExtractor.register_for_auto_class()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    feature_extractor.save_pretrained(folder)
    # AutoModel gives the encoder alone (embeddings), as in the published repositories.
    config_path = folder / "config.json"
    config_json = json.loads(config_path.read_text())
    config_json.setdefault("auto_map", {})["AutoModel"] = "modeling_maest.MaestModel"
    config_path.write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")


def push_folder_to_hub(folder: Path, repo_id: str, private: bool, ignore_patterns: Sequence[str] = ()) -> str:
    """Create `repo_id` on the Hugging Face Hub (if needed) and upload `folder`; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        commit_message="Upload fine-tuned MAEST",
        ignore_patterns=list(ignore_patterns) or None,
    )
    return str(getattr(commit, "commit_url", commit))


def write_model_card(folder: Path, base_model: str, data: LabelledData, metrics: dict) -> None:
    task = "single-label" if data.single_label else "multi-label"
    final = metrics["final"]
    scores = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float))
    text = f"""---
library_name: transformers
pipeline_tag: audio-classification
base_model: {base_model}
tags: [maest, audio-classification, music]
---

# MAEST fine-tuned ({task}, {len(data.label_names)} labels)

Fine-tuned from `{base_model}` with `scripts/finetune.py` on {metrics['num_train_files']} files
(validation: {metrics['num_val_files']} files; {scores}).

```python
from transformers import pipeline

pipe = pipeline("audio-classification", model="<this repo or folder>", trust_remote_code=True)
pipe("song.mp3")
```

Labels: {", ".join(data.label_names)}
"""
    (folder / "README.md").write_text(text)


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


def make_trainer(
    model,
    training_args,
    train_dataset,
    eval_dataset,
    single_label: bool,
    padding_value: float = 0.0,
    early_stopping_patience: int = 0,
):
    """A `transformers.Trainer` for MAEST: padding collator, track-level metrics, optional early stopping.

    `training_args` must evaluate and save on the same schedule with `metric_for_best_model` set when
    `early_stopping_patience` > 0.
    """
    from transformers import EarlyStoppingCallback, Trainer

    # MAEST's forward takes **kwargs, which the Trainer reads as "the model normalises its loss for gradient
    # accumulation itself" and then does not divide the loss by the accumulation steps (gradients would grow with
    # --gradient-accumulation-steps). MAEST's loss is a plain batch mean: let the Trainer scale it.
    model.accepts_loss_kwargs = False

    def compute_metrics(prediction) -> dict:
        return classification_metrics(prediction.predictions, prediction.label_ids, single_label)

    def track_logits(logits, labels):
        # The model also returns window logits, masks and starts; only the track logits are scored.
        return logits[0] if isinstance(logits, (tuple, list)) else logits

    callbacks = [EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience > 0 else []
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=lambda items: collate(items, padding_value),
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=track_logits,
        callbacks=callbacks,
    )


def epoch_history(log_history: Sequence[dict]) -> list[dict]:
    """Per-epoch rows `{"epoch", "step", "train_loss", "eval_loss", <metrics>}` from `Trainer.state.log_history`."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "train_runtime" in entry:  # the end-of-training summary: later entries are extra evaluations
            break
        if "epoch" not in entry:
            continue
        epoch = int(round(entry["epoch"]))
        row = rows.setdefault(epoch, {"epoch": epoch})
        if "eval_loss" in entry:
            row["step"] = entry["step"]
            for key, value in entry.items():
                if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
                    row[key[len("eval_") :] if key != "eval_loss" else "eval_loss"] = value
        elif "loss" in entry:
            row["train_loss"] = entry["loss"]
    return [rows[epoch] for epoch in sorted(rows) if "eval_loss" in rows[epoch]]


def _positive(name: str, kind=float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune.py",
        description="Fine-tune MAEST on labelled audio files; the output folder loads with "
        "pipeline('audio-classification', model=OUTPUT_DIR, trust_remote_code=True).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="CSV with columns path,labels (labels separated by ';', paths "
                      "relative to the CSV) or a folder with one sub-folder of audio files per label (single-label).")
    data.add_argument("--single-label", action="store_true", help="One label per file: softmax, cross-entropy and "
                      "accuracy instead of independent sigmoids, binary cross-entropy and ROC-AUC / PR-AUC. Implied "
                      "by a folder --data.")
    data.add_argument("--val-data", help="Separate validation set (CSV or folder, same format); default: split "
                      "--val-fraction of --data off.")
    data.add_argument("--val-fraction", type=float, default=0.2, help="Fraction of the files held out for "
                      "validation (per class for single-label), between 0 and 1.")
    data.add_argument("--feature-cache", help="Folder for the decoded log-mel features (one .npy per file, reused by "
                      "later runs on the same files); default: keep them in memory.")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULT_MODEL, help="Base model: a Hub repo id or a local folder "
                       "(this project's layout or the published mtg-upf AST layout).")
    model.add_argument("--output-dir", required=True, help="Folder for the fine-tuned model, metrics.json and "
                       "README.md; must be empty or absent unless --overwrite.")
    model.add_argument("--overwrite", action="store_true", help="Allow writing into a non-empty --output-dir.")
    model.add_argument("--freeze-encoder", action="store_true", help="Train only the classification head (fast, "
                       "for small data sets); the encoder keeps the base model's weights.")
    model.add_argument("--gradient-checkpointing", action="store_true", help="Recompute block activations in the "
                       "backward pass: less memory, about 30%% more time.")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=_positive("--epochs", int), default=10,
                          help="Most passes over the training files (early stopping may end sooner).")
    training.add_argument("--batch-size", type=_positive("--batch-size", int), default=8,
                          help="Windows (one random crop per track) per training step.")
    training.add_argument("--eval-batch-size", type=_positive("--eval-batch-size", int), default=None,
                          help="Whole tracks per validation step; default: --batch-size.")
    training.add_argument("--gradient-accumulation-steps", type=_positive("--gradient-accumulation-steps", int),
                          default=1, help="Batches whose gradients are summed per optimiser step.")
    training.add_argument("--crops-per-track", type=_positive("--crops-per-track", int), default=1,
                          help="Random windows of each track per epoch.")
    training.add_argument("--learning-rate", type=_positive("--learning-rate"), default=None,
                          help="Peak AdamW learning rate; default 5e-5, or 1e-3 with --freeze-encoder.")
    training.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay.")
    training.add_argument("--warmup-ratio", type=float, default=0.1, help="Fraction of the steps with a linear "
                          "learning-rate warm-up (then linear decay to 0), in [0, 1).")
    training.add_argument("--early-stopping-patience", type=non_negative_int, default=3,
                          help="Stop after this many epochs without a better validation score (ROC-AUC for "
                          "multi-label, accuracy for single-label); 0 = never stop early.")
    training.add_argument("--seed", type=int, default=0, help="Seed of the split, the initial head, the crops and "
                          "the batches.")
    training.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                          help="Where to train; auto picks a GPU when there is one.")
    training.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (recent GPUs).")
    training.add_argument("--keep-checkpoints", action="store_true", help="Keep the per-epoch Trainer checkpoints "
                          "in OUTPUT_DIR/checkpoints (removed by default).")
    training.add_argument("--no-progress", action="store_true", help="No progress bars.")

    patchout = parser.add_argument_group("training-time patchout (PaSST / MAEST; training mode only, never at "
                                         "evaluation)")
    patchout.add_argument("--patchout-time", type=non_negative_int, default=0, help="Random time columns of the "
                          "patch grid dropped per batch (a column is 10 frames = 0.16 s; 62 per 10 s window).")
    patchout.add_argument("--patchout-freq", type=non_negative_int, default=0, help="Random frequency rows of the "
                          "patch grid dropped per batch (of 9).")
    patchout.add_argument("--patchout-unstructured", type=non_negative_int, default=0, help="Random patch tokens "
                          "dropped per batch after the structured patchout.")
    patchout.add_argument("--random-time-offset", action="store_true", help="Windows shorter than the position "
                          "table use positions from a random offset (per batch) instead of the first ones.")

    hub = parser.add_argument_group("publishing")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="Upload the output folder to this Hugging Face Hub "
                     "model repository (created if needed; needs a login: `hf auth login`).")
    hub.add_argument("--private", action="store_true", help="Create the --push-to-hub repository as private.")
    return parser


def _accelerator_available() -> bool:
    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def _resolve_device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU. Use --device cpu or auto.")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for, but the MPS backend is not available. Use --device cpu or auto.")
    return name


def main(argv: Sequence[str] | None = None) -> dict:
    """Run fine-tuning; returns the contents of metrics.json. Raises ValueError / FileNotFoundError on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not 0 <= args.warmup_ratio < 1:
        raise ValueError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}.")
    if args.private and not args.push_to_hub:
        raise ValueError("--private applies to --push-to-hub REPO_ID; give a repository id or drop --private.")
    device = _resolve_device(args.device)
    output_dir = Path(args.output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {str(output_dir)!r} is a file; give a folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not args.overwrite:
        raise ValueError(
            f"--output-dir {str(output_dir)!r} is not empty; choose a new folder or pass --overwrite to write into it."
        )

    # Data first: bad input fails before any model is loaded.
    data, train_data, val_data = training_and_validation_data(
        args.data, args.val_data, args.single_label, args.val_fraction, args.seed
    )
    single_label = data.single_label
    label_names = data.label_names
    logger.info(
        "%s: %d training and %d validation files, %d labels (%s).", data.source, len(train_data), len(val_data),
        len(label_names), "single-label" if single_label else "multi-label",
    )

    from transformers import TrainingArguments, set_seed

    set_seed(args.seed)
    feature_extractor = load_feature_extractor(args.model)
    store = FeatureStore(feature_extractor, args.feature_cache)
    train_features = store.load(train_data.paths, progress=not args.no_progress)
    val_features = store.load(val_data.paths, progress=not args.no_progress)

    patchout = {
        "train_patchout_time": args.patchout_time,
        "train_patchout_freq": args.patchout_freq,
        "train_patchout_unstructured": args.patchout_unstructured,
        "train_random_time_offset": args.random_time_offset,
    }
    model = build_model(args.model, label_names, single_label, patchout)
    gradient_checkpointing = args.gradient_checkpointing
    if args.freeze_encoder:
        model.audio_spectrogram_transformer.requires_grad_(False)
        if gradient_checkpointing:
            logger.warning("--gradient-checkpointing has nothing to save with --freeze-encoder; it is not used.")
            gradient_checkpointing = False

    learning_rate = args.learning_rate or (1e-3 if args.freeze_encoder else 5e-5)
    metric = BEST_METRIC[single_label]
    train_targets = train_data.targets(label_names)
    val_targets = val_data.targets(label_names)
    checkpoints = output_dir / "checkpoints"
    training_args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=2,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        activation_checkpointing=gradient_checkpointing,  # transformers >= 5.24's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        bf16=args.bf16,
        use_cpu=device == "cpu" or (device == "auto" and not _accelerator_available()),
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=device in ("auto", "cuda") and torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=args.no_progress,
    )

    trainer = make_trainer(
        model,
        training_args,
        RandomCropDataset(train_features, train_targets, model.config.max_length, args.crops_per_track),
        TrackDataset(val_features, val_targets),
        single_label,
        padding_value=float(feature_extractor.padding_value),
        early_stopping_patience=args.early_stopping_patience,
    )
    train_output = trainer.train()
    epochs = epoch_history(trainer.state.log_history)
    final = trainer.evaluate()
    final = {key[len("eval_") :]: value for key, value in final.items()
             if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))}  # fmt: skip
    best_step = trainer.state.best_global_step
    best_epoch = next((row["epoch"] for row in epochs if row.get("step") == best_step), None)

    model = trainer.model
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if gradient_checkpointing:
        model.activation_checkpointing_disable()
    save_model_folder(model, feature_extractor, output_dir)
    if not args.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)

    metrics = {
        "task": "single-label" if single_label else "multi-label",
        "base_model": args.model,
        "labels": list(label_names),
        "data": data.source,
        "validation": val_data.source if args.val_data else f"{args.val_fraction:g} of --data (seed {args.seed})",
        "num_train_files": len(train_data),
        "num_val_files": len(val_data),
        "train_files": [str(p) for p in train_data.paths],
        "val_files": [str(p) for p in val_data.paths],
        "metric_for_best_model": metric,
        "best_epoch": best_epoch,
        "epochs_run": len(epochs),
        "stopped_early": len(epochs) < args.epochs,
        "train_steps": train_output.global_step,
        "epochs": epochs,
        "final": final,
        "arguments": {key: value for key, value in vars(args).items()},
    }
    metrics["arguments"]["learning_rate"] = learning_rate
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(output_dir, args.model, data, metrics)
    logger.info("Saved the fine-tuned model to %s (best epoch %s: %s).", output_dir, best_epoch,
                ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float)))
    if args.push_to_hub:
        url = push_folder_to_hub(output_dir, args.push_to_hub, args.private, ["checkpoints/*"])
        metrics["pushed_to"] = url
        logger.info("Uploaded to %s", url)
    return metrics


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: bad input prints one line `finetune.py: error: ...` and exits with status 2."""
    return run_main(main, argv, "finetune.py")


if __name__ == "__main__":
    sys.exit(cli())
