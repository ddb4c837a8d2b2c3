"""The console commands of pyproject.toml: each names a `cli` function that exists and answers --help.

`pip install .` writes one small launcher per entry of [project.scripts] that imports `module` and calls
`function()`; calling the same function here checks what the launcher would run, without installing.
"""

import importlib
import signal

import pytest
from conftest import ROOT


tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11's tomllib")


def entry_points() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


def test_the_five_commands_are_declared():
    assert set(entry_points()) == {"maest-tag", "maest-convert", "maest-finetune", "maest-probe", "maest-export-onnx",
                                  "maest-plot"}


@pytest.mark.parametrize("command", sorted(entry_points()))
def test_each_command_answers_help(command, capsys):
    module_name, _, function_name = entry_points()[command].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    handler = signal.getsignal(signal.SIGTERM)  # maest-tag installs its own SIGTERM handler
    try:
        with pytest.raises(SystemExit) as exit_info:
            function(["--help"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {command} ")  # the program name users type, not a file name
    if command in ("maest-tag", "maest-probe", "maest-export-onnx"):  # the tools with an embedding output
        assert "--block" in out and "middle block" in " ".join(out.split())


def test_package_data_is_in_the_package():
    import maest_tools.convert as convert

    assert {p.name for p in convert.LABELS_DIR.iterdir()} >= {"discogs_400_labels.json", "discogs_519_labels.json"}
    assert convert.MODEL_CARD_TEMPLATE.is_file()
    assert convert.LABELS_DIR.parent == ROOT / "maest_tools"
