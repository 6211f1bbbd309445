"""Export then predict, as a user would: the CLI's default export takes any number of faces, and a model exported
with a fixed batch is fed in chunks of that size (last chunk padded), for ONNX and TorchScript alike."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import write_image
from fdrl.checkpoint import CheckpointError
from fdrl.cli import main
from fdrl.inference.recognizer import Recognizer

FACES = 7  # more than the export's example batch (2) and not a multiple of the fixed batch below (4)
needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    d = tmp_path_factory.mktemp("faces")
    return [str(write_image(d / f"{i}.png", (48, 48), seed=i)) for i in range(FACES)]


def _predict_json(model, faces, capsys) -> dict:
    assert main(["predict", *faces, "--checkpoint", str(model), "--detector", "none", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("fmt,fixed", [pytest.param("onnx", None, marks=needs_ort), ("torchscript", None),
                                       pytest.param("onnx", 4, marks=needs_ort), ("torchscript", 4)])
def test_exported_model_predicts_more_faces_than_any_batch(ckpt, faces, tmp_path, capsys, fmt, fixed):
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")  # TorchScript with the .pt suffix users tend to give
    extra = ["--fixed-batch", str(fixed)] if fixed else []
    assert main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(out), *extra]) == 0
    assert ("any batch size" if fixed is None else f"fixed batch of {fixed}") in capsys.readouterr().out
    if fmt == "onnx":
        import onnxruntime as ort

        batch_dim = ort.InferenceSession(str(out)).get_inputs()[0].shape[0]
        assert batch_dim == (fixed or "batch")  # dynamic (a named axis) unless fixed
    rec = Recognizer(out, detector="none")
    assert rec.backend.fixed_batch == fixed
    ref, got = _predict_json(ckpt, faces, capsys), _predict_json(out, faces, capsys)
    assert len(got["faces"]) == FACES and [s["status"] for s in got["images"]] == ["ok"] * FACES
    for a, b in zip(got["faces"], ref["faces"], strict=True):
        assert (a["image_id"], a["label"]) == (b["image_id"], b["label"])
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-4)
        np.testing.assert_allclose(a["alpha"], b["alpha"], atol=1e-4)
    tensor = rec.predict_tensor(torch.rand(FACES, 1, 40, 40))  # the pre-cropped path goes through the same chunking
    assert len(tensor.faces) == FACES


def test_fixed_batch_must_be_positive(ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "m.pt"),
              "--fixed-batch", "0"])
    assert "expected a positive whole number" in capsys.readouterr().err


def test_foreign_torchscript_is_refused_clearly(tmp_path):
    path = tmp_path / "other.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(3, 2), torch.randn(1, 3)), str(path))
    with pytest.raises(CheckpointError, match="not exported by fdrl"):
        Recognizer(path, detector="none")


@needs_ort
def test_corrupt_onnx_file_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(CheckpointError, match="broken.onnx: not a readable ONNX model"):
        Recognizer(bad, detector="none")
    assert main(["predict", str(bad), "--checkpoint", str(bad), "--detector", "none"]) != 0
    err = capsys.readouterr().err.strip()
    assert "broken.onnx: not a readable ONNX model" in err and "Traceback" not in err and len(err.splitlines()) == 1


@needs_ort
def test_onnx_shape_mismatch_names_file_and_expected_shape(ckpt, tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    rec = Recognizer(out, detector="none")
    size = rec.prep.input_size
    with pytest.raises(CheckpointError, match=r"m\.onnx: the ONNX model expects input 'images' of shape") as e:
        rec.backend(torch.zeros(1, 3, size + 8, size + 8))
    assert "got [1, 3," in str(e.value)


def test_one_table_of_model_formats(ckpt, tmp_path):
    """The export command's --format choices, the exporter and the loader read the same formats table: a file is
    run by the backend its format names, whatever its suffix."""
    from fdrl.cli import build_parser
    from fdrl.inference.backends import TorchBackend, TorchScriptBackend, open_backend
    from fdrl.inference.formats import EXPORT_FORMATS, FORMATS, export_model, format_of

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["export"]
    choices = next(a for a in sub._actions if a.dest == "format").choices
    assert tuple(choices) == EXPORT_FORMATS == tuple(n for n, f in FORMATS.items() if f.exporter)
    assert format_of(tmp_path / "m.onnx") is FORMATS["onnx"] and format_of(ckpt) is FORMATS["checkpoint"]
    assert isinstance(open_backend(ckpt), TorchBackend)
    export_model(ckpt, tmp_path / "m.pt", "torchscript")
    assert format_of(tmp_path / "m.pt") is FORMATS["torchscript"]
    assert isinstance(open_backend(tmp_path / "m.pt"), TorchScriptBackend)
    with pytest.raises(ValueError, match="export format must be one of"):
        export_model(ckpt, tmp_path / "m.x", "tflite")
