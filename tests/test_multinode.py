"""Two nodes of two ranks: two ``torchrun`` launchers (static rendezvous on 127.0.0.1, gloo on CPU) train the tiny
recipe together, killed in epoch 2 and resumed.

Checked: the four ranks' batches are disjoint and cover the epoch; all ranks hold the same weights after every
step; one checkpoint and one log row per epoch; the resumed step equals the interrupted one bit for bit; the
data are decoded once per cache folder (one per node where each node has its own, once where they share one).

Run as a script, this file is one rank: it records its batches and a digest of its weights after each optimiser
step, through the trainer's own ``epoch_batches`` and torch's optimiser hooks, then trains as ``fdrl train`` does.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook

import fdrl
from fdrl.config import load_config
from fdrl.engine.trainer import TrainingStopped, train
from test_engine import TINY, _free_port

# 256 / 4 ranks / 32 = 2 steps an epoch; 256 training faces: a decode large enough to announce itself on stderr
RECIPE = [*TINY, "data.cache=true", "data.options={train_size: 256, eval_size: 14, image_size: 32}",
          "train.batch_size=32", "report.plots=false", "report.tsne=false"]
NODES, PER_NODE = 2, 2


def _rank_main(out: str, record: str, resume: bool, overrides: list[str]) -> None:
    from fdrl.engine import trainer

    seen: dict[str, object] = {"batches": {}, "digests": []}
    plan = trainer.epoch_batches

    def recorded(n, t, epoch, info):
        batches = plan(n, t, epoch, info)
        seen["batches"][epoch] = [b.tolist() for b in batches]
        return batches

    def after_step(optimizer, args, kwargs):
        h = hashlib.sha256()
        for group in optimizer.param_groups:
            for p in group["params"]:
                h.update(p.detach().contiguous().numpy().tobytes())
        seen["digests"].append(h.hexdigest())

    trainer.epoch_batches = recorded
    register_optimizer_step_post_hook(after_step)
    try:
        train(load_config(None, overrides), out, resume=resume)
        seen["stopped"] = False
    except TrainingStopped:
        seen["stopped"] = True
    Path(record, f"rank{os.environ['RANK']}.json").write_text(json.dumps(seen))


def _launch(tmp: Path, record: Path, homes: list[Path], overrides: list[str], resume: bool = False) -> list[str]:
    """Both launchers of one job; returns their combined stderr. Each node gets its own HOME (the default cache
    folder lives there)."""
    record.mkdir(parents=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(fdrl.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = []
    for node in range(NODES):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}", f"--nproc-per-node={PER_NODE}",
               f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", __file__,
               str(tmp / "run"), str(record), "resume" if resume else "fresh", *overrides]
        procs.append(subprocess.Popen(cmd, env={**env, "HOME": str(homes[node])}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            errs.append(err)
    finally:
        for p in procs:
            p.kill()
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return errs


def _ranks(record: Path) -> list[dict]:
    return [json.loads((record / f"rank{r}.json").read_text()) for r in range(NODES * PER_NODE)]


def test_two_nodes_two_ranks_each_train_resume_and_decode_once(tmp_path):
    homes = [tmp_path / f"home{n}" for n in range(NODES)]
    errs = _launch(tmp_path, tmp_path / "killed", homes, [*RECIPE, "train.stop_after_steps=3"])  # epoch 2, step 1
    killed = _ranks(tmp_path / "killed")
    assert all(r["stopped"] for r in killed)
    for epoch in ("0", "1"):
        rows = [i for r in killed for b in r["batches"][epoch] for i in b]
        assert sorted(rows) == list(range(256))  # disjoint between ranks, and every training face once
    assert len({tuple(r["digests"]) for r in killed}) == 1 and len(killed[0]["digests"]) == 3  # same after each step
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == ["best.pt", "config.yaml", "last.pt",
                                                                     "metrics.jsonl"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and fdrl.load_checkpoint(run / "last.pt")
    # each node has its own default cache folder (HOME): each decodes once, into its own
    assert sum(e.count("decoding synthetic/train:") for e in errs) == NODES
    assert all(len(list((h / ".cache" / "fdrl").glob("synthetic-train-*.rows"))) == 1 for h in homes)

    shared = tmp_path / "shared_cache"
    errs = _launch(tmp_path, tmp_path / "resumed", homes, [*RECIPE, f"data.cache_dir={shared}"], resume=True)
    resumed = _ranks(tmp_path / "resumed")
    assert all(not r["stopped"] for r in resumed) and len({tuple(r["digests"]) for r in resumed}) == 1
    assert resumed[0]["digests"][0] == killed[0]["digests"][2]  # epoch 2's first step again, bit for bit
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # a folder the nodes share: rank 0 decodes for all four ranks
    assert sum(e.count("decoding synthetic/train:") for e in errs) == 1
    assert len(list(shared.glob("synthetic-train-*.rows"))) == 1


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2], sys.argv[3] == "resume", sys.argv[4:])
