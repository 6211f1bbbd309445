"""``benchmarks/peers.py`` without installing any peer: the label tables, the stratified subset, scoring, the table
and JSON, and a peer whose runner fails (fake runners talking the real protocol, run with this interpreter)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from fdrl.checkpoint import read_checkpoint
from fdrl.inference.lookup import default_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


peers = _load_benchmark()


def test_class_names_are_the_default_models():
    assert list(peers.CLASSES) == list(read_checkpoint(default_checkpoint())["classes"])


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_label_table_maps_onto_fdrl_classes(name):
    peer = peers.PEERS[name]
    assert (peers.RUNNERS / peer.runner).is_file()
    assert set(peer.labels.values()) <= set(peers.CLASSES) | {None}
    # every peer here has the seven FER2013 classes, each from exactly one of its labels
    assert sorted(v for v in peer.labels.values() if v) == sorted(peers.CLASSES)
    assert peer.venv == (name != "fdrl")
    if peer.venv:  # the package itself is pinned
        assert any(r.startswith(f"{peer.pypi}==") for r in peer.install + peer.install_no_deps)


@pytest.mark.parametrize("runner", sorted(p.name for p in peers.RUNNERS.glob("*.py")))
def test_runners_compile(runner):
    """The runners import their packages only inside the peers' venvs; here they must at least be Python."""
    compile((peers.RUNNERS / runner).read_text(), runner, "exec")


def test_label_check_refuses_an_unmapped_label():
    peer = peers.PEERS["facex"]
    peers.check_labels(peer, list(peer.labels))
    with pytest.raises(peers.PeerError, match="differ"):
        peers.check_labels(peer, [*peer.labels, "contempt"])


def test_folder_names_and_aliases():
    assert [peers.class_name(n) for n in ("Angry", "anger", "Happiness", "sadness", "surprised", "contempt")] == [
        "angry", "angry", "happy", "sad", "surprise", "contempt"]


def _sample(sizes: dict[str, int]):
    truth = [c for c, n in sizes.items() for _ in range(n)]
    return peers.Sample([Path(f"{c}/{i}.jpg") for i, c in enumerate(truth)], truth, list(sizes))


def test_stratified_limit():
    sample = _sample({"angry": 50, "disgust": 5, "fear": 31, "happy": 14})
    sub = peers.stratified(sample, 17, seed=0)
    assert len(sub.paths) == 17
    for c, n in {"angry": 50, "disgust": 5, "fear": 31, "happy": 14}.items():
        assert abs(sub.truth.count(c) - 17 * n / 100) < 1
    assert set(sub.paths) <= set(sample.paths)
    assert all(p.parent.name == t for p, t in zip(sub.paths, sub.truth, strict=True))
    assert peers.stratified(sample, 17, seed=0).paths == sub.paths
    assert peers.stratified(sample, 17, seed=1).paths != sub.paths
    assert peers.stratified(sample, None).paths == sample.paths
    assert peers.stratified(sample, 1000).paths == sample.paths


def test_read_folder(tmp_path, img):
    for cls, n in (("Happy", 2), ("anger", 1), ("contempt", 1)):
        for i in range(n):
            img(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "Happy" / "notes.txt").write_text("not an image")
    sample = peers.read_folder(tmp_path)
    assert sample.classes == ["angry", "happy", "contempt"]
    assert sorted(sample.truth) == ["angry", "contempt", "happy", "happy"]


def test_score_counts_missing_faces_errors_and_lacking_classes():
    peer = peers.Peer("x.py", {"Angry": "angry", "Happy": "happy", "Odd": None})
    truth = ["angry", "angry", "happy", "happy", "contempt"]
    result = {"labels": ["Angry", None, "Happy", "Odd", "Happy"], "faces": [1, 0, 2, 1, 1],
              "errors": [None, "ValueError: x", None, None, None], "seconds": 2.0}
    row = peers.score(peer, truth, ["angry", "happy", "contempt"], result, "pipeline")
    assert row["accuracy"] == pytest.approx(2 / 5)
    assert row["per_class"] == {"angry": 0.5, "happy": 0.5, "contempt": 0.0}
    assert row["mean_class_accuracy"] == pytest.approx(1 / 3)
    assert row["no_face"] == pytest.approx(1 / 5) and row["errors"] == 1
    assert row["faces_per_s"] == pytest.approx(2.5)
    assert row["lacks"] == ["contempt"]
    assert peers.score(peer, truth, ["angry", "happy", "contempt"], result, "crop+flip")["no_face"] == 0


def test_table_formats_rows_and_failures():
    rows = [{"peer": "fdrl", "version": "0.1.0", "mode": "crop", "accuracy": 0.6543, "mean_class_accuracy": 0.6,
             "no_face": 0.0, "errors": 0, "faces_per_s": 123.45, "lacks": []},
            {"peer": "other", "version": "1.0", "mode": "pipeline", "accuracy": 0.5, "mean_class_accuracy": 0.25,
             "no_face": 0.125, "errors": 2, "faces_per_s": None, "lacks": ["contempt"]},
            peers.error_row("broken", "install failed (x==1): no matching distribution")]
    text = peers.format_table(rows).splitlines()
    assert text[0].split()[:3] == ["peer", "version", "mode"] and len(text) == 4
    assert "65.43 %" in text[1] and "123.5" in text[1]
    assert "12.50 %" in text[2] and "lacks contempt (counted wrong)" in text[2]
    assert text[3].startswith("broken") and text[3].endswith("failed: install failed (x==1): no matching distribution")
    md = peers.format_table(rows, markdown=True).splitlines()
    assert md[0].startswith("| peer |") and md[1].startswith("|---|") and len(md) == 5
    assert all(line.count("|") == md[0].count("|") for line in md)


FAKE_RUNNER = '''
from _protocol import evaluate, finish, main

def run(request):
    if {fail!r}:
        raise RuntimeError("the package could not be imported")
    def predict(path):
        return ({label!r} if "happy" in path else None), (1 if "happy" in path else 0)
    modes = {{m: evaluate(p, str, predict) for m, p in request["modes"].items()}}
    finish("9.9", {labels!r}, modes)

main(run)
'''


@pytest.fixture
def fake_peers(tmp_path, monkeypatch, img):
    runners = tmp_path / "runners"
    runners.mkdir()
    shutil.copy(peers.RUNNERS / "_protocol.py", runners)
    labels = {"joy": "happy", "anger": "angry"}
    for name, fail, label, answered in (("good", False, "joy", list(labels)), ("raises", True, "joy", list(labels)),
                                        ("renamed", False, "joy", ["joy", "rage"])):
        (runners / f"run_{name}.py").write_text(FAKE_RUNNER.format(fail=fail, label=label, labels=answered))
        monkeypatch.setitem(peers.PEERS, name, peers.Peer(f"run_{name}.py", labels))
    monkeypatch.setattr(peers, "RUNNERS", runners)
    data = tmp_path / "faces"
    for cls, n in (("happy", 2), ("angry", 1), ("sad", 1)):
        for i in range(n):
            img(data / cls / f"{i}.jpg")
    return data


def test_run_with_a_failing_peer(fake_peers, tmp_path, capsys):
    out = tmp_path / "r.json"
    report = peers.main(["--data", str(fake_peers), "--peers", "good,raises,renamed", "--modes", "pipeline,crop",
                         "--venv-dir", str(tmp_path / "venvs"), "--out", str(out)])
    rows = {(r["peer"], r["mode"]): r for r in report["rows"]}
    good = rows["good", "pipeline"]
    assert good["version"] == "9.9" and good["n"] == 4
    assert good["accuracy"] == pytest.approx(0.5) and good["no_face"] == pytest.approx(0.5)
    assert good["per_class"] == {"angry": 0.0, "happy": 1.0, "sad": 0.0}
    assert rows["good", "crop"]["no_face"] == 0
    assert "could not be imported" in rows["raises", None]["error"]
    assert "differ" in rows["renamed", None]["error"]
    assert report["peers"]["raises"]["error"] == rows["raises", None]["error"]
    printed = capsys.readouterr().out
    assert "failed: runner failed (exit 1): RuntimeError: the package could not be imported" in printed
    stored = json.loads(out.read_text())
    assert stored["rows"] == json.loads(json.dumps(report["rows"]))
    assert stored["images"] == 4 and stored["class_counts"] == {"angry": 1, "happy": 2, "sad": 1}
    assert (tmp_path / "venvs" / "raises.run.log").is_file()
    capsys.readouterr()
    peers.main(["--show", str(out)])  # a stored run prints the same table
    assert capsys.readouterr().out.splitlines()[1:] == printed.splitlines()[1:]


def test_an_install_failure_is_a_row(fake_peers, tmp_path, monkeypatch):
    def fail(name, peer, venv_dir):
        raise peers.PeerError("install failed (x==1): no matching distribution")

    monkeypatch.setattr(peers, "ensure_venv", fail)
    report = peers.main(["--data", str(fake_peers), "--peers", "good", "--venv-dir", str(tmp_path / "v")])
    assert report["rows"] == [peers.error_row("good", "install failed (x==1): no matching distribution")]


def test_unknown_peer_is_refused():
    with pytest.raises(SystemExit):
        peers.parse_args(["--peers", "fer,nope"])
