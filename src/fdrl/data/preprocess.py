"""The preprocessing contract shared by training and inference: what a face crop becomes before the model.

face crop -> (down to ``source_size`` when the crop is larger) -> resize to ``input_size`` x ``input_size``
(bilinear) -> grayscale replicated to 3 channels when ``grayscale`` -> /255 -> (x - mean) / std.

Training decodes whole data sets through :func:`pil_to_array` into its cache and normalises (and augments)
batches with :class:`BatchTransform`; the Recognizer runs the same two on each face, or :func:`resize_batch`
on faces that arrive as a tensor, and :func:`tta_views` for test-time views. The numbers themselves
(``input_size``, ``source_size``, mean, std) travel in every checkpoint's ``Preprocessing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..literals import TTA_MODES


def pil_to_array(im: Image.Image, size: int, grayscale: bool, source_size: int | None = None) -> np.ndarray:
    """The preprocessing resize: RGB PIL -> (C, size, size) uint8, through ``source_size`` when the crop is
    larger than that (``Preprocessing.source_size``)."""
    im = im.convert("L") if grayscale else im.convert("RGB")
    if source_size is not None and max(im.size) > source_size:
        im = im.resize((source_size, source_size), Image.BILINEAR)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


def resize_batch(x: torch.Tensor, size: int, source_size: int | None = None) -> torch.Tensor:
    """:func:`pil_to_array`'s resize for a uint8 (B, C, H, W) batch: through ``source_size`` when
    the faces are larger than that, then to ``size`` x ``size``; bilinear, antialiased when shrinking, as PIL's
    resize is."""

    def resize(t: torch.Tensor, side: int) -> torch.Tensor:
        if tuple(t.shape[-2:]) == (side, side):
            return t
        y = F.interpolate(t.float(), size=(side, side), mode="bilinear", align_corners=False,
                          antialias=max(t.shape[-2:]) > side)
        return y.round().clamp(0, 255).to(torch.uint8)

    if source_size is not None and max(x.shape[-2:]) > source_size:
        x = resize(x, source_size)
    return resize(x, size)


def as_model_input(x: torch.Tensor, size: int, grayscale: bool, source_size: int | None = None) -> torch.Tensor:
    """Faces decoded for another model (uint8 (B, 1|3, H, W)) as :func:`pil_to_array` makes them for one with
    ``size``, ``grayscale`` and ``source_size``: colour faces turned grey (ITU-R 601 luma, PIL's ``convert("L")``)
    where its input is grey, then :func:`resize_batch`. Grey faces stay one channel; normalising replicates them."""
    if grayscale and x.shape[1] == 3:
        x = (x.float() * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = x.round().to(torch.uint8)
    return resize_batch(x, size, source_size)


@dataclass(frozen=True)
class Augment:
    """One preset of batched training augmentation (each draw is per face unless said otherwise)."""

    zoom: tuple[float, float] = (1.0, 1.0)  # the face's scale range: > 1 zooms in (a smaller window), < 1 out
    shift: float = 0.0  # max translation, fraction of the side
    rotate: float = 0.0  # max rotation, degrees
    flip: bool = False  # horizontal flip with probability 0.5
    jitter: float = 0.0  # brightness and contrast strength
    erase: float = 0.0  # probability of a random erased rectangle (occlusion)
    blur: float = 0.0  # probability of a Gaussian blur, sigma 0.3-1.5 px at 48 px (defocus, motion, compression)
    lowres: float = 0.0  # probability of a round trip through 0.3-0.7 of the side (one factor per batch)


AUGMENT_PRESETS = {
    "none": Augment(),
    "basic": Augment(zoom=(1.0, 1.15), shift=0.07, flip=True),  # resize + random crop + flip (paper, spec §3.2)
    "fer": Augment(zoom=(1.0, 1.2), shift=0.1, rotate=10.0, flip=True, jitter=0.3, erase=0.25),  # small grey faces
    "extended": Augment(zoom=(1.0, 1.2), shift=0.1, rotate=20.0, flip=True, erase=0.5),  # PinJui's extras (§5.11)
    # what a face cut out of a photo looks like beside a tight 48 px crop: framed wider or tighter, tilted, lit
    # differently, partly covered, out of focus or from a low-resolution source
    "photo": Augment(zoom=(0.85, 1.25), shift=0.1, rotate=15.0, flip=True, jitter=0.4, erase=0.3, blur=0.3,
                     lowres=0.3),
}


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each face of ``x`` (B, C, S, S) blurred with its own ``sigma`` (B,) px: one separable grouped convolution."""
    b, c, s, _ = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    w = torch.exp(-k.view(1, -1) ** 2 / (2 * sigma.view(-1, 1).clamp_min(1e-3) ** 2))
    w = (w / w.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, s, s), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, w.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, w.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, s, s)


class BatchTransform:
    """uint8 (B,C,S,S) -> normalised float (B,3,S,S), with batched random augmentation when training."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], augment: str = "none") -> None:
        if augment not in AUGMENT_PRESETS:
            raise ValueError(f"augment must be one of {sorted(AUGMENT_PRESETS)}, got {augment!r}")
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.augment = augment

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.normalize(x)
        if not train or self.augment == "none":
            return x.contiguous()
        aug = AUGMENT_PRESETS[self.augment]
        (smin, smax), shift, rot, flip, jitter, erase = aug.zoom, aug.shift, aug.rotate, aug.flip, aug.jitter, aug.erase
        b, dev = x.shape[0], x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator).to(dev)

        scale = 1.0 / (smin + (smax - smin) * rand(b))  # zoom in = sample a smaller window
        angle = (rand(b) * 2 - 1) * math.radians(rot)
        tx, ty = (rand(b) * 2 - 1) * shift * 2, (rand(b) * 2 - 1) * shift * 2
        sx = torch.where(rand(b) < 0.5, -1.0, 1.0) if flip else torch.ones(b, device=dev)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos * sx, -sin, tx], -1), torch.stack([sin * sx, cos, ty], -1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if jitter:
            bright = (rand(b, 1, 1, 1) * 2 - 1) * jitter * 2.0
            contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * jitter
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - m) * contrast + m + bright
        if erase > 0:
            s = x.shape[-1]
            on = rand(b) < erase
            eh = (rand(b) * 0.3 + 0.1) * s
            ew = (rand(b) * 0.3 + 0.1) * s
            cy, cx = rand(b) * s, rand(b) * s
            yy = torch.arange(s, device=dev).view(1, s, 1)
            xx = torch.arange(s, device=dev).view(1, 1, s)
            box = ((yy - cy.view(-1, 1, 1)).abs() < eh.view(-1, 1, 1) / 2) & \
                  ((xx - cx.view(-1, 1, 1)).abs() < ew.view(-1, 1, 1) / 2) & on.view(-1, 1, 1)
            x = x.masked_fill(box.unsqueeze(1), 0.0)
        if aug.blur > 0:  # drawn after the others, so the presets without it keep their draws
            on = rand(b) < aug.blur
            sigma = (0.3 + 1.2 * rand(b)) * x.shape[-1] / 48
            if bool(on.any()):
                x = torch.where(on.view(-1, 1, 1, 1), _gaussian_blur(x, sigma), x)
        if aug.lowres > 0:
            on = rand(b) < aug.lowres
            side = max(8, round(x.shape[-1] * (0.3 + 0.4 * float(rand(1)))))
            if bool(on.any()):
                small = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
                back = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = torch.where(on.view(-1, 1, 1, 1), back, x)
        return x.contiguous()


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Test-time views of a normalised batch: identity, + flip, or ten-crop (4 corners + centre, each flipped)."""
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode != "tencrop":
        raise ValueError(f"tta must be one of {list(TTA_MODES)}, got {mode!r}")
    s = x.shape[-1]
    c = int(round(s * 0.875))
    offs = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), ((s - c) // 2, (s - c) // 2)]
    views = []
    for oy, ox in offs:
        crop = F.interpolate(x[..., oy:oy + c, ox:ox + c], size=(s, s), mode="bilinear", align_corners=False)
        views += [crop, crop.flip(-1)]
    return views
