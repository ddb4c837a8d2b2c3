"""Writers of MAEST checkpoints in the two published forms, for the converter tests.

* release files of the training repository: a plain state dict, or a Lightning checkpoint whose `state_dict` keys
  carry `net.` and `net_swa.` prefixes;
* published mtg-upf folders: transformers AST `config.json`, `model.safetensors` or `pytorch_model.bin` with the
  pre-5.0 AST key names, and their `preprocessor_config.json`.

The tensors come from `reference_maest.random_release_state_dict`; the AST layout from
`reference_maest.release_to_ast_layout` (qkv rows stacked [query; key; value]; position table
[cls; dist; freq_pos[f] + time_pos[t] frequency-major]).
"""

import json
from pathlib import Path

import torch
from conftest import ROOT
from reference_maest import random_release_state_dict, release_to_ast_layout
from safetensors.torch import save_file


def label_list(count: int) -> list[str]:
    """The shipped Discogs label list of 400 or 519 names."""
    return json.loads((ROOT / "maest_tools" / "labels" / f"discogs_{count}_labels.json").read_text())


def max_length_for(time_positions: int) -> int:
    """Window in frames of a position table with `time_positions` columns (62 -> 626)."""
    return (time_positions - 1) * 10 + 16


def release_state(hidden=128, layers=2, time_positions=6, labels=400, intermediate=93, freq_patches=9, seed=0):
    """Random release tensors; the block matrices are scaled by sqrt(32 / hidden).

    `random_release_state_dict` draws matrices with std 0.2, which at widths above 32 makes the residual stream grow
    to tens; scaled, the hidden states stay within about 10, like the 32-wide models of the other tests, so that
    float32 rounding alone stays well under the 1e-4 tolerance.
    """
    # random_release_state_dict(hidden_size, num_layers, freq_patches, time_positions, num_labels, intermediate_size)
    state = random_release_state_dict(hidden, layers, freq_patches, time_positions, labels, intermediate, seed)
    factor = (32 / hidden) ** 0.5
    for key, value in state.items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.dim() == 2:
            state[key] = value * factor
    return state


def write_release_checkpoint(path: Path, state: dict, form: str = "plain", other_seed: int = 100) -> Path:
    """Save `state` as a release file: `form="plain"` (the state dict) or `"lightning"`.

    The Lightning form holds `state` under `net_swa.` and a different random model under `net.` (listed first), plus
    the usual bookkeeping entries.
    """
    if form == "plain":
        torch.save(state, path)
    elif form == "lightning":
        shapes = infer_sizes(state)
        other = release_state(**shapes, seed=other_seed)
        state_dict = {f"net.{k}": v for k, v in other.items()}
        state_dict.update({f"net_swa.{k}": v for k, v in state.items()})
        bookkeeping = {"epoch": 129, "global_step": 1000, "pytorch-lightning_version": "1.9.5"}
        torch.save(dict(bookkeeping, state_dict=state_dict), path)
    else:
        raise ValueError(form)
    return path


def infer_sizes(state: dict) -> dict:
    """`release_state` keyword arguments that rebuild a state of the same shapes."""
    return dict(
        hidden=state["cls_token"].shape[-1],
        layers=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        time_positions=state["time_new_pos_embed"].shape[-1],
        labels=state["head.1.weight"].shape[0],
        intermediate=state["blocks.0.mlp.fc1.weight"].shape[0],
    )


# The preprocessor_config.json of the published mtg-upf repositories: their own extractor class.
PUBLISHED_PREPROCESSOR = {
    "auto_map": {"AutoFeatureExtractor": "feature_extraction_maest.MAESTFeatureExtractor"},
    "do_normalize": True,
    "feature_extractor_type": "MAESTFeatureExtractor",
    "feature_size": 1,
    "hop_length": 256,
    "log_compression": "logC",
    "max_length": 626,
    "mean": 2.06755686098554,
    "n_fft": 512,
    "num_mel_bins": 96,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": 16000,
    "std": 1.268292820667291,
}


# The config.json of the published mtg-upf repositories (transformers AST names), here of the 20 s model, without
# its 400 labels. One file, read here and by tests/compat/test_compat.py (which cannot import this module: it runs
# without tests/ on sys.path).
PUBLISHED_CONFIG = json.loads((Path(__file__).resolve().parent / "data" / "published_ast_config.json").read_text())


def published_config(labels: list[str], **sizes) -> dict:
    """`PUBLISHED_CONFIG` with other `sizes` (hidden_size, max_length, ...) and the labels as id2label / label2id."""
    return dict(
        PUBLISHED_CONFIG,
        **sizes,
        id2label={str(i): label for i, label in enumerate(labels)},
        label2id={label: i for i, label in enumerate(labels)},
    )


def write_published_folder(folder: Path, state: dict, labels: list[str], weights: str = "safetensors") -> Path:
    """Write `state` as a published mtg-upf repository: AST config.json, AST-layout weights, preprocessor config.

    Args:
        weights: `"safetensors"` (model.safetensors) or `"bin"` (pytorch_model.bin, a torch.save'd state dict).
    """
    folder.mkdir(parents=True, exist_ok=True)
    sizes = infer_sizes(state)
    hidden = sizes["hidden"]
    config = published_config(
        hidden_size=hidden,
        intermediate_size=sizes["intermediate"],
        max_length=max_length_for(sizes["time_positions"]),
        num_attention_heads=hidden // 64,
        num_hidden_layers=sizes["layers"],
        labels=labels,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = release_to_ast_layout(state)
    if weights == "safetensors":
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    elif weights == "bin":
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        raise ValueError(weights)
    preprocessor = dict(PUBLISHED_PREPROCESSOR, max_length=config["max_length"])
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return folder
