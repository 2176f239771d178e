"""The guide's networks: image and glimpse encoders, the attention map, the what-head, and the
spatial transformer that cuts a glimpse out of the image."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MAX_OFFSET = 0.03  # metres: how far the glimpse may move the attended position


class Encoder(nn.Module):
    """(B, 3, H, W) image -> (B, out) code.  (ReLUs here act in place: they set the speed of
    batched inference, where a copy per activation cost a fifth of the time.)"""

    def __init__(self, out: int, channels=(32, 64, 64, 128)):
        super().__init__()
        self.fast = tuple(channels) != (32, 64, 64, 128)  # the shipped weights' layout runs as before
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c_in * 16, out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.fc(self.conv(channels_last(x) if self.fast else x))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The memory layout oneDNN's convolutions run fastest on here (2-3x for 3-32 channels)."""
    return x.contiguous(memory_format=torch.channels_last)


class GlimpseEncoder(nn.Module):
    """(B, 3, g, g) glimpse -> (B, out)."""

    def __init__(self, out: int, size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.net(x)


class DeepGlimpseEncoder(nn.Module):
    """(B, 3, g, g) glimpse -> (B, out), four 3x3 conv layers (deep enough to classify the shapes)."""

    def __init__(self, out: int, size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.net(x)


class StridedGlimpseEncoder(nn.Module):
    """(B, 3, g, g) glimpse -> (B, out), four conv layers whose first reads every pixel with a 4x4
    kernel at stride 2 (no pooling layers): a quarter of the deep encoder's cost."""

    def __init__(self, out: int, size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.net(channels_last(x))


GLIMPSE_ENCODERS = {"shallow": GlimpseEncoder, "deep": DeepGlimpseEncoder, "strided": StridedGlimpseEncoder}


def image_to_window(images: torch.Tensor, center_px: torch.Tensor, window_px: int, size: int) -> torch.Tensor:
    """Spatial transformer: (B, 3, H, W) images, (B, 2) window centres (u, v) in pixels
    -> (B, 3, size, size) windows of window_px x window_px image pixels (differentiable in the centre)."""
    B, _, H, W = images.shape
    theta = images.new_zeros(B, 2, 3)
    theta[:, 0, 0] = window_px / W
    theta[:, 1, 1] = window_px / H
    # align_corners=False: pixel u's centre is at normalized (2u + 1) / W - 1
    theta[:, 0, 2] = (2 * center_px[:, 0] + 1) / W - 1
    theta[:, 1, 2] = (2 * center_px[:, 1] + 1) / H - 1
    grid = F.affine_grid(theta, (B, 3, size, size), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="border")


def found_marks(center_px: torch.Tensor, found: tuple, window_px: int, size: int, std_px: float) -> torch.Tensor:
    """(B, 1, size, size) marks, over a window of window_px pixels centred at center_px (B, 2), of
    the objects already found (a tuple of (B, 2) pixel centres): a Gaussian of std_px pixels at each."""
    offsets = (torch.arange(size, device=center_px.device, dtype=center_px.dtype) + 0.5) * window_px / size - window_px / 2
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")
    pixels = torch.stack([u, v], -1)[None] + center_px.detach()[:, None, None]  # (B, size, size, 2)
    marks = center_px.new_zeros(center_px.shape[0], size, size)
    for center in found:
        marks = marks + torch.exp(-((pixels - center.detach()[:, None, None]) ** 2).sum(-1) / (2 * std_px ** 2))
    return marks[:, None]


class PresenceEncoder(nn.Module):
    """(B, 3, g, g) glimpse and (B, 1, g, g) marks of the objects already found -> (B,) logit of
    'an object here that no step has found yet' (max-pooled over the window: anywhere in it)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.out = nn.Linear(64, 1)
        nn.init.zeros_(self.out.weight)  # starts at 0: the untrained guide decides as before
        nn.init.zeros_(self.out.bias)

    def forward(self, glimpse: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(channels_last(torch.cat([glimpse, marks], 1))))[:, 0]


class WhereMap(nn.Module):
    """(B, 6, H, W) image and what the background leaves unexplained -> (B, F, H/4, W/4) features
    and (B, H/4 * W/4) base logits of a spatial softmax over where the next object is.

    The base logits include the unexplained residual's magnitude per cell, so from the
    first iteration attention goes where the image differs from the bare table (the
    generative model's own background); training refines it.
    """

    def __init__(self, features: int = 64):
        super().__init__()
        self.features = features
        self.net = nn.Sequential(nn.Conv2d(6, 32, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(64, features, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True))
        self.base = nn.Conv2d(features, 1, 1)
        # How strongly cells that differ from the bare table attract attention (learned).
        self.evidence_gain = nn.Parameter(torch.tensor(30.0))

    def forward(self, x):
        f = self.net(x)
        evidence = F.adaptive_avg_pool2d(x[:, 3:].abs().sum(1, keepdim=True), f.shape[-2:])
        return f, (self.base(f) + self.evidence_gain * evidence).flatten(1)


class PooledWhereMap(WhereMap):
    """WhereMap on the input average-pooled 2x2, with `features` channels throughout: the same
    16x16 cells of 4 px at about a fifth of the cost (the full map was 40% of inference)."""

    def __init__(self, features: int = 32):
        super().__init__(features)
        self.net = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(6, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(32, features, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        return super().forward(channels_last(x))


WHERE_MAPS = {"full": WhereMap, "pooled": PooledWhereMap}


class WhatOutput(NamedTuple):
    """The what-head's proposal for one object, batched over B. Y: yaw heads (C, one per category,
    or 1 shared). A k-fold symmetric shape's yaw is proposed as k yaw: the map from image to
    yaw is then continuous (yaw and yaw + 2 pi / k look the same); the guide divides by k."""

    identity_logits: torch.Tensor  # (B, C)
    folded_yaw: torch.Tensor  # (B, Y) radians, k yaw
    folded_yaw_std: torch.Tensor  # (B, Y) radians, of k yaw
    color_offset: torch.Tensor  # (B, 3) colour logits, added to the glimpse's central colour
    color_std: torch.Tensor  # (B, 3) colour logits
    position_offset: torch.Tensor  # (B, 2) metres from the attended position, at most MAX_OFFSET


class WhatHead(nn.Sequential):
    """(B, in_features) glimpse code and LSTM state -> WhatOutput.

    An nn.Sequential of the layers, so that the parameters keep the names of the shipped
    checkpoints (what_head.0.weight, what_head.2.weight); the last layer's outputs are, in
    order: identity logits (C), per yaw head (cos, sin, std) (3 Y), colour (offset 3, std 3),
    position offset (2).
    """

    def __init__(self, in_features: int, num_categories: int, yaw_heads: int, hidden: int = 128):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_categories + 3 * yaw_heads + 6 + 2))
        self.num_categories, self.yaw_heads = num_categories, yaw_heads

    def forward(self, x: torch.Tensor) -> WhatOutput:
        identity, yaw, color, offset = super().forward(x).split(
            [self.num_categories, 3 * self.yaw_heads, 6, 2], -1)
        yaw = yaw.view(-1, self.yaw_heads, 3)
        return WhatOutput(identity, torch.atan2(yaw[..., 1], yaw[..., 0]), F.softplus(yaw[..., 2]) + 1e-3,
                          color[:, :3], F.softplus(color[:, 3:]) * 0.5 + 1e-3, torch.tanh(offset) * MAX_OFFSET)
