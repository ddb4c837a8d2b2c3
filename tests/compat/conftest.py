"""Compatibility stage: runs in a venv with one transformers release against the pinned version's reference.

Needs MAEST_COMPAT_DIR, the folder `make_reference.py` filled (HF cache and reference.npz); `.ci/run` sets it.
The main suite does not collect this folder (tests/conftest.py ignores it unless MAEST_COMPAT_DIR is set).
"""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest


HERE = Path(__file__).resolve().parent
WORKDIR = os.environ.get("MAEST_COMPAT_DIR")
if not WORKDIR or not (Path(WORKDIR) / "reference.npz").exists():
    raise pytest.UsageError(
        f"tests/compat needs MAEST_COMPAT_DIR, the folder written by `python tests/compat/make_reference.py DIR` "
        f"(got {WORKDIR!r}). Run `.ci/compat` or set it to that folder."
    )

# The model code must come from the HF cache as remote code, as on a user's machine: with the repository root on
# sys.path (`python -m pytest` from the root, or tests/conftest.py) transformers would find the root modules too and
# hide import problems of the remote code. .ci/compat runs pytest from tests/compat with --confcutdir.
if importlib.util.find_spec("configuration_maest") is not None:
    raise pytest.UsageError(
        "tests/compat must run without the repository root on sys.path: "
        "`cd tests/compat && python -m pytest --confcutdir=. .` (see .ci/compat)."
    )

# Before transformers is imported: offline, the reference's HF cache, and a private remote-code module cache.
os.environ["HF_HOME"] = str(Path(WORKDIR) / "hf-home")
os.environ["HF_HUB_CACHE"] = str(Path(WORKDIR) / "hf-home" / "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="maest-compat-modules-")
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def reference() -> dict:
    """The pinned version's numbers (see cases.py)."""
    import numpy as np

    with np.load(Path(WORKDIR) / "reference.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="session")
def audio_path() -> str:
    return str(HERE.parent / "data" / "audio" / "orchestral_wesnoth_northerners_16k_mono.flac")
