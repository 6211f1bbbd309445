"""``fdrl reproduce``: FDRL vs its baseline over seeds, end to end on CPU on a tiny drawn FER2013 tree; --resume; the
protocol (nothing selects on a test split); a bad data root; the epoch planning and the wall-clock guard; and the
transfer helpers (packed data in parts, the exported checkpoint)."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fdrl
from fdrl.cli import main
from fdrl.config import load_config
from fdrl.data.registry import is_test_split
from fdrl.data.synthetic import CLASSES, draw_face
from fdrl.errors import ConfigError, DataError
from fdrl.recipes import list_recipes
from fdrl.reproduce.runs import Probe, Run, plan_epochs, supervise
from fdrl.reproduce.suite import check_protocol
from fdrl.reproduce.tables import pair_table, results_markdown
from fdrl.reproduce.transfer import join_parts, pack_folder, unpack_archive

# Small and quick: 14 train/fit + 7 train/holdout images, one step of 8 per epoch; no t-SNE or plots.
FAST = ["--set", "data.test_split=publictest", "--set", "train.batch_size=8", "--set", "report.tsne=false",
        "--set", "report.plots=false"]


def write_fer_tree(root: Path) -> Path:
    """FER2013's image-folder release in miniature, drawn faces under the official names: 3 Training and 2
    PublicTest images per class, and a PrivateTest image per class that no run may read."""
    n = 0
    for label, cls in enumerate(CLASSES):
        for folder, usage, count in (("train", "Training", 3), ("test", "PublicTest", 2), ("test", "PrivateTest", 1)):
            for _ in range(count):
                path = root / folder / cls / f"{usage}_{1000 + n}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(draw_face(np.random.default_rng(n), label, 48)).convert("L").save(path)
                n += 1
    return root


@pytest.fixture(scope="module")
def fer_tree(tmp_path_factory):
    return write_fer_tree(tmp_path_factory.mktemp("data") / "fer2013")


@pytest.fixture(scope="module")
def done(tmp_path_factory, fer_tree):
    """One reproduction: 2 seeds x 2 epochs, FDRL and baseline, two runs side by side on the CPU."""
    tmp = tmp_path_factory.mktemp("repro")
    argv = ["reproduce", "--recipe", "fer2013", "--data", str(fer_tree), "--seeds", "0", "1", "--epochs", "2",
            "--device", "cpu", "--parallel", "2", *FAST, "--set", f"data.cache_dir={tmp / 'cache'}"]
    out = tmp / "out"
    rc = main([*argv, "--out", str(out)])
    return argv, out, rc


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _row(table: str, seed: int) -> list[str]:
    return next(line for line in table.splitlines() if line.startswith(f"| {seed} |")).split(" | ")


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def test_reproduce_writes_the_paired_table_and_every_run(done):
    _, out, rc = done
    res = _results(out)
    assert rc == 0, (out / "reproduce.log").read_text()
    rep = res["reproduction"]
    assert rep["protocol"] == {"dataset": "fer2013", "train_split": "train/fit", "val_split": "train/holdout",
                               "test_split": "publictest", "select": "val"}
    assert rep["command"].startswith("fdrl reproduce --recipe fer2013 --data ") and rep["device"] == "cpu"
    assert rep["machine"].startswith("CPU only") and rep["plan"]["epochs"] == 2 and rep["wall_s"] > 0
    runs = res["runs"]
    assert sorted(runs) == ["baseline_s0", "baseline_s1", "fdrl_s0", "fdrl_s1"]
    for name, run in runs.items():
        cfg = run["summary"]["config"]
        assert run["status"] == "done" and not run["finished_earlier"]
        assert cfg["model_name"] == ("baseline_resnet18" if name.startswith("baseline") else "fdrl_resnet18")
        assert (cfg["train"]["seed"], cfg["train"]["epochs"], cfg["train"]["device"]) == (run["seed"], 2, "cpu")
        assert run["summary"]["best"]["num_test_samples"] == 14  # PublicTest only: no PrivateTest image
        assert run["command"].startswith("fdrl train --recipe fer2013 ") and ("--baseline" in run["command"]) == \
            name.startswith("baseline")
        assert all((out / "runs" / name / f).is_file() for f in ("best.pt", "last.pt", "summary.json"))
    assert runs["fdrl_s0"]["summary"]["config"]["trunk"] == runs["baseline_s0"]["summary"]["config"]["trunk"]
    table = (out / "results.md").read_text()
    assert table.startswith("# FDRL vs its baseline: recipe fer2013 on fer2013")
    assert "| seed | baseline test acc (publictest) | FDRL test acc (publictest) | diff |" in table
    assert "baseline val acc (train/holdout) | FDRL val acc (train/holdout) | diff |" in table
    assert "- command: `fdrl reproduce --recipe fer2013" in table and "- machine: CPU only" in table
    diffs = []
    for seed in (0, 1):
        b, f = runs[f"baseline_s{seed}"]["summary"], runs[f"fdrl_s{seed}"]["summary"]
        row = _row(table, seed)
        assert row[1:4] == [_pct(b["test_accuracy"]), _pct(f["test_accuracy"]),
                            f"{100 * (f['test_accuracy'] - b['test_accuracy']):+.2f}"]
        assert row[7:9] == [_pct(b["best"]["val_accuracy"]), _pct(f["best"]["val_accuracy"])]
        assert row[-1] == "done / done |"
        diffs.append(f["test_accuracy"] - b["test_accuracy"])
    assert "| mean ± std (2 complete pairs) |" in table
    ms = res["table"]["mean_std"]["diff"]["test_accuracy"]
    assert ms["n"] == 2 and ms["mean"] == pytest.approx(statistics.mean(diffs))
    assert ms["std"] == pytest.approx(statistics.stdev(diffs))


def test_selection_uses_the_validation_split_and_tests_once(done):
    """Every run's headline is the test figure of the epoch its validation split chose; the validation split is no
    test split, and the test split is one."""
    _, out, _ = done
    for run in _results(out)["runs"].values():
        summary, history, result = run["summary"], run["history"], run["result"]
        data = summary["config"]["data"]
        assert not is_test_split("fer2013", data["val_split"]) and is_test_split("fer2013", data["test_split"])
        chosen = max(history, key=lambda h: h["val_accuracy"])  # the first best, as the trainer keeps it
        assert summary["selected"] == "best" and summary["best"]["epoch"] == chosen["epoch"] == result["epoch"]
        assert result["val_accuracy"] == chosen["val_accuracy"]
        assert result["test_accuracy"] == summary["best"]["test_accuracy"] == summary["test_accuracy"]
        assert all(not k.startswith("test") for h in history for k in h)  # no test figure during training


def _fake_run(tmp_path, variant, seed, best, last, status="done"):
    """A finished run whose best.pt (by validation) and last.pt have the given (val, test) accuracies."""
    r = Run(f"{variant}_s{seed}", variant, seed, tmp_path / f"{variant}_s{seed}", ["--recipe", "x"], [],
            status=status, started=1.0, ended=2.0)
    r.dir.mkdir()
    rows = [{"epoch": 1, "val_accuracy": best[0], "val_mean_class_accuracy": best[0]},
            {"epoch": 2, "val_accuracy": last[0], "val_mean_class_accuracy": last[0]}]
    (r.dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    if status == "done":
        ck = {which: {"epoch": e, "val_accuracy": v, "val_mean_class_accuracy": v, "test_accuracy": t,
                      "test_mean_class_accuracy": t, "num_test_samples": 100}
              for which, e, (v, t) in (("best", 1, best), ("last", 2, last))}
        summary = {"selected": "best", **ck, "test_accuracy": best[1], "test_mean_class_accuracy": best[1]}
        (r.dir / "summary.json").write_text(json.dumps(summary))
    return r


def test_table_reports_the_validation_choice_even_where_another_epoch_tests_better(tmp_path):
    """best.pt (chosen on validation) tests worse than last.pt in every run: a tool choosing by test would report
    the last epochs' 70 % and 80 %; the table must report what validation chose."""
    runs = [_fake_run(tmp_path, "baseline", 0, best=(0.60, 0.50), last=(0.55, 0.70)),
            _fake_run(tmp_path, "fdrl", 0, best=(0.65, 0.52), last=(0.50, 0.80))]
    table = pair_table(runs)
    assert table["rows"][0]["baseline"]["test_accuracy"] == 0.50 and table["rows"][0]["fdrl"]["epoch"] == 1
    md = results_markdown(table, ["# t"], "train/holdout", "test")
    assert _row(md, 0)[1:4] == ["50.00", "52.00", "+2.00"] and "70.00" not in md and "80.00" not in md
    stopped = _fake_run(tmp_path, "fdrl", 1, best=(0.70, None), last=(0.60, None), status="stopped by the guard")
    row = pair_table([*runs, stopped])["rows"][1]
    assert row["fdrl"]["test_accuracy"] is None and row["fdrl"]["val_accuracy"] == 0.70 and not row["complete"]


@pytest.mark.parametrize(("item", "message"), [
    ("data.val_split=publictest", "'publictest' is a test split"),
    ("data.val_split=test/holdout", "'test/holdout' is a test split"),
    ("data.train_split=publictest", "'publictest' is a test split"),
    ("data.test_split=train/holdout", "is not a test split of fer2013"),
    ("train.seed=3", "--set train.seed: set by --seeds"),
    ("data.root=/elsewhere", "--set data.root: set by --data"),
])
def test_protocol_refusals_come_before_anything_runs(fer_tree, tmp_path, capsys, item, message):
    out = tmp_path / "out"
    rc = main(["reproduce", "--recipe", "fer2013", "--data", str(fer_tree), "--out", str(out), "--device", "cpu",
               "--set", item])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_every_packaged_recipe_passes_the_protocol_or_says_why_not():
    for name in list_recipes():
        cfg = load_config(name, ["data.root=/data"])
        try:
            p = check_protocol(cfg, name)
        except ConfigError as exc:  # k-fold data sets, recipes without a test split
            assert "k-fold" in str(exc) or "data.test_split is unset" in str(exc), (name, exc)
            continue
        assert is_test_split(p["dataset"], p["test_split"]), name
        assert not (p["val_split"] and is_test_split(p["dataset"], p["val_split"])), name
        assert not is_test_split(p["dataset"], p["train_split"]), name
    assert check_protocol(load_config("sfew", ["data.root=/d"]), "sfew")["select"] == "last"  # no val: last epoch


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_a_bad_data_root_is_one_line_naming_the_path_and_the_layout(tmp_path, capsys, layout):
    root = tmp_path / "fer2013"
    if layout == "empty":
        root.mkdir()
    out = tmp_path / "out"
    rc = main(["reproduce", "--recipe", "fer2013", "--data", str(root), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"fdrl reproduce: error: --data {root}: "), err
    assert ("which does not exist" if layout == "missing" else "holds neither fer2013.csv nor train/") in err
    assert "expected: FER2013: fer2013.csv or train|test/<class>/ image folders" in err
    assert not out.exists()


def test_resume_skips_finished_runs_and_continues_unfinished_ones(done, tmp_path, capsys):
    argv, first, _ = done
    out = tmp_path / "out"
    # a copy of the reproduction, with fdrl_s1 as a run killed after its last epoch's checkpoint
    shutil.copytree(first, out, ignore=lambda d, names: [n for n in names if n.endswith(".pt")
                                                         and not d.endswith("fdrl_s1")])
    (out / "runs" / "fdrl_s1" / "summary.json").unlink()
    kept = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in ("baseline_s0", "fdrl_s0",
                                                                                 "baseline_s1")}
    assert main([*argv, "--out", str(out)]) == 2
    assert "already holds a reproduction" in capsys.readouterr().err  # without --resume: refused, nothing touched
    assert main([*argv, "--out", str(out), "--resume", "--set", "train.batch_size=16"]) == 2
    assert "resume with the same recipe and --set options" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    runs = _results(out)["runs"]
    assert {n: r["finished_earlier"] for n, r in runs.items()} == {"baseline_s0": True, "fdrl_s0": True,
                                                                  "baseline_s1": True, "fdrl_s1": False}
    assert all(r["status"] == "done" for r in runs.values())
    assert {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in kept} == kept
    s1 = runs["fdrl_s1"]["summary"]
    assert s1["epochs"] == 2 and [h["epoch"] for h in runs["fdrl_s1"]["history"]] == [1, 2]
    assert s1["test_accuracy"] == _results(first)["runs"]["fdrl_s1"]["summary"]["test_accuracy"]
    assert "fdrl_s1: started (continuing from last.pt)" in (out / "reproduce.log").read_text()
    assert main([*argv, "--out", str(out), "--resume"]) == 0  # all done now: nothing to train
    assert "every run finished earlier" in (out / "reproduce.log").read_text()


def test_packed_data_in_parts_a_budget_and_the_exported_checkpoint(fer_tree, tmp_path):
    """A machine that receives the data in parts and returns a small folder: --data reads the parts' manifest,
    the budget's probe plans the epochs, the run folders stay in scratch, and the best FDRL checkpoint comes back
    in parts that join to a loadable fp16 checkpoint."""
    manifest = pack_folder(fer_tree, tmp_path / "pack" / "fer2013.tar.gz", exclude=["test/*/PrivateTest_*"],
                           part_bytes=2_000)
    assert manifest["files"] == 35 and manifest["excluded"] == 7 and len(manifest["parts"]) > 1
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    rc = main(["reproduce", "--recipe", "fer2013", "--data", str(tmp_path / "pack" / "fer2013.tar.gz.json"),
               "--out", str(out), "--seeds", "0", "--epochs", "1", "--device", "cpu", "--budget-s", "900",
               "--work", str(scratch / "work"), "--runs-dir", str(scratch / "runs"), "--export-best",
               "--part-mib", "10", *FAST, "--set", f"data.cache_dir={scratch / 'cache'}"])
    assert rc == 0, (out / "reproduce.log").read_text()
    res = _results(out)
    plan = res["reproduction"]["plan"]
    assert plan["epochs"] == 1 and plan["requested_epochs"] == 1 and set(plan["probe"]) == {
        "step_s", "epoch_overhead_s", "startup_s", "finish_s"}
    assert res["runs"]["fdrl_s0"]["summary"]["config"]["data"]["root"] == str((scratch / "work" / "data").resolve())
    assert res["runs"]["fdrl_s0"]["summary"]["best"]["num_test_samples"] == 14
    files = sorted(p.name for p in out.iterdir())
    parts = [f for f in files if ".part" in f]
    assert len(parts) > 1 and all((out / p).stat().st_size <= 10 * 2**20 for p in parts)
    assert set(files) - set(parts) == {"results.json", "results.md", "reproduce.log", "fdrl_best.pt.json"}
    joined = tmp_path / "fdrl_best.pt"
    meta = join_parts(out / "fdrl_best.pt.json", joined)
    assert (meta["run"], meta["chosen_by"]) == ("fdrl_s0", "validation accuracy")
    assert meta["test_accuracy"] == res["runs"]["fdrl_s0"]["summary"]["test_accuracy"]
    ck = fdrl.load_checkpoint(joined)
    assert ck.raw["model_name"] == "fdrl_resnet18" and "optimizer_state" not in ck.raw
    assert all(v.dtype == torch.float16 for v in ck.raw["model_state"].values() if v.is_floating_point())
    (out / parts[0]).write_bytes(b"damaged")
    with pytest.raises(DataError, match="damaged or stale"):
        join_parts(out / "fdrl_best.pt.json", tmp_path / "again.pt")


def test_pack_is_reproducible_and_unpack_keeps_the_bytes(fer_tree, tmp_path):
    a = pack_folder(fer_tree, tmp_path / "a.tar.gz", exclude=["test/*/PrivateTest_*"])
    b = pack_folder(fer_tree, tmp_path / "b.tar.gz", exclude=["test/*/PrivateTest_*"])
    assert a["sha256"] == b["sha256"] and "parts" not in a
    root = unpack_archive(tmp_path / "a.tar.gz", tmp_path / "un")
    got = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert len(got) == 35 and not any("PrivateTest" in g for g in got)
    assert (root / got[0]).read_bytes() == (fer_tree / got[0]).read_bytes()
    (tmp_path / "a.tar.gz").write_bytes((tmp_path / "b.tar.gz").read_bytes()[:-10])  # truncated in transit
    with pytest.raises(DataError, match="size or sha256 differs"):
        unpack_archive(tmp_path / "a.tar.gz", tmp_path / "un2")


def test_unpack_refuses_members_outside_the_root(tmp_path):
    import io

    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="refusing member '../outside.txt'"):
        unpack_archive(tmp_path / "evil.tar.gz", tmp_path / "un")
    assert not (tmp_path / "outside.txt").exists()


def test_plan_epochs_fits_the_budget():
    probe = Probe(step_s=0.05, epoch_overhead_s=2.0, startup_s=10.0, finish_s=5.0)
    epochs, epoch_s = plan_epochs(40, probe, steps_per_epoch=112, seconds_left=400)
    assert epoch_s == pytest.approx(1.15 * (0.05 * 112 + 2.0))
    assert epochs == 40  # 40 x 8.74 s + 15 s = 365 s < 400 s
    epochs, epoch_s = plan_epochs(40, probe, steps_per_epoch=112, seconds_left=200)
    assert epochs == 21 and 10 + 5 + epochs * epoch_s <= 200 < 10 + 5 + (epochs + 1) * epoch_s
    assert plan_epochs(40, probe, 112, seconds_left=10)[0] == 0


class _Cmd(Run):
    """A Run whose process is a stand-in command: the supervisor's bookkeeping without training."""

    code: str = ""

    def command(self):
        return [sys.executable, "-c", self.code]


def test_supervise_guard_stops_overrunning_runs_and_reports_failures(tmp_path):
    def cmd(name, variant, seed, code):
        r = _Cmd(name, variant, seed, tmp_path / name, ["--recipe", "x"], [])
        r.code = code
        return r

    slow = cmd("slow", "fdrl", 0, "import time; time.sleep(60)")
    bad = cmd("bad", "baseline", 0, "import sys; print('boom'); sys.exit(3)")
    late = cmd("late", "fdrl", 1, "import time; time.sleep(60)")  # starts when "bad" frees its slot
    queued = cmd("queued", "baseline", 1, "")
    ended = []
    supervise([slow, bad, late, queued], parallel=2, deadline=time.time() + 6, env=dict(os.environ),
              on_end=lambda r: ended.append(r.name), log=lambda m: None, poll_s=0.05)
    assert bad.status == "failed (rc 3)" and "boom" in bad.tail()
    for r in (slow, late):
        assert r.status == "stopped by the guard after epoch 0" and r.ended - r.started < 20
        assert r.proc.poll() is not None
    assert queued.status == "not started (no time left)" and queued.proc is None
    assert ended == ["bad", "slow", "late", "queued"]


def test_supervise_leaves_no_run_behind_when_interrupted(tmp_path):
    r = _Cmd("slow", "fdrl", 0, tmp_path / "slow", ["--recipe", "x"], [])
    r.code = "import time; time.sleep(60)"

    def interrupt(msg):
        if "started" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        supervise([r], parallel=1, deadline=None, env=dict(os.environ), on_end=lambda _r: None, log=interrupt)
    assert r.proc is not None and r.proc.poll() is not None  # terminated, not left training


def _script(*args: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[1] / "scripts" / "transfer.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)


def test_transfer_script_packs_joins_and_exports_a_trunk(fer_tree, tmp_path):
    res = _script("pack", str(fer_tree), str(tmp_path / "d.tar.gz"), "--exclude", "test/*/PrivateTest_*",
                  "--part-mib", "0.002")
    assert res.returncode == 0 and "packed 35 files" in res.stdout, res.stderr
    res = _script("join", str(tmp_path / "d.tar.gz.json"), str(tmp_path / "joined.tar.gz"))
    assert res.returncode == 0 and "verified" in res.stdout, res.stderr
    assert len(list(unpack_archive(tmp_path / "joined.tar.gz", tmp_path / "un").rglob("*.jpg"))) == 35
    res = _script("trunk", "fer2013", str(tmp_path / "t.pt"))
    assert res.returncode == 2 and "starts from no pretrained weights" in res.stderr
    # a recipe whose trunk starts from a weights file: exported in fp16, and loadable as the trunk of a run
    model = fdrl.create_model("fdrl_resnet18", num_classes=7)
    torch.save(model.backbone.state_dict(), tmp_path / "trunk32.pt")
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"inherit: fer2013\ntrunk: {{pretrained_path: {tmp_path / 'trunk32.pt'}}}\n")
    res = _script("trunk", str(recipe), str(tmp_path / "trunk16.pt"))
    assert res.returncode == 0 and "float16" in res.stdout, res.stderr
    half = torch.load(tmp_path / "trunk16.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in half.values() if v.is_floating_point())
    cfg = load_config(recipe, [f"trunk.pretrained_path={tmp_path / 'trunk16.pt'}"])
    again = fdrl.create_model(cfg.model_name, num_classes=7, **cfg.model_options())
    w = "conv1.weight"
    torch.testing.assert_close(again.backbone.state_dict()[w], model.backbone.state_dict()[w].half().float())
