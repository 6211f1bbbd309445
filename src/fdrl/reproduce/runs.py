"""The runs of a reproduction: one ``fdrl train`` process each, supervised side by side on one device.

A :class:`Run` is FDRL or its baseline twin for one seed. :func:`supervise` starts the runs ``parallel`` at a time
and, past a deadline, stops those still running (their ``last.pt`` and ``best.pt`` stay, so ``--resume`` continues
them) and starts no more. :func:`plan_epochs` picks the epoch count that fits a time budget from the costs a short
probe measured (:func:`measure`), before any real run starts, so the learning-rate schedule the runs follow is the
one they report.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrainingError

VARIANTS = ("baseline", "fdrl")  # the baseline twin first: the pair of one seed is (baseline, fdrl)


@dataclass
class Run:
    """One training run (a variant and a seed) and what the supervisor saw of it."""

    name: str
    variant: str  # "fdrl" or "baseline"
    seed: int
    dir: Path
    source: list[str]  # ["--recipe", NAME] or ["--config", FILE]
    overrides: list[str]  # every --set of this run, in order
    select: str = "val"  # the recipe's train.select: "val" (best.pt) or "last" (last.pt)
    resume: bool = False  # continue from dir/last.pt
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ended: float | None = None
    status: str = "queued"  # queued | running | done | failed (rc N) | stopped by the guard ... | not started ...
    earlier: bool = False  # finished by an earlier call (--resume skipped it)
    line_times: list[float] = field(default_factory=list)  # when each metrics.jsonl line was first seen

    @property
    def log(self) -> Path:
        """The run's console output, beside its folder."""
        return self.dir.with_name(f"{self.dir.name}.log")

    def arguments(self) -> list[str]:
        """The ``fdrl train`` arguments of this run."""
        sets = [a for o in self.overrides for a in ("--set", o)]
        twin = ["--baseline"] if self.variant == "baseline" else []
        return [*self.source, *twin, *sets, "--out", str(self.dir), *(["--resume"] if self.resume else [])]

    def command(self) -> list[str]:
        """The process that trains it."""
        return [sys.executable, "-m", "fdrl.cli", "train", *self.arguments()]  # `fdrl train` itself

    def display(self) -> str:
        """The equivalent ``fdrl train`` command line, for the record."""
        return " ".join(["fdrl", "train", *(shlex.quote(a) for a in self.arguments())])

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` written so far (one per epoch)."""
        f = self.dir / "metrics.jsonl"
        rows = []
        for line in f.read_text().splitlines() if f.is_file() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written
        return rows

    def summary(self) -> dict[str, Any] | None:
        """The trainer's ``summary.json``, written once at the end of the run; None before that."""
        f = self.dir / "summary.json"
        try:
            return json.loads(f.read_text()) if f.is_file() else None
        except json.JSONDecodeError:
            return None  # being written

    def result(self) -> dict[str, Any] | None:
        """The figures of the checkpoint the recipe selects, as the trainer reported them.

        A finished run: its ``summary.json`` (``train.select=val``: ``best.pt``, the epoch with the highest
        validation accuracy; ``last``: ``last.pt``) with that checkpoint's test figures, evaluated once by the
        trainer. A run stopped early: the validation figures of its epochs so far and no test figure; this module
        never evaluates anything on the test split and never reads a test figure to choose between checkpoints.
        """
        s = self.summary()
        if s is not None and s.get("selected"):
            sel = s[s["selected"]]
            return {"selected": s["selected"], "epoch": sel["epoch"], "epochs_done": len(self.metrics()),
                    "val_accuracy": sel.get("val_accuracy"), "val_mean_class_accuracy":
                    sel.get("val_mean_class_accuracy"), "test_accuracy": s.get("test_accuracy"),
                    "test_mean_class_accuracy": s.get("test_mean_class_accuracy"),
                    "num_test_samples": sel.get("num_test_samples")}
        rows = self.metrics()
        if not rows:
            return None
        scored = [r for r in rows if "val_accuracy" in r]
        if self.select == "val" and scored:
            best = max(scored, key=lambda r: r["val_accuracy"])  # max keeps the first best, as the trainer does
        else:
            best = rows[-1]
        return {"selected": None, "epoch": best["epoch"], "epochs_done": len(rows),
                "val_accuracy": best.get("val_accuracy"), "val_mean_class_accuracy":
                best.get("val_mean_class_accuracy"), "test_accuracy": None, "test_mean_class_accuracy": None,
                "num_test_samples": None}

    def wall_s(self) -> float | None:
        """Seconds this call spent on the run (None: not started by this call)."""
        return round((self.ended or time.time()) - self.started, 1) if self.started else None

    def tail(self, lines: int = 30) -> str:
        """The last lines of its console output."""
        text = self.log.read_text(errors="replace").splitlines() if self.log.is_file() else ["(no log)"]
        return "\n".join(text[-lines:])


def supervise(runs: list[Run], parallel: int, deadline: float | None, env: dict[str, str],
              on_end: Callable[[Run], None], log: Callable[[str], None], poll_s: float = 0.25) -> None:
    """Run ``runs``, ``parallel`` at a time; past ``deadline`` (a ``time.time()``) stop the running ones and start
    no more. ``on_end`` is called as each run ends, however it ends. A run whose process is still alive when this
    function leaves (an exception, a signal) is terminated: no training outlives its supervisor."""
    queue, active = list(runs), []
    try:
        while queue or active:
            now = time.time()
            while queue and len(active) < parallel:
                r = queue.pop(0)
                r.dir.parent.mkdir(parents=True, exist_ok=True)
                with r.log.open("a" if r.resume else "w") as fh:
                    r.proc = subprocess.Popen(r.command(), stdout=fh, stderr=subprocess.STDOUT, env=env)
                r.started, r.status = now, "running"
                r.line_times = [now] * len(r.metrics()) if r.resume else []
                active.append(r)
                log(f"{r.name}: started{' (continuing from last.pt)' if r.resume else ''}")
            for r in list(active):
                r.line_times += [now] * (len(r.metrics()) - len(r.line_times))
                rc = r.proc.poll() if r.proc else None
                if rc is not None:
                    r.ended = time.time()
                    r.status = "done" if rc == 0 and (r.dir / "summary.json").is_file() else f"failed (rc {rc})"
                    active.remove(r)
                    log(f"{r.name}: {r.status} after {r.ended - r.started:.0f} s"
                        + ("" if r.status == "done" else f"; its output ends:\n{r.tail(8)}"))
                    on_end(r)
            if deadline is not None and time.time() > deadline and (active or queue):
                log(f"wall-clock guard: stopping {[r.name for r in active]}, not starting {[r.name for r in queue]}")
                _stop(active)
                for r in active:
                    r.ended, r.status = time.time(), f"stopped by the guard after epoch {len(r.metrics())}"
                    on_end(r)
                for r in queue:
                    r.status = "not started (no time left)"
                    on_end(r)
                active, queue = [], []
                return
            time.sleep(poll_s)
    finally:
        _stop(active)


def _stop(runs: list[Run]) -> None:
    """Terminate the processes of ``runs`` (TERM, then KILL after 10 s)."""
    live = [r for r in runs if r.proc is not None and r.proc.poll() is None]
    for r in live:
        r.proc.terminate()
    for r in live:
        try:
            r.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()


def child_env(threads: int | None) -> dict[str, str]:
    """The environment of a run: this process's, unbuffered output, this installation of fdrl first on the path
    (the children train with the code that planned them), and ``threads`` CPU threads unless the caller set
    ``OMP_NUM_THREADS`` already."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# ------------------------------------------------------------------------------------------------------ planning
@dataclass
class Probe:
    """Per-run costs measured with the runs side by side (the slowest run's figures), in seconds."""

    step_s: float  # one training step
    epoch_overhead_s: float  # validation and checkpoint writes, per epoch
    startup_s: float  # process start to the end of the first epoch's warm-up (imports, device, cache read)
    finish_s: float  # last epoch to process exit (the test evaluation of the selected and last checkpoints)


def measure(runs: list[Run], steps: int) -> Probe:
    """Read the probe runs' ``metrics.jsonl`` (``epoch_seconds``) and the times their lines appeared; ``steps``:
    the training steps of one probe epoch."""
    got = []
    for r in runs:
        rows = r.metrics()
        if r.status != "done" or len(rows) < 2 or len(r.line_times) < 2 or r.ended is None:
            raise TrainingError(f"probe run {r.name}: {r.status}, {len(rows)} epochs logged; its output ends:\n"
                                f"{r.tail(12)}")
        step = rows[-1]["epoch_seconds"] / steps
        overhead = max(0.0, r.line_times[-1] - r.line_times[-2] - rows[-1]["epoch_seconds"])
        # the first epoch's warm-up (cuDNN, autocast caches) counts as start-up: every real run pays it once
        startup = max(0.0, r.line_times[0] - r.started - rows[-1]["epoch_seconds"] - overhead)
        got.append(Probe(step, overhead, startup, max(0.0, r.ended - r.line_times[-1])))
    return Probe(*(max(getattr(p, k) for p in got) for k in ("step_s", "epoch_overhead_s", "startup_s", "finish_s")))


def plan_epochs(requested: int, probe: Probe, steps_per_epoch: int, seconds_left: float,
                safety: float = 1.15) -> tuple[int, float]:
    """The most epochs (at most ``requested``) whose estimated run fits ``seconds_left``, and one epoch's
    estimate (``safety`` x the measured cost)."""
    epoch_s = safety * (probe.step_s * steps_per_epoch + probe.epoch_overhead_s)
    fit = math.floor((seconds_left - probe.startup_s - probe.finish_s) / epoch_s)
    return max(0, min(requested, fit)), epoch_s
