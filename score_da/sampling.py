"""Posterior sampling in latent space: DPS guidance and LO-SDA latent optimisation.

Both run the prior's reverse process from noise to a latent, conditioned on the
background's latent z_b, one sample per background member, and decode it. They differ in
how the observations enter:

* DPS (Chung et al. 2023): after each predictor step, subtract ζ ∇_{z_t} ‖r‖ with
  r = (y − H(D(ẑ0(z_t)))) / σ_o, back-propagated through the decoder and the denoiser.
* LO-SDA (the seed paper's latent optimisation, reconstructed as in methods.md §2.2): at
  the later steps, replace Tweedie's ẑ0 by z* = argmin ½‖r(z)‖² + ½ λ_t ‖z − ẑ0‖² (a
  few L-BFGS or Adam steps, λ_t = λ0 σ_t²/μ_t² so the observations weigh more as noise falls), then
  continue the reverse process from z*; finally polish the sample against the same cost.
  Every optimisation stops once the observations are fitted to within their error
  (χ²/m ≤ `fit_target`, the discrepancy principle), which is what keeps O−A near σ_o.

The reverse process is the exponential-integrator (DDIM-like) predictor of SDA with
optional Langevin corrections; a fresh noise draw at every step makes it stochastic.
"""

from __future__ import annotations

import itertools
import time

import torch
from torch import Tensor

from cycler_da.analysis import Analysis, Observations
from score_da.latent import LatentSpace
from score_da.networks import Denoiser
from score_da.residual import ResidualAnalysis
from score_da.schedule import VPSchedule
from score_da.training import lead_code


class LatentSampler:
    """The reverse process of the conditional prior, with a hook for the observations.

    Args:
        space: Autoencoder and latent standardisation.
        denoiser: ε_θ(z_t, t, z_b, lead).
        schedule: The noise schedule the denoiser was trained with.
        steps: Reverse steps from t = 1 to 0.
        lead_hours: The background's lead time (6 in a 6-hourly cycle, 48 in the seed protocol).
        corrections: Langevin corrections per step (SDA); 0 switches them off.
        tau: Langevin step size factor.
        stochastic: Re-noise with fresh noise at each step (ancestral-like) rather than the
            deterministic DDIM update.
        background_residual: Weight w of the background's autoencoder residual
            x_b − D(E(x_b)) added to every decoded state: 0, the decoded latent alone; 1, the
            latent sample acts as an increment D(z) − D(z_b) on the full background, which keeps
            the detail the autoencoder cannot represent but never corrects it.
        samples: Posterior draws K per background member; the analysis is their mean, an
            estimate of the posterior mean (a single draw's expected error is √2 × the
            posterior mean's for a calibrated sampler, K draws' mean √(1 + 1/K) ×).
        residual: Optional 3D-Var of what the autoencoder cannot represent, run on the
            decoded analysis (:class:`score_da.residual.ResidualAnalysis`).
    """

    name = "latent sampler"

    def __init__(
        self,
        space: LatentSpace,
        denoiser: Denoiser,
        schedule: VPSchedule,
        steps: int = 32,
        lead_hours: float = 6.0,
        corrections: int = 0,
        tau: float = 0.5,
        stochastic: bool = True,
        background_residual: float = 0.5,
        samples: int = 1,
        residual: ResidualAnalysis | None = None,
    ):
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        if lead_hours <= 0:
            raise ValueError(f"lead_hours must be positive; got {lead_hours}")
        if not 0 <= background_residual <= 1:
            raise ValueError(f"background_residual must be in [0, 1]; got {background_residual}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1; got {samples}")
        self.samples, self.residual = samples, residual
        self.space, self.denoiser, self.schedule = space, denoiser, schedule
        self.steps, self.corrections, self.tau, self.stochastic = steps, corrections, tau, stochastic
        self.lead = float(lead_code(lead_hours))
        self.background_residual = background_residual
        self.offset: Tensor | None = None
        self.nfe = 0
        for module in (space, denoiser):
            for p in module.parameters() if module is not None else ():
                p.requires_grad_(False)

    def begin(self, background: Tensor) -> Tensor:
        """The background's latent; keeps its weighted autoencoder residual when ``background_residual`` > 0."""
        x_b = background.float()
        z_b = self.space.encode(x_b)
        residual = self.background_residual
        self.offset = residual * (x_b - self.space.decode(z_b)) if residual > 0 else None
        return z_b

    def decode(self, z: Tensor) -> Tensor:
        """The normalised state of a latent, plus the kept part of the background's residual."""
        state = self.space.decode(z)
        return state if self.offset is None else state + self.offset

    def eps(self, z_t: Tensor, t: Tensor, z_b: Tensor) -> Tensor:
        self.nfe += 1
        return self.denoiser(z_t, t, z_b, torch.tensor(self.lead, device=z_t.device))

    def noise(self, like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    def step(
        self,
        z_t: Tensor,
        z0: Tensor,
        eps: Tensor,
        t: Tensor,
        t_next: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """z_{t_next} from z_t given a clean-latent estimate and its noise.

        Deterministic: ``μ' z0 + σ' ε``; stochastic: DDPM-like, a fresh draw mixed in with
        the variance of the reverse transition (``η = 1`` DDIM).
        """
        s = self.schedule
        mu_next, sigma_next = s.mu(t_next), s.sigma(t_next)
        if not self.stochastic or t_next <= 0:
            return mu_next * z0 + sigma_next * eps
        # Variance of q(z_{t_next} | z_t, z0) in the VP parametrisation.
        var = torch.clamp(sigma_next**2 * (1 - (s.mu(t) * sigma_next / (mu_next * s.sigma(t))) ** 2), min=0.0)
        keep = torch.sqrt(torch.clamp(sigma_next**2 - var, min=0.0))
        return mu_next * z0 + keep * eps + var.sqrt() * self.noise(z0, generator)

    def correct(self, z: Tensor, t: Tensor, z_b: Tensor, generator: torch.Generator | None) -> Tensor:
        """SDA's Langevin corrections at time t."""
        for _ in range(self.corrections):
            eps = self.eps(z, t, z_b)
            delta = self.tau / eps.square().mean().clamp_min(1e-12)
            z = z - (delta * eps + torch.sqrt(2 * delta) * self.noise(z, generator)) * self.schedule.sigma(t)
        return z

    def checked(self, state: Tensor, what: str) -> Tensor:
        """The decoded analysis, or a clear error if the sampler diverged."""
        if not torch.isfinite(state).all():
            raise FloatingPointError(
                f"{what} produced a non-finite analysis: the sampler diverged (a smaller guidance scale "
                "or learning rate, or more steps, may help)"
            )
        return state

    def misfit(self, z: Tensor, observations: Observations) -> Tensor:
        """Per-member ``½‖(y − H(D(z)))/σ_o‖²``, shape (member,)."""
        return self.state_misfit(self.decode(z), observations)

    @staticmethod
    def state_misfit(state: Tensor, observations: Observations) -> Tensor:
        """Per-member ``½‖(y − H(x))/σ_o‖²`` of a decoded state, shape (member,)."""
        y = observations.values.to(state)
        r = (y - observations.operator(state)) / observations.error_std.to(state)
        return 0.5 * r.square().sum(dim=1)

    def sample_latent(
        self, z_b: Tensor, observations: Observations | None, generator: torch.Generator | None = None
    ) -> Tensor:
        """One posterior latent per background latent (the method's own reverse process)."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float]:
        """The method's own per-window counters, besides nfe, χ²/m and seconds."""
        return {}

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        began, self.nfe = time.perf_counter(), 0
        members = background.shape[0]
        draws = background.repeat_interleave(self.samples, dim=0) if self.samples > 1 else background
        with torch.no_grad():
            z_b = self.begin(draws)
        z = self.sample_latent(z_b, observations, generator)
        with torch.no_grad():
            decoded = self.decode(z)
            if self.samples > 1:
                decoded = decoded.reshape(members, self.samples, *decoded.shape[1:]).mean(dim=1)
        extra = {}
        if self.residual is not None:
            decoded, extra = self.residual.analyse(decoded, background, observations)
        with torch.no_grad():
            state = self.checked(decoded.to(background.dtype), self.name)
            chi2 = float((2 * self.state_misfit(decoded, observations)).mean() / max(len(observations), 1))
        return Analysis(
            state,
            {
                "nfe": float(self.nfe),
                **self.diagnostics(),
                **extra,
                "chi2_per_obs": chi2,
                "seconds": time.perf_counter() - began,
            },
        )


class DPS(LatentSampler):
    """Latent diffusion posterior sampling; `scale` is ζ (0: samples of the prior alone)."""

    name = "dps"

    def __init__(self, *args, scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if scale < 0:
            raise ValueError(f"scale must be >= 0; got {scale}")
        self.scale = scale

    def sample_latent(
        self, z_b: Tensor, observations: Observations | None, generator: torch.Generator | None = None
    ) -> Tensor:
        """One latent sample per background latent; without observations, a sample of the prior."""
        guided = self.scale > 0 and observations is not None
        z = self.noise(z_b, generator)
        times = self.schedule.times(self.steps, device=z.device)
        for t, t_next in itertools.pairwise(times):
            with torch.enable_grad():
                z_in = z.detach().requires_grad_(guided)
                eps = self.eps(z_in, t, z_b)
                z0 = self.schedule.denoise(z_in, eps, t)
                grad = None
                if guided:
                    norm = (2 * self.misfit(z0, observations)).sqrt()
                    (grad,) = torch.autograd.grad(norm.sum(), z_in)
            z = self.step(z_in.detach(), z0.detach(), eps.detach(), t, t_next, generator)
            if grad is not None:
                z = z - self.scale * grad
            if self.corrections and t_next > 0:
                with torch.no_grad():
                    z = self.correct(z, t_next, z_b, generator)
        return z.detach()


class LOSDA(LatentSampler):
    """LO-SDA: latent optimisation of Tweedie's estimate against the observations.

    Args (besides :class:`LatentSampler`'s):
        optimise_below: Optimise at steps with t below this (the early, noisy steps carry
            little information about the observations).
        inner_steps: Optimiser iterations per optimised step.
        lr: Adam's learning rate in standardised latent units (L-BFGS uses a line search).
        proximal: λ0 of the proximal weight λ_t = λ0 σ_t² / μ_t².
        polish_steps: Optimiser iterations of the final polish (0: none).
        polish_proximal: λ of the final polish's proximal term.
        fit_target: Stop an optimisation once χ²/m falls to this (1: fitted to within σ_o).
        optimizer: "lbfgs" (strong-Wolfe line search; scale-aware, as 3D-Var's minimiser) or
            "adam" (as L3DVar; its per-element step normalisation also moves latents the
            observations hardly constrain).
    """

    name = "lo-sda"

    def __init__(
        self,
        *args,
        optimise_below: float = 0.6,
        inner_steps: int = 5,
        lr: float = 0.05,
        proximal: float = 1.0,
        polish_steps: int = 30,
        polish_proximal: float = 0.1,
        fit_target: float = 1.0,
        optimizer: str = "lbfgs",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam'; got {optimizer!r}")
        self.optimizer = optimizer
        if inner_steps < 0 or polish_steps < 0:
            raise ValueError("inner_steps and polish_steps must be >= 0")
        if lr <= 0 or proximal < 0 or polish_proximal < 0 or fit_target <= 0:
            raise ValueError("lr and fit_target must be positive, the proximal weights >= 0")
        self.optimise_below, self.inner_steps, self.lr = optimise_below, inner_steps, lr
        self.proximal, self.polish_steps, self.polish_proximal = proximal, polish_steps, polish_proximal
        self.fit_target = fit_target
        self.decoder_evaluations = 0

    def optimise(self, anchor: Tensor, observations: Observations, weight: float, iterations: int) -> Tensor:
        """argmin ½‖r(z)‖² + ½ weight ‖z − anchor‖², per member, from the anchor; early stop at the fit target."""
        z = anchor.detach().clone().requires_grad_()
        m = max(len(observations), 1)
        if self.optimizer == "adam":
            optimiser = torch.optim.Adam([z], lr=self.lr)
        else:
            optimiser = torch.optim.LBFGS(
                [z], lr=1.0, max_iter=1, history_size=10, line_search_fn="strong_wolfe"
            )
        fitted = False

        def within_target(misfit: Tensor) -> bool:  # every member fitted to χ²/m ≤ fit_target
            return float((2 * misfit.detach()).max()) / m <= self.fit_target

        def closure() -> Tensor:
            nonlocal fitted
            optimiser.zero_grad(set_to_none=True)
            with torch.enable_grad():
                misfit = self.misfit(z, observations)
                self.decoder_evaluations += 1
                fitted = within_target(misfit)
                cost = (misfit + 0.5 * weight * (z - anchor).square().flatten(1).sum(dim=1)).sum()
                cost.backward()
            return cost

        for _ in range(iterations):
            if self.optimizer == "adam":
                closure()
                if fitted:
                    break
                optimiser.step()
            else:
                optimiser.step(closure)
                with torch.no_grad():
                    if within_target(self.misfit(z, observations)):
                        break
        return z.detach()

    def diagnostics(self) -> dict[str, float]:
        return {"decoder_evaluations": float(self.decoder_evaluations)}

    def sample_latent(
        self, z_b: Tensor, observations: Observations | None, generator: torch.Generator | None = None
    ) -> Tensor:
        self.decoder_evaluations = 0
        s = self.schedule
        with torch.no_grad():
            z = self.noise(z_b, generator)
            times = s.times(self.steps, device=z.device)
            for t, t_next in itertools.pairwise(times):
                eps = self.eps(z, t, z_b)
                z0 = s.denoise(z, eps, t)
                if t < self.optimise_below and self.inner_steps and observations is not None:
                    weight = self.proximal * float(s.sigma(t) ** 2 / s.mu(t) ** 2)
                    z0 = self.optimise(z0, observations, weight, self.inner_steps)
                    eps = (z - s.mu(t) * z0) / s.sigma(t)
                z = self.step(z, z0, eps, t, t_next, generator)
                if self.corrections and t_next > 0:
                    z = self.correct(z, t_next, z_b, generator)
            if self.polish_steps and observations is not None:
                z = self.optimise(z, observations, self.polish_proximal, self.polish_steps)
        return z
