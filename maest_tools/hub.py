# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Publishing: a model folder that loads through the Auto classes and the pipelines, and its upload to the Hub.

One implementation for the converter and fine-tuning. The folder holds the weights (`model.safetensors`), a
`config.json` with `auto_map` and `custom_pipelines`, the remote-code modules (`MAEST_CODE_FILES`), a
`preprocessor_config.json` with its own `auto_map`, and a model card (`README.md`) written by the tool.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .cli import UsageError


def code_folder() -> Path:
    """The folder of the root modules this process imported (the checkout, or site-packages after `pip install`)."""
    import configuration_maest

    return Path(configuration_maest.__file__).resolve().parent


def save_model_folder(model, folder: str | os.PathLike, feature_extractor=None) -> Path:
    """Save `model` the way the published repositories are laid out, so that
    `pipeline("audio-classification", model=folder, trust_remote_code=True)` and the Auto classes load it.

    Args:
        model: a `MaestForAudioClassification` (or `MaestModel`); its config gets `architectures`, `auto_map`
            (`MAEST_AUTO_MAP`) and `custom_pipelines` (`MAEST_CUSTOM_PIPELINES`).
        folder: where to write (created).
        feature_extractor: the model's `MaestFeatureExtractor` (default: the Essentia-exact default one); saved as
            `preprocessor_config.json` (its `save_pretrained` writes `MAEST_FEATURE_EXTRACTOR_AUTO_MAP`) with
            `max_length` (informative) set to the model's window.

    Returns:
        `Path`: the folder.
    """
    from configuration_maest import (
        MAEST_AUTO_MAP,
        MAEST_CODE_FILES,
        MAEST_CUSTOM_PIPELINES,
        MAEST_FEATURE_EXTRACTOR_AUTO_MAP,
    )
    from feature_extraction_maest import MaestFeatureExtractor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.architectures = [type(model).__name__]
    config.auto_map = dict(MAEST_AUTO_MAP)
    config.custom_pipelines = copy.deepcopy(MAEST_CUSTOM_PIPELINES)
    model.save_pretrained(folder)
    source = code_folder()
    for name in MAEST_CODE_FILES:
        shutil.copyfile(source / name, folder / name)
    extractor = feature_extractor if feature_extractor is not None else MaestFeatureExtractor()
    extractor.save_pretrained(folder)
    path = folder / "preprocessor_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    if settings.get("auto_map") != MAEST_FEATURE_EXTRACTOR_AUTO_MAP:  # written by MaestFeatureExtractor.save_pretrained
        raise RuntimeError(f"{path} lacks the auto_map {MAEST_FEATURE_EXTRACTOR_AUTO_MAP}: {settings.get('auto_map')}")
    settings["max_length"] = config.max_length
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


# The licence of the published MAEST weights (mtg-upf/discogs-maest-*), and so of every model trained from them.
PUBLISHED_WEIGHTS_LICENSE = "cc-by-nc-sa-4.0"
# The licence of the code, and of a demo folder's random weights (`maest-convert --random-weights`).
CODE_LICENSE = "apache-2.0"


def card_front_matter(folder: Path) -> dict[str, str]:
    """The `key: value` lines of the YAML front matter of `folder/README.md` (empty when there is none)."""
    try:
        text = (Path(folder) / "README.md").read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    fields = {}
    for line in text.split("---", 2)[1].splitlines():
        key, colon, value = line.partition(":")
        if colon and key and not key.startswith((" ", "-")) and value.strip():
            fields[key.strip()] = value.strip()
    return fields


def derived_card_fields(model_name_or_path: str, config) -> dict:
    """`license` and `base_model` of a model card for a model trained from `model_name_or_path`.

    Returns:
        `dict` with `license` (a Hub licence id: the base folder's card's `license:` when it has one; `apache-2.0`
        for a base with random weights, `config.random_weights`; else the published MAEST weights' CC BY-NC-SA 4.0),
        `base_model` (the repo id, or `None` for a local folder: it has no Hub name to link) and `random_weights`.
    """
    local = Path(model_name_or_path).expanduser()
    random_weights = bool(getattr(config, "random_weights", False))
    fields = card_front_matter(local) if local.is_dir() else {}
    if random_weights:
        license_id = CODE_LICENSE
    else:
        license_id = fields.get("license", PUBLISHED_WEIGHTS_LICENSE)
    return {
        "license": license_id,
        "base_model": None if local.exists() else model_name_or_path,
        "random_weights": random_weights,
    }


def push_folder(
    folder: str | os.PathLike, repo_id: str, private: bool, commit_message: str, ignore_patterns: Sequence[str] = ()
) -> str:
    """Create the Hub model repository `repo_id` if needed and upload `folder`; returns the repository URL.

    Uses the token of `hf auth login` or `HF_TOKEN`; `private` applies when the repository is created.

    Raises:
        UsageError: the upload failed (no login, a bad repo id, no network); the folder stays as written.
    """
    import huggingface_hub

    api = huggingface_hub.HfApi()
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(folder),
            commit_message=commit_message,
            ignore_patterns=list(ignore_patterns) or None,
        )
    except (OSError, ValueError) as error:  # HTTP and token errors are OSErrors, invalid repo ids ValueErrors
        raise UsageError(
            f"The folder {folder} is written and checked, but uploading it to {repo_id!r} failed: "
            f"{type(error).__name__}: {error}. Check the repo id and your login (`hf auth login` or HF_TOKEN), then "
            f"upload the folder again, e.g. `hf upload {repo_id} {folder}`."
        ) from None
    return str(url) if url is not None else f"https://huggingface.co/{repo_id}"
