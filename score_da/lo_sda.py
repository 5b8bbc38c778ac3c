"""The method ``lo-sda``: latent optimisation of Tweedie's estimate against the observations.

At the later reverse steps (t below ``optimise_below``) Tweedie's ẑ0 is replaced by

    z* = argmin_z ½‖r(z)‖² + ½ λ_t ‖z − ẑ0‖²,   λ_t = λ0 σ_t² / μ_t²,

a few L-BFGS (or Adam) steps, so the observations weigh more as the noise falls; the reverse
process continues from z*, and the final sample is polished against the same cost with
λ = ``polish_proximal``. Every optimisation stops once the observations are fitted to
χ²/m ≤ ``fit_target`` (the discrepancy principle at 1). A one-member run averages several
posterior draws into an estimate of the posterior mean; an ensemble cycles one draw per
member.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from cycler_da.core import MethodContext, MethodSpec, Observations
from score_da.sampling import Draw, LatentSampler, SamplerParams, load_diffusion, residual_step, with_samples

OPTIMIZERS = ("lbfgs", "adam")
# The posterior draws averaged into the analysis of a one-member run (samples: None).
DETERMINISTIC_SAMPLES = 4


@dataclass(frozen=True)
class LOSDAParams(SamplerParams):
    """Parameters of ``lo-sda``."""

    stochastic: bool = False
    """Fresh noise at every reverse step; False: DDIM draws, which differ by their starting noise."""
    samples: int | None = None
    """Posterior draws K per member, averaged (None: 4 in a one-member run, 1 in an ensemble)."""
    residual_analysis: bool = True
    """Run the B_r 3D-Var of what the autoencoder cannot represent after the latent analysis."""
    residual_b_scale: float = 1.5
    """Factor on B_r's standard deviations."""
    optimise_below: float = 0.6
    """Optimise at reverse steps with t below this (the early, noisy steps carry little information)."""
    inner_steps: int = 5
    """Optimiser iterations per optimised step."""
    lr: float = 0.05
    """Adam's learning rate in standardised latent units (L-BFGS uses a line search)."""
    proximal: float = 1.0
    """λ0 of the proximal weight λ_t = λ0 σ_t² / μ_t²."""
    polish_steps: int = 30
    """Optimiser iterations of the final polish (0: none)."""
    polish_proximal: float = 0.1
    """λ of the final polish's proximal term."""
    fit_target: float = 0.7
    """Stop an optimisation once χ²/m falls to this (1: fitted to within σ_o)."""
    optimizer: str = "lbfgs"
    """"lbfgs" (strong-Wolfe line search) or "adam"."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam'; got {self.optimizer!r}")
        if self.inner_steps < 0 or self.polish_steps < 0:
            raise ValueError("inner_steps and polish_steps must be >= 0")
        if self.lr <= 0 or self.proximal < 0 or self.polish_proximal < 0 or self.fit_target <= 0:
            raise ValueError("lr and fit_target must be positive, the proximal weights >= 0")


class LOSDA(LatentSampler):
    """LO-SDA's reverse process with latent optimisation."""

    name = "lo-sda"

    def optimise(
        self, anchor: Tensor, observations: Observations, weight: float, iterations: int, draw: Draw
    ) -> Tensor:
        """argmin ½‖r(z)‖² + ½ weight ‖z − anchor‖², per member, from the anchor; early stop at the fit target."""
        p = self.params
        z = anchor.detach().clone().requires_grad_()
        m = max(len(observations), 1)
        if p.optimizer == "adam":
            optimiser = torch.optim.Adam([z], lr=p.lr)
        else:
            optimiser = torch.optim.LBFGS(
                [z], lr=1.0, max_iter=1, history_size=10, line_search_fn="strong_wolfe"
            )
        fitted = False
        # (point, fitted there) of every evaluation in this iteration: L-BFGS ends on one of them
        evaluated: list[tuple[Tensor, bool]] = []

        def within_target(misfit: Tensor) -> bool:  # every member fitted to χ²/m ≤ fit_target
            return float((2 * misfit.detach()).max()) / m <= p.fit_target

        def closure() -> Tensor:
            nonlocal fitted
            optimiser.zero_grad(set_to_none=True)
            with torch.enable_grad():
                misfit = self.misfit(z, observations, draw)
                draw.counters["decoder_evaluations"] += 1
                fitted = within_target(misfit)
                evaluated.append((z.detach().clone(), fitted))
                cost = (misfit + 0.5 * weight * (z - anchor).square().flatten(1).sum(dim=1)).sum()
                cost.backward()
            return cost

        def fitted_at_z() -> bool:
            seen = [done for point, done in evaluated if torch.equal(point, z)]
            if seen:
                return seen[-1]
            with torch.no_grad():
                return within_target(self.misfit(z, observations, draw))

        for _ in range(iterations):
            evaluated.clear()
            if p.optimizer == "adam":
                closure()
                if fitted:
                    break
                optimiser.step()
            else:
                optimiser.step(closure)
                if fitted_at_z():
                    break
        return z.detach()

    def sample_latent(
        self, z_b: Tensor, observations: Observations, draw: Draw, generator: torch.Generator | None
    ) -> Tensor:
        p, s = self.params, self.schedule
        draw.counters["decoder_evaluations"] = 0
        with torch.no_grad():
            z = self.noise(z_b, generator)
            times = s.times(p.steps, device=z.device)
            for t, t_next in itertools.pairwise(times):
                eps = self.eps(z, t, z_b, draw)
                z0 = s.denoise(z, eps, t)
                if t < p.optimise_below and p.inner_steps:
                    weight = p.proximal * float(s.sigma(t) ** 2 / s.mu(t) ** 2)
                    z0 = self.optimise(z0, observations, weight, p.inner_steps, draw)
                    eps = (z - s.mu(t) * z0) / s.sigma(t)
                z = self.step(z, z0, eps, t, t_next, generator)
                if p.corrections and t_next > 0:
                    z = self.correct(z, t_next, z_b, draw, generator)
            if p.polish_steps:
                z = self.optimise(z, observations, p.polish_proximal, p.polish_steps, draw)
        return z


def build(context: MethodContext, params: LOSDAParams) -> LOSDA:
    params = with_samples(params, context, DETERMINISTIC_SAMPLES)
    space, denoiser, schedule = load_diffusion(context, params.vae, params.prior)
    return LOSDA(space, denoiser, schedule, params, residual_step(context, space, params))


METHOD = MethodSpec("lo-sda", LOSDAParams, build)
