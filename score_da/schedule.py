"""The variance-preserving noise schedule of the latent diffusion prior.

Cosine schedule as in SDA (Rozet & Louppe 2023): ``mu(t) = cos(arccos(sqrt(eta)) t)^2`` and
``sigma(t) = sqrt(1 - mu(t)^2 + eta^2)`` for t in [0, 1], so z_t = mu z + sigma eps runs
from (almost) the data at t = 0 to (almost) pure noise at t = 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class VPSchedule:
    """mu(t), sigma(t) and the reverse-time grid.

    Args:
        eta: Noise floor: sigma(0) = eta and mu(1) = eta.
    """

    def __init__(self, eta: float = 1e-3):
        if not 0 < eta < 1:
            raise ValueError(f"eta must lie in (0, 1); got {eta}")
        self.eta = eta
        self._angle = math.acos(math.sqrt(eta))

    def mu(self, t: Tensor) -> Tensor:
        return torch.cos(self._angle * t) ** 2

    def sigma(self, t: Tensor) -> Tensor:
        return (1 - self.mu(t) ** 2 + self.eta**2).sqrt()

    def times(self, steps: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """``steps + 1`` times from 1 down to 0 (the reverse process visits them in order)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype, device=device)

    def denoise(self, z_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Tweedie's estimate of the clean latent: ``(z_t - sigma eps) / mu``."""
        return (z_t - self.sigma(t) * eps) / self.mu(t)
