"""Shared pytest fixtures: paths of the music clips and the project root on sys.path."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_AUDIO = ROOT / "tests" / "data" / "audio"
# The developer clip set beside the checkout (present in this workplace and in CI); tests that use
# it fall back to material built from TEST_AUDIO so the suite also runs elsewhere.
SHARED_AUDIO = ROOT.parent / "shared" / "audio"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# tests/compat runs only in the compatibility stage (.ci/compat), one venv per transformers release, against the
# reference that stage writes; the main suite leaves it alone.
collect_ignore = [] if os.environ.get("MAEST_COMPAT_DIR") else ["compat"]
# tests/transformers_common runs transformers' own common tests; it needs a transformers source checkout
# (.ci/transformers-common-tests sets MAEST_TRANSFORMERS_SRC), so the main suite leaves it alone otherwise.
if not os.environ.get("MAEST_TRANSFORMERS_SRC"):
    collect_ignore.append("transformers_common")

# Keep the suite deterministic and polite on small machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # Tests over 5 s on one core; `pytest -m "not slow"` is the quick loop, plain `pytest` runs everything.
    config.addinivalue_line("markers", "slow: takes more than 5 s on one CPU core")


@pytest.fixture(scope="session")
def flac_path() -> Path:
    """A 30 s, 16 kHz mono FLAC clip of real music."""
    return TEST_AUDIO / "orchestral_wesnoth_northerners_16k_mono.flac"


@pytest.fixture(scope="session")
def ogg_path() -> Path:
    """The same 30 s segment as `flac_path`, at 44.1 kHz stereo in Ogg Vorbis."""
    return TEST_AUDIO / "orchestral_wesnoth_northerners_orig44k_stereo.ogg"


@pytest.fixture(scope="session")
def electronic_path() -> Path:
    """A second 30 s, 16 kHz mono FLAC clip (electronic music)."""
    return TEST_AUDIO / "electronic_nexuiz_digital_pursuit_16k_mono.flac"


@pytest.fixture(scope="session")
def clip_paths() -> list[Path]:
    """Every clip shipped with the tests."""
    return sorted(p for p in TEST_AUDIO.iterdir() if p.suffix in {".flac", ".ogg"})


def tiny_config_kwargs(**overrides) -> dict:
    """Keyword arguments of a tiny MaestConfig with odd sizes, so that shapes cannot match by accident.

    32 wide, 2 heads of 16, 2 blocks, MLP 37, windows of 76 frames (7 time positions) every 70 frames, 7 labels.
    """
    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_length=76,
        window_hop=70,
        max_windows_per_batch=3,
        id2label={i: f"Genre---Style {i}" for i in range(7)},
        problem_type="multi_label_classification",
    )
    kwargs.update(overrides)
    return kwargs


def tiny_config(**overrides):
    """A tiny `MaestConfig` (see `tiny_config_kwargs`)."""
    from configuration_maest import MaestConfig

    return MaestConfig(**tiny_config_kwargs(**overrides))


def tiny_model(seed: int = 0, **overrides):
    """A tiny `MaestForAudioClassification` with random weights in eval mode."""
    import torch

    from modeling_maest import MaestForAudioClassification

    torch.manual_seed(seed)
    return MaestForAudioClassification(tiny_config(**overrides)).eval()

