#!/usr/bin/env python
"""Mutation check: break each of fdrl's guarantees on purpose and confirm that a test notices.

Every breakage below is one exact text replacement in the source (the name of the guarantee it breaks, the file,
the exact old text, the new text) and the narrowest test selection expected to catch it. For each breakage the
script copies ``src/``, ``tests/``, ``scripts/`` and ``pyproject.toml`` into a temporary directory,
applies the replacement there (the working tree is never modified), runs ``pytest -x -q`` on the selection with
``PYTHONPATH=<copy>/src`` and prints one line: the name, ``caught`` (a selected test failed), ``NOT CAUGHT`` (every
selected test passed: the guarantee is not protected by them) or ``ERROR`` (the selection did not run: a node id
that no longer exists, a collection error, a timeout), and the seconds it took.

The old text must occur exactly once in its file; when a refactor changes it the script stops with an error naming
the breakage, so the list cannot go stale without anyone noticing (``--check-only`` tests just that, in a second).

    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --only resume_without_scheduler,val_on_test_split
    python scripts/mutation_check.py --jobs 2          # everything, two breakages at a time
    python scripts/mutation_check.py --check-only      # every old text still found; runs no tests

Exit status: 0 when every selected breakage is caught, 1 otherwise, 2 for a usage error or a stale breakage.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "scripts", "pyproject.toml")


@dataclass(frozen=True)
class Breakage:
    name: str
    guarantee: str  # what the breakage violates, in a few words
    file: str  # relative to the repository root
    old: str  # exact text, found exactly once in ``file``
    new: str
    tests: tuple[str, ...]  # pytest arguments (node ids, files, -k expressions)


T = "tests/"
GUAR = T + "test_guarantees.py::"
ENGINE = T + "test_engine.py::"
TRAINER = "src/fdrl/engine/trainer.py"

BREAKAGES: tuple[Breakage, ...] = (
    Breakage(
        "val_on_test_split", "validation figures come from the validation split", TRAINER,
        'row.update(validate(model, data["val"], transform, device, t))',
        'row.update(validate(model, data["test"], transform, device, t))',
        (GUAR + "test_logged_val_figures_are_the_val_splits",)),
    Breakage(
        "select_on_test", "the final pick follows train.select, never the test split", TRAINER,
        '        sel = summary["best" if t.select == "val" else "last"]\n'
        '        summary["selected"] = "best" if t.select == "val" else "last"\n',
        '        pick = max(("best", "last"), key=lambda w: summary[w].get("test_accuracy") or 0.0)\n'
        '        sel = summary[pick]\n'
        '        summary["selected"] = pick\n',
        (GUAR + "test_selection_follows_val_and_select_never_test",)),
    Breakage(
        "resume_without_scheduler", "--resume restores the scheduler", TRAINER,
        '    scheduler.load_state_dict(ck["scheduler_state"])\n', "",
        (GUAR + "test_resume_across_a_learning_rate_step_keeps_the_schedule",)),
    Breakage(
        "checkpoint_loads_pickles", "checkpoints are read with weights_only=True", "src/fdrl/checkpoint.py",
        "ckpt = torch.load(path, map_location=map_location, weights_only=True)",
        "ckpt = torch.load(path, map_location=map_location, weights_only=False)",
        (GUAR + "test_checkpoint_with_code_inside_is_refused_without_running_it",)),
    Breakage(
        "accuracy_is_mean_recall", "reported accuracy is the fraction of correct predictions",
        "src/fdrl/engine/report.py",
        '"accuracy": float(tp.sum() / max(1, cm.sum())),',
        '"accuracy": float(recall[present].mean()) if present.any() else 0.0,',
        (GUAR + "test_classification_metrics_by_hand",)),
    Breakage(
        "wen_all_reduce_noop", "Wen centres are identical on every DDP rank (sums all-reduced)",
        "src/fdrl/losses.py",
        "def _all_reduce_sum(*tensors: torch.Tensor) -> None:\n",
        "def _all_reduce_sum(*tensors: torch.Tensor) -> None:\n    return\n",
        (GUAR + "test_wen_centres_under_ddp_are_those_of_the_union_of_the_ranks_batches",)),
    Breakage(
        "crop_without_eye_rotation", "crop_face levels the eyes", "src/fdrl/faces/crop.py",
        "            image = image.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))\n",
        "            pass\n",
        (GUAR + "test_crop_face_levels_the_eyes",)),
    Breakage(
        "centres_not_updated", "Wen centres move every training step", "src/fdrl/losses.py",
        "            self.update_centres(latent, alpha, labels)  # after the losses: they use the pre-update centres\n",
        "            pass\n",
        (T + "test_losses.py::test_wen_centres_move_toward_batch_means",)),
    Breakage(
        "centres_not_saved", "checkpoints carry the criterion's centres", "src/fdrl/checkpoint.py",
        "    if criterion is not None:\n"
        '        ckpt["criterion_state"] = {k: v.detach().cpu() for k, v in criterion.state_dict().items()}\n',
        "",
        (T + "test_optim_checkpoint.py::test_checkpoint_round_trip_identical_logits_and_centres",)),
    Breakage(
        "test_split_accepted_as_val", "a test split is refused as the validation split",
        "src/fdrl/data/registry.py",
        "    if split and is_test_split(name, split):\n",
        "    if False:\n",
        (T + "test_split_protocol.py::test_training_refuses_a_test_split_as_val_before_reading_anything",)),
    Breakage(
        "split_overlap_allowed", "splits sharing samples are refused", "src/fdrl/data/loading.py",
        "    leak = ids & set(other.ids)\n",
        "    leak = set()\n",
        (T + "test_split_protocol.py::test_val_and_test_may_not_share_samples",)),
    Breakage(
        "augmentation_from_global_rng",
        "augmentation draws are a function of (seed, epoch, rank), so --resume is exact", TRAINER,
        "gen = torch.Generator().manual_seed(t.seed * 7919 + epoch * 131 + info.rank)",
        "gen = None",
        (ENGINE + "test_resume_after_kill_matches_uninterrupted_run",)),
    Breakage(
        "augmentation_same_every_epoch", "each epoch draws fresh augmentation (the epoch is part of the seed)",
        TRAINER,
        "t.seed * 7919 + epoch * 131 + info.rank",
        "t.seed * 7919 + info.rank",
        (ENGINE + "test_augmentation_draws_change_from_epoch_to_epoch",)),
    Breakage(
        "resume_without_optimizer", "--resume restores the optimiser", TRAINER,
        '    optimizer.load_state_dict(ck["optimizer_state"])\n', "",
        (ENGINE + "test_resume_after_kill_matches_uninterrupted_run",)),
    Breakage(
        "resume_without_criterion", "--resume restores the centres", TRAINER,
        '    criterion.load_state_dict(ck["criterion_state"])\n', "",
        (ENGINE + "test_resume_after_kill_matches_uninterrupted_run",)),
    Breakage(
        "onnx_fixed_batch_default", "ONNX export takes any batch size by default", "src/fdrl/inference/export.py",
        '        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "logits": {0: "batch"}, "alpha": {0: "batch"}}\n',
        "        pass\n",
        (T + "test_export_roundtrip.py::test_exported_model_predicts_more_faces_than_any_batch[onnx-None]",)),
    Breakage(
        "balance_targets_swapped", "loss.balance_target=normalized / literal mean what they say", "src/fdrl/losses.py",
        '        if self.config.balance_target == "normalized":\n',
        '        if self.config.balance_target == "literal":\n',
        (T + "test_losses.py::test_normalized_balance_is_scale_free",
         T + "test_losses.py::test_each_part_against_hand_computed_values")),
    Breakage(
        "learned_centre_grads_not_averaged", "learned centres stay identical on every DDP rank",
        "src/fdrl/runtime.py",
        "    if info.world <= 1:\n        return\n",
        "    if True:\n        return\n",
        (ENGINE + "test_ddp_two_processes_identical_weights_and_full_coverage",)),
    Breakage(
        "carved_val_trained_on", "a validation split carved from train is never trained on",
        "src/fdrl/data/loading.py",
        '        return "train/fit"\n',
        "        return d.train_split\n",
        (ENGINE + "test_val_carved_from_train_is_never_trained_on",)),
    Breakage(
        "checkpoint_written_in_place", "checkpoints are written atomically", "src/fdrl/checkpoint.py",
        '    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)\n',
        "    fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), str(path)\n",
        (T + "test_optim_checkpoint.py::test_interrupted_checkpoint_write_leaves_the_previous_file_intact",)),
    Breakage(
        "nan_loss_not_stopped", "a NaN/inf loss stops the run with the last good checkpoint intact", TRAINER,
        "        if not torch.isfinite(loss):\n",
        "        if False:\n",
        (ENGINE + "test_nan_loss_stops_with_last_checkpoint_intact",)),
    Breakage(
        "ddp_buckets_regrouped", "--resume under DDP with more than two ranks continues exactly",
        "src/fdrl/runtime.py",
        "                                                  find_unused_parameters=True)\n",
        "                                                  find_unused_parameters=False)\n",
        (T + "test_multinode.py",)),
    Breakage(
        "each_node_decodes_a_shared_cache", "ranks sharing a cache folder decode the data once",
        "src/fdrl/data/ranks.py",
        "    return {0} | {r for node, r in first.items() if node not in sharing}\n",
        "    return {0} | set(first.values())\n",
        (T + "test_cache.py::test_one_rank_per_cache_file_decodes",)),
    Breakage(
        "batch_rows_reordered", "a batch gathered from the cache keeps the order of its indices",
        "src/fdrl/data/tensors.py",
        "        out[order] = got\n",
        "        out[:] = got\n",
        (T + "test_cache.py::test_batches_are_gathered_in_the_order_asked",)),
    Breakage(
        "fine_tune_on_seen_faces", "a fine-tune never validates on faces its init_from model trained on", TRAINER,
        "refuse_seen_faces(init_from_checkpoint(model, t.init_from, log, t.init_parts), cfg, data, t.init_from)",
        "init_from_checkpoint(model, t.init_from, log, t.init_parts)",
        (ENGINE + "test_a_fine_tune_may_not_validate_on_faces_its_initial_model_trained_on",)),
    Breakage(
        "split_seed_ignored", "data.split_seed fixes the holdout cut", "src/fdrl/config.py",
        "        return self.train.seed if self.data.split_seed is None else self.data.split_seed\n",
        "        return self.train.seed\n",
        (ENGINE + "test_a_fine_tune_may_not_validate_on_faces_its_initial_model_trained_on",)),
    Breakage(
        "teacher_targets_by_position", "a student's teacher targets are found by sample id, not by row",
        "src/fdrl/data/teachers.py",
        "    teacher = targets.probs[_rows(targets, train.ids)][:, order]\n",
        "    teacher = targets.probs[: len(train)][:, order]\n",
        (T + "test_distill.py::test_the_student_trains_on_the_blend_found_by_id_and_class_name",)),
)


class StaleBreakage(Exception):
    """A breakage whose old text is no longer found exactly once: the list must be updated with the code."""


def mutated_source(b: Breakage, root: Path) -> str:
    path = root / b.file
    if not path.is_file():
        raise StaleBreakage(f"{b.name}: {b.file} does not exist")
    text = path.read_text()
    count = text.count(b.old)
    if count != 1:
        where = "is no longer found" if count == 0 else f"occurs {count} times (must be unique)"
        raise StaleBreakage(f"{b.name}: the text to replace in {b.file} {where}:\n{b.old}")
    out = text.replace(b.old, b.new)
    try:
        compile(out, str(path), "exec")
    except SyntaxError as exc:
        raise StaleBreakage(f"{b.name}: the mutated {b.file} is not valid Python: {exc}") from exc
    return out


def make_copy(root: Path) -> Path:
    """A throwaway copy of what the tests need, under ``<tmp>/repo``; ``<tmp>/shared`` links to the real
    ``../shared`` when there is one, so the copy's tests see the same optional data as the working tree's."""
    top = Path(tempfile.mkdtemp(prefix="fdrl-mutation-"))
    repo = top / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, repo / name)
    if (root.parent / "shared").is_dir():
        (top / "shared").symlink_to(root.parent / "shared")
    return repo


@dataclass
class Result:
    name: str
    status: str  # "caught", "NOT CAUGHT", "ERROR"
    seconds: float
    detail: str
    output: str


def run_pytest(repo: Path, tests: tuple[str, ...], python: str, timeout: float) -> tuple[int | None, str]:
    env = dict(os.environ, PYTHONPATH=str(repo / "src"), PYTHONDONTWRITEBYTECODE="1", COLUMNS="240")
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, out
    return proc.returncode, proc.stdout + proc.stderr


def check_imports_copy(repo: Path, python: str) -> None:
    """The copy's package is the one imported (not an installed fdrl)."""
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    code = "import fdrl, sys; print(fdrl.__file__)"
    out = subprocess.run([python, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not out.stdout.strip().startswith(str(repo / "src")):
        raise SystemExit(f"mutation check: {python} does not import fdrl from the copy {repo / 'src'} "
                         f"(got {out.stdout.strip() or out.stderr.strip()[-300:]})")


def first_failure(output: str, width: int = 160) -> str:
    """The first failed test and pytest's one-line reason (the short summary's ``FAILED node - reason``)."""
    m = re.search(r"^(?:FAILED|ERROR) (.+)$", output, re.M)
    line = m.group(1).strip() if m else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def summary_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else ""


def run_one(b: Breakage, root: Path, python: str, timeout: float, keep: bool, check_import: bool) -> Result:
    t0 = time.time()
    repo = make_copy(root)
    try:
        (repo / b.file).write_text(mutated_source(b, repo))
        if check_import:
            check_imports_copy(repo, python)
        rc, output = run_pytest(repo, b.tests, python, timeout)
    finally:
        if not keep:
            shutil.rmtree(repo.parent, ignore_errors=True)
    seconds = time.time() - t0
    if rc == 1:
        return Result(b.name, "caught", seconds, first_failure(output), output)
    if rc == 0:
        return Result(b.name, "NOT CAUGHT", seconds, summary_line(output), output)
    why = f"timed out after {timeout:.0f} s" if rc is None else f"pytest exit {rc}: {summary_line(output)}"
    return Result(b.name, "ERROR", seconds, why + (f" (copy kept in {repo.parent})" if keep else ""), output)


def run_baseline(selected: list[Breakage], root: Path, python: str, timeout: float) -> None:
    """The union of the selections on an unmodified copy must pass, else a 'caught' would mean nothing."""
    tests = tuple(dict.fromkeys(t for b in selected for t in b.tests))
    repo = make_copy(root)
    t0 = time.time()
    try:
        check_imports_copy(repo, python)
        rc, output = run_pytest(repo, tests, python, timeout * len(selected))
    finally:
        shutil.rmtree(repo.parent, ignore_errors=True)
    print(f"{'(baseline, unmodified)':36s} {'passes' if rc == 0 else 'FAILS':11s} {time.time() - t0:7.1f} s",
          flush=True)
    if rc != 0:
        print(output[-4000:], file=sys.stderr)
        raise SystemExit("mutation check: the selected tests fail on the unmodified source; fix that first")


def pick(only: str | None) -> list[Breakage]:
    """The breakages named in ``only`` (comma-separated), in the order given; all of them when empty."""
    if not only:
        return list(BREAKAGES)
    by_name = {b.name: b for b in BREAKAGES}
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown breakage(s) {unknown}; --list shows them")
    return [by_name[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the breakages and their test selections")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run these breakages only")
    ap.add_argument("--jobs", type=int, default=1, help="breakages run at the same time (default 1)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per breakage (default 900)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    ap.add_argument("--baseline", action="store_true",
                    help="first run the selected tests on an unmodified copy (they must pass)")
    ap.add_argument("--check-only", action="store_true",
                    help="only check that every breakage still applies (old text found once, result compiles)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (for a breakage in question)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print pytest's output of every breakage")
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        selected = pick(args.only)
    except ValueError as exc:
        ap.error(str(exc))
    if args.list:
        for b in selected:
            print(f"{b.name:36s} {b.file}: {b.guarantee}\n{'':36s} pytest {' '.join(b.tests)}")
        return 0
    try:
        for b in selected:
            mutated_source(b, args.root)
    except StaleBreakage as exc:
        print(f"mutation check: stale breakage: {exc}", file=sys.stderr)
        return 2
    if args.check_only:
        print(f"{len(selected)} breakages apply")
        return 0
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    t0 = time.time()
    if args.baseline:
        run_baseline(selected, args.root, args.python, args.timeout)

    def job(i_b: tuple[int, Breakage]) -> Result:
        i, b = i_b
        r = run_one(b, args.root, args.python, args.timeout, args.keep, check_import=i == 0)
        print(f"{r.name:36s} {r.status:11s} {r.seconds:7.1f} s  {r.detail}", flush=True)
        if args.verbose or r.status == "ERROR":
            print(r.output[-6000:], flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(job, enumerate(selected)))
    bad = [r for r in results if r.status != "caught"]
    caught = len(results) - len(bad)
    print(f"{caught}/{len(results)} breakages caught in {time.time() - t0:.1f} s"
          + (f"; not caught or in error: {', '.join(r.name for r in bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
