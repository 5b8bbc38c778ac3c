"""The method ``dps``: latent diffusion posterior sampling (Chung et al. 2023).

After each predictor step of the prior's reverse process the latent moves down the
gradient of the observation misfit of Tweedie's estimate,

    z ← z − ζ ∇_{z_t} ‖r‖,   r = (y − H(D(ẑ0(z_t)))) / σ_o,

back-propagated through the decoder and the denoiser (ζ = ``scale``; 0 samples the prior).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from cycler_da.core import MethodContext, MethodSpec, Observations
from score_da.sampling import Draw, LatentSampler, SamplerParams, load_diffusion, residual_step


@dataclass(frozen=True)
class DPSParams(SamplerParams):
    """Parameters of ``dps``."""

    scale: float = 1.0
    """ζ, the guidance step on ‖r‖ (0: samples of the prior alone)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0; got {self.scale}")


class DPS(LatentSampler):
    """Latent diffusion posterior sampling."""

    name = "dps"

    def sample_latent(
        self, z_b: Tensor, observations: Observations, draw: Draw, generator: torch.Generator | None
    ) -> Tensor:
        guided = self.params.scale > 0
        condition = self.condition(z_b, observations, draw)
        z = self.noise(z_b, generator)
        times = self.schedule.times(self.params.steps, device=z.device)
        for t, t_next in itertools.pairwise(times):
            with torch.enable_grad():
                z_in = z.detach().requires_grad_(guided)
                eps = self.eps(z_in, t, condition, draw)
                z0 = self.schedule.denoise(z_in, eps, t)
                grad = None
                if guided:
                    norm = (2 * self.misfit(z0, observations, draw)).sqrt()
                    (grad,) = torch.autograd.grad(norm.sum(), z_in)
            z = self.step(z_in.detach(), z0.detach(), eps.detach(), t, t_next, generator)
            if grad is not None:
                z = z - self.params.scale * grad
            if self.params.corrections and t_next > 0:
                with torch.no_grad():
                    z = self.correct(z, t_next, z_b, draw, generator)
        return z.detach()


def build(context: MethodContext, params: DPSParams) -> DPS:
    space, denoiser, schedule = load_diffusion(context, params.vae, params.prior)
    return DPS(space, denoiser, schedule, params, residual_step(context, space, params))


METHOD = MethodSpec("dps", DPSParams, build)
