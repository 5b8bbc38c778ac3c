"""PhyDA's virtual-reconstruction encoder (VRE) and the prior it conditions.

The paper does not publish its VRE; this one is a design of our own (docs/methods/phyda.md):
a spherical U-Net reads the observations zero-filled on the grid, their mask, the background
and the latitude features, and returns the background plus a correction, x_v = x_b + U(·)
(its last layer starts at zero, so an untrained VRE is the background and a window without
observations can stay there). It is trained with the prior: an auxiliary area-weighted MSE
against the truth makes x_v a dense reconstruction, and the prior's ε-loss, which sees x_v as
a second conditioning field beside x_b, shapes it further. Training draws its observations as
the ``columns`` network does: a random share of grid columns, every channel observed there
with Gaussian error.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from forecast_models.emulator import latitude_features, pole_signs
from forecast_models.unet import SphereUNet
from score_da.networks import Denoiser


class VirtualReconstruction(nn.Module):
    """x_v = x_b + U(y on the grid, mask, x_b, latitude features).

    Args:
        labels: The state's channel labels (winds change sign across the poles).
        latitudes: Grid latitudes in degrees.
        width: Channels at full resolution.
        depth: Coarser levels of the U-Net.
        blocks: Residual blocks per level.
    """

    def __init__(self, labels, latitudes: np.ndarray, width: int = 32, depth: int = 3, blocks: int = 1):
        super().__init__()
        signs = pole_signs(list(labels))
        self.register_buffer("static", latitude_features(latitudes))
        pole_sign = torch.cat([signs, torch.ones(len(labels)), signs, torch.ones(2)])
        self.net = SphereUNet(3 * len(labels) + 2, len(labels), width, depth, blocks, pole_sign=pole_sign)

    def forward(self, values: Tensor, mask: Tensor, background: Tensor) -> Tensor:
        """The reconstruction, like `background`; `values` and `mask` are zero where nothing is observed."""
        static = self.static.to(background.dtype).expand(background.shape[0], -1, -1, background.shape[-1])
        return background + self.net(torch.cat([values, mask, background, static], dim=1))


class PhyDAModel(nn.Module):
    """The VRE and the prior ε_θ(x_t, t, [x_b, x_v], lead) it conditions, trained and saved together."""

    def __init__(self, denoiser: Denoiser, vre: VirtualReconstruction):
        super().__init__()
        if denoiser.conditions != 2:
            raise ValueError("the prior of a VRE takes two conditioning fields (background, reconstruction)")
        self.denoiser, self.vre = denoiser, vre


def column_observations(
    truth: Tensor, fractions: tuple[float, float], error_std: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(values, mask) like `truth`: per state a share of grid columns drawn log-uniformly in
    `fractions`, every channel observed there with N(0, error_std²) error; zero elsewhere."""
    batch, _, nlat, nlon = truth.shape
    low, high = math.log(fractions[0]), math.log(fractions[1])
    share = torch.exp(low + (high - low) * torch.rand(batch, generator=generator))
    mask = (torch.rand(batch, 1, nlat, nlon, generator=generator) < share[:, None, None, None]).to(truth)
    mask = mask.expand_as(truth)
    noise = error_std * torch.randn(truth.shape, generator=generator).to(truth)
    return mask * (truth + noise), mask
