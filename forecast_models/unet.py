"""A U-Net for the sphere: the default pure-torch 6-hour emulator network.

Convolutions see the globe as it is: longitude wraps around (circular padding) and the
rows beyond a pole are the rows next to it on the other side of the pole (the same
latitudes, shifted by 180° in longitude). Three resolutions (×1, ×½, ×¼), residual blocks
with GroupNorm and GELU, skip connections. Tensors only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def spherical_pad(x: Tensor, pad: int, pole_sign: Tensor | None = None) -> Tensor:
    """Pads ``(..., channel, latitude, longitude)`` by `pad` cells on a global lat-lon grid.

    Latitude must run pole to pole (either direction) with an even number of longitudes.
    `pole_sign` (channel,) multiplies the rows continued across a pole: -1 for wind
    components, whose local east and north directions reverse there.
    """
    if pad == 0:
        return x
    nlon = x.shape[-1]
    half = nlon // 2
    first = torch.roll(x[..., :pad, :].flip(-2), half, dims=-1)
    last = torch.roll(x[..., -pad:, :].flip(-2), half, dims=-1)
    if pole_sign is not None:
        sign = pole_sign.to(x.dtype)[:, None, None]
        first, last = first * sign, last * sign
    return F.pad(torch.cat([first, x, last], dim=-2), (pad, pad, 0, 0), mode="circular")


class SphereConv(nn.Module):
    """A 3×3 (or k×k) convolution with spherical padding."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, pole_sign: Tensor | None = None
    ):
        super().__init__()
        self.pad = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.register_buffer("pole_sign", pole_sign)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(spherical_pad(x, self.pad, self.pole_sign))


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, in_channels), in_channels)
        self.conv1 = SphereConv(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(min(groups, out_channels), out_channels)
        self.conv2 = SphereConv(out_channels, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        h = self.conv2(F.gelu(self.norm2(h)))
        return self.skip(x) + h


class SphereUNet(nn.Module):
    """U-Net mapping ``(batch, in_channels, lat, lon)`` to ``(batch, out_channels, lat, lon)``.

    Args:
        in_channels: Input channels (state plus static features).
        out_channels: Output channels.
        width: Channels at full resolution; doubled at each coarser level.
        depth: Number of coarser levels (lat and lon must be divisible by 2**depth).
        blocks: Residual blocks per level.
        pole_sign: (in_channels,) signs for input rows continued across the poles (see
            :func:`spherical_pad`); None keeps them as they are.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        depth: int = 2,
        blocks: int = 2,
        pole_sign: Tensor | None = None,
    ):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.stem = SphereConv(in_channels, width, pole_sign=pole_sign)
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for i, w in enumerate(widths):
            w_in = widths[max(i - 1, 0)]
            self.encoder.append(nn.Sequential(*[ResBlock(w_in if b == 0 else w, w) for b in range(blocks)]))
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):
            self.decoder.append(
                nn.Sequential(
                    ResBlock(widths[i + 1] + widths[i], widths[i]),
                    *[ResBlock(widths[i], widths[i]) for _ in range(blocks - 1)],
                )
            )
        self.head = nn.Sequential(
            nn.GroupNorm(min(8, width), width), nn.GELU(), SphereConv(width, out_channels)
        )
        # Start as "no change": the residual emulator begins at persistence.
        nn.init.zeros_(self.head[-1].conv.weight)
        nn.init.zeros_(self.head[-1].conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"grid {tuple(x.shape[-2:])} must be divisible by {factor} (depth {self.depth})")
        h = self.stem(x)
        skips = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = level(h)
            skips.append(h)
        for level, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = level(torch.cat([h, skip], dim=1))
        return self.head(h)
