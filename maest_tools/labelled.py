# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Labelled audio for fine-tuning and probing: reading it, splitting it, and scoring predictions on it.

Labelled data is either

- a CSV file with a header row ``path,labels``: one audio file per row, its labels separated by ``;``
  (``rock;guitar;live``). Relative paths are relative to the CSV's folder. Multi-label unless ``single_label``,
  which requires exactly one label per row; or
- a folder with one sub-folder per label holding that label's audio files (single-label; the files are found by
  `maest_tools.discovery.walk_audio`, the tagger's extension list).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .discovery import AUDIO_EXTENSIONS, walk_audio


logger = logging.getLogger("maest.labelled")

# Validation metric that selects the best epoch and drives early stopping, by task.
BEST_METRIC = {False: "roc_auc", True: "accuracy"}


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
        files = [Path(path) for path in walk_audio(label_folder)]
        if not files:
            raise ValueError(
                f"The label folder {str(label_folder)!r} holds no audio files (endings read: "
                f"{' '.join(AUDIO_EXTENSIONS)}). Add files or remove the folder."
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



def add_data_arguments(parser) -> None:
    """The data options of maest-finetune and maest-probe (an argparse parser or argument group): `--data`,
    `--single-label`, `--val-data`, `--val-fraction`; read them with `training_and_validation_data`."""
    parser.add_argument("--data", required=True, help="CSV with columns path,labels (labels separated by ';', paths "
                        "relative to the CSV) or a folder with one sub-folder of audio files per label (single-label).")
    parser.add_argument("--single-label", action="store_true", help="One label per file: softmax, cross-entropy and "
                        "accuracy instead of independent sigmoids, binary cross-entropy and ROC-AUC / PR-AUC. Implied "
                        "by a folder --data.")
    parser.add_argument("--val-data", help="Separate validation set (CSV or folder, same format); default: split "
                        "--val-fraction of --data off.")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="Fraction of the files held out for "
                        "validation (per class for single-label), between 0 and 1.")


def data_summary(data: LabelledData, train: LabelledData, val: LabelledData, args) -> dict:
    """The data part of a run's metrics.json: task, labels, sources, and the training and validation files."""
    return {
        "task": "single-label" if data.single_label else "multi-label",
        "labels": list(data.label_names),
        "data": data.source,
        "validation": val.source if args.val_data else f"{args.val_fraction:g} of --data (seed {args.seed})",
        "num_train_files": len(train),
        "num_val_files": len(val),
        "train_files": [str(path) for path in train.paths],
        "val_files": [str(path) for path in val.paths],
    }
