"""What the latent-space methods share: parameters, the autoencoder round trip, the reverse process.

A latent method encodes the background, finds a latent that agrees with the observations
(DPS guidance, LO-SDA's optimisation, latent 3D-Var's minimisation) and decodes it. The
decoded state keeps a share w of the background's autoencoder residual,
x_a = D(z_a) + w (x_b − D(E(x_b))), so detail the autoencoder cannot represent is neither lost
(w = 0) nor carried uncorrected (w = 1); an optional B_r 3D-Var (:mod:`score_da.residual`)
then analyses that remainder. The diffusion methods run the conditional prior's reverse
process from noise to a latent, conditioned on the background's latent z_b, one sample per
background member: the exponential-integrator (DDIM-like) predictor of SDA with optional
Langevin corrections; a fresh noise draw at every step makes it stochastic.

Methods keep no state between calls: what one call accumulates (the kept residual, the
counters) lives in a :class:`Draw` that the call creates.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from cycler_da.core import Analysis, MethodContext, Observations
from forecast_models.checkpoint import CheckpointError, check_compatible, file_hash
from score_da import checkpoint
from score_da.latent import LatentSpace, StateSpace
from score_da.networks import Denoiser
from score_da.residual import ResidualAnalysis
from score_da.schedule import VPSchedule
from score_da.training import lead_code


@dataclass(frozen=True)
class LatentParams:
    """Parameters of every latent-space method."""

    vae: str = "default"
    """The autoencoder: a checkpoint path or a shipped name ("default", "anomaly")."""
    background_residual: float = 0.5
    """Weight w in [0, 1] of the background's autoencoder residual kept in the analysis."""
    residual_analysis: bool = False
    """Run the B_r 3D-Var of what the autoencoder cannot represent after the latent analysis."""
    residual_b_scale: float = 1.0
    """Factor on B_r's standard deviations."""
    residual_localization_km: float = 1500.0
    """Length of B_r's Gaussian localisation."""

    def __post_init__(self) -> None:
        if not 0 <= self.background_residual <= 1:
            raise ValueError(f"background_residual must be in [0, 1]; got {self.background_residual}")
        if self.residual_b_scale <= 0 or self.residual_localization_km <= 0:
            raise ValueError(
                "residual_b_scale and residual_localization_km must be positive; "
                f"got {self.residual_b_scale}, {self.residual_localization_km}"
            )


@dataclass(frozen=True)
class ReverseParams:
    """Parameters of a diffusion prior's reverse process (every diffusion method)."""

    prior: str = "default"
    """The diffusion prior: a checkpoint path or a shipped name; a latent prior must have been
    trained on `vae`'s latents, a state-space one samples the grid itself."""
    steps: int = 32
    """Reverse steps from t = 1 to 0."""
    lead_hours: float = 6.0
    """The background's lead the prior is conditioned on: 6 when cycling, 48 in the seed protocol."""
    corrections: int = 0
    """Langevin corrections per step (SDA); 0: none."""
    tau: float = 0.5
    """Langevin step-size factor."""
    stochastic: bool = True
    """Fresh noise at every reverse step (η = 1) rather than the deterministic DDIM update."""
    samples: int | None = 1
    """Posterior draws K per background member; the analysis is their mean."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1; got {self.steps}")
        if self.lead_hours <= 0:
            raise ValueError(f"lead_hours must be positive; got {self.lead_hours}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"samples must be >= 1; got {self.samples}")


@dataclass(frozen=True)
class SamplerParams(ReverseParams, LatentParams):
    """Parameters of the latent diffusion methods (``dps``, ``lo-sda``, ``align-da``): the reverse
    process's and the autoencoder's (which a state-space prior leaves unused)."""

    def __post_init__(self) -> None:
        LatentParams.__post_init__(self)
        ReverseParams.__post_init__(self)


def check_matches(context: MethodContext, name: str, manifest: dict) -> None:
    """Refuses weights made for other channels, grids or normalisation than the run's."""
    if context.normalisation is None:
        if list(manifest["channels"]) != list(context.channels):
            raise CheckpointError(
                f"{name} was trained on channels {manifest['channels']}, but the run has {list(context.channels)}"
            )
        return
    stats = context.normalisation
    check_compatible(
        manifest, context.channels, context.latitudes, context.longitudes, stats.mean, stats.std, name=name
    )


def load_space(context: MethodContext, vae: str) -> LatentSpace:
    """The autoencoder `vae` (path or shipped name), checked against the run."""
    path = checkpoint.resolve(vae, "vae")
    space, manifest = checkpoint.load_latent_space(path, context.device)
    check_matches(context, f"vae {path}", manifest)
    return space


def load_diffusion(
    context: MethodContext, vae: str, prior: str
) -> tuple[LatentSpace | StateSpace, Denoiser, VPSchedule]:
    """The prior and the space it samples, both checked against the run: the autoencoder `vae`
    for a latent prior (which must have been trained on its latents), the state for a state prior."""
    prior_path = checkpoint.resolve(prior, "prior")
    denoiser, schedule, manifest = checkpoint.load_prior(prior_path, context.device)
    check_matches(context, f"prior {prior_path}", manifest)
    if checkpoint.in_state_space(manifest):
        return StateSpace(), denoiser, schedule
    vae_path = checkpoint.resolve(vae, "vae")
    space = load_space(context, vae)
    if manifest["vae_sha256"] != file_hash(vae_path):
        raise CheckpointError(
            f"prior {prior_path} was trained on the latents of another autoencoder than {vae_path}"
        )
    return space, denoiser, schedule


def residual_step(
    context: MethodContext, space: LatentSpace | StateSpace, params: LatentParams
) -> ResidualAnalysis | None:
    """The B_r 3D-Var of what the autoencoder cannot represent, if the parameters ask for it
    (never in the state space, which represents everything)."""
    if not params.residual_analysis or space.identity:
        return None
    samples = context.error_samples("residual_analysis")
    return ResidualAnalysis(
        space,
        torch.as_tensor(samples, dtype=torch.float32, device=context.device),
        context.latitudes,
        context.longitudes,
        params.residual_localization_km,
        params.residual_b_scale,
        device=context.device,
    )


@dataclass
class Draw:
    """One call's working state.

    Attributes:
        background: The background members (each repeated K times), float32.
        offset: The kept share of the background's autoencoder residual, or None.
        counters: Per-call counts reported as diagnostics (``nfe`` first).
    """

    background: Tensor
    offset: Tensor | None
    counters: Counter = dataclasses.field(default_factory=lambda: Counter(nfe=0))


class LatentMethod:
    """Encode, find a latent, decode, keep part of the residual, optionally analyse the rest.

    Subclasses implement :meth:`sample_latent`.

    Args:
        space: Autoencoder and latent standardisation.
        params: The method's parameters (``samples`` resolved to an integer).
        residual: Optional B_r 3D-Var run on the decoded analysis.
    """

    name = "latent method"

    def __init__(
        self, space: LatentSpace | StateSpace, params: LatentParams, residual: ResidualAnalysis | None = None
    ):
        self.space, self.params, self.residual = space, params, residual
        self.samples = getattr(params, "samples", None) or 1
        for p in space.parameters() if space is not None else ():
            p.requires_grad_(False)

    def begin(self, background: Tensor) -> tuple[Tensor, Draw]:
        """The background's latent, and the call's :class:`Draw`."""
        x_b = background.float()
        z_b = self.space.encode(x_b)
        w = 0.0 if self.space.identity else self.params.background_residual
        offset = w * (x_b - self.space.decode(z_b)) if w > 0 else None
        return z_b, Draw(x_b, offset)

    def decode(self, z: Tensor, draw: Draw) -> Tensor:
        """The normalised state of a latent, plus the kept part of the background's residual."""
        state = self.space.decode(z)
        return state if draw.offset is None else state + draw.offset

    def misfit(self, z: Tensor, observations: Observations, draw: Draw) -> Tensor:
        """Per-member ``½‖(y − H(D(z)))/σ_o‖²``, shape (member,)."""
        return self.state_misfit(self.decode(z, draw), observations)

    @staticmethod
    def state_misfit(state: Tensor, observations: Observations) -> Tensor:
        """Per-member ``½‖(y − H(x))/σ_o‖²`` of a decoded state, shape (member,)."""
        y = observations.values.to(state)
        r = (y - observations.operator(state)) / observations.error_std.to(state)
        return 0.5 * r.square().sum(dim=1)

    def sample_latent(
        self, z_b: Tensor, observations: Observations, draw: Draw, generator: torch.Generator | None
    ) -> Tensor:
        """One analysis latent per background latent."""
        raise NotImplementedError

    def checked(self, state: Tensor) -> Tensor:
        """The decoded analysis, or a clear error if the method diverged."""
        if not torch.isfinite(state).all():
            raise FloatingPointError(
                f"{self.name} produced a non-finite analysis: the sampler diverged (a smaller guidance scale "
                "or learning rate, or more steps, may help)"
            )
        return state

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        began = time.perf_counter()
        members, k = background.shape[0], self.samples
        draws = background.repeat_interleave(k, dim=0) if k > 1 else background
        with torch.no_grad():
            z_b, draw = self.begin(draws)
        z = self.sample_latent(z_b, observations, draw, generator)
        with torch.no_grad():
            decoded = self.decode(z, draw)
            if k > 1:
                decoded = decoded.reshape(members, k, *decoded.shape[1:]).mean(dim=1)
        extra = {}
        if self.residual is not None:
            decoded, extra = self.residual.analyse(decoded, background, observations)
        with torch.no_grad():
            state = self.checked(decoded.to(background.dtype))
            chi2 = float((2 * self.state_misfit(decoded, observations)).mean() / max(len(observations), 1))
        counts = {key: float(value) for key, value in draw.counters.items()}
        return Analysis(
            state, {**counts, **extra, "chi2_per_obs": chi2, "seconds": time.perf_counter() - began}
        )


class LatentSampler(LatentMethod):
    """The reverse process of the conditional prior, with a hook for the observations.

    Args:
        space: Autoencoder and latent standardisation.
        denoiser: ε_θ(z_t, t, z_b, lead).
        schedule: The noise schedule the denoiser was trained with.
        params: The method's parameters.
        residual: Optional B_r 3D-Var run on the decoded analysis.
    """

    name = "latent sampler"

    def __init__(
        self,
        space: LatentSpace | StateSpace,
        denoiser: Denoiser,
        schedule: VPSchedule,
        params: SamplerParams,
        residual: ResidualAnalysis | None = None,
    ):
        super().__init__(space, params, residual)
        self.denoiser, self.schedule = denoiser, schedule
        self.lead = float(lead_code(params.lead_hours))
        for p in denoiser.parameters():
            p.requires_grad_(False)

    def condition(self, z_b: Tensor, observations: Observations, draw: Draw) -> Tensor:
        """What the denoiser is conditioned on: the background's latent (PhyDA adds its VRE's field)."""
        return z_b

    def eps(self, z_t: Tensor, t: Tensor, z_b: Tensor, draw: Draw) -> Tensor:
        draw.counters["nfe"] += 1
        return self.denoiser(z_t, t, z_b, torch.tensor(self.lead, device=z_t.device))

    @staticmethod
    def noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
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
        if not self.params.stochastic or t_next <= 0:
            return mu_next * z0 + sigma_next * eps
        # Variance of q(z_{t_next} | z_t, z0) in the VP parametrisation.
        var = torch.clamp(sigma_next**2 * (1 - (s.mu(t) * sigma_next / (mu_next * s.sigma(t))) ** 2), min=0.0)
        keep = torch.sqrt(torch.clamp(sigma_next**2 - var, min=0.0))
        return mu_next * z0 + keep * eps + var.sqrt() * self.noise(z0, generator)

    def correct(
        self, z: Tensor, t: Tensor, z_b: Tensor, draw: Draw, generator: torch.Generator | None
    ) -> Tensor:
        """SDA's Langevin corrections at time t."""
        for _ in range(self.params.corrections):
            eps = self.eps(z, t, z_b, draw)
            delta = self.params.tau / eps.square().mean().clamp_min(1e-12)
            z = z - (delta * eps + torch.sqrt(2 * delta) * self.noise(z, generator)) * self.schedule.sigma(t)
        return z


def with_samples(params: SamplerParams, context: MethodContext, deterministic: int) -> SamplerParams:
    """`params` with ``samples: None`` resolved: `deterministic` draws in a one-member run, 1 in an ensemble."""
    if params.samples is not None:
        return params
    return dataclasses.replace(params, samples=deterministic if context.members == 1 else 1)
