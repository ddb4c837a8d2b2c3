"""Smoke test of benchmarks/bench.py: a --quick run (tiny model, short audio) writes the JSON and the markdown.

No timing is asserted: only that every section runs, the files have the documented schema, and the numbers that do
not depend on the machine (FLOP counts, parity with Essentia, agreement with transformers' AST) are right.
"""

import json
import math
import operator
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT


sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("essentia")
    output = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench.py"),
            "--quick",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--label",
            "smoke",
            "--output-dir",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((output / "bench-smoke.json").read_text())
    markdown = (output / "bench-smoke.md").read_text()
    return results, markdown, completed.stderr


def finite_positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_json_has_every_section_and_the_machine(quick_run):
    results, *_ = quick_run
    assert results["schema_version"] == bench.SCHEMA_VERSION
    assert results["label"] == "smoke"
    assert results["settings"]["quick"] is True and results["settings"]["repeats"] == 1
    machine = results["machine"]
    assert machine["torch_threads"] == 1
    for key in ("cpu_model", "cpus_available", "device", "versions", "load_average_at_start"):
        assert key in machine
    assert machine["versions"]["torch"] == torch.__version__
    for section in bench.SECTIONS:
        assert section in results, section
        assert finite_positive(results[section]["section_wall_s"])


@pytest.mark.slow
def test_frontend_rows(quick_run):
    results, *_ = quick_run
    rows = results["frontend"]["rows"]
    assert {row["key"] for row in rows} == {"maest", "essentia", "audio_utils"}
    for row in rows:
        assert len(row["times_s"]) == 1 and finite_positive(row["audio_s_per_s"])
    ours = [row for row in rows if row["key"] == "maest"]
    assert all(row["max_abs_error_vs_essentia"] < 1e-4 for row in ours)  # the project's parity claim
    # Throughputs and ratios follow from the timings in the JSON: audio seconds / median seconds, and each
    # contender's throughput over Essentia's on the same audio.
    essentia = {row["audio_s"]: row for row in rows if row["key"] == "essentia"}
    assert essentia
    for row in rows:
        assert row["audio_s_per_s"] == pytest.approx(row["audio_s"] / row["median_s"], rel=1e-12)
        assert row["x_essentia"] == pytest.approx(
            row["audio_s_per_s"] / essentia[row["audio_s"]]["audio_s_per_s"], rel=1e-12
        )
    # The periodic/float64-corner free transformers.audio_utils variant is close, but not within Essentia's 1e-4.
    hf = [row for row in rows if row["key"] == "audio_utils"]
    assert all(0 < row["max_abs_error_vs_essentia"] < 1e-2 for row in hf)


@pytest.mark.slow
def test_model_rows_and_agreement_with_ast(quick_run):
    results, *_ = quick_run
    model = results["model"]
    assert finite_positive(model["ceiling"]["gflops"])
    combos = {(row["window_s"], row["batch"], row["key"]) for row in model["rows"]}
    assert combos == {(w, b, k) for w in (10, 30) for b in (1, 4) for k in ("maest_sdpa", "maest_eager", "ast_sdpa")}
    for row in model["rows"]:
        assert finite_positive(row["ms_per_window"]) and finite_positive(row["gflops"])
        assert row["time_ratio_vs_ast"] > 0 and row["fraction_of_ceiling"] > 0
    for agreement in model["agreement"].values():
        assert agreement["max_abs_logit_diff_ours_vs_ast"] < 1e-3
        assert agreement["max_abs_logit_diff_eager_vs_sdpa"] < 1e-4


@pytest.mark.slow
def test_other_sections(quick_run):
    results, *_ = quick_run
    patchout = {row["inference_patchout_time"]: row for row in results["patchout"]["rows"]}
    assert [patchout[n]["tokens"] for n in (1, 2, 3)] == [2 + 9 * 62, 2 + 9 * 31, 2 + 9 * 21]
    lowprec = {row["path"]: row for row in results["lowprec"]["rows"]}
    # float32 against an independent float64 run: rounding only, far below what low precision costs.
    float32_rounding = lowprec["float32"]["prob_max_abs_dev_vs_float64"]
    assert 0 < float32_rounding < 1e-5
    for name in ("bfloat16", "int8_dynamic"):
        assert 0 < lowprec[name]["prob_mean_abs_dev"] <= lowprec[name]["prob_max_abs_dev"] < 0.5
        assert lowprec[name]["prob_max_abs_dev_vs_float64"] > 10 * float32_rounding
        assert finite_positive(lowprec[name]["speedup_vs_float32"])
    assert results["lowprec"]["caveat"]  # random weights: the caveat is stated
    track = {row["key"]: row for row in results["track"]["rows"]}
    assert set(track) == {"pipeline_file", "pipeline_array", "decode", "features"}
    assert all(finite_positive(row["audio_s_per_s"]) for row in track.values())
    memory = results["memory"]
    assert "error" not in memory, memory.get("error")
    assert memory["rss_after_imports_bytes"] < memory["peak_rss_bytes"] < 8e9
    assert memory["audio_s"] == pytest.approx(60.0)


@pytest.mark.slow
def test_targets(quick_run):
    results, *_ = quick_run
    targets = {target["key"]: target for target in results["targets"]}
    assert set(targets) == {key for key, *_ in bench.TARGETS}
    compare = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
    for key, _description, comparison, threshold in bench.TARGETS:
        target = targets[key]
        assert target["value"] is not None, target
        assert target["met"] is compare[comparison](target["value"], threshold), target
    # The values come from the sections' rows.
    ours = [row for row in results["frontend"]["rows"] if row["key"] == "maest"]
    assert targets["frontend_parity"]["value"] == max(row["max_abs_error_vs_essentia"] for row in ours)
    assert targets["frontend_vs_essentia"]["value"] == min(row["x_essentia"] for row in ours)


@pytest.mark.slow
def test_markdown_report(quick_run):
    results, markdown, console = quick_run
    for heading in (
        "## Targets",
        "## Front end",
        "## Model",
        "## Inference patchout",
        "## Low precision",
        "## Whole track",
        "## Peak memory",
    ):
        assert heading in markdown
    assert "QUICK MODE" in markdown
    # A smoke run says so on the console and at the top of the markdown; its targets carry no bold verdicts.
    assert bench.QUICK_NOTICE in console
    assert markdown.splitlines()[2] == f"> **{bench.QUICK_NOTICE}**"
    assert "**no**" not in markdown and "(smoke run)" in markdown.split("## Targets")[1].split("##")[0]
    assert results["machine"]["cpu_model"] in markdown
    assert markdown.count("| this project (sdpa) |") == 4  # 2 windows x 2 batch sizes


@pytest.mark.parametrize("frames, step", [(626, 1), (300, 1), (626, 2), (1876, 3)])
def test_flop_formula_matches_torch_flop_counter(frames, step):
    # Independent count: torch's FlopCounterMode on a real forward (eager attention: its matmuls are counted).
    from torch.utils.flop_counter import FlopCounterMode

    from configuration_maest import MaestConfig
    from modeling_maest import MaestForAudioClassification

    config = MaestConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_length=max(frames, 626),
        num_labels=5,
        inference_patchout_time=step,
    )
    config._attn_implementation = "eager"
    model = MaestForAudioClassification(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, frames, 96))
    tokens, flops = bench.window_flops(config, frames, step)
    assert flops == counter.get_total_flops()
    assert tokens == 2 + 9 * len(range(0, (frames - 16) // 10 + 1, step))


def test_full_size_flops_match_the_published_figures():
    # The MAEST paper's figures: about 105 GFLOP per 10 s window and 390 GFLOP per 30 s window.
    from configuration_maest import MaestConfig

    _, ten = bench.window_flops(MaestConfig(), 626)
    _, thirty = bench.window_flops(MaestConfig(max_length=1876), 1876)
    assert ten / 1e9 == pytest.approx(105, rel=0.03)
    assert thirty / 1e9 == pytest.approx(390, rel=0.03)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "model,speed"], "unknown section(s) ['speed']"),
        (["--repeats", "0"], "--repeats >= 1"),
        (["--model", "/nonexistent/folder"], "no config.json there"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_quick_runs_write_outside_the_repository_unless_told():
    assert Path(bench.parse_args(["--quick"]).output_dir) == bench.QUICK_OUTPUT_DIR
    assert not bench.QUICK_OUTPUT_DIR.resolve().is_relative_to(ROOT)
    assert Path(bench.parse_args([]).output_dir) == ROOT / "benchmarks" / "results"
    assert bench.parse_args(["--quick", "--output-dir", "here"]).output_dir == "here"
