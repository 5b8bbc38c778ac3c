"""The method ``latent-3dvar``: latent 3D-Var (L3DVar of Fan et al.'s latent data assimilation; LO-SDA's main competitor).

The 3D-Var cost in the autoencoder's latent space, with a diagonal latent B_z:

    J(v) = ½ vᵀv + ½ ‖(y − H(D(z_b + σ_z ∘ v))) / σ_o‖²,   z_b = E(x_b),

minimised by L-BFGS through the decoder. σ_z is the latent image of the same training-set
24-h forecast errors e_k that the 3dvar baseline's B is built from:
σ_z² = b_scale · mean_k (E(x_b + e_k) − E(x_b) − m)², m their mean, computed each window
around the window's background (the encoder is nonlinear, so the map of B depends on
where it is applied). Everything LO-SDA shares with it (the autoencoder, its standardised
latents, the background residual kept in the decoded analysis, H and R) is the same, so the
two differ only in the prior: a diagonal Gaussian here, the conditional diffusion model there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cycler_da.core import MethodContext, MethodSpec, Observations
from score_da.latent import LatentSpace
from score_da.residual import ResidualAnalysis
from score_da.sampling import Draw, LatentMethod, LatentParams, load_space, residual_step


@dataclass(frozen=True)
class LatentThreeDVarParams(LatentParams):
    """Parameters of ``latent-3dvar``."""

    b_scale: float = 3.0
    """Factor on B_z's variances."""
    max_iterations: int = 50
    """L-BFGS iterations."""
    tolerance: float = 1e-5
    """Stop when the gradient's largest component falls below this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.b_scale <= 0:
            raise ValueError(f"b_scale must be positive; got {self.b_scale}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1; got {self.max_iterations}")


class LatentThreeDVar(LatentMethod):
    """L3DVar on the standardised latents of `space`.

    Args:
        space: Autoencoder and latent standardisation.
        error_samples: Training-set background-error samples, normalised, (sample, channel, lat, lon).
        params: The method's parameters.
        residual: Optional B_r 3D-Var run on the decoded analysis.
        batch: Error samples encoded at once.
    """

    name = "latent-3dvar"

    def __init__(
        self,
        space: LatentSpace,
        error_samples: Tensor,
        params: LatentThreeDVarParams,
        residual: ResidualAnalysis | None = None,
        batch: int = 60,
    ):
        super().__init__(space, params, residual)
        if error_samples.ndim != 4 or error_samples.shape[0] < 2:
            raise ValueError(
                f"error_samples must be (sample >= 2, channel, lat, lon); got {tuple(error_samples.shape)}"
            )
        self.errors, self.batch = error_samples.float(), batch

    @torch.no_grad()
    def latent_std(self, background: Tensor, z_b: Tensor) -> Tensor:
        """σ_z of each member: the spread of the encoded error samples around its background."""
        errors = self.errors.to(background.device)
        out = []
        for x_b, z in zip(background.float(), z_b, strict=True):
            dz = torch.cat([self.space.encode(x_b + e) - z for e in errors.split(self.batch)])
            out.append((dz - dz.mean(0)).square().mean(0).mul(self.params.b_scale).sqrt())
        return torch.stack(out)

    def sample_latent(
        self, z_b: Tensor, observations: Observations, draw: Draw, generator: torch.Generator | None
    ) -> Tensor:
        draw.counters["iterations"] = 0
        if len(observations) == 0:
            return z_b
        sigma = self.latent_std(draw.background, z_b)
        v = torch.zeros_like(z_b, requires_grad=True)
        optimiser = torch.optim.LBFGS(
            [v],
            lr=1,
            max_iter=self.params.max_iterations,
            history_size=20,
            tolerance_grad=self.params.tolerance,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def cost() -> Tensor:
            optimiser.zero_grad()
            j = 0.5 * v.square().sum() + self.misfit(z_b + sigma * v, observations, draw).sum()
            j.backward()
            return j

        with torch.enable_grad():
            optimiser.step(cost)
        draw.counters["iterations"] = int(optimiser.state[v].get("n_iter", 0))
        return (z_b + sigma * v).detach()


def build(context: MethodContext, params: LatentThreeDVarParams) -> LatentThreeDVar:
    samples = torch.as_tensor(
        context.error_samples("latent-3dvar"), dtype=torch.float32, device=context.device
    )
    space = load_space(context, params.vae)
    return LatentThreeDVar(space, samples, params, residual_step(context, space, params))


METHOD = MethodSpec("latent-3dvar", LatentThreeDVarParams, build)
