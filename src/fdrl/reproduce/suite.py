"""``fdrl reproduce``: FDRL against its baseline twin over seeds, in one command, on a CUDA machine or a CPU.

For each seed the recipe's FDRL model and its baseline twin (``fdrl train --recipe NAME [--baseline]``) train
under the recipe's protocol, which is checked before anything starts: train on the training part, select on the
validation split (``best.pt``, or the last epoch where the recipe says ``train.select=last``), evaluate the
selected checkpoint once on the test split; a test split never selects (:func:`check_protocol`). The output
folder gets ``results.md`` (the paired table), ``results.json`` (every run's summary) and the run folders,
rewritten as each run ends; ``resume=True`` continues unfinished runs and skips finished ones.

With ``budget_s`` a short probe of the runs side by side measures their cost, the epoch count that fits is chosen
before any real run starts (so the learning-rate schedule the runs follow is the one they report), and a
wall-clock guard stops whatever would still overrun.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import TrainConfig, load_config
from ..data.loading import check_extra_train, list_extra, list_split, load_splits, train_split_name
from ..data.registry import dataset_info, is_test_split, refuse_test_split
from ..errors import ConfigError, DataError, DeviceError, TrainingError
from ..recipes import names_a_file
from ..records import machine
from ..runtime import check_device
from .runs import VARIANTS, Probe, Run, child_env, measure, plan_epochs, supervise
from .tables import pair_table, results_markdown
from .transfer import export_checkpoint, is_archive, unpack_archive, write_atomic

# Keys the command sets from its own options; --set may not change them.
OWNED_KEYS = {"data.root": "--data", "train.seed": "--seeds", "train.epochs": "--epochs or --budget-s",
              "train.device": "--device", "model_name": "both variants are trained"}
PROBE_STEPS = 20  # training steps per probe epoch
RESERVE_S = 15.0  # kept after the wall-clock guard for the last writes
GIB_PER_RUN = 8  # GPU memory assumed per run when choosing how many run side by side
MAX_PARALLEL = 6
RESULTS, TABLE, LOG = "results.json", "results.md", "reproduce.log"
EXPORT_NAME = "fdrl_best.pt"


def _print(msg: str) -> None:
    print(msg, flush=True)


def reproduce(recipe: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str],
              seeds: Sequence[int] = (0, 1, 2), *, device: str = "auto", epochs: int | None = None,
              budget_s: float | None = None, parallel: int | None = None, overrides: Sequence[str] = (),
              resume: bool = False, work: str | os.PathLike[str] | None = None,
              runs_dir: str | os.PathLike[str] | None = None, export_best: bool = False,
              part_mib: float | None = None, probe_steps: int = PROBE_STEPS,
              log: Callable[[str], None] = _print) -> dict[str, Any]:
    """Train FDRL and its baseline twin for each seed under the recipe's protocol and write the paired table.

    :param recipe: a packaged recipe's name (``fdrl recipes``) or a YAML file of your own (``inherit:`` allowed).
    :param data: the data set's root, laid out as its publisher ships it (``docs/datasets.md``), or an archive
        made by :func:`fdrl.reproduce.transfer.pack_folder` (``.tar.gz``, or its ``.json`` manifest for parts).
    :param out: the output folder: ``results.md``, ``results.json``, ``reproduce.log`` and ``runs/``.
    :param seeds: one FDRL run and one baseline run per seed; the difference is taken within a seed.
    :param device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
    :param epochs: epochs per run (default: the recipe's); with ``budget_s``, the most that may be chosen.
    :param budget_s: seconds the whole call may take: the epoch count is chosen to fit, and a guard stops runs
        that would still overrun (``resume`` continues them).
    :param parallel: runs side by side on the device (default: 1 on a CPU; on a GPU, one per 8 GiB of its
        memory, at most 6 and at most the number of runs).
    :param overrides: ``key=value`` recipe overrides for every run; not the keys this function sets itself.
    :param resume: continue the reproduction in ``out``: finished runs are kept, unfinished ones continue from
        their ``last.pt`` with the epoch count chosen the first time.
    :param work: scratch folder for an unpacked archive and the probe runs (default: a temporary folder,
        removed at the end).
    :param runs_dir: where the run folders go (default: ``out/runs``).
    :param export_best: also write ``out/fdrl_best.pt``: the selected checkpoint of the FDRL run best on the
        validation split, fp16 without optimiser state, with a sha256 manifest.
    :param part_mib: with ``export_best``, cut that file into parts of at most this many MiB.
    :param probe_steps: training steps per probe epoch (``budget_s`` only).
    :param log: where progress lines go.
    :returns: the content of ``results.json``.
    """
    r = Reproduction(recipe, data, out, list(seeds), device=device, epochs=epochs, budget_s=budget_s,
                     parallel=parallel, overrides=list(overrides), resume=resume, work=work, runs_dir=runs_dir,
                     export_best=export_best, part_mib=part_mib, probe_steps=probe_steps, log=log)
    return r.run()


def check_options(seeds: list[int], epochs: int | None, budget_s: float | None, parallel: int | None,
                  overrides: list[str], export_best: bool, part_mib: float | None, probe_steps: int) -> None:
    """Refuse option values that cannot work, before anything is read or started."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected one or more distinct seeds, got {seeds}")
    for name, value in (("--epochs", epochs), ("--budget-s", budget_s), ("--parallel", parallel),
                        ("--part-mib", part_mib), ("--probe-steps", probe_steps)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name}: expected a positive number, got {value}")
    if part_mib is not None and not export_best:
        raise ConfigError("--part-mib cuts the file --export-best writes: give both, or neither")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in OWNED_KEYS:
            raise ConfigError(f"--set {key}: set by {OWNED_KEYS[key]}, not by --set")


def check_protocol(cfg: TrainConfig, source: str) -> dict[str, Any]:
    """The splits a run trains, selects and tests on, refused where a test split would select (or train), where
    the test figure would not come from a test split, or where there is no test split at all."""
    d = cfg.data
    info = dataset_info(d.dataset)
    if info.kfold:
        raise ConfigError(f"recipe {source}: {d.dataset} is evaluated by subject-independent k-fold "
                          f"(fdrl train --folds 10); fdrl reproduce runs data sets with a test split")
    if not d.test_split:
        raise ConfigError(f"recipe {source}: data.test_split is unset, so there would be no test figure; name the "
                          f"{d.dataset} test split with --set data.test_split=... (its test splits: "
                          f"{', '.join(info.test_splits)})")
    if not is_test_split(d.dataset, d.test_split):
        raise ConfigError(f"recipe {source}: data.test_split={d.test_split!r} is not a test split of {d.dataset} "
                          f"(those are {', '.join(info.test_splits)}): a figure reported as the test figure must "
                          f"come from one")
    train = train_split_name(d)
    refuse_test_split(d.dataset, train, "train on (data.train_split)")
    refuse_test_split(d.dataset, d.val_split, "select the checkpoint (data.val_split)")
    if cfg.train.select == "val" and not d.val_split:
        raise ConfigError(f"recipe {source}: train.select=val needs a validation split (data.val_split), and it is "
                          f"unset; set one (e.g. train/holdout) or train.select=last")
    return {"dataset": d.dataset, "train_split": train, "val_split": d.val_split or None,
            "test_split": d.test_split, "select": cfg.train.select}


def check_data(cfg: TrainConfig, given: str, log: Callable[[str], None] = _print) -> int:
    """List the train, validation and test splits of the data root and each ``data.extra_train`` part (nothing
    decoded); a missing or malformed root is one :class:`DataError` naming the path (or the entry) and the layout
    expected. Returns the training images' count, the extra parts' included."""
    d = cfg.data
    check_extra_train(d)
    n_train, classes, held_out = 0, [], set()
    for split in (train_split_name(d), d.val_split, d.test_split):
        if not split:
            continue
        try:
            ds = list_split(d, split, cfg.split_seed)
        except DataError as exc:
            raise DataError(f"--data {given}: {exc} (the {d.dataset} data set is expected: "
                            f"{dataset_info(d.dataset).description})") from None
        if not classes:
            n_train, classes = len(ds), ds.classes
        else:
            held_out |= {s.id for s in ds.samples}
    for i, entry in enumerate(d.extra_train):
        ds, missing, held = list_extra(d, i, cfg.split_seed, classes, held_out)
        n_train += len(ds) if ds is not None else 0
        log(f"data train+{entry['dataset']}/{entry['split']}: {len(ds) if ds is not None else 0} samples listed; "
            f"dropped {sum(missing.values())} (not in classes), {held} (in val/test)")
    return n_train


def describe_machine(device: str) -> str:
    """The device and CPU in one line, for the record."""
    cpu = machine()
    if not device.startswith("cuda"):
        return f"CPU only: {cpu}"
    gpu = _nvidia_smi("name,memory.total,driver_version", device)
    if not gpu:
        import torch

        gpu = torch.cuda.get_device_name(_cuda_index(device))
    return f"{gpu}; {cpu}"


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def _nvidia_smi(query: str, device: str) -> str:
    """One line of ``nvidia-smi --query-gpu`` for the device ("" where nvidia-smi is missing); it reads the GPU
    without creating a CUDA context in this process, which would hold memory the runs need."""
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    i = _cuda_index(device)
    index = visible[i].strip() if i < len(visible) else str(i)
    try:
        res = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader", "-i", index],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def resolve_device(device: str) -> str:
    """``auto`` as a GPU when there is one; a device this machine lacks is a :class:`DeviceError`. The check is
    :func:`fdrl.runtime.check_device`'s, which creates no CUDA context here (the runs need the GPU's memory)."""
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise DeviceError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    resolved = check_device(device)
    return resolved.type if device in ("auto", "cuda") else device


def default_parallel(device: str, n_runs: int) -> tuple[int, str]:
    """How many runs share the device by default, and why (an exclusive compute mode is checked by the caller)."""
    if not device.startswith("cuda"):
        return 1, "CPU: one run at a time, with every core"
    mem = _nvidia_smi("memory.total", device).split()
    gib = float(mem[0]) / 1024 if mem and mem[0].replace(".", "").isdigit() else None
    if gib is None:
        return min(n_runs, 2), "GPU memory unknown (no nvidia-smi): 2 side by side"
    k = max(1, min(n_runs, MAX_PARALLEL, int(gib // GIB_PER_RUN)))
    return k, f"{gib:.0f} GiB of GPU memory: one run per {GIB_PER_RUN} GiB, at most {MAX_PARALLEL}"


def _threads_per_run(parallel: int) -> int:
    """CPU threads of each run: the caller's OMP_NUM_THREADS where set, else the cores shared out."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else max(1, (os.cpu_count() or 1) // parallel)


class Reproduction:
    """The state of one ``fdrl reproduce`` call: its options, runs, log and the files it keeps current."""

    def __init__(self, recipe: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str],
                 seeds: list[int], *, device: str, epochs: int | None, budget_s: float | None,
                 parallel: int | None, overrides: list[str], resume: bool, work: str | os.PathLike[str] | None,
                 runs_dir: str | os.PathLike[str] | None, export_best: bool, part_mib: float | None,
                 probe_steps: int, log: Callable[[str], None]) -> None:
        check_options(seeds, epochs, budget_s, parallel, overrides, export_best, part_mib, probe_steps)
        self.t0 = time.time()
        self.recipe, self.data, self.seeds = os.fspath(recipe), os.fspath(data), seeds
        self.device_arg, self.epochs, self.budget_s, self.parallel = device, epochs, budget_s, parallel
        self.overrides, self.resume, self.export_best, self.probe_steps = overrides, resume, export_best, probe_steps
        self.part_bytes = None if part_mib is None else int(part_mib * 2**20)
        self.out = Path(out)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else self.out / "runs"
        self.work_arg = work
        self.work: Path | None = None
        self.source = Path(self.recipe) if names_a_file(self.recipe) else self.recipe
        self.source_args = ["--config", str(Path(self.recipe).resolve())] if names_a_file(self.recipe) \
            else ["--recipe", self.recipe]
        self._print = log
        self.runs: list[Run] = []
        self.info: dict[str, Any] = {}
        self.exported: tuple[str, int] | None = None
        self.logfile: Any = None

    # ------------------------------------------------------------------------------------------------ helpers
    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        self._print(line)
        if self.logfile is not None:
            self.logfile.write(line + "\n")
            self.logfile.flush()

    def command(self) -> str:
        """The command line that reproduces this table (the options as given; --resume left out)."""
        parts = ["fdrl", "reproduce", "--recipe", self.recipe, "--data", self.data, "--out", str(self.out),
                 "--seeds", *map(str, self.seeds), "--device", self.device_arg]
        for flag, value in (("--epochs", self.epochs), ("--budget-s", self.budget_s),
                            ("--parallel", self.parallel)):
            if value is not None:
                parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        parts += [a for o in self.overrides for a in ("--set", o)]
        return " ".join(shlex.quote(p) for p in parts)

    def config(self, seed: int, variant: str, root: Path, epochs: int | None) -> TrainConfig:
        return load_config(self.source, self.run_overrides(seed, root, epochs), baseline=variant == "baseline")

    def run_overrides(self, seed: int, root: Path, epochs: int | None, extra: Sequence[str] = ()) -> list[str]:
        own = [f"data.root={root}", f"train.seed={seed}", f"train.device={self.info['device']}"]
        return [*self.overrides, *own, *([f"train.epochs={epochs}"] if epochs else []), *extra]

    def previous(self) -> dict[str, Any] | None:
        """What an earlier call recorded in ``out/results.json``; refuses to mix two reproductions in one folder."""
        path = self.out / RESULTS
        earlier = json.loads(path.read_text())["reproduction"] if path.is_file() else None
        has_runs = self.runs_dir.is_dir() and any(self.runs_dir.iterdir())
        if not self.resume:
            if earlier is not None or has_runs:
                where = path if earlier is not None else self.runs_dir
                raise ConfigError(f"--out {self.out}: already holds a reproduction ({where}); add --resume to "
                                  f"continue it, or choose another --out")
            return None
        if earlier is None:
            if has_runs:
                raise ConfigError(f"--resume: {self.runs_dir} holds runs but {path} does not exist, so the epoch "
                                  f"count they were started with is unknown; choose another --out")
            return None
        for key, mine in (("recipe", self.recipe), ("overrides", self.overrides)):
            if earlier.get(key) != mine:
                raise ConfigError(f"--resume: {path} was made with {key} {earlier.get(key)!r}, this call asks for "
                                  f"{mine!r}; resume with the same recipe and --set options, or choose another --out")
        plan = earlier.get("plan", {})
        if self.epochs is not None and "epochs" in plan and self.epochs != plan.get("requested_epochs"):
            raise ConfigError(f"--resume: the runs in {self.out} were started for {plan['epochs']} epochs "
                              f"(--epochs {plan.get('requested_epochs')}); leave --epochs out or give the same value")
        return earlier

    # -------------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        import torch

        earlier = self.previous()
        old_handler = None
        if threading.current_thread() is threading.main_thread():  # a TERM (a timeout) still writes the results
            old_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            device = resolve_device(self.device_arg)
            self.info = {"command": self.command(), "recipe": self.recipe, "overrides": self.overrides,
                         "data": self.data, "seeds": self.seeds, "device": device,
                         "machine": describe_machine(device), "torch": torch.__version__,
                         "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                         "budget_s": self.budget_s, "plan": dict(earlier.get("plan", {})) if earlier else {}}
            self.work = Path(self.work_arg or tempfile.mkdtemp(prefix="fdrl_reproduce_"))
            self.work.mkdir(parents=True, exist_ok=True)
            return self._stages()
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
            if self.runs:
                self.write_outputs()
            if self.work is not None and self.work_arg is None:
                shutil.rmtree(self.work, ignore_errors=True)
            if self.logfile is not None:
                self.logfile.close()

    def _stages(self) -> dict[str, Any]:
        # 1. Everything that can be wrong with the recipe, the protocol or the data, before any file is written
        # (the recipe and the protocol before an archive is unpacked).
        given = Path(self.data)
        protocol = check_protocol(self.config(self.seeds[0], "fdrl", given, self.epochs), self.recipe)
        root = self.data_root()
        first = self.config(self.seeds[0], "fdrl", root, self.epochs)
        twin = self.config(self.seeds[0], "baseline", root, self.epochs)
        if (twin.data, twin.trunk) != (first.data, first.trunk):  # --baseline changes the head alone
            raise ConfigError(f"recipe {self.recipe}: its baseline twin trains on other data or another trunk")
        n_train = check_data(first, self.data, self.log)
        self.info.update(protocol=protocol, data_root=str(root), dataset=protocol["dataset"])
        self.out.mkdir(parents=True, exist_ok=True)
        self.logfile = (self.out / LOG).open("a")
        self.log(f"fdrl reproduce: {self.info['machine']}; torch {self.info['torch']}; device "
                 f"{self.info['device']}; recipe {self.recipe}; data {root}; out {self.out}")
        # 2. The runs, those finished earlier kept; the epoch count a resumed reproduction started with.
        plan = self.info["plan"]
        requested = self.epochs or first.train.epochs
        epochs = plan.get("epochs")
        self.runs = self.make_runs(root, epochs or requested, first.train.select)
        todo = [r for r in self.runs if not r.earlier]
        self.write_outputs()
        if not todo:
            self.log("every run finished earlier: nothing to train")
            return self.results()
        parallel, why = (self.parallel, "as asked") if self.parallel else default_parallel(
            self.info["device"], len(todo))
        if parallel > 1 and self.info["device"].startswith("cuda") and \
                "exclusive" in _nvidia_smi("compute_mode", self.info["device"]).lower():
            parallel, why = 1, "the GPU's compute mode is exclusive: one process at a time"
        parallel = min(parallel, len(todo))
        threads = _threads_per_run(parallel)
        plan.update(parallel=parallel, parallel_why=why, threads_per_run=threads)
        deadline = None if self.budget_s is None else self.t0 + self.budget_s - RESERVE_S
        # 3. The cache, once; then the epoch count: the request, or what the budget fits (a probe measures it).
        self.prepare(todo, root)
        if epochs is None:  # recorded only once chosen: a call that stops before plans again on --resume
            epochs, why = requested, "as requested" if self.epochs else "the recipe's train.epochs"
            if self.budget_s is not None:
                epochs, why = self.probe_and_plan(todo, root, requested, n_train, first.train.batch_size,
                                                  parallel, deadline)
                if epochs < 1:
                    for r in todo:
                        r.status = "not started (the budget fits no epoch)"
                    raise TrainingError(f"--budget-s {self.budget_s:g}: no epoch fits ({why}); nothing trained")
            plan.update(requested_epochs=requested, epochs=epochs, why=why)
            for r in todo:
                r.overrides = self.run_overrides(r.seed, root, epochs)
        # 4. The runs, side by side under the guard; the results are rewritten as each one ends.
        self.log(f"plan: {epochs} epochs, {len(todo)} run(s) to train ({len(self.runs) - len(todo)} finished "
                 f"earlier), {parallel} side by side, {threads} CPU thread(s) each; {plan['why']}")
        self.write_outputs()
        supervise(todo, parallel, deadline, child_env(threads), lambda _r: self.write_outputs(), self.log)
        return self.results()

    def data_root(self) -> Path:
        """The data root: ``--data`` itself, or the archive it names unpacked into the scratch folder."""
        if is_archive(self.data):
            assert self.work is not None
            return unpack_archive(self.data, self.work / "data", self.log).resolve()
        return Path(self.data).expanduser().resolve()

    def make_runs(self, root: Path, epochs: int, select: str) -> list[Run]:
        """FDRL and baseline for each seed; with ``resume``, a finished run is kept and an unfinished one with a
        ``last.pt`` continues (a folder without one starts over)."""
        runs = []
        for seed in self.seeds:
            for variant in VARIANTS:
                name = f"{variant}_s{seed}"
                r = Run(name, variant, seed, self.runs_dir / name, self.source_args,
                        self.run_overrides(seed, root, epochs), select=select)
                if (r.dir / "summary.json").is_file():
                    r.earlier, r.status = True, "done"
                elif (r.dir / "last.pt").is_file():
                    r.resume = True
                elif r.dir.exists():
                    shutil.rmtree(r.dir)  # started, but not one epoch saved: nothing to continue
                runs.append(r)
        return runs

    def prepare(self, todo: list[Run], root: Path) -> None:
        """Decode every split the runs read into the cache once, here, so that runs side by side do not each
        decode the same images (with ``data.cache=false`` each run decodes its own)."""
        for seed in sorted({r.seed for r in todo}):
            cfg = self.config(seed, "fdrl", root, None)
            if not cfg.data.cache:
                return
            t = time.time()
            try:
                load_splits(cfg, lambda m: self.log(f"cache: {m}"))
            except DataError as exc:
                raise DataError(f"--data {self.data}: {exc}") from None
            self.log(f"decoded seed {seed}'s splits into the cache in {time.time() - t:.1f} s")

    def probe_and_plan(self, todo: list[Run], root: Path, requested: int, n_train: int, batch_size: int,
                       parallel: int, deadline: float) -> tuple[int, str]:
        """Run the first wave of runs for two short epochs side by side, and choose the epoch count whose runs
        all end before ``deadline``; returns it and why."""
        assert self.work is not None
        plan = self.info["plan"]
        steps = max(1, n_train // batch_size)
        probe_steps = min(steps, self.probe_steps)
        probes = [Run(f"probe_{r.name}", r.variant, r.seed, self.work / "probe" / r.name, self.source_args,
                      self.run_overrides(r.seed, root, 2, [f"train.max_steps_per_epoch={probe_steps}"]),
                      select=r.select) for r in todo[:parallel]]
        for p in probes:
            shutil.rmtree(p.dir, ignore_errors=True)
        self.log(f"probe: {len(probes)} run(s) side by side, 2 epochs of {probe_steps} steps")
        supervise(probes, parallel, deadline, child_env(_threads_per_run(parallel)), lambda _r: None, self.log)
        probe: Probe = measure(probes, probe_steps)
        waves = math.ceil(len(todo) / parallel)
        epochs, epoch_s = plan_epochs(requested, probe, steps, (deadline - time.time()) / waves)
        plan.update(steps_per_epoch=steps, estimated_epoch_s=round(epoch_s, 1),
                    probe={k: round(v, 4) for k, v in vars(probe).items()})
        why = ("as requested" if epochs == requested else
               f"fewer than the {requested} requested, so that the runs end inside the budget")
        return epochs, why + (f"; probe: {probe.step_s * 1000:.0f} ms/step, {probe.epoch_overhead_s:.1f} s "
                              f"validation per epoch, {probe.startup_s:.0f} s start, {probe.finish_s:.0f} s finish; "
                              f"{waves} wave(s)")

    # ---------------------------------------------------------------------------------------------- outputs
    def results(self) -> dict[str, Any]:
        """The content of ``results.json``: the call, the paired table and every run."""
        runs = {}
        for r in self.runs:
            runs[r.name] = {"variant": r.variant, "seed": r.seed, "dir": str(r.dir), "status": r.status,
                            "finished_earlier": r.earlier, "wall_s": r.wall_s(), "command": r.display(),
                            "result": r.result(), "summary": r.summary(), "history": r.metrics()}
            if r.status.startswith("failed"):
                runs[r.name]["output_tail"] = r.tail()
        info = {**self.info, "wall_s": round(time.time() - self.t0, 1)}
        return {"reproduction": info, "table": pair_table(self.runs), "runs": runs}

    def write_outputs(self) -> None:
        """``results.json`` and ``results.md`` from what exists now (and the exported checkpoint, if asked)."""
        if self.export_best:
            self.export()
        res = self.results()
        p = res["reproduction"]["protocol"]
        write_atomic(self.out / RESULTS, json.dumps(res, indent=1) + "\n")
        write_atomic(self.out / TABLE, results_markdown(res["table"], self.header(res), p["val_split"],
                                                         p["test_split"]))

    def header(self, res: dict[str, Any]) -> list[str]:
        i, p, plan = res["reproduction"], res["reproduction"]["protocol"], res["reproduction"]["plan"]
        if p["select"] == "val":
            chosen = (f"select on `{p['val_split']}`: each run's `best.pt`, the epoch with the highest "
                      f"`{p['val_split']}` accuracy")
        elif p["val_split"]:
            chosen = (f"the last epoch (`last.pt`; the recipe's `train.select=last`), with its `{p['val_split']}` "
                      f"accuracy beside")
        else:
            chosen = "the last epoch (`last.pt`; the recipe has no validation split, so nothing is selected)"
        example = next((r for r in self.runs if r.variant == "fdrl"), None)
        budget = f" of a {i['budget_s']:g} s budget" if i.get("budget_s") else ""
        return [f"# FDRL vs its baseline: recipe {i['recipe']} on {p['dataset']}", "",
                f"- protocol: train on `{p['train_split']}`; {chosen}; test that checkpoint once on "
                f"`{p['test_split']}` (the trainer's final evaluation). No test split selects or tunes anything.",
                f"- command: `{i['command']}`",
                f"- each run: `{example.display() if example else '?'}` (the baseline: the same with `--baseline`)",
                f"- machine: {i['machine']}; torch {i['torch']}; device {i['device']}",
                f"- epochs: {plan.get('epochs', '?')} ({plan.get('why', 'not planned yet')}); "
                f"{plan.get('parallel', '?')} run(s) side by side",
                f"- wall time: {i['wall_s']:.0f} s{budget}",
                "- figures in %; diff = FDRL − baseline within a seed; mean ± sample std over the complete pairs "
                "(both runs finished with a test figure); a run stopped early has validation figures only "
                "(`--resume` continues it)"]

    def export(self) -> None:
        """The selected checkpoint of the finished FDRL run best on the validation split (never chosen by a test
        figure; without a validation split, the lowest seed's) as ``out/fdrl_best.pt``, when it changed."""
        done = [(r, r.result()) for r in self.runs if r.variant == "fdrl" and r.status == "done"]
        done = [(r, res) for r, res in done if res is not None]
        if not done:
            return
        if all(res["val_accuracy"] is not None for _, res in done):
            best, res = max(done, key=lambda x: (x[1]["val_accuracy"], -x[0].seed))
            chosen_by = "validation accuracy"
        else:
            best, res = min(done, key=lambda x: x[0].seed)
            chosen_by = "lowest seed (no validation figure to choose by)"
        if self.exported == (best.name, res["epoch"]):
            return
        src = best.dir / f"{res['selected'] or 'best'}.pt"
        meta = {"run": best.name, "seed": best.seed, "checkpoint": src.name, "epoch": res["epoch"],
                "chosen_by": chosen_by, "val_accuracy": res["val_accuracy"], "test_accuracy": res["test_accuracy"],
                "protocol": self.info.get("protocol")}
        info = export_checkpoint(src, self.out / EXPORT_NAME, meta, self.part_bytes)
        self.exported = (best.name, res["epoch"])
        self.log(f"exported {best.name}'s {src.name} (epoch {res['epoch']}, by {chosen_by}) to "
                 f"{self.out / EXPORT_NAME}: {info['bytes'] / 2**20:.1f} MiB"
                 + (f" in {len(info['parts'])} part(s)" if info.get("parts") else ""))
