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

    maest-finetune --data my_tracks.csv --output-dir my-maest --epochs 20 --batch-size 8
    maest-finetune --data genres/ --output-dir my-genres --freeze-encoder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .cli import DEFAULT_MODEL, non_negative_int, parse_arguments, positive, progress_bars_on, run_main
from .devices import accelerator_available, add_device_argument, resolve_device
from .features import decode_features, load_feature_extractor
from .files import file_fingerprint, save_npy
from .hub import PUBLISHED_WEIGHTS_LICENSE, derived_card_fields, push_folder, save_model_folder
from .labelled import (
    BEST_METRIC,
    LabelledData,
    add_data_arguments,
    classification_metrics,
    data_summary,
    training_and_validation_data,
)


logger = logging.getLogger("maest.finetune")


# ---------------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------------


class FeatureStore:
    """Normalised log-mel frames `(frames, 96)` float32 of audio files, decoded once.

    Files are decoded into `input_values` by `maest_tools.features.decode_features` (ffmpeg, mean downmix, soxr,
    the model's feature extractor). Without `cache_dir` the features stay in memory (about
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
        features, _info = decode_features(path, self.feature_extractor)
        self.decoded += 1
        return features

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
                save_npy(entry, self._compute(path))
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


def build_model(
    model_name_or_path: str,
    label_names: Sequence[str],
    single_label: bool,
    patchout: dict | None = None,
    **from_pretrained_kwargs,
):
    """Load MAEST with a head for `label_names`.

    The encoder comes from `model_name_or_path`. The head is kept when the base model has exactly these labels in
    this order (continued training), and is new otherwise, even when only the names differ: its Linear layer is
    initialised randomly (normal, std `config.initializer_range`; zero bias), the head LayerNorm is the base's. The
    base is loaded with its own head, so transformers reports only unexpected problems (missing or mismatched
    weights); the expected new head is announced in one log line. `patchout` sets the `train_patchout_*` /
    `train_random_time_offset` config fields (active in training mode only).
    """
    from modeling_maest import MaestForAudioClassification

    model = MaestForAudioClassification.from_pretrained(
        model_name_or_path, **(patchout or {}), **from_pretrained_kwargs
    )
    config = model.config
    base_labels = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else []
    if base_labels != list(label_names):
        old = model.classifier.dense
        # skip_init: no default initialisation drawn first, so after `set_seed` the new head's weights are the
        # ones `from_pretrained(..., ignore_mismatched_sizes=True)` gave (the first normal draw).
        head = torch.nn.utils.skip_init(torch.nn.Linear, old.in_features, len(label_names),
                                        device=old.weight.device, dtype=old.weight.dtype)  # fmt: skip
        with torch.no_grad():
            torch.nn.init.normal_(head.weight, std=config.initializer_range)
            torch.nn.init.zeros_(head.bias)
        model.classifier.dense = head
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
        model.num_labels = len(label_names)
        logger.info(
            "New classification head for %d labels (the base model's has %d): classifier.dense initialised randomly "
            "(expected when fine-tuning on new labels).", len(label_names), len(base_labels),
        )  # fmt: skip
    config.problem_type = "single_label_classification" if single_label else "multi_label_classification"
    if getattr(config, "random_weights", False):  # the demo marker: trained weights are no longer random
        del config.random_weights
    return model


def write_model_card(folder: Path, base_model: str, data: LabelledData, metrics: dict, base_config=None) -> None:
    """README.md of a fine-tuned folder: front matter with the licence of the base weights and `base_model` (a repo
    id; no line for a local folder), what was trained, usage and labels."""
    task = "single-label" if data.single_label else "multi-label"
    final = metrics["final"]
    scores = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float))
    derived = derived_card_fields(base_model, base_config)
    base_line = f"base_model: {derived['base_model']}\n" if derived["base_model"] else ""
    tags = "[maest, audio-classification, music" + (", random-weights]" if derived["random_weights"] else "]")
    if derived["random_weights"]:
        licence = ("The base model has random weights (`maest-convert --random-weights`): this model learnt only from "
                   f"the fine-tuning data. Its weights and code are under the Apache License 2.0.")  # fmt: skip
    elif derived["license"] == PUBLISHED_WEIGHTS_LICENSE:
        licence = ("The weights derive from the published MAEST weights of the Music Technology Group, Universitat "
                   "Pompeu Fabra, under CC BY-NC-SA 4.0 (non-commercial, share alike): this model is under the same "
                   "licence. The code files are under the Apache License 2.0.")  # fmt: skip
    else:
        licence = f"The weights carry the licence of the base model: `{derived['license']}`."
    text = f"""---
license: {derived['license']}
{base_line}library_name: transformers
pipeline_tag: audio-classification
tags: {tags}
---

# MAEST fine-tuned ({task}, {len(data.label_names)} labels)

Fine-tuned from `{base_model}` with `maest-finetune` on {metrics['num_train_files']} files
(validation: {metrics['num_val_files']} files; {scores}).

```python
from transformers import pipeline

pipe = pipeline("audio-classification", model="<this repo or folder>", trust_remote_code=True)
pipe("song.mp3")
```

Labels: {", ".join(data.label_names)}

## Licence

{licence}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maest-finetune",
        description="Fine-tune MAEST on labelled audio files; the output folder loads with "
        "pipeline('audio-classification', model=OUTPUT_DIR, trust_remote_code=True).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    add_data_arguments(data)
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
    training.add_argument("--epochs", type=positive("--epochs", int), default=10,
                          help="Most passes over the training files (early stopping may end sooner).")
    training.add_argument("--batch-size", type=positive("--batch-size", int), default=8,
                          help="Windows (one random crop per track) per training step.")
    training.add_argument("--eval-batch-size", type=positive("--eval-batch-size", int), default=None,
                          help="Whole tracks per validation step; default: --batch-size.")
    training.add_argument("--gradient-accumulation-steps", type=positive("--gradient-accumulation-steps", int),
                          default=1, help="Batches whose gradients are summed per optimiser step.")
    training.add_argument("--crops-per-track", type=positive("--crops-per-track", int), default=1,
                          help="Random windows of each track per epoch.")
    training.add_argument("--learning-rate", type=positive("--learning-rate"), default=None,
                          help="Peak AdamW learning rate; default 5e-5, or 1e-3 with --freeze-encoder.")
    training.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay.")
    training.add_argument("--warmup-ratio", type=float, default=0.1, help="Fraction of the steps with a linear "
                          "learning-rate warm-up (then linear decay to 0), in [0, 1).")
    training.add_argument("--early-stopping-patience", type=non_negative_int, default=3,
                          help="Stop after this many epochs without a better validation score (ROC-AUC for "
                          "multi-label, accuracy for single-label); 0 = never stop early.")
    training.add_argument("--seed", type=int, default=0, help="Seed of the split, the initial head, the crops and "
                          "the batches.")
    add_device_argument(training, "the model trains")
    training.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (recent GPUs).")
    training.add_argument("--keep-checkpoints", action="store_true", help="Keep the per-epoch Trainer checkpoints "
                          "in OUTPUT_DIR/checkpoints (removed by default).")
    training.add_argument("--no-progress", action="store_true", help="No progress bars (there are none "
                          "when stderr is not a terminal).")

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


def main(argv: Sequence[str] | None = None) -> dict:
    """Run fine-tuning; returns the contents of metrics.json. Raises ValueError / FileNotFoundError on bad input."""
    args = parse_arguments(build_parser(), argv)
    if not 0 <= args.warmup_ratio < 1:
        raise ValueError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}.")
    if args.private and not args.push_to_hub:
        raise ValueError("--private applies to --push-to-hub REPO_ID; give a repository id or drop --private.")
    if args.device != "auto":
        resolve_device(args.device)  # a device this machine lacks fails here, before any work
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
    progress = progress_bars_on(not args.no_progress)  # off in logs and pipes: no `ESC[A` codes of nested bars
    train_features = store.load(train_data.paths, progress=progress)
    val_features = store.load(val_data.paths, progress=progress)

    patchout = {
        "train_patchout_time": args.patchout_time,
        "train_patchout_freq": args.patchout_freq,
        "train_patchout_unstructured": args.patchout_unstructured,
        "train_random_time_offset": args.random_time_offset,
    }
    from configuration_maest import MaestConfig

    base_config = MaestConfig.from_pretrained(args.model)  # for the model card: licence, random base weights
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
        use_cpu=args.device == "cpu" or (args.device == "auto" and not accelerator_available()),
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=args.device in ("auto", "cuda") and torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=not progress,
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
    save_model_folder(model, output_dir, feature_extractor)
    if not args.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)

    metrics = {
        "base_model": args.model,
        **data_summary(data, train_data, val_data, args),
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
    write_model_card(output_dir, args.model, data, metrics, base_config)
    logger.info("Saved the fine-tuned model to %s (best epoch %s: %s).", output_dir, best_epoch,
                ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float)))
    if args.push_to_hub:
        url = push_folder(output_dir, args.push_to_hub, args.private, "Upload fine-tuned MAEST", ["checkpoints/*"])
        metrics["pushed_to"] = url
        logger.info("Uploaded to %s", url)
    return metrics


def cli(argv: Sequence[str] | None = None) -> int:
    """The `maest-finetune` command: bad input prints one line `maest-finetune: error: ...`, exit status 2."""
    return run_main(main, argv, "maest-finetune")


if __name__ == "__main__":
    sys.exit(cli())
