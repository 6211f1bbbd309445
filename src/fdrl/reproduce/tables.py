"""The paired FDRL-vs-baseline table of a reproduction, as data (for ``results.json``) and as Markdown.

Seeds are paired: within a seed FDRL and its baseline twin share the recipe, the data order and the validation
split, so the difference is taken within the seed and then averaged (mean ± sample standard deviation over the
seeds whose two runs both finished), as ``docs/protocols.md`` describes.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..tables import markdown_table
from .runs import Run

# The figures of each run's selected checkpoint: the test figures first, the validation figure beside them.
METRICS = ("test_accuracy", "test_mean_class_accuracy", "val_accuracy")


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def pair_table(runs: list[Run]) -> dict[str, Any]:
    """Per seed: both runs' figures, their difference (FDRL − baseline) and whether the pair is complete (both
    runs finished with a test figure); then mean ± std of each over the complete pairs."""
    by = {(r.variant, r.seed): r for r in runs}
    rows = []
    for seed in sorted({r.seed for r in runs}):
        pair = {v: by.get((v, seed)) for v in ("baseline", "fdrl")}
        res = {v: ((r.result() if r else None) or {}) for v, r in pair.items()}
        diff = {k: None if res["fdrl"].get(k) is None or res["baseline"].get(k) is None
                else res["fdrl"][k] - res["baseline"][k] for k in METRICS}
        complete = all(r is not None and r.status == "done" for r in pair.values()) and \
            all(x.get("test_accuracy") is not None for x in res.values())
        rows.append({"seed": seed, **res, "diff": diff, "complete": complete,
                     "status": {v: r.status if r else "absent" for v, r in pair.items()},
                     "wall_s": {v: r.wall_s() if r else None for v, r in pair.items()}})
    done = [row for row in rows if row["complete"]]
    mean_std = {side: {k: _stats([row[side][k] for row in done if row[side].get(k) is not None]) for k in METRICS}
                for side in ("baseline", "fdrl", "diff")}
    ahead = sum(1 for row in done if row["diff"]["test_accuracy"] > 0)
    return {"rows": rows, "mean_std": mean_std, "complete_pairs": len(done), "fdrl_ahead": ahead}


def _pct(v: float | None, signed: bool = False) -> str:
    return "–" if v is None else f"{100 * v:{'+' if signed else ''}.2f}"


def _mean_std(s: dict[str, Any], signed: bool = False) -> str:
    if s["mean"] is None:
        return "–"
    return _pct(s["mean"], signed) + ("" if s["std"] is None else f" ± {100 * s['std']:.2f}")


def results_markdown(table: dict[str, Any], header: list[str], val_split: str | None, test_split: str) -> str:
    """``header`` lines, then one row per seed and the mean ± std row; every figure in %."""
    names = {"test_accuracy": f"test acc ({test_split})", "test_mean_class_accuracy": f"test mean-class ({test_split})",
             "val_accuracy": f"val acc ({val_split or 'no validation split'})"}
    heads = ["seed", *(h for k in METRICS for h in (f"baseline {names[k]}", f"FDRL {names[k]}", "diff")),
             "selected epoch (baseline / FDRL)", "wall s", "status"]
    body = []
    for row in table["rows"]:
        b, f, d = row["baseline"], row["fdrl"], row["diff"]
        wall = " / ".join("–" if w is None else f"{w:.0f}" for w in row["wall_s"].values())
        figures = (c for k in METRICS for c in (_pct(b.get(k)), _pct(f.get(k)), _pct(d[k], True)))
        body.append([str(row["seed"]), *figures, f"{b.get('epoch', '–')} / {f.get('epoch', '–')}", wall,
                     " / ".join(row["status"].values())])
    ms, n = table["mean_std"], table["complete_pairs"]
    body.append([f"mean ± std ({n} complete pair{'' if n == 1 else 's'})",
                 *(c for k in METRICS for c in (_mean_std(ms["baseline"][k]), _mean_std(ms["fdrl"][k]),
                                                _mean_std(ms["diff"][k], True))), "", "", ""])
    lines = [*header, "", markdown_table(heads, body, compact_empty=True)]
    if n:
        lines += ["", f"FDRL is ahead of its baseline in test accuracy in {table['fdrl_ahead']} of {n} seed"
                  f"{'' if n == 1 else 's'}."]
    return "\n".join(lines) + "\n"
