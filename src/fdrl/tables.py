"""Markdown tables from result files: the one place the docs' results tables are rendered
(``scripts/results_tables.py`` is its command line).

    python scripts/results_tables.py                    # rewrite every generated table in README.md and docs/*.md
    python scripts/results_tables.py --check            # exit 1 naming every table that differs from its files
    python scripts/results_tables.py --print sfew_cv_dlib+sfew_cv_fer   # one table to stdout

A generated table sits in a Markdown page between two HTML comments, which the built site does not show::

    <!-- results:NAME -->

    | ... the table, written by this script ... |

    <!-- /results:NAME -->

``NAME`` is the stem of a file in ``results/`` (``results/NAME.json``), several joined by ``+`` for one table whose
rows come from several runs (the files must be of one kind), and optionally ``:VIEW`` for another table of the same
files. The prose around a table, its caption included, stays hand-written; the figures in the table come from the
files only, so a hand edit inside a block is caught by ``--check`` (and by ``tests/test_results_tables.py``).

A result file is JSON. Its ``kind`` (or, for a file a benchmark wrote, its ``benchmark``) picks the renderer:

- ``table``: rows of figures and the columns that print them. Each column has a ``key``, a ``head`` and a ``cell``
  template in :meth:`str.format` syntax over the row's fields (``{acc:.2f} ± {acc_std:.2f}``); conversions ``!m``
  (minus sign as U+2212), ``!p`` (times 100) and ``!q`` (both). A field that is null prints the column's
  ``missing`` mark. A row may name columns to print in bold (``bold``), give a column its own template
  (``formats``) or literal text (``text``). ``scripts/results_table.py`` and ``scripts/recipe_table.py`` write
  such files from run folders (``--json``);
- ``peers``, ``transfer``, ``train_throughput``, ``inference``, ``detectors``: the JSON that ``benchmarks/peers.py
  --out`` and the other benchmarks' ``--json`` write, so that a new run of the benchmark is a new result file;
- ``cross_validate``, ``head_seeds``: the summaries ``scripts/cross_validate.py`` and ``scripts/head_seeds.py
  --json`` write, with the columns to print and the arms' labels added.

Every file records what was run (``command``, and where known the recipe, seed and machine) and where its figures
come from (``source``). This module reads JSON only (no torch), so the check takes a second.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import string
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS = "results"
PAGES = ("README.md", "docs/*.md")
MARK = re.compile(r"^<!-- results:(?P<name>\S+) -->\n(?P<body>.*?)^<!-- /results:(?P=name) -->$", re.S | re.M)
OPENING = re.compile(r"^<!-- results:", re.M)


class ResultsError(Exception):
    """A result file or block that cannot be rendered; the message names it."""


# ---- cells -------------------------------------------------------------------------------------------------------
class _Missing(Exception):
    """A field of the cell is null: the cell prints the column's missing mark."""


class _Minus:
    """A number whose minus sign prints as U+2212, as the docs' prose writes it."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec).replace("-", "\u2212")


class CellFormatter(string.Formatter):
    """:meth:`str.format` with ``!m`` (U+2212 minus), ``!p`` (x 100), ``!q`` (both); a null field raises."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if value is None:
            raise _Missing
        if conversion in ("p", "q"):
            value = 100 * value
        if conversion in ("m", "q"):
            return _Minus(value)
        return super().convert_field(value, None if conversion == "p" else conversion)


FORMATTER = CellFormatter()


def format_cell(template: str, fields: dict[str, Any], missing: str = "–") -> str:
    """One cell: ``template`` over ``fields``; ``missing`` where a field it names is null."""
    try:
        return FORMATTER.vformat(template, (), fields)
    except _Missing:
        return missing
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ResultsError(f"cell {template!r}: {type(exc).__name__}: {exc}") from None


def markdown_table(heads: Sequence[str], body: Iterable[Sequence[str]], align: Sequence[str] | None = None,
                   compact_empty: bool = False) -> str:
    """A Markdown table. ``align``: per column ``""`` or ``"right"``. ``compact_empty``: an empty cell prints as
    ``| |`` rather than ``|  |``."""
    def line(cells: Sequence[str]) -> str:
        text = "| " + " | ".join(c.replace("|", "\\|") if "\\|" not in c else c for c in cells) + " |"
        return text.replace("|  |", "| |").replace("|  |", "| |") if compact_empty else text

    align = align or [""] * len(heads)
    rule = "|" + "|".join("---:" if a == "right" else "---" for a in align) + "|"
    return "\n".join([line(heads), rule, *(line(cells) for cells in body)])


def columns(*specs: tuple[str, str, str]) -> list[dict[str, Any]]:
    """Column records from ``(key, head, cell template)`` triples."""
    return [{"key": key, "head": head, "cell": cell} for key, head, cell in specs]


def render_rows(columns: Sequence[dict[str, Any]], rows: Iterable[dict[str, Any]], compact_empty: bool = False,
                ) -> str:
    """Rows of fields through columns (``key``, ``head``, ``cell``, optional ``missing`` and ``align``). A field
    that some rows have and others lack is null in the others."""
    rows = list(rows)
    every = {k for row in rows for k in row} - {"text", "formats", "bold"}
    body = []
    for row in rows:
        row = dict.fromkeys(every) | row
        text, formats, bold = row.get("text", {}), row.get("formats", {}), set(row.get("bold", ()))
        cells = []
        for col in columns:
            key = col["key"]
            if key in text:
                cell = text[key]
            else:
                cell = format_cell(formats.get(key, col["cell"]), row, col.get("missing", "–"))
            cells.append(f"**{cell}**" if key in bold else cell)
        body.append(cells)
    return markdown_table([c["head"] for c in columns], body, [c.get("align", "") for c in columns], compact_empty)


# ---- renderers: one per kind of result file ------------------------------------------------------------------------
def render_table(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """Rows and columns as the file gives them; several files: the first one's columns, every file's rows."""
    first = files[0]
    return render_rows(first["columns"], [r for f in files for r in f["rows"]], first.get("compact_empty", False))


PEER_COLUMNS = columns(
    ("peer", "peer", "{peer}"),
    ("version", "version", "{version}"),
    ("mode", "mode", "{mode}"),
    ("accuracy", "accuracy", "{accuracy!p:.2f} %"),
    ("mean_class", "mean class acc.", "{mean_class_accuracy!p:.2f} %"),
    ("no_face", "no face", "{no_face!p:.2f} %"),
    ("errors", "errors", "{errors}"),
    ("faces_per_s", "faces/s", "{faces_per_s:.1f}"),
    ("note", "note", "{note}"),
)


def peers_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of a ``benchmarks/peers.py`` run; a failed peer's row carries its reason."""
    out = []
    for r in rows:
        if r.get("error"):
            out.append({"peer": r["peer"], "version": r.get("version") or "-", "mode": r.get("mode") or "-",
                        "text": {c["key"]: "-" for c in PEER_COLUMNS[3:-1]} | {"note": f"failed: {r['error']}"}})
            continue
        note = f"lacks {', '.join(r['lacks'])} (counted wrong)" if r.get("lacks") else ""
        out.append(r | {"note": note})
    return render_rows([c | {"missing": "-"} for c in PEER_COLUMNS], out)


def render_peers(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``benchmarks/peers.py --out`` files. View ``crop``: one row per package, its classifier on the given crop
    (``crop`` mode), labelled by the file's ``labels`` (``{version}``, ``{flip}``: the crop+flip accuracy)."""
    rows = [r for f in files for r in f["rows"]]
    if view is None:
        return peers_markdown(rows)
    if view != "crop":
        raise ResultsError(f"peers: unknown view {view!r} (known: crop)")
    labels, bold = files[0].get("labels", {}), set(files[0].get("bold", ()))
    by = {(r["peer"], r.get("mode")): r for r in rows}
    out = []
    for r in rows:
        if r.get("mode") != "crop":
            continue
        flip = by.get((r["peer"], "crop+flip"), {}).get("accuracy")
        label = labels.get(r["peer"], "`{peer}` {version}")
        fields = r | {"flip": None if flip is None else 100 * flip}
        out.append(fields | {"label": format_cell(label, fields),
                             "bold": ["accuracy"] if r["peer"] in bold else []})
    return render_rows([{"key": "label", "head": "model", "cell": "{label}"},
                        {"key": "accuracy", "head": "accuracy (single crop)", "cell": "{accuracy!p:.2f} %"},
                        {"key": "mean_class", "head": "mean class", "cell": "{mean_class_accuracy!p:.2f} %"}], out)


SET_NAMES = {"sfew/train": "SFEW Train", "ferplus/val": "FERPlus val (FER2013Valid)",
             "fer2013/publictest": "FER2013 PublicTest"}


def render_transfer(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``benchmarks/transfer.py --json`` files, one per model: a row per set and mode."""
    rows = []
    for f in files:
        model = f["trained_on"] if f["model"] == "default" else f["model"]
        model = f"`{model}`" + (f", margin {f['face_margin']:g}".replace("-", "−") if "face_margin" in f else "")
        for row in f["sets"].values():
            if "skipped" in row:
                continue
            where = SET_NAMES.get(row["split"], row["split"]) + (f" ({row['note']})" if row.get("note") else "")
            e2e, crop = row.get("end_to_end"), row["crop"]
            if e2e:
                rows.append({"model": model, "set": where, "mode": "end_to_end, detected", **e2e, **e2e["detected"]})
                rows.append({"model": model, "set": where, "mode": "end_to_end, +whole", **e2e, **e2e["with_whole"]})
            rows.append({"model": model, "set": where, "mode": "crop", **crop, **crop["detected"], "no_face": None})
    return render_rows([
        {"key": "model", "head": "model", "cell": "{model}"},
        {"key": "set", "head": "set", "cell": "{set}"},
        {"key": "mode", "head": "mode", "cell": "{mode}"},
        {"key": "images", "head": "images", "cell": "{images}"},
        {"key": "no_face", "head": "no face found", "cell": "{no_face}", "missing": "—"},
        {"key": "accuracy", "head": "accuracy", "cell": "{accuracy:.2f}"},
        {"key": "mean_class", "head": "mean class", "cell": "{mean_class:.2f}"}], rows)


def render_cross_validate(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``scripts/cross_validate.py`` summaries: a row per arm (the file's ``labels``) through the file's columns;
    an arm's paired difference is against its own file's reference arm."""
    rows = []
    for f in files:
        ref = f["reference"]
        for arm, a in f["arms"].items():
            fields: dict[str, Any] = {"arm": arm, "cells": f["cells"], "reference": ref}
            for metric, value in a.items():
                if isinstance(value, list):
                    fields[metric], fields[f"{metric}_std"] = value
                else:
                    fields[metric] = value
            paired = a.get(f"accuracy_minus_{ref}")
            fields["minus_ref"], fields["minus_ref_std"] = paired if paired else (None, None)
            fields["wins"] = a.get("accuracy_wins")
            rows.append(fields | f.get("labels", {}).get(arm, {}))
    return render_rows(files[0]["columns"], rows)


def render_head_seeds(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``scripts/head_seeds.py --json`` files: a row per head, its accuracy from the summary (mean ± std over
    seeds, paired with the baseline by seed) and each decomposition figure averaged over its seeds' rows."""
    rows = []
    for f in files:
        s = f["summary"]
        arms = {"baseline": None, "fdrl": (s["val_accuracy"], s["val_mean_class_accuracy"])}
        arms |= {name: (a["val_accuracy"], a["val_mean_class_accuracy"]) for name, a in s.get("arms", {}).items()}
        for arm, stats in arms.items():
            seeds = [r[arm] for r in f["rows"] if arm in r]
            fields: dict[str, Any] = {"arm": arm, "seeds": len(seeds)}
            if stats is None:  # the baseline: its own mean ± std, from any arm's summary
                acc, mca = s["val_accuracy"], s["val_mean_class_accuracy"]
                fields |= {"acc": acc["mean_b"], "acc_std": acc["std_b"], "mca": mca["mean_b"],
                           "mca_std": mca["std_b"], "diff": None, "diff_std": None, "mca_diff": None,
                           "mca_diff_std": None}
            else:
                acc, mca = stats
                fields |= {"acc": acc["mean_a"], "acc_std": acc["std_a"], "mca": mca["mean_a"],
                           "mca_std": mca["std_a"], "diff": acc["mean_diff"], "diff_std": acc["std_diff"],
                           "wins": acc["wins"], "mca_diff": mca["mean_diff"], "mca_diff_std": mca["std_diff"]}
            for key in ("alpha_cv", "alpha_class_spread", "latent_cosine", "argmax_class_nmi"):
                values = [r[f"val_{key}"] for r in seeds if f"val_{key}" in r]
                fields[key] = sum(values) / len(values) if values else None
            rows.append(fields | f.get("labels", {}).get(arm, {}))
    order = files[0].get("order")
    if order:
        rows.sort(key=lambda r: order.index(r["arm"]) if r["arm"] in order else len(order))
    return render_rows(files[0]["columns"], rows)


def render_train_throughput(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``benchmarks/train_throughput.py --json`` files: a row per input size and model."""
    rows = [{"input": f"{f['input_size']} px", **r} for f in files for r in f["rows"]]
    return render_rows(columns(("input", "input", "{input}"), ("model", "model", "{model}"),
        ("img_s", "train img/s", "{images_per_second:.1f}"), ("ms_step", "ms/step", "{ms_per_step:.1f}"),
        ("peak", "peak RSS MB", "{peak_memory_mb:.1f}")), rows)


def render_inference(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``benchmarks/inference.py --json`` files: faces/s and ms per face per runtime and batch, against the bare
    baseline network of the same batch."""
    rows = []
    for f in files:
        base = {r["batch"]: r["faces_per_s"] for r in f["rows"] if r["model"].startswith("baseline")}
        rows += [r | {"vs_baseline": r["faces_per_s"] / base[r["batch"]] if r["batch"] in base else None}
                 for r in f["rows"]]
    return render_rows(columns(("model", "model", "{model}"), ("batch", "batch", "{batch}"),
        ("faces_s", "faces/s", "{faces_per_s:.1f}"), ("ms_face", "ms/face", "{ms_per_face:.2f}"),
        ("vs", "vs baseline", "{vs_baseline:.2f}")), rows)


def render_detectors(files: Sequence[dict[str, Any]], view: str | None) -> str:
    """``benchmarks/detectors.py --json`` files: recall over the photos' faces and per face size, false detections,
    the share of found faces with eyes and the median time per photo."""
    sizes = files[0]["sizes"]
    rows = []
    for f in files:
        if f["sizes"] != sizes:
            raise ResultsError(f"detectors: runs with other face sizes in one table ({f['sizes']} vs {sizes})")
        for r in f["rows"]:
            found = {str(s): r["found"][str(s)] for s in sizes}
            hits = sum(v[0] for v in found.values())
            total = sum(v[1] for v in found.values())
            rows.append(r | {"recall": hits / total, "eyes_share": r["eyes"] / max(1, hits)}
                        | {f"at{s}": found[str(s)][0] / max(1, found[str(s)][1]) for s in sizes})
    return render_rows([
        {"key": "detector", "head": "detector", "cell": "{detector}"},
        {"key": "recall", "head": "recall", "cell": "{recall:.1%}"},
        *({"key": f"at{s}", "head": f"@{s} px", "cell": f"{{at{s}:.1%}}"} for s in sizes),
        {"key": "false", "head": "false detections", "cell": "{false}"},
        {"key": "eyes", "head": "eyes found", "cell": "{eyes_share:.1%}"},
        {"key": "ms", "head": "ms/photo", "cell": "{ms_per_photo:.1f}"}], rows)


# ---- table files from run folders (scripts/results_table.py, scripts/recipe_table.py) ---------------------------
PAIR_COLUMNS = columns(
    ("data_set", "data set", "{data_set}"),
    ("model", "model", "{model}"),
    ("epochs", "epochs", "{epochs}"),
    ("selected", "selected", "{selection} (epoch {selected})"),
    ("val_acc", "val acc", "{val_acc:.2f}"),
    ("val_mean_class", "val mean-class", "{val_mean_class:.2f}"),
    ("test_acc", "test acc", "{test_acc:.2f}"),
    ("test_mean_class", "test mean-class", "{test_mean_class:.2f}"),
    ("last_epoch_test_acc", "last-epoch test acc", "{last_epoch_test_acc:.2f}"),
    ("train_wall_time", "train wall time", "{train_wall_time:.0f} min"),
    ("device", "device", "{device}"),
)
# (summary key of the selected epoch, row key, column name) of the paired seeds table
SEED_FIGURES = (("test_accuracy", "test_acc", "test acc"), ("test_mean_class_accuracy", "test_mean_class",
                                                             "test mean-class"),
                ("val_accuracy", "val_acc", "val acc"), ("val_mean_class_accuracy", "val_mean_class", "val mean-class"))


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def pair_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One run's row (its selected epoch) from the ``summary.json`` a finished run writes; figures in %."""
    sel = summary[summary["selected"]]
    return {"data_set": f"{summary['dataset']} ({summary['config']['data']['test_split']})",
            "model": summary["model_name"], "epochs": summary["epochs"], "selection": summary["selected"],
            "selected": sel["epoch"], "val_acc": _pct(sel["val_accuracy"]),
            "val_mean_class": _pct(sel["val_mean_class_accuracy"]), "test_acc": _pct(sel.get("test_accuracy")),
            "test_mean_class": _pct(sel.get("test_mean_class_accuracy")),
            "last_epoch_test_acc": _pct(summary["last"].get("test_accuracy")),
            "train_wall_time": summary.get("train_seconds", 0) / 60,
            "device": f"{summary['device']} x{summary['world_size']}, torch {summary['versions']['torch']}"}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def seeds_table(pairs: Sequence[tuple[Any, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """The paired table of repeats of one FDRL/baseline pair: ``pairs`` is (seed, {"baseline": selected epoch,
    "fdrl": selected epoch}) per seed, the epochs as in ``summary.json`` (fractions). A row per seed with the
    FDRL - baseline difference, then the mean and sample standard deviation over the seeds; figures that some run
    lacks (no test split) are left out."""
    figures = [f for f in SEED_FIGURES if all(sel[v].get(f[0]) is not None for _, sel in pairs for v in sel)]
    columns = [{"key": "seed", "head": "seed", "cell": "{seed}"}]
    for _, key, name in figures:
        columns += [{"key": f"{key}_baseline", "head": f"{name} baseline", "cell": f"{{{key}_baseline:.2f}}"},
                    {"key": f"{key}_fdrl", "head": f"{name} FDRL", "cell": f"{{{key}_fdrl:.2f}}"},
                    {"key": f"{key}_diff", "head": f"{name} diff", "cell": f"{{{key}_diff:+.2f}}"}]
    rows = []
    for seed, sel in pairs:
        row: dict[str, Any] = {"seed": str(seed)}
        for src, key, _ in figures:
            b, f = 100 * sel["baseline"][src], 100 * sel["fdrl"][src]
            row |= {f"{key}_baseline": b, f"{key}_fdrl": f, f"{key}_diff": f - b}
        rows.append(row)
    if len(rows) > 1:
        mean: dict[str, Any] = {"seed": f"mean ± std ({len(rows)} seeds)", "formats": {}}
        for col in columns[1:]:
            k = col["key"]
            mean[k], mean[f"{k}_std"] = _mean_std([r[k] for r in rows])
            sign = "+" if k.endswith("_diff") else ""
            mean["formats"][k] = f"{{{k}:{sign}.2f}} ± {{{k}_std:.2f}}"
        rows.append(mean)
    return {"kind": "table", "columns": columns, "rows": rows}


def recipe_table(arms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Recipe-search arms: each ``{"arm", "change", "history", "planned"}`` (``history``: the run's
    ``metrics.jsonl`` records, ``change``: the config values that differ from the control's); a column of
    validation accuracy per epoch, the best epoch's accuracy and mean class accuracy, and the median speed."""
    epochs = max((len(a["history"]) for a in arms), default=0)
    columns = [{"key": "arm", "head": "arm", "cell": "{arm}"},
               {"key": "differs_from_control", "head": "differs from control", "cell": "{differs_from_control}"},
               *({"key": f"val_e{i}", "head": f"val e{i}", "cell": f"{{val_e{i}:.2f}}"} for i in range(1, epochs + 1)),
               {"key": "best_val_acc", "head": "best val acc", "cell": "{best_val_acc:.2f}"},
               {"key": "its_mean_class", "head": "its mean-class", "cell": "{its_mean_class:.2f}"},
               {"key": "img_s", "head": "img/s (train)", "cell": "{img_s:.1f}"}]
    rows = []
    for a in arms:
        hist = a["history"]
        done = "" if len(hist) == a.get("planned") else f" ({len(hist)}/{a.get('planned')} epochs)"
        best = max(hist, key=lambda h: h["val_accuracy"]) if hist else {}
        speeds = sorted(h["images_per_second"] for h in hist)
        rows.append({"arm": a["arm"] + done,
                     "differs_from_control": ", ".join(f"`{k}={v}`" for k, v in sorted(a["change"].items()))
                     or "(control)",
                     **{f"val_e{i}": _pct(h["val_accuracy"]) for i, h in enumerate(hist, 1)},
                     "best_val_acc": _pct(best.get("val_accuracy")),
                     "its_mean_class": _pct(best.get("val_mean_class_accuracy")),
                     "img_s": speeds[len(speeds) // 2] if speeds else None})
    return {"kind": "table", "columns": columns, "rows": rows}


def write_result(path: str | Path, data: dict[str, Any], argv: Sequence[str]) -> None:
    """A result file for ``results/``: ``data`` with the command that made it in front."""
    record = {"kind": data.get("kind", "table"), "command": " ".join(["python", *argv]),
              "source": "written by this command from the runs' own files"} | data
    Path(path).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


VIEWS = {"peers"}  # kinds whose files print more than one table
RENDERERS: dict[str, Callable[[Sequence[dict[str, Any]], str | None], str]] = {
    "table": render_table,
    "peers": render_peers,
    "transfer": render_transfer,
    "cross_validate": render_cross_validate,
    "head_seeds": render_head_seeds,
    "train_throughput": render_train_throughput,
    "inference": render_inference,
    "detectors": render_detectors,
}


# ---- files and blocks --------------------------------------------------------------------------------------------
def kind_of(data: dict[str, Any]) -> str:
    return data.get("kind") or data.get("benchmark") or "table"


def load(root: Path, stem: str) -> dict[str, Any]:
    path = root / RESULTS / f"{stem}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path.relative_to(root)}: no such result file") from None
    except ValueError as exc:
        raise ResultsError(f"{path.relative_to(root)}: not JSON ({exc})") from None


def split_name(name: str) -> tuple[list[str], str | None]:
    """``a+b:view`` -> (["a", "b"], "view")."""
    stems, _, view = name.partition(":")
    return stems.split("+"), view or None


def render(name: str, root: Path) -> str:
    """The table of a block name (``stem[+stem...][:view]``) from its result files."""
    stems, view = split_name(name)
    files = [load(root, s) for s in stems]
    kinds = {kind_of(f) for f in files}
    if len(kinds) != 1:
        raise ResultsError(f"results:{name}: files of different kinds {sorted(kinds)} in one table")
    kind = kinds.pop()
    if kind not in RENDERERS:
        raise ResultsError(f"results:{name}: no renderer for kind {kind!r} (known: {', '.join(RENDERERS)})")
    if view is not None and kind not in VIEWS:
        raise ResultsError(f"results:{name}: {kind} files have one table, no view {view!r}")
    try:
        return RENDERERS[kind](files, view)
    except ResultsError as exc:
        raise ResultsError(f"results:{name}: {exc}") from None
    except (KeyError, IndexError, TypeError) as exc:
        raise ResultsError(f"results:{name}: the {kind} file lacks {type(exc).__name__}: {exc}") from None


def pages(root: Path) -> list[Path]:
    return sorted(p for pattern in PAGES for p in root.glob(pattern))


def rewrite(text: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every block re-rendered, and the names of the blocks that changed."""
    changed = []

    def sub(m: re.Match[str]) -> str:
        table = render(m["name"], root)
        if m["body"].strip("\n") != table:
            changed.append(m["name"])
        return f"<!-- results:{m['name']} -->\n\n{table}\n\n<!-- /results:{m['name']} -->"

    return MARK.sub(sub, text), changed


def used_stems(root: Path) -> set[str]:
    return {s for p in pages(root) for m in MARK.finditer(p.read_text()) for s in split_name(m["name"])[0]}


def check(root: Path, out=sys.stdout) -> int:
    """Every block against its files: 0 when all agree, else 1 after naming each block that differs (with the
    first lines of the difference) and each result file that feeds no block."""
    problems = 0
    for page in pages(root):
        text = page.read_text()
        for m in MARK.finditer(text):
            rel = page.relative_to(root)
            try:
                table = render(m["name"], root)
            except ResultsError as exc:
                print(f"{rel}: {exc}", file=out)
                problems += 1
                continue
            if m["body"].strip("\n") != table:
                problems += 1
                diff = list(difflib.unified_diff(m["body"].strip("\n").splitlines(), table.splitlines(),
                                                 "in the page", "from the result files", lineterm="", n=0))
                print(f"{rel}: results:{m['name']} differs from its result files "
                      f"(run python scripts/results_tables.py to rewrite it):", file=out)
                print("\n".join("    " + d for d in diff[:8]), file=out)
        opened = len(OPENING.findall(text))
        if opened != len(MARK.findall(text)):
            print(f"{page.relative_to(root)}: a results block is not closed as <!-- /results:NAME -->", file=out)
            problems += 1
    unused = sorted({p.stem for p in (root / RESULTS).glob("*.json")} - used_stems(root))
    for stem in unused:
        print(f"{RESULTS}/{stem}.json feeds no table (no <!-- results:{stem} --> block)", file=out)
    return 1 if problems or unused else 0


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    """The command line of ``scripts/results_tables.py``; ``root`` is the repository (README.md, docs/, results/)."""
    p = argparse.ArgumentParser(prog="results_tables.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its files")
    p.add_argument("--print", dest="name", metavar="NAME", help="print one table (stem[+stem...][:view])")
    p.add_argument("--root", type=Path, default=root, help="the repository (README.md, docs/, results/)")
    args = p.parse_args(argv)
    try:
        if args.name:
            print(render(args.name, args.root))
            return 0
        if args.check:
            return check(args.root)
        for page in pages(args.root):
            text = page.read_text()
            new, changed = rewrite(text, args.root)
            if new != text:
                page.write_text(new)
            for name in changed:
                print(f"{page.relative_to(args.root)}: rewrote results:{name}")
    except ResultsError as exc:
        print(f"results_tables: {exc}", file=sys.stderr)
        return 1
    return 0

