"""The method ``align-da``: a preference-aligned diffusion prior under a chosen guidance.

The prior is the latent prior fine-tuned by Diffusion-DPO (:mod:`score_da.alignment`) on
pairs of its own samples ranked by accuracy, 48-h forecast skill and geostrophic balance
(:mod:`score_da.rewards`); ``prior: default`` gives the reference it was tuned from, so every
row of the paper's table is this method with two parameters. Guidances:

* ``dps``: the latent DPS step on ‖r‖ after every reverse step (``scale``);
* ``lo-sda``: LO-SDA's optimisation of Tweedie's estimate at the late steps;
* ``repaint``: at every reverse step Tweedie's estimate is decoded, the observed grid cells
  are replaced by the observations (each in its nearest cell), and the composite is encoded
  again, a clean-estimate form of RePaint that never needs the truth;
* ``none``: the aligned prior alone (ObsFree), without the B_r 3D-Var either.

The sampler's other settings are LO-SDA's (deterministic DDIM draws, four averaged in a
one-member run, the B_r 3D-Var of the autoencoder's residual), so guidances differ in one thing.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cycler_da.core import MethodContext, MethodSpec, Observations
from cycler_da.core.gridded import observations_on_grid
from score_da.dps import DPS
from score_da.lo_sda import DETERMINISTIC_SAMPLES, LOSDA, LOSDAParams
from score_da.sampling import Draw, LatentSampler, load_diffusion, residual_step, with_samples

GUIDANCES = ("dps", "lo-sda", "repaint", "none")


@dataclass(frozen=True)
class AlignDAParams(LOSDAParams):
    """Parameters of ``align-da`` (the ``lo-sda`` ones apply to every guidance, the optimiser's to ``lo-sda``)."""

    prior: str = "aligned"
    """The prior: "aligned" (-M: accuracy, forecast and balance), "aligned-physics" (-P: balance
    only), "default" (the reference they were tuned from) or a checkpoint path."""
    guidance: str = "dps"
    """How the observations enter: "dps", "lo-sda", "repaint" or "none" (the prior alone)."""
    scale: float = 1.0
    """ζ of the ``dps`` guidance."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.guidance not in GUIDANCES:
            raise ValueError(f"guidance must be one of {', '.join(GUIDANCES)}; got {self.guidance!r}")
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0; got {self.scale}")


class RePaint(LatentSampler):
    """The reverse process with Tweedie's estimate composed with the gridded observations."""

    name = "align-da (repaint)"

    def __init__(self, *args, latitudes: np.ndarray, longitudes: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self.latitudes, self.longitudes = latitudes, longitudes

    @torch.no_grad()
    def sample_latent(
        self, z_b: Tensor, observations: Observations, draw: Draw, generator: torch.Generator | None
    ) -> Tensor:
        s = self.schedule
        values, mask = observations_on_grid(
            observations, self.latitudes, self.longitudes, draw.background.shape[1]
        )
        values, mask = values.to(z_b), mask.to(z_b)
        z = self.noise(z_b, generator)
        for t, t_next in itertools.pairwise(s.times(self.params.steps, device=z.device)):
            eps = self.eps(z, t, z_b, draw)
            x0 = self.decode(s.denoise(z, eps, t), draw)
            composite = x0 + mask * (values - x0)
            z0 = self.space.encode(composite if draw.offset is None else composite - draw.offset)
            eps = (z - s.mu(t) * z0) / s.sigma(t)
            z = self.step(z, z0, eps, t, t_next, generator)
        return z


def build(context: MethodContext, params: AlignDAParams) -> LatentSampler:
    params = with_samples(params, context, DETERMINISTIC_SAMPLES)
    if params.guidance == "none":
        params = dataclasses.replace(params, scale=0.0, residual_analysis=False)
    space, denoiser, schedule = load_diffusion(context, params.vae, params.prior)
    residual = residual_step(context, space, params)
    if params.guidance == "repaint":
        method = RePaint(
            space,
            denoiser,
            schedule,
            params,
            residual,
            latitudes=context.latitudes,
            longitudes=context.longitudes,
        )
    else:
        method = (LOSDA if params.guidance == "lo-sda" else DPS)(space, denoiser, schedule, params, residual)
    method.name = f"align-da ({params.guidance})"
    return method


METHOD = MethodSpec("align-da", AlignDAParams, build)
