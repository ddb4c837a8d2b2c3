"""Build tiny MAEST repositories: plain folders and Hugging Face cache snapshots, for offline loading tests."""

import json
import shutil
from pathlib import Path

from conftest import ROOT, tiny_config_kwargs

from configuration_maest import MAEST_CODE_FILES, MAEST_CUSTOM_PIPELINES


CODE_FILES = MAEST_CODE_FILES


def discogs_400_labels() -> list[str]:
    return json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())


def save_tiny_repo(folder: Path, seed: int = 0, **overrides) -> Path:
    """Save a tiny random MAEST with the real 400 Discogs labels, 10 s windows (626 frames every 625) and the code.

    Written the way a user publishes a model: `register_for_auto_class` + `save_pretrained` for the model and the
    feature extractor, plus the custom pipeline entry that the repository's config.json carries.
    """
    import torch

    from configuration_maest import MaestConfig
    from feature_extraction_maest import MaestFeatureExtractor
    from modeling_maest import MaestForAudioClassification

    labels = discogs_400_labels()
    kwargs = tiny_config_kwargs(
        max_length=626,
        window_hop=625,
        max_windows_per_batch=8,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    kwargs.update(overrides)
    config = MaestConfig(**kwargs)
    config.custom_pipelines = MAEST_CUSTOM_PIPELINES
    torch.manual_seed(seed)
    model = MaestForAudioClassification(config).eval()
    MaestConfig.register_for_auto_class()
    MaestForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
    MaestFeatureExtractor.register_for_auto_class()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    MaestFeatureExtractor().save_pretrained(folder)
    # The published repository maps AutoModel too; save_pretrained records only the registered classes.
    config_json = json.loads((folder / "config.json").read_text())
    config_json["auto_map"]["AutoModel"] = "modeling_maest.MaestModel"
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    return folder


def place_in_hub_cache(folder: Path, hub_cache: Path, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """Lay a model folder out as a Hugging Face cache entry: models--ORG--NAME/snapshots/<commit>/ and refs/main."""
    entry = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = entry / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(commit)
    return snapshot
