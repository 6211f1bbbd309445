"""fdrl.tables and scripts/results_tables.py: every table of the docs is what its result files give, a figure
typed into a table by hand is caught, and each kind of result file (the runs' and the benchmarks' JSON) renders."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fdrl.tables as rt

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "results_tables.py"


def _copy_repo(tmp_path: Path) -> Path:
    """The pages and result files the check reads, in a temporary copy."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copytree(ROOT / "results", tmp_path / "results")
    return tmp_path


def test_every_docs_table_matches_its_result_files():
    out = io.StringIO()
    assert rt.check(ROOT, out) == 0, out.getvalue()
    blocks = [m["name"] for p in rt.pages(ROOT) for m in rt.MARK.finditer(p.read_text())]
    assert len(blocks) >= 50 and "peers_fer2013_publictest:crop" in blocks  # the README's table too


def test_a_hand_edited_figure_is_caught_and_rewritten(tmp_path):
    root = _copy_repo(tmp_path)
    page = root / "docs" / "results.md"
    text = page.read_text()
    row = "| 1 | 60.71 | 59.10 | -1.62 |"
    assert text.count(row) == 1
    page.write_text(text.replace(row, "| 1 | 60.71 | 59.90 | -1.62 |"))
    out = io.StringIO()
    assert rt.check(root, out) == 1
    assert "docs/results.md: results:pair_fer2013_scratch_seeds differs from its result files" in out.getvalue()
    assert "+| 1 | 60.71 | 59.10 | -1.62 |" in out.getvalue()
    cli = subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(root)], capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 1 and "results:pair_fer2013_scratch_seeds" in cli.stdout
    subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], check=True, capture_output=True, timeout=60)
    assert page.read_text() == text and rt.check(root, io.StringIO()) == 0


def test_a_changed_result_file_is_caught(tmp_path):
    root = _copy_repo(tmp_path)
    path = root / "results" / "transfer_fer2013_sfew.json"
    data = json.loads(path.read_text())
    data["sets"]["sfew"]["crop"]["detected"]["accuracy"] = 47.0
    path.write_text(json.dumps(data))
    out = io.StringIO()
    assert rt.check(root, out) == 1
    assert "results:transfer_fer2013_sfew+transfer_ferplus_sfew+" in out.getvalue() and " differs" in out.getvalue()


def test_missing_file_unclosed_block_and_unused_file_are_named(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "orphan.json").write_text('{"columns": [], "rows": []}')
    (tmp_path / "README.md").write_text("<!-- results:nowhere -->\n| a |\n<!-- /results:nowhere -->\n\n"
                                        "<!-- results:open -->\n| b |\n")
    out = io.StringIO()
    assert rt.check(tmp_path, out) == 1
    said = out.getvalue()
    assert "results/nowhere.json: no such result file" in said
    assert "a results block is not closed" in said
    assert "results/orphan.json feeds no table" in said


def test_cells_minus_sign_percent_missing_bold_and_overrides():
    table = {"columns": [{"key": "arm", "head": "arm", "cell": "{arm}"},
                         {"key": "d", "head": "− baseline", "cell": "{d!m:+.2f} ± {d_std:.2f}", "missing": "—"},
                         {"key": "acc", "head": "accuracy", "cell": "{acc!p:.1f} %"},
                         {"key": "n", "head": "n", "cell": "{n:,}", "align": "right"}],
             "rows": [{"arm": "a", "d": -2.084, "d_std": 2.757, "acc": 0.4651, "n": 1516, "bold": ["acc"]},
                      {"arm": "b", "d": None, "d_std": None, "acc": 0.5, "n": 3, "formats": {"acc": "{acc!q:+.0f}"}},
                      {"arm": "c", "d": 0.5, "d_std": 0.1, "acc": 0.0, "n": 0, "text": {"n": "none"}}]}
    assert rt.render_table([table], None).splitlines() == [
        "| arm | − baseline | accuracy | n |", "|---|---|---|---:|",
        "| a | −2.08 ± 2.76 | **46.5 %** | 1,516 |", "| b | — | +50 | 3 |", "| c | +0.50 ± 0.10 | 0.0 % | none |"]


def test_benchmark_result_files_render(tmp_path):
    """The shapes the benchmarks' --json write: training throughput, inference, detectors."""
    (tmp_path / "results").mkdir()
    files = {
        "tt": {"benchmark": "train_throughput", "input_size": 48, "rows": [
            {"model": "baseline_resnet18", "images_per_second": 253.12, "ms_per_step": 252.9, "peak_memory_mb": 650.3},
            {"model": "fdrl_resnet18", "images_per_second": 236.7, "ms_per_step": 270.4, "peak_memory_mb": 654.8}]},
        "inf": {"benchmark": "inference", "rows": [
            {"model": "fdrl (pytorch)", "batch": 1, "faces_per_s": 100.0, "ms_per_face": 10.0},
            {"model": "baseline resnet18 (pytorch)", "batch": 1, "faces_per_s": 50.0, "ms_per_face": 20.0}]},
        "det": {"benchmark": "detectors", "sizes": [96, 160], "rows": [
            {"detector": "mtcnn_lite", "found": {"96": [44, 45], "160": [30, 40]}, "false": 0, "eyes": 70,
             "ms_per_photo": 44.44}]},
    }
    for name, data in files.items():
        (tmp_path / "results" / f"{name}.json").write_text(json.dumps(data))
    assert rt.render("tt", tmp_path).splitlines()[2] == "| 48 px | baseline_resnet18 | 253.1 | 252.9 | 650.3 |"
    assert rt.render("inf", tmp_path).splitlines()[2:] == ["| fdrl (pytorch) | 1 | 100.0 | 10.00 | 2.00 |",
                                                           "| baseline resnet18 (pytorch) | 1 | 50.0 | 20.00 | 1.00 |"]
    assert rt.render("det", tmp_path).splitlines()[2] == "| mtcnn_lite | 87.1% | 97.8% | 75.0% | 0 | 94.6% | 44.4 |"
    with pytest.raises(rt.ResultsError, match="different kinds"):
        rt.render("tt+inf", tmp_path)


def test_results_table_json_is_the_table_it_prints(tmp_path):
    for variant, acc in (("baseline", 0.60), ("fdrl", 0.62)):
        run = tmp_path / "pair" / variant
        run.mkdir(parents=True)
        best = {"epoch": 3, "val_accuracy": acc, "val_mean_class_accuracy": 0.5}
        (run / "summary.json").write_text(json.dumps({
            "dataset": "fer2013", "model_name": f"{variant}_resnet18", "epochs": 3, "selected": "best", "best": best,
            "last": best, "config": {"data": {"test_split": None}, "train": {"seed": 0}}, "train_seconds": 600,
            "device": "cpu", "world_size": 1, "versions": {"torch": "2.13.0+cpu"}}))
    (tmp_path / "results").mkdir()
    out = tmp_path / "results" / "pair.json"
    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "results_table.py"), "--json", str(out),
                              str(tmp_path / "pair")], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out.read_text())["command"].startswith("python scripts/results_table.py --json")
    assert rt.render("pair", tmp_path) == printed.strip("\n")
    assert "| fer2013 (None) | fdrl_resnet18 | 3 | best (epoch 3) | 62.00 | 50.00 | – | – | – | 10 min |" in printed
