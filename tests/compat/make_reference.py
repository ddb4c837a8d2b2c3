"""Build the compatibility stage's HF cache and reference numbers with the project's own (pinned) transformers.

Usage: python tests/compat/make_reference.py WORKDIR

Writes WORKDIR/hf-home/hub (a tiny random MAEST saved as a Hugging Face cache entry of `cases.REPO_ID`, built by
tests/hub_utils.py) and WORKDIR/reference.npz (every number `test_compat.py` checks), then each compat venv runs
`MAEST_COMPAT_DIR=WORKDIR python -m pytest tests/compat`.
"""

import os
import sys
import tempfile
from pathlib import Path


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    # Set before transformers / huggingface_hub are imported: they read these once.
    os.environ["HF_HOME"] = str(workdir / "hf-home")
    os.environ["HF_HUB_CACHE"] = str(workdir / "hf-home" / "hub")
    os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="modules-", dir=workdir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(HERE)]

    import numpy as np
    import transformers
    from hub_utils import place_in_hub_cache, save_tiny_repo

    import cases

    with tempfile.TemporaryDirectory() as folder:
        place_in_hub_cache(save_tiny_repo(Path(folder) / "repo"), workdir / "hf-home" / "hub", cases.REPO_ID)
    data = cases.inputs()
    numbers = {**data}
    numbers.update(cases.pipeline_numbers(str(ROOT / "tests" / "data" / "audio" / "orchestral_wesnoth_northerners_16k_mono.flac"), data["stereo"]))
    numbers.update(cases.auto_numbers(data))
    numbers.update(cases.training_step(data))
    numbers["transformers_version"] = np.array(transformers.__version__)
    np.savez(workdir / "reference.npz", **numbers)
    print(f"reference written with transformers {transformers.__version__}: {workdir / 'reference.npz'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/compat/make_reference.py WORKDIR")
    main(Path(sys.argv[1]).resolve())
