# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert a MAEST checkpoint into a Hugging Face MAEST model folder, check it numerically, optionally push it.

Two kinds of source are read:

* a release file of the MAEST training repository (`*.ckpt`): a `torch.save`d state dict, or a Lightning checkpoint
  `{"state_dict": ...}` whose keys carry the prefixes `net_swa.` (the released SWA weights, used whenever present)
  and `net.`. Read with `torch.load(weights_only=True)`;
* a published `mtg-upf/discogs-maest-*` checkpoint (transformers AST layout, pre-5.0 key names): a folder, or a
  Hub repo id, holding `config.json` and `model.safetensors` (or `pytorch_model.bin`).

The architecture is read from the tensor shapes (width, depth, MLP width, time positions, labels; heads = width // 64,
as in every MAEST model), or checked against one of the eight published variants with `--arch`. The output folder
holds `config.json` (`model_type: "maest"`, `auto_map`, the custom pipeline), `model.safetensors`, the three
remote-code modules, `preprocessor_config.json` and a model card (`README.md`), written by `maest_tools.hub`.

The folder is then checked: every source tensor must stand, bit for bit, where the key tables put it (the query, key
and value rows of each block's `qkv`, the position table composed frequency-major as `freq_pos[f] + time_pos[t]`);
and the reloaded float32 model's logits and per-token hidden states must match a float64 run of the source tensors
in `MaestForAudioClassification` (for a published folder at the full window: transformers' own
`ASTForAudioClassification`), at the full window and at a shorter one (tolerance 1e-4). The numbers go into the
model card.

With `--random-weights --arch NAME` (no checkpoint), it writes the same complete folder with random weights
instead (`write_random_folder`): a demo model for trying the tools offline, marked as such in its config
(`random_weights: true`) and model card.

Usage:
    maest-convert --checkpoint discogs-maest-10s-fs-129e.ckpt \
        --output converted/discogs-maest-10s-fs-129e [--arch discogs-maest-10s-fs-129e]
    maest-convert --checkpoint mtg-upf/discogs-maest-30s-pw-129e-519l \
        --output converted/discogs-maest-30s-pw-129e-519l --push-to-hub my-org/discogs-maest-30s-pw-129e-519l
    maest-convert --random-weights --arch discogs-maest-10s-fs-129e --output demo-model
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from configuration_maest import ESSENTIA_WINDOW_HOPS, FRAMES_PER_SECOND, MAEST_PRESETS, MaestConfig, num_patches
from modeling_maest import MaestForAudioClassification

from .cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, progress_bars_on
from .files import sha256_file
from .hub import push_folder, save_model_folder


# ---------------------------------------------------------------------------------------------------------------------
# Facts about every MAEST model: the defaults of MaestConfig describe them
# ---------------------------------------------------------------------------------------------------------------------

_MAEST = MaestConfig()
HEAD_DIM = _MAEST.hidden_size // _MAEST.num_attention_heads  # 64: heads = hidden_size // 64 in every MAEST model
PATCH_SIZE = _MAEST.patch_size
PATCH_STRIDE = _MAEST.frequency_stride  # the time stride is the same
NUM_MEL_BINS = _MAEST.num_mel_bins
FREQUENCY_PATCHES = num_patches(PATCH_SIZE, NUM_MEL_BINS, PATCH_SIZE, PATCH_STRIDE, PATCH_STRIDE)[0]  # 9
LAYER_NORM_EPS = _MAEST.layer_norm_eps  # blocks and final norm of the release models
VIT_BASE = {name: getattr(_MAEST, name)
            for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}  # fmt: skip

PACKAGE = Path(__file__).resolve().parent
LABELS_DIR = PACKAGE / "labels"
LABEL_FILES = {400: "discogs_400_labels.json", 519: "discogs_519_labels.json"}
MODEL_CARD_TEMPLATE = PACKAGE / "model_card_template.md"
TOLERANCE = 1e-4  # max abs difference of logits and hidden states, float32 model vs the source forward
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# ---------------------------------------------------------------------------------------------------------------------
# Key tables: release .ckpt names -> MAEST names (= the pre-5.0 transformers AST names of the published models)
# ---------------------------------------------------------------------------------------------------------------------

AST = "audio_spectrogram_transformer."

# Tensors copied as they are, renamed.
RELEASE_RENAMES = {
    "cls_token": AST + "embeddings.cls_token",
    "dist_token": AST + "embeddings.distillation_token",
    "patch_embed.proj.weight": AST + "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": AST + "embeddings.patch_embeddings.projection.bias",
    "norm.weight": AST + "layernorm.weight",
    "norm.bias": AST + "layernorm.bias",
    "head.0.weight": "classifier.layernorm.weight",  # head LayerNorm, eps 1e-5 (config.head_layer_norm_eps)
    "head.0.bias": "classifier.layernorm.bias",
    "head.1.weight": "classifier.dense.weight",
    "head.1.bias": "classifier.dense.bias",
}

# Per block: `blocks.{i}.<release>` -> `audio_spectrogram_transformer.encoder.layer.{i}.<maest>`.
RELEASE_BLOCK_RENAMES = {
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "attn.proj.weight": "attention.output.dense.weight",
    "attn.proj.bias": "attention.output.dense.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
    "mlp.fc1.weight": "intermediate.dense.weight",
    "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight",
    "mlp.fc2.bias": "output.dense.bias",
}

# Tensors rebuilt rather than renamed (see `release_to_maest`):
#   blocks.{i}.attn.qkv.{weight,bias}, rows stacked [query; key; value]
#       -> encoder.layer.{i}.attention.attention.{query,key,value}.{weight,bias}, E rows each
#   new_pos_embed (1, 2, E) [cls; dist], freq_new_pos_embed (1, E, F, 1), time_new_pos_embed (1, E, 1, T)
#       -> embeddings.position_embeddings (1, 2 + F*T, E) = [cls pos; dist pos; freq_pos[f] + time_pos[t]],
#          patch (f, t) at row 2 + f*T + t (frequency-major)
RELEASE_QKV = ("attn.qkv.weight", "attn.qkv.bias")
RELEASE_POSITIONS = ("new_pos_embed", "freq_new_pos_embed", "time_new_pos_embed")

# Dropped: the distillation head (not used at inference) and the front-end buffers some versions save.
RELEASE_DROPPED_PREFIXES = ("head_dist.", "melspectrogram.")

# Prefixes of Lightning checkpoints, best first: the released weights are the SWA ones.
LIGHTNING_PREFIXES = ("net_swa.", "net.")


class ConversionError(UsageError):
    """A source that cannot be converted: the message names the problem, the value seen and the fix."""


class CheckFailed(ConversionError):
    """The converted folder does not reproduce the source model."""


# ---------------------------------------------------------------------------------------------------------------------
# Shapes and variants
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaestShape:
    """The architecture of a MAEST checkpoint, as read from its tensors.

    Args:
        hidden_size: token width E.
        num_hidden_layers: transformer blocks.
        num_attention_heads: heads per block (hidden_size // 64 for a release file).
        intermediate_size: MLP width.
        frequency_patches: frequency rows F of the position table (9 for 96 mel bins).
        time_positions: time columns T of the position table.
        num_labels: outputs of the head.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    frequency_patches: int
    time_positions: int
    num_labels: int

    @property
    def max_length(self) -> int:
        """Window in mel frames: the shortest input with `time_positions` time patches (62 -> 626)."""
        return (self.time_positions - 1) * PATCH_STRIDE + PATCH_SIZE

    def describe(self) -> str:
        return (
            f"hidden {self.hidden_size}, {self.num_hidden_layers} blocks, {self.num_attention_heads} heads, MLP "
            f"{self.intermediate_size}, {self.frequency_patches} x {self.time_positions} patch positions "
            f"(window {self.max_length} frames = {self.max_length / FRAMES_PER_SECOND:g} s), {self.num_labels} labels"
        )


def preset_mismatches(shape: MaestShape, name: str) -> list[str]:
    """Differences between `shape` and the published variant `name`, as 'field: expected X, found Y' lines."""
    preset = MAEST_PRESETS[name]
    expected = dict(VIT_BASE, frequency_patches=FREQUENCY_PATCHES, time_positions=preset["time_positions"],
                    num_labels=preset["num_labels"])  # fmt: skip
    return [
        f"{key}: expected {value}, found {getattr(shape, key)}"
        for key, value in expected.items()
        if getattr(shape, key) != value
    ]


def matching_variants(shape: MaestShape) -> list[str]:
    """Names of the published variants whose shapes equal `shape` (several share a shape: 10 s fs / pw / dw)."""
    return [name for name in MAEST_PRESETS if not preset_mismatches(shape, name)]


def select_variant(shape: MaestShape, arch: str | None, source_name: str | None) -> tuple[str | None, str]:
    """The published variant of the checkpoint, or None for a custom shape; and a sentence saying how it was chosen.

    `arch` (the `--arch` option) must name a variant whose shapes match. Without it, a unique match is taken, or the
    source's own name (folder or repo name) when it is one of several matches.
    """
    if arch is not None:
        if arch not in MAEST_PRESETS:
            raise ConversionError(
                f"--arch {arch!r} is not a published MAEST variant. Choose one of: {', '.join(MAEST_PRESETS)}; or "
                "leave --arch out to read the architecture from the checkpoint."
            )
        problems = preset_mismatches(shape, arch)
        if problems:
            raise ConversionError(
                f"The checkpoint does not have the shapes of {arch}:\n  " + "\n  ".join(problems) + "\n"
                f"It has {shape.describe()}. "
                + (f"Its shapes match {', '.join(matching_variants(shape))}. " if matching_variants(shape) else "")
                + "Leave --arch out to convert it with the architecture read from its tensors."
            )
        return arch, f"{arch} (named with --arch; its shapes checked)"
    matches = matching_variants(shape)
    if len(matches) == 1:
        return matches[0], f"{matches[0]} (the only published variant with these shapes)"
    if matches and source_name in matches:
        return source_name, f"{source_name} (named by the source; same shapes as {', '.join(matches)})"
    if matches:
        return None, f"one of {', '.join(matches)} (same shapes; pass --arch NAME to name it)"
    return None, "no published variant has these shapes: converted as a custom MAEST"


def load_label_list(num_labels: int, labels_path: str | None) -> list[str]:
    """Style names in output order: from `labels_path` (a JSON list), else the shipped Discogs 400 / 519 list."""
    if labels_path is not None:
        path = Path(labels_path)
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConversionError(f"--labels {labels_path}: no such file.") from None
        except json.JSONDecodeError as error:
            raise ConversionError(f"--labels {labels_path} is not valid JSON ({error}).") from None
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ConversionError(f"--labels {labels_path} must hold a JSON list of label names (strings).")
        if len(labels) != num_labels:
            raise ConversionError(
                f"--labels {labels_path} holds {len(labels)} names but the checkpoint's head has {num_labels} "
                "outputs. Pass a list with one name per output, in output order."
            )
    elif num_labels in LABEL_FILES:
        labels = json.loads((LABELS_DIR / LABEL_FILES[num_labels]).read_text(encoding="utf-8"))
    else:
        raise ConversionError(
            f"The checkpoint's head has {num_labels} outputs; the published MAEST models have 400 or 519 (Discogs "
            "styles), whose names ship with this script. Pass --labels FILE.json, a JSON list of "
            f"{num_labels} names in output order."
        )
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        raise ConversionError(f"The label list repeats names: {duplicates[:5]}. Label names must be unique.")
    return labels


# ---------------------------------------------------------------------------------------------------------------------
# Reading sources
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    """A checkpoint read into memory.

    Attributes:
        kind: `"release"` (training-repository names, prefixes removed) or `"hub"` (pre-5.0 AST names).
        location: the path or repo id given.
        name: a short name (file stem, folder or repo name), used to recognise a variant name.
        tensors: the state dict.
        weights_file: the file the tensors came from.
        hub_config: `config.json` of a Hub-layout source.
        folder: the folder of a Hub-layout source.
        notes: what was done while reading (prefix choice, dropped tensors), for the report.
    """

    kind: str
    location: str
    name: str
    tensors: dict[str, torch.Tensor]
    weights_file: Path
    hub_config: dict | None = None
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)
    repo_id: str | None = None  # the Hub repo id read (None for a local file or folder): the card's `base_model`


def _short_list(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _torch_load(path: Path, allow_pickle: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # noqa: BLE001 - torch raises many types for foreign files; we name the cause below
        message = str(error)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if found:
            raise ConversionError(
                f"{path} holds Python objects other than tensors (e.g. {found.group(1)}), which "
                "torch.load(weights_only=True) refuses to unpickle. If you trust the file, pass --allow-pickle to "
                "unpickle it fully (this can run code stored in the file)."
            ) from None
        # torch's own message is long; keep the line that says what is wrong.
        detail = message.split("WeightsUnpickler error:")[-1].strip() if "WeightsUnpickler" in message else message
        detail = next((line for line in detail.splitlines() if line.strip()), "")[:200]
        raise ConversionError(
            f"{path} is not a checkpoint torch can read ({type(error).__name__}: {detail}). Pass a MAEST release "
            ".ckpt, or a folder / repo id with config.json and model.safetensors."
        ) from None


def _read_weight_file(path: Path, allow_pickle: bool) -> dict:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as error:
            raise ConversionError(f"{path} is not a readable safetensors file ({error}).") from None
    return _torch_load(path, allow_pickle)


def _select_release_tensors(obj, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The release state dict inside a loaded `.ckpt`: Lightning wrapper and `net_swa.` / `net.` prefixes removed."""
    notes = []
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
        notes.append("Lightning checkpoint: read its 'state_dict'")
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(
            f"{path} holds {'an empty dict' if obj == {} else type(obj).__name__}, not a state dict of tensors. "
            "Pass a MAEST release .ckpt (a state dict or a Lightning checkpoint with 'state_dict')."
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConversionError(
            f"{path} is not a state dict: the entries {_short_list(not_tensors)} are not tensors. Pass a MAEST "
            "release .ckpt (a state dict or a Lightning checkpoint with 'state_dict')."
        )
    state = dict(obj)
    for prefix in LIGHTNING_PREFIXES:
        chosen = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # fmt: skip
        if chosen:
            ignored = len(state) - len(chosen)
            ignoring = f", ignoring {ignored} others" if ignored else ""
            notes.append(f"using the {len(chosen)} '{prefix}' tensors{ignoring}")
            state = chosen
            break
    # An SWA model saved through torch.optim.swa_utils.AveragedModel nests the weights under `module.`.
    if "n_averaged" in state and all(k.startswith("module.") for k in state if k != "n_averaged"):
        state = {k[len("module."):]: v for k, v in state.items() if k != "n_averaged"}  # fmt: skip
        notes.append("AveragedModel wrapper: removed 'module.' and 'n_averaged'")
    return state, notes


def _looks_like_repo_id(text: str) -> bool:
    return (
        re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None
        and not text.startswith(".")
        and Path(text).suffix not in {".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json"}
    )


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        wanted = ["config.json", "preprocessor_config.json", "model.safetensors"]
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=wanted))
        if not (folder / "model.safetensors").exists():
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["pytorch_model.bin"]))
    except RepositoryNotFoundError:
        raise ConversionError(
            f"{repo_id!r} is neither a local file or folder nor a Hub repository you can read. Check the path, or "
            "the repo id (and `huggingface-cli login` for a private repository)."
        ) from None
    except LocalEntryNotFoundError:
        raise ConversionError(
            f"{repo_id!r} is not a local file or folder, and the Hub repository of that name cannot be downloaded "
            "(offline, or HF_HUB_OFFLINE=1, and not in the cache). Check the path, or connect and retry."
        ) from None
    except HfHubHTTPError as error:
        raise ConversionError(f"Downloading {repo_id!r} from the Hub failed: {error}") from None
    return folder


def _read_hub_folder(folder: Path, location: str, name: str, allow_pickle: bool) -> Source:
    present = sorted(p.name for p in folder.iterdir())
    if not (folder / "config.json").exists():
        raise ConversionError(
            f"The folder {folder} has no config.json (it holds: {', '.join(present) or 'nothing'}). Pass a MAEST "
            "release .ckpt file, or a published-layout folder with config.json and model.safetensors."
        )
    weights = next((folder / n for n in HUB_WEIGHT_FILES if (folder / n).exists()), None)
    if weights is None:
        shards = [n for n in present if n.endswith(".index.json")]
        hint = " Sharded checkpoints are not supported: merge the shards first." if shards else ""
        raise ConversionError(
            f"The folder {folder} has no model.safetensors or pytorch_model.bin (it holds: {', '.join(present)})."
            + hint
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConversionError(f"{folder / 'config.json'} is not valid JSON ({error}).") from None
    tensors = _read_weight_file(weights, allow_pickle=allow_pickle and weights.suffix != ".safetensors")
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ConversionError(f"{weights} does not hold a state dict of tensors.")
    return Source("hub", location, name, dict(tensors), weights, hub_config=config, folder=folder,
                  notes=[f"published (transformers AST) layout: {weights.name} + config.json"])  # fmt: skip


def load_source(location: str, allow_pickle: bool = False, revision: str | None = None) -> Source:
    """Read a release `.ckpt` file, a published-layout folder or a Hub repo id.

    Args:
        location: a file, a folder, or a Hub repo id (`org/name`).
        allow_pickle: unpickle `.ckpt` / `.bin` files fully (`torch.load(weights_only=False)`); only for trusted files.
        revision: branch, tag or commit of a Hub repo id.
    """
    path = Path(location).expanduser()
    if path.is_file():
        obj = _read_weight_file(path, allow_pickle)
        if isinstance(obj, dict) and any(str(k).startswith(AST) for k in obj):
            raise ConversionError(
                f"{path} holds published-layout (transformers AST) weights. Pass the folder that holds it together "
                "with its config.json, or the Hub repo id."
            )
        tensors, notes = _select_release_tensors(obj, path)
        return Source("release", location, path.stem, tensors, path, notes=["release file"] + notes)
    if path.is_dir():
        return _read_hub_folder(path, location, path.resolve().name, allow_pickle)
    if _looks_like_repo_id(location):
        folder = _download(location, revision)
        source = _read_hub_folder(folder, location, location.split("/")[-1], allow_pickle)
        source.repo_id = location
        return source
    raise ConversionError(f"No such file or folder: {location}. Pass a MAEST release .ckpt, a folder or a repo id.")


# ---------------------------------------------------------------------------------------------------------------------
# Shape inference and key checks
# ---------------------------------------------------------------------------------------------------------------------


def _block_count(keys, pattern: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


def release_expected_shapes(shape: MaestShape) -> dict[str, tuple[int, ...]]:
    """Every tensor a release state dict of `shape` holds (besides the dropped ones), with its shape."""
    E, inner, L = shape.hidden_size, shape.intermediate_size, shape.num_labels
    expected = {
        "cls_token": (1, 1, E),
        "dist_token": (1, 1, E),
        "new_pos_embed": (1, 2, E),
        "freq_new_pos_embed": (1, E, shape.frequency_patches, 1),
        "time_new_pos_embed": (1, E, 1, shape.time_positions),
        "patch_embed.proj.weight": (E, 1, PATCH_SIZE, PATCH_SIZE),
        "patch_embed.proj.bias": (E,),
        "norm.weight": (E,), "norm.bias": (E,),
        "head.0.weight": (E,), "head.0.bias": (E,),
        "head.1.weight": (L, E), "head.1.bias": (L,),
    }  # fmt: skip
    for i in range(shape.num_hidden_layers):
        p = f"blocks.{i}."
        expected.update({
            p + "norm1.weight": (E,), p + "norm1.bias": (E,),
            p + "attn.qkv.weight": (3 * E, E), p + "attn.qkv.bias": (3 * E,),
            p + "attn.proj.weight": (E, E), p + "attn.proj.bias": (E,),
            p + "norm2.weight": (E,), p + "norm2.bias": (E,),
            p + "mlp.fc1.weight": (inner, E), p + "mlp.fc1.bias": (inner,),
            p + "mlp.fc2.weight": (E, inner), p + "mlp.fc2.bias": (E,),
        })  # fmt: skip
    return expected


def maest_expected_shapes(shape: MaestShape) -> dict[str, tuple[int, ...]]:
    """Every tensor of `MaestForAudioClassification` (= the published AST layout) for `shape`, with its shape."""
    E, inner, L = shape.hidden_size, shape.intermediate_size, shape.num_labels
    e = AST + "embeddings."
    expected = {
        e + "cls_token": (1, 1, E),
        e + "distillation_token": (1, 1, E),
        e + "position_embeddings": (1, 2 + shape.frequency_patches * shape.time_positions, E),
        e + "patch_embeddings.projection.weight": (E, 1, PATCH_SIZE, PATCH_SIZE),
        e + "patch_embeddings.projection.bias": (E,),
        AST + "layernorm.weight": (E,), AST + "layernorm.bias": (E,),
        "classifier.layernorm.weight": (E,), "classifier.layernorm.bias": (E,),
        "classifier.dense.weight": (L, E), "classifier.dense.bias": (L,),
    }  # fmt: skip
    for i in range(shape.num_hidden_layers):
        p = f"{AST}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            expected[p + f"attention.attention.{name}.weight"] = (E, E)
            expected[p + f"attention.attention.{name}.bias"] = (E,)
        expected.update({
            p + "attention.output.dense.weight": (E, E), p + "attention.output.dense.bias": (E,),
            p + "intermediate.dense.weight": (inner, E), p + "intermediate.dense.bias": (inner,),
            p + "output.dense.weight": (E, inner), p + "output.dense.bias": (E,),
            p + "layernorm_before.weight": (E,), p + "layernorm_before.bias": (E,),
            p + "layernorm_after.weight": (E,), p + "layernorm_after.bias": (E,),
        })  # fmt: skip
    return expected


def _check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, tuple], what: str, ignored=()) -> None:
    """Raise a ConversionError naming missing keys, unexpected keys and wrong shapes."""
    present = {k for k in tensors if not k.startswith(tuple(ignored))}
    missing, unexpected = set(expected) - present, present - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short_list(unexpected)}")
    wrong = [f"{k}: expected {expected[k]}, found {tuple(tensors[k].shape)}"
             for k in sorted(present & set(expected)) if tuple(tensors[k].shape) != expected[k]]  # fmt: skip
    if wrong:
        problems.append("inconsistent shapes (" + "; ".join(wrong[:6]) + (" ..." if len(wrong) > 6 else "") + ")")
    if problems:
        raise ConversionError(f"This is not a {what}:\n  " + "\n  ".join(problems))


def _check_frequency_and_heads(shape: MaestShape, heads_from: str) -> None:
    if shape.frequency_patches != FREQUENCY_PATCHES:
        raise ConversionError(
            f"The position table has {shape.frequency_patches} frequency rows; MAEST models take {NUM_MEL_BINS} mel "
            f"bins, i.e. {FREQUENCY_PATCHES} rows of 16x16 patches every 10 bins. This checkpoint is not a MAEST model."
        )
    if shape.num_attention_heads < 1 or shape.hidden_size % shape.num_attention_heads:
        raise ConversionError(
            f"hidden size {shape.hidden_size} cannot be split into {shape.num_attention_heads} heads ({heads_from})."
        )


def infer_release_shape(tensors: dict[str, torch.Tensor]) -> MaestShape:
    """Read the architecture of a release state dict from its tensor shapes, and check every tensor against it."""
    core = ("cls_token", "freq_new_pos_embed", "time_new_pos_embed", "head.1.weight", "blocks.0.mlp.fc1.weight")
    absent = [k for k in core if k not in tensors]
    if absent:
        raise ConversionError(
            "This is not a MAEST release checkpoint:\n  missing keys: " + ", ".join(absent) + "\n  "
            f"its keys are: {_short_list(tensors, 12)}\n"
            "A release .ckpt holds cls_token, dist_token, new_pos_embed, freq_new_pos_embed, time_new_pos_embed, "
            "patch_embed.proj.*, blocks.{i}.*, norm.*, head.0.*, head.1.*."
        )
    hidden = tensors["cls_token"].shape[-1]
    if hidden % HEAD_DIM:
        raise ConversionError(
            f"hidden size {hidden} is not a multiple of {HEAD_DIM}: every MAEST model uses heads of {HEAD_DIM} "
            "(heads = hidden_size // 64), so the head count of this checkpoint is unknown. It is not a MAEST model."
        )
    shape = MaestShape(
        hidden_size=hidden,
        num_hidden_layers=_block_count(tensors, r"blocks\.(\d+)\."),
        num_attention_heads=hidden // HEAD_DIM,
        intermediate_size=tensors["blocks.0.mlp.fc1.weight"].shape[0],
        frequency_patches=tensors["freq_new_pos_embed"].shape[2] if tensors["freq_new_pos_embed"].dim() == 4 else -1,
        time_positions=tensors["time_new_pos_embed"].shape[-1],
        num_labels=tensors["head.1.weight"].shape[0],
    )
    _check_tensors(tensors, release_expected_shapes(shape), "MAEST release checkpoint", RELEASE_DROPPED_PREFIXES)
    _check_frequency_and_heads(shape, f"hidden_size // {HEAD_DIM}")
    return shape


# Fields of a published config.json that every MAEST model has; other values mean another model.
_HUB_FIXED_FIELDS = {"patch_size": PATCH_SIZE, "frequency_stride": PATCH_STRIDE, "time_stride": PATCH_STRIDE,
                     "num_mel_bins": NUM_MEL_BINS}  # fmt: skip


def infer_hub_shape(tensors: dict[str, torch.Tensor], config: dict) -> MaestShape:
    """Read the architecture of published-layout weights from their shapes and config.json, checking both agree."""
    core = (AST + "embeddings.cls_token", AST + "embeddings.position_embeddings", "classifier.dense.weight",
            AST + "encoder.layer.0.intermediate.dense.weight")  # fmt: skip
    absent = [k for k in core if k not in tensors]
    if absent:
        raise ConversionError(
            "This is not a MAEST checkpoint in the published (transformers AST) layout:\n  missing keys: "
            + ", ".join(absent) + f"\n  its keys are: {_short_list(tensors, 12)}"
        )
    for name, value in _HUB_FIXED_FIELDS.items():
        if config.get(name, value) not in (value, [value, value]):
            raise ConversionError(
                f"config.json has {name}={config[name]!r}; every MAEST model has {name}={value}. Not a MAEST model."
            )
    hidden = tensors[AST + "embeddings.cls_token"].shape[-1]
    heads = config.get("num_attention_heads", hidden // HEAD_DIM)
    positions = tensors[AST + "embeddings.position_embeddings"].shape[1] - 2
    if positions % FREQUENCY_PATCHES:
        raise ConversionError(
            f"The position table has {positions} patch rows, not a multiple of {FREQUENCY_PATCHES} frequency rows "
            f"({NUM_MEL_BINS} mel bins). Not a MAEST model."
        )
    shape = MaestShape(
        hidden_size=hidden,
        num_hidden_layers=_block_count(tensors, re.escape(AST) + r"encoder\.layer\.(\d+)\."),
        num_attention_heads=heads,
        intermediate_size=tensors[AST + "encoder.layer.0.intermediate.dense.weight"].shape[0],
        frequency_patches=FREQUENCY_PATCHES,
        time_positions=positions // FREQUENCY_PATCHES,
        num_labels=tensors["classifier.dense.weight"].shape[0],
    )
    _check_tensors(tensors, maest_expected_shapes(shape), "MAEST checkpoint in the published (AST) layout")
    _check_frequency_and_heads(shape, "num_attention_heads of config.json")
    disagreements = [
        f"{name}={config[name]} in config.json but {value} in the weights"
        for name, value in (("hidden_size", shape.hidden_size), ("num_hidden_layers", shape.num_hidden_layers),
                            ("intermediate_size", shape.intermediate_size), ("max_length", shape.max_length))
        if name in config and config[name] != value
    ]  # fmt: skip
    if disagreements:
        raise ConversionError("config.json and the weights disagree: " + "; ".join(disagreements) + ".")
    return shape


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------


def release_to_maest(tensors: dict[str, torch.Tensor], shape: MaestShape) -> dict[str, torch.Tensor]:
    """Release state dict -> `MaestForAudioClassification` state dict (float32), by the tables at the top."""
    E, F_, T = shape.hidden_size, shape.frequency_patches, shape.time_positions
    out = {maest: tensors[release] for release, maest in RELEASE_RENAMES.items()}
    for i in range(shape.num_hidden_layers):
        source, target = f"blocks.{i}.", f"{AST}encoder.layer.{i}."
        for release, maest in RELEASE_BLOCK_RENAMES.items():
            out[target + maest] = tensors[source + release]
        qkv_weight, qkv_bias = (tensors[source + key] for key in RELEASE_QKV)
        for j, name in enumerate(("query", "key", "value")):
            out[target + f"attention.attention.{name}.weight"] = qkv_weight[j * E : (j + 1) * E]
            out[target + f"attention.attention.{name}.bias"] = qkv_bias[j * E : (j + 1) * E]
    frequency = tensors["freq_new_pos_embed"][0, :, :, 0].T  # (F, E)
    time = tensors["time_new_pos_embed"][0, :, 0, :].T  # (T, E)
    patches = (frequency[:, None, :] + time[None, :, :]).reshape(F_ * T, E)  # row f * T + t
    out[AST + "embeddings.position_embeddings"] = torch.cat([tensors["new_pos_embed"][0], patches])[None]
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def hub_to_maest(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published-layout state dict -> MAEST state dict: the names are the same; only the dtype is made float32."""
    return {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}


def build_config(
    shape: MaestShape, labels: list[str], window_hop: int, head_layer_norm_eps: float, hub_config: dict | None
) -> MaestConfig:
    """The MaestConfig of the converted model (`maest_tools.hub.save_model_folder` adds auto_map and the pipelines)."""
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_length")
    kwargs = dict(
        {name: getattr(shape, name) for name in sizes},
        window_hop=window_hop,
        layer_norm_eps=LAYER_NORM_EPS,
        head_layer_norm_eps=head_layer_norm_eps,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification",
    )
    if hub_config is not None:
        for name in ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range",
                     "layer_norm_eps", "qkv_bias"):  # fmt: skip
            if name in hub_config:
                kwargs[name] = hub_config[name]
    try:
        config = MaestConfig(**kwargs)
    except ValueError as error:
        raise ConversionError(f"The checkpoint gives an invalid MaestConfig: {error}") from None
    return config


def _hub_labels(config: dict, num_labels: int) -> list[str] | None:
    id2label = config.get("id2label")
    if not id2label:
        return None
    labels = [id2label.get(str(i), id2label.get(i)) for i in range(num_labels)]
    if len(id2label) != num_labels or any(label is None for label in labels):
        raise ConversionError(
            f"config.json's id2label has {len(id2label)} entries (keys {_short_list(map(str, id2label), 4)}) but the "
            f"head has {num_labels} outputs 0..{num_labels - 1}. Pass --labels FILE.json with one name per output."
        )
    return labels


# ---------------------------------------------------------------------------------------------------------------------
# References for the check
# ---------------------------------------------------------------------------------------------------------------------


# The fields of transformers' ASTConfig that MaestConfig shares, with the same meaning (MAEST keeps AST's names).
AST_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                     "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                     "patch_size", "qkv_bias", "frequency_stride", "time_stride", "max_length", "num_mel_bins",
                     "id2label", "label2id")  # fmt: skip


def load_transformers_ast(source: Source, head_layer_norm_eps: float):
    """transformers' own ASTForAudioClassification on the source folder, head LayerNorm eps set to ours."""
    from transformers import ASTConfig, ASTForAudioClassification

    config = ASTConfig(**{k: source.hub_config[k] for k in AST_CONFIG_FIELDS if k in source.hub_config})
    model, info = ASTForAudioClassification.from_pretrained(
        source.folder, config=config, output_loading_info=True,
        use_safetensors=source.weights_file.suffix == ".safetensors",
    )  # fmt: skip
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise ConversionError(
            f"transformers' ASTForAudioClassification does not load {source.location} cleanly ({info}); it cannot "
            "serve as the reference. This folder is not a published MAEST checkpoint."
        )
    model.classifier.layernorm.eps = head_layer_norm_eps
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """One comparison of the converted model with the source model, on a fixed input of `frames` frames."""

    frames: int
    reference: str
    logits_diff: float
    hidden_diff: float
    hidden_scale: float

    @property
    def hidden_tolerance(self) -> float:
        """TOLERANCE, scaled up by the largest |hidden state| of the source when it exceeds 1.

        float32 rounding grows with the magnitude of the residual stream (tens in deep ViTs), so the hidden states
        are held to 1e-4 relative to their scale; the logits are held to 1e-4 absolute.
        """
        return TOLERANCE * max(1.0, self.hidden_scale)

    @property
    def passed(self) -> bool:
        return self.logits_diff <= TOLERANCE and self.hidden_diff <= self.hidden_tolerance


def fixed_input(frames: int) -> torch.Tensor:
    """The check input: `(1, frames, 96)` standard normal values from seed 0 (the scale of normalised log-mel)."""
    return torch.randn(1, frames, NUM_MEL_BINS, generator=torch.Generator().manual_seed(0))


def check_lengths(shape: MaestShape) -> tuple[int, int]:
    """The full window and a shorter input (3/5 of it, which uses only the first time positions)."""
    return shape.max_length, max(PATCH_SIZE, shape.max_length * 3 // 5)


def placement_problems(source: Source, shape: MaestShape, saved: dict[str, torch.Tensor]) -> list[str]:
    """Where the saved weights differ from the source tensors they must be, bit for bit (after the float32 cast).

    Written apart from `release_to_maest`, the other way round: each block's saved query, key and value rows stacked
    again must be its `qkv`; each patch row `2 + f * T + t` of the saved position table must be
    `freq_new_pos_embed[..., f, 0] + time_new_pos_embed[..., 0, t]` (added in the source's own 4-D layout); every
    renamed tensor must be its source; and no key may be missing or extra.
    """
    tensors = source.tensors
    if source.kind == "hub":
        expected = {key: value.to(torch.float32) for key, value in tensors.items()}
    else:
        expected = {maest: tensors[release] for release, maest in RELEASE_RENAMES.items()}
        for i in range(shape.num_hidden_layers):
            for release, maest in RELEASE_BLOCK_RENAMES.items():
                expected[f"{AST}encoder.layer.{i}.{maest}"] = tensors[f"blocks.{i}.{release}"]
        expected = {key: value.to(torch.float32) for key, value in expected.items()}
    problems = []
    missing, extra = set(expected) - set(saved), set(saved) - set(expected)
    if source.kind == "release":
        extra -= {key for key in extra if ".attention.attention." in key or key.endswith("position_embeddings")}
        for i in range(shape.num_hidden_layers):
            prefix = f"{AST}encoder.layer.{i}.attention.attention."
            for kind, release in zip(("weight", "bias"), RELEASE_QKV):
                names = [f"{prefix}{name}.{kind}" for name in ("query", "key", "value")]
                if not all(name in saved for name in names):
                    missing.update(name for name in names if name not in saved)
                    continue
                stacked = torch.cat([saved[name] for name in names])
                if not torch.equal(stacked, tensors[f"blocks.{i}.{release}"].to(torch.float32)):
                    problems.append(f"block {i}: query/key/value {kind} rows are not the source's qkv [q; k; v]")
        key = AST + "embeddings.position_embeddings"
        if key in saved:
            frequency, time = tensors["freq_new_pos_embed"], tensors["time_new_pos_embed"]
            grid = (frequency[0] + time[0]).permute(1, 2, 0).to(torch.float32)  # (F, T, E), patch (f, t)
            table = saved[key][0]
            if not torch.equal(table[:2], tensors["new_pos_embed"][0].to(torch.float32)):
                problems.append("position table: the CLS / distillation rows are not new_pos_embed")
            if not torch.equal(table[2:].reshape(grid.shape), grid):
                problems.append("position table: patch rows are not freq_pos[f] + time_pos[t] in frequency-major order")
        else:
            missing.add(key)
    if missing:
        problems.append(f"missing tensors: {_short_list(missing)}")
    if extra:
        problems.append(f"tensors with no source: {_short_list(extra)}")
    for key in sorted(set(expected) & set(saved)):
        if not torch.equal(saved[key], expected[key]):
            problems.append(f"{key} is not the source tensor")
    return problems


def _max_diff(ours, theirs) -> float:
    return max(float((a.double() - b.double()).abs().max()) for a, b in zip(ours, theirs))


def verify(folder: Path, source: Source, shape: MaestShape, head_layer_norm_eps: float, layer_norm_eps: float):
    """Reload `folder` and compare it with the source model at the full window and a shorter input.

    The source model is `MaestForAudioClassification` in float64 holding the source tensors (`placement_problems`
    checks separately that the saved tensors are those tensors, in their places), or, for a published folder at
    the full window, transformers' ASTForAudioClassification loaded from the source folder with its head LayerNorm
    eps set to ours (it only takes full windows).
    """
    model, info = MaestForAudioClassification.from_pretrained(folder, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise CheckFailed(f"Reloading {folder} did not restore every weight: {info}")
    model.eval()
    state = release_to_maest(source.tensors, shape) if source.kind == "release" else hub_to_maest(source.tensors)
    config = MaestConfig.from_dict(model.config.to_dict())
    config.layer_norm_eps, config.head_layer_norm_eps = layer_norm_eps, head_layer_norm_eps
    with torch.device("meta"):
        reference_model = MaestForAudioClassification(config)
    reference_model.load_state_dict({key: value.double() for key, value in state.items()}, assign=True)
    reference_model.eval()
    ast_model = load_transformers_ast(source, head_layer_norm_eps) if source.kind == "hub" else None
    results = []
    for frames in check_lengths(shape):
        x = fixed_input(frames)
        with torch.no_grad():
            ours = model(x, output_hidden_states=True)
            if ast_model is not None and frames == shape.max_length:
                out = ast_model(x, output_hidden_states=True)
                reference = "transformers ASTForAudioClassification"
            else:
                out = reference_model(x.double(), output_hidden_states=True)
                reference = "float64 forward of the source tensors (MaestForAudioClassification)"
        logits, hidden = out.logits, out.hidden_states
        if len(hidden) != len(ours.hidden_states):
            raise CheckFailed(f"{len(ours.hidden_states)} hidden states, the source model gives {len(hidden)}.")
        scale = max(float(h.abs().max()) for h in hidden)
        results.append(CheckResult(frames, reference, _max_diff([ours.logits], [logits]),
                                   _max_diff(ours.hidden_states, hidden), scale))  # fmt: skip
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Writing the folder
# ---------------------------------------------------------------------------------------------------------------------


def output_files() -> tuple[str, ...]:
    """The files a converted folder holds."""
    from configuration_maest import MAEST_CODE_FILES

    return ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", *MAEST_CODE_FILES)


def _prepare_output(output_dir: Path, source: Source | None) -> None:
    if source is not None and source.folder is not None and output_dir.resolve() == source.folder.resolve():
        raise ConversionError(f"--output {output_dir} is the source folder; choose another folder.")
    if output_dir.exists():
        if not output_dir.is_dir():
            raise ConversionError(f"--output {output_dir} exists and is not a folder.")
        foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in output_files() and p.name != ".git")
        if foreign:
            raise ConversionError(
                f"--output {output_dir} already holds files this script does not write ({', '.join(foreign)}); "
                "they would be published with the model. Use an empty or new folder."
            )
    output_dir.mkdir(parents=True, exist_ok=True)


def write_model_card(folder: Path, *, variant: str | None, variant_note: str, shape: MaestShape, window_hop: int,
                     labels: list[str], source: Source, results: list[CheckResult], head_layer_norm_eps: float,
                     repo_id: str | None) -> None:  # fmt: skip
    """README.md of the converted folder, from maest_tools/model_card_template.md."""
    title = variant or f"custom MAEST ({shape.max_length}-frame windows, {shape.num_labels} labels)"
    if shape.num_labels in LABEL_FILES and labels == load_label_list(shape.num_labels, None):
        label_text = f"the {shape.num_labels} Discogs styles (`Genre---Style`) of `{LABEL_FILES[shape.num_labels]}`"
    else:
        label_text = f"{shape.num_labels} labels (e.g. {', '.join(f'`{label}`' for label in labels[:3])})"
    rows = "\n".join(
        f"| {r.frames} frames ({r.frames / FRAMES_PER_SECOND:g} s) | {r.reference} | {r.logits_diff:.2e} | "
        f"{r.hidden_diff:.2e} | {r.hidden_scale:.3g} |"
        for r in results
    )
    source_name = source.location if source.kind == "hub" else source.weights_file.name
    values = dict(
        title=title,
        variant_note=variant_note,
        repo_id=repo_id or f"<your-org>/{variant or 'discogs-maest-custom'}",
        window_frames=shape.max_length,
        window_seconds=f"{shape.max_length / FRAMES_PER_SECOND:g}",
        hop_frames=window_hop,
        hop_seconds=f"{window_hop / FRAMES_PER_SECOND:g}",
        hop_note=", Essentia's hop" if ESSENTIA_WINDOW_HOPS.get(shape.max_length) == window_hop else "",
        time_positions=shape.time_positions,
        num_labels=shape.num_labels,
        label_text=label_text,
        architecture=shape.describe(),
        source_kind="training-repository release file" if source.kind == "release" else "published (AST) layout",
        source_name=source_name,
        source_sha256=sha256_file(source.weights_file),
        check_rows=rows,
        tolerance=f"{TOLERANCE:g}",
        head_eps=f"{head_layer_norm_eps:g}",
        embedding_size=3 * shape.hidden_size,
        # A repo id names the weights this folder derives from; a local folder or file has no Hub name to link.
        base_model_line=f"base_model: {source.repo_id}\n" if source.repo_id else "",
    )
    template = string.Template(MODEL_CARD_TEMPLATE.read_text(encoding="utf-8"))
    (folder / "README.md").write_text(template.substitute(values), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What `convert` did: the folder, the variant, the shape and the check results."""

    output_dir: Path
    variant: str | None
    shape: MaestShape
    results: list[CheckResult]
    pushed_to: str | None = None


def convert(
    checkpoint: str,
    output_dir: str | Path,
    arch: str | None = None,
    labels: str | None = None,
    head_layer_norm_eps: float = 1e-5,
    push_to_hub_repo: str | None = None,
    private: bool = False,
    allow_pickle: bool = False,
    revision: str | None = None,
    log=print,
) -> ConversionReport:
    """Convert `checkpoint` into a MAEST folder at `output_dir`, check it, and optionally push it (see module doc)."""
    if not head_layer_norm_eps > 0:
        raise ConversionError(f"--head-layer-norm-eps must be > 0, got {head_layer_norm_eps}.")
    output_dir = Path(output_dir)
    source = load_source(checkpoint, allow_pickle=allow_pickle, revision=revision)
    log(f"Source: {source.location} ({'; '.join(source.notes)})")
    if source.kind == "release":
        shape = infer_release_shape(source.tensors)
        dropped = sorted(k for k in source.tensors if k.startswith(RELEASE_DROPPED_PREFIXES))
        if dropped:
            log(f"Dropped {len(dropped)} tensors not used at inference: {_short_list(dropped, 4)}")
        state = release_to_maest(source.tensors, shape)
        label_names = load_label_list(shape.num_labels, labels)
        layer_norm_eps = LAYER_NORM_EPS
    else:
        shape = infer_hub_shape(source.tensors, source.hub_config)
        state = hub_to_maest(source.tensors)
        hub_labels = _hub_labels(source.hub_config, shape.num_labels) if labels is None else None
        label_names = hub_labels or load_label_list(shape.num_labels, labels)
        layer_norm_eps = source.hub_config.get("layer_norm_eps", LAYER_NORM_EPS)
    log(f"Architecture: {shape.describe()}")
    variant, variant_note = select_variant(shape, arch, source.name)
    log(f"Variant: {variant_note}")
    if variant:
        window_hop = MAEST_PRESETS[variant]["window_hop"]
    else:  # Essentia's hop for a published window length, else windows that touch
        window_hop = ESSENTIA_WINDOW_HOPS.get(shape.max_length, shape.max_length)

    _prepare_output(output_dir, source)
    config = build_config(shape, label_names, window_hop, head_layer_norm_eps, source.hub_config)
    with torch.device("meta"):  # no random initialisation: every parameter comes from the checkpoint
        model = MaestForAudioClassification(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:  # the key checks above make this a bug, not a user error
        raise ConversionError(f"Internal error: converted keys do not fit the model ({result}).")
    save_model_folder(model, output_dir)

    from safetensors.torch import load_file

    placement = placement_problems(source, shape, load_file(output_dir / "model.safetensors"))
    for problem in placement:
        log(f"Placement check FAILED: {problem}")
    if not placement:
        log("Placement check passed: every source tensor stands, bit for bit, where the key tables put it.")
    results = verify(output_dir, source, shape, head_layer_norm_eps, layer_norm_eps)
    for r in results:
        log(f"Check at {r.frames} frames against {r.reference}: max |logits diff| {r.logits_diff:.2e} (tolerance "
            f"{TOLERANCE:g}), max |hidden state diff| {r.hidden_diff:.2e} (tolerance {r.hidden_tolerance:.2g} = "
            f"{TOLERANCE:g} x max |hidden state| {r.hidden_scale:.3g}): {'OK' if r.passed else 'FAILED'}")  # fmt: skip
    if source.kind == "hub":
        log(f"(Both models ran their head LayerNorm with eps {head_layer_norm_eps:g}, the converted model's value; the "
            f"trained models use 1e-05 there, the published AST port {layer_norm_eps:g}.)")  # fmt: skip
    if placement or not all(r.passed for r in results):
        (output_dir / "model.safetensors").unlink()
        raise CheckFailed(
            "The converted model does not reproduce the source model (see the check lines above); model.safetensors "
            f"was removed from {output_dir}. Please report this with the checkpoint's name."
        )
    write_model_card(output_dir, variant=variant, variant_note=variant_note, shape=shape, window_hop=window_hop,
                     labels=label_names, source=source, results=results, head_layer_norm_eps=head_layer_norm_eps,
                     repo_id=push_to_hub_repo)  # fmt: skip
    log(f"Wrote {output_dir}: {', '.join(sorted(p.name for p in output_dir.iterdir()))}")
    report = ConversionReport(output_dir, variant, shape, results)
    if push_to_hub_repo:
        message = f"Convert {Path(source.location).name} to MAEST for transformers"
        report.pushed_to = push_folder(output_dir, push_to_hub_repo, private, message)
        log(f"Pushed to {report.pushed_to} ({'private' if private else 'public'})")
    return report


# ---------------------------------------------------------------------------------------------------------------------
# A demo folder with random weights
# ---------------------------------------------------------------------------------------------------------------------

DEMO_ARCH = "discogs-maest-10s-fs-129e"
RANDOM_WEIGHTS_SEED = 0

RANDOM_MODEL_CARD = """---
license: apache-2.0
library_name: transformers
pipeline_tag: audio-classification
tags:
  - random-weights
  - audio
  - music
  - maest
  - remote-code
---

# RANDOM WEIGHTS: a demo MAEST folder whose scores mean nothing (`$arch` architecture)

This folder was written by `maest-convert --random-weights --arch $arch`. Its weights are **random** (PyTorch
seed $seed, MAEST's initialisation), not trained: the tags and embeddings it gives carry no information about the
music. Its `config.json` says so too (`"random_weights": true`). It exists to try the tools and the code offline;
for real tags, convert the published weights (`maest-convert --checkpoint mtg-upf/$arch --output $arch`).

- Architecture: $architecture.
- Window: $window_frames mel frames ($window_seconds s), analysed every $hop_frames frames ($hop_seconds s).
- Labels: the names of `$label_file` ($num_labels Discogs `Genre---Style` names, multi-label sigmoid scores).

## Licence

No trained weights are included, so the non-commercial licence of the published MAEST weights (CC BY-NC-SA 4.0)
does not apply to this folder. The code files and the random weights are under the Apache License 2.0.
"""


def write_random_folder(
    output_dir: str | Path,
    arch: str = DEMO_ARCH,
    head_layer_norm_eps: float = 1e-5,
    push_to_hub_repo: str | None = None,
    private: bool = False,
    log=print,
    **config_overrides,
) -> Path:
    """Write a complete MAEST folder of the published variant `arch` with random weights (`--random-weights`).

    The folder is what `convert` writes (config with `auto_map` and `custom_pipelines`, `model.safetensors`,
    `preprocessor_config.json` with its `auto_map`, every file of `MAEST_CODE_FILES`, the variant's Discogs label
    list, a model card), with the weights of `MaestForAudioClassification`'s initialisation after
    `torch.manual_seed(0)`. Its config carries `random_weights: true` (an extra `config.json` field that
    transformers keeps on load) and its model card says, in its title and the `random-weights` tag, that the
    weights are random. Nothing is downloaded.

    Args:
        output_dir: the folder to write (created; it must hold no files other than the ones written here).
        arch: a name of `MAEST_PRESETS`: window, hop and label count.
        head_layer_norm_eps: epsilon of the head LayerNorm.
        push_to_hub_repo, private: upload the folder, as `convert` does.
        config_overrides: MaestConfig fields that replace the variant's (the test suite uses smaller sizes).

    Returns:
        `Path`: the folder.
    """
    if arch not in MAEST_PRESETS:
        raise ConversionError(f"--arch {arch!r} is not a published MAEST variant. Choose one of: "
                              f"{', '.join(MAEST_PRESETS)}.")  # fmt: skip
    output_dir = Path(output_dir)
    preset = MAEST_PRESETS[arch]
    labels = load_label_list(preset["num_labels"], None)
    shape = MaestShape(
        **VIT_BASE, frequency_patches=FREQUENCY_PATCHES, time_positions=preset["time_positions"],
        num_labels=preset["num_labels"],
    )  # fmt: skip
    config = build_config(shape, labels, preset["window_hop"], head_layer_norm_eps, None)
    for name, value in config_overrides.items():
        setattr(config, name, value)
    config.random_weights = True
    try:
        config.validate_values()
    except ValueError as error:
        raise ConversionError(f"Invalid size override: {error}") from None
    _prepare_output(output_dir, None)
    torch.manual_seed(RANDOM_WEIGHTS_SEED)
    model = MaestForAudioClassification(config).eval()
    save_model_folder(model, output_dir)
    values = dict(
        arch=arch,
        seed=RANDOM_WEIGHTS_SEED,
        architecture=(f"hidden {config.hidden_size}, {config.num_hidden_layers} blocks, {config.num_attention_heads} "
                      f"heads, MLP {config.intermediate_size}"),  # fmt: skip
        window_frames=config.max_length,
        window_seconds=f"{config.max_length / FRAMES_PER_SECOND:g}",
        hop_frames=config.window_hop,
        hop_seconds=f"{config.window_hop / FRAMES_PER_SECOND:g}",
        label_file=LABEL_FILES[len(labels)],
        num_labels=len(labels),
    )
    (output_dir / "README.md").write_text(string.Template(RANDOM_MODEL_CARD).substitute(values), encoding="utf-8")
    log(f"Wrote {output_dir} with RANDOM weights ({arch} architecture, seed {RANDOM_WEIGHTS_SEED}): its scores mean "
        f"nothing; use it to try the tools. Files: {', '.join(sorted(p.name for p in output_dir.iterdir()))}")
    if push_to_hub_repo:
        url = push_folder(output_dir, push_to_hub_repo, private, f"MAEST {arch} with random weights (demo)")
        log(f"Pushed to {url} ({'private' if private else 'public'})")
    return output_dir


def parse_args(argv=None) -> argparse.Namespace:
    presets = "\n".join(
        f"  {name:34s} window {p['max_length']} frames, hop {p['window_hop']}, {p['num_labels']} labels"
        for name, p in MAEST_PRESETS.items()
    )
    parser = argparse.ArgumentParser(
        prog="maest-convert",
        description="Convert a MAEST checkpoint (release .ckpt, or a published mtg-upf folder / repo id) into a\n"
        "Hugging Face MAEST folder, check it against the source model and optionally push it to the Hub.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Published variants (--arch):\n" + presets,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint",
                        help="release .ckpt file, published-layout folder (config.json + model.safetensors or "
                        "pytorch_model.bin), or Hub repo id such as mtg-upf/discogs-maest-10s-fs-129e")  # fmt: skip
    source.add_argument("--random-weights", action="store_true",
                        help="write a demo folder of the --arch variant with random weights (seed 0) instead of "
                        "converting a checkpoint: no download, its scores mean nothing; for trying the tools")  # fmt: skip
    parser.add_argument("--output", "--output-dir", dest="output", required=True, metavar="FOLDER",
                        help="folder to write (created; must hold no other files). --output-dir is the old name")
    parser.add_argument("--arch", choices=list(MAEST_PRESETS), metavar="NAME",
                        help="published variant the checkpoint must match (shapes are checked); default: read the "
                        "architecture from the tensor shapes")  # fmt: skip
    parser.add_argument("--labels", metavar="FILE.json",
                        help="JSON list of label names in output order; default: the shipped Discogs 400 / 519 list "
                        "for a release file, the source's id2label for a published folder")  # fmt: skip
    parser.add_argument("--head-layer-norm-eps", type=float, default=1e-5, metavar="EPS",
                        help="epsilon of the head LayerNorm (default 1e-5, the trained value; the published AST port "
                        "uses 1e-6)")  # fmt: skip
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub model repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub repo id source")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="unpickle .ckpt/.bin files fully (torch.load(weights_only=False)); ONLY for files you "
                        "trust, as unpickling can run code")  # fmt: skip
    args = parser.parse_args(argv)
    if args.private and not args.push_to_hub:
        parser.error("--private only applies with --push-to-hub REPO_ID.")
    if args.random_weights:
        if args.arch is None:
            parser.error(f"--random-weights needs --arch NAME, the variant to build; e.g. --arch {DEMO_ARCH}.")
        ignored = [flag for flag, value in (("--labels", args.labels), ("--revision", args.revision),
                                            ("--allow-pickle", args.allow_pickle)) if value]  # fmt: skip
        if ignored:
            parser.error(f"{', '.join(ignored)} only apply to --checkpoint, not to --random-weights.")
    return args


def main(argv=None) -> int:
    """Command line entry point; returns the exit status (0 converted and checked, 1 check failed, 2 bad input)."""
    args = parse_args(argv)
    progress_bars_on()  # transformers' loading and saving bars only on a terminal
    try:
        if args.random_weights:
            write_random_folder(args.output, args.arch, head_layer_norm_eps=args.head_layer_norm_eps,
                                push_to_hub_repo=args.push_to_hub, private=args.private)  # fmt: skip
        else:
            convert(args.checkpoint, args.output, arch=args.arch, labels=args.labels,
                    head_layer_norm_eps=args.head_layer_norm_eps, push_to_hub_repo=args.push_to_hub,
                    private=args.private, allow_pickle=args.allow_pickle, revision=args.revision)  # fmt: skip
    except CheckFailed as error:
        print(f"maest-convert: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as error:
        print(f"maest-convert: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cli(argv=None) -> int:
    """The `maest-convert` command; returns the exit status (0 converted and checked, 1 check failed, 2 bad input)."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
