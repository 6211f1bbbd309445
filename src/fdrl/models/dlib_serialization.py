"""Reader of dlib's binary serialisation of a DNN (``dlib::serialize(net)``), numpy only, no dlib.

Written from dlib's own ``serialize.h``, ``dnn/tensor.h``, ``dnn/core.h``, ``dnn/layers.h``, ``dnn/input.h``
and ``dnn/loss.h``. The format, as far as a network like ``dlib_face_recognition_resnet_model_v1.dat`` uses it:

- integers: one header byte (low nibble: number of little-endian magnitude bytes that follow; bit 7: negative);
- floats/doubles (hyper-parameters): an integer mantissa then an integer exponent, value = m * 2**e
  (exponents 32000/32001/32002 mean +inf/-inf/nan); bools: the ASCII characters ``'0'``/``'1'``;
  strings: an integer length then the bytes;
- tensors: version 2, then the four dimensions (samples, k, nr, nc) as integers, then float32 little-endian data;
  alias tensors (views into a layer's ``params``): version 1 and the four dimensions, no data;
- the network nests outside-in: the loss layer writes its version, its details and then its subnetwork; every
  ``add_layer`` writes its version (2), its subnetwork, and only then its own details and state; tag and skip
  layers write version 1 and their subnetwork, nothing else; the bottom ``add_layer`` (version 3) writes the
  input layer's details first. So the file opens with one version integer per layer, outermost first, and the
  layers' details follow innermost (input side) first.

:func:`read_dlib_net` returns the layers input-side first; tag and skip layers appear as ``"marker"`` records
because the file does not say which of the two they are (nor which tag an ``add_prev_`` adds): that wiring
comes from the network's C++ type, which the caller must know.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pretrained import PretrainedWeightsError

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(PretrainedWeightsError):
    """A file that is not (or not entirely) a dlib DNN serialisation this reader understands."""


@dataclass
class DlibLayer:
    """One layer of the file: its dlib type tag (``"con_4"``, ``"affine_"``, ... or ``"marker"``) and values."""

    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    offset: int = 0  # byte offset of the layer's details in the file, for error messages


@dataclass
class DlibNet:
    """A parsed network: input layer, computational layers (input side first, markers included) and loss."""

    path: str
    input: DlibLayer
    layers: list[DlibLayer]
    loss: DlibLayer


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: {what} (at byte {self.pos} of {len(self.data)}); "
                               "expected dlib's serialisation of dlib_face_recognition_resnet_model_v1")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends while reading {what} ({n} bytes needed, {len(self.data) - self.pos} left:"
                            " truncated?)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str) -> int:
        head = self.take(1, what)[0]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            self.pos -= 1
            raise self.fail(f"bad integer header 0x{head:02x} for {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if head & 0x80 else value

    def float(self, what: str) -> float:
        mantissa = self.int(what)
        exponent = self.int(what)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self, what: str) -> bool:
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"expected '0' or '1' for {what}, found byte 0x{char[0]:02x}")
        return char == b"1"

    def string(self, what: str, max_len: int = 256) -> str:
        n = self.int(what)
        if not 0 <= n <= max_len:
            raise self.fail(f"implausible string length {n} for {what}")
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not ASCII: {raw[:32]!r}") from None

    def dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.int(what) for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"negative dimension in {what}: {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        version = self.int(f"{what} version")
        if version != 2:
            raise self.fail(f"unsupported tensor version {version} for {what} (dlib writes version 2)")
        dims = self.dims(what)
        count = math.prod(dims)
        raw = self.take(4 * count, f"{what} data {dims}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        version = self.int(f"{what} version")
        if version != 1:
            raise self.fail(f"unsupported alias tensor version {version} for {what}")
        return self.dims(what)


def _pool(r: _Reader, kind: str) -> dict[str, Any]:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return {k: r.int(f"{kind} {k}") for k in keys}


def _multipliers(r: _Reader, kind: str) -> dict[str, float]:
    """The learning-rate and weight-decay multipliers that close a con_ or fc_ layer (unused here, but read)."""
    return {k: r.float(f"{kind} {k}") for k in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult")}


def _layer_details(r: _Reader) -> DlibLayer:
    """One layer's own serialisation, which always starts with its type tag."""
    offset = r.pos
    kind = r.string("layer type tag")
    v: dict[str, Any] = {}
    if kind == "con_4":
        v["params"] = r.tensor("con_ params")
        for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            v[k] = r.int(f"con_ {k}")
        v["filters"] = r.alias("con_ filters")
        v["biases"] = r.alias("con_ biases")
        v.update(_multipliers(r, "con_"))
    elif kind == "affine_":
        v["params"] = r.tensor("affine_ params")
        v["gamma"] = r.alias("affine_ gamma")
        v["beta"] = r.alias("affine_ beta")
        v["mode"] = r.int("affine_ mode")  # dlib's layer_mode: 0 CONV_MODE (per channel), 1 FC_MODE
    elif kind == "fc_2":
        v["num_outputs"] = r.int("fc_ num_outputs")
        v["num_inputs"] = r.int("fc_ num_inputs")
        v["params"] = r.tensor("fc_ params")
        v["weights"] = r.alias("fc_ weights")
        v["biases"] = r.alias("fc_ biases")
        v["bias_mode"] = r.int("fc_ bias_mode")  # 0 FC_HAS_BIAS, 1 FC_NO_BIAS
        v.update(_multipliers(r, "fc_"))
    elif kind in ("max_pool_2", "avg_pool_2"):
        v = _pool(r, kind)
    elif kind in ("relu_", "add_prev_"):
        pass
    else:
        r.pos = offset
        raise r.fail(f"unsupported layer type {kind!r}")
    return DlibLayer(kind, v, offset)


def _input_details(r: _Reader) -> DlibLayer:
    offset = r.pos
    kind = r.string("input layer type tag")
    if kind != "input_rgb_image_sized":
        r.pos = offset
        raise r.fail(f"unsupported input layer {kind!r} (expected 'input_rgb_image_sized')")
    v = {c: r.float(f"input {c}") for c in ("avg_red", "avg_green", "avg_blue")}
    v["nr"] = r.int("input NR")
    v["nc"] = r.int("input NC")
    return DlibLayer(kind, v, offset)


def _loss_details(r: _Reader) -> DlibLayer:
    offset = r.pos
    kind = r.string("loss type tag")
    v: dict[str, Any] = {}
    if kind == "loss_metric_2":
        v["margin"] = r.float("loss_metric_ margin")
        v["dist_thresh"] = r.float("loss_metric_ dist_thresh")
    elif kind != "loss_metric_":
        r.pos = offset
        raise r.fail(f"unsupported loss layer {kind!r} (expected 'loss_metric_2')")
    return DlibLayer(kind, v, offset)


def _layer_state(r: _Reader, bottom: bool) -> None:
    """The bookkeeping an ``add_layer`` writes after its details; read and discarded (empty after ``clean()``)."""
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        r.bool(what)
    for what in ("x_grad", "cached_output", "grad_final" if bottom else "params_grad"):
        r.tensor(what)
    if bottom:
        r.int("sample_expansion_factor")


def parse_dlib_net(data: bytes, path: str = "<bytes>") -> DlibNet:
    """Parse a serialised ``add_loss_layer<..., add_layer<...>>`` network; see the module docstring."""
    r = _Reader(data, path)
    version = r.int("loss layer version")
    if version != 1:
        raise r.fail(f"unexpected loss layer version {version}")
    loss = _loss_details(r)
    # One version integer per layer, outermost first: 2 add_layer, 1 tag/skip, 3 the add_layer on the input.
    stack: list[int] = []
    while True:
        version = r.int("layer version")
        if version == 3:
            break
        if version not in (1, 2):
            raise r.fail(f"unexpected layer version {version} after {len(stack)} layers "
                         "(1 tag/skip, 2 add_layer, 3 the first layer)")
        stack.append(version)
        if len(stack) > 10_000:
            raise r.fail("more than 10000 nested layers")
    input_layer = _input_details(r)
    layers = [_layer_details(r)]
    _layer_state(r, bottom=True)
    for version in reversed(stack):
        if version == 1:
            layers.append(DlibLayer("marker", {}, r.pos))
        else:
            layers.append(_layer_details(r))
            _layer_state(r, bottom=False)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected bytes after the network")
    return DlibNet(path, input_layer, layers, loss)


def read_dlib_net(path: str | os.PathLike[str]) -> DlibNet:
    """Read and parse ``path``; every problem is a :class:`DlibFormatError` naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DlibFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return parse_dlib_net(data, path)
