"""A 3D-Var of what the autoencoder cannot represent, after a latent analysis.

A latent analysis x_a = D(z_a) + w (x_b − D(z_b)) corrects only what the decoder can
represent: the rest of the state (the background's autoencoder residual, kept with weight w)
is never compared with the observations, so it bounds the analysis error (w = 0) or carries
its errors from window to window uncorrected (w = 1). This step analyses that rest with the
observations' remaining departures, as a 3D-Var whose B holds only the unrepresentable part of
the training-set background errors e_k around the window's background:

    ε_k = e_k − [D(E(x_b + e_k)) − D(E(x_b))],   B_r = b_scale² (ε εᵀ / (N − 1)) ∘ L,

localised as the 3dvar baseline's ensemble B. Where the autoencoder represents an error
(ε_k = 0) this step adds nothing, so the diffusion prior stays in charge of every scale the
latent holds; with an autoencoder that represents nothing (D constant) it is the 3dvar
baseline itself on the latent analysis.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cycler_da.core.contract import Observations
from cycler_da.core.covariance import EnsembleControlTransform
from cycler_da.core.var3d import ThreeDVar
from score_da.latent import LatentSpace


class ResidualAnalysis:
    """The B_r 3D-Var of a latent method's analysis.

    Args:
        space: The latent method's autoencoder.
        error_samples: Training-set background-error samples, normalised, (sample, channel, lat, lon).
        latitudes: The grid's latitudes in degrees.
        longitudes: The grid's longitudes in degrees.
        localization_km: Length of B_r's Gaussian localisation.
        b_scale: Factor on B_r's standard deviations.
        max_iterations: L-BFGS iterations of the 3D-Var.
        batch: Error samples encoded at once.
        device: Where the samples and B_r's factors live.
    """

    def __init__(
        self,
        space: LatentSpace,
        error_samples: Tensor,
        latitudes: np.ndarray,
        longitudes: np.ndarray,
        localization_km: float = 1500.0,
        b_scale: float = 1.0,
        max_iterations: int = 50,
        batch: int = 60,
        device: str | torch.device = "cpu",
    ):
        if b_scale <= 0 or localization_km <= 0:
            raise ValueError(
                f"residual b_scale and localization_km must be positive; got {b_scale}, {localization_km}"
            )
        self.space, self.batch = space, batch
        self.errors = error_samples.float().to(device)
        self.transform = EnsembleControlTransform(
            error_samples.double().cpu().numpy(),
            latitudes,
            longitudes,
            localization_km,
            b_scale,
            device=device,
        )
        self.max_iterations = max_iterations

    @torch.no_grad()
    def unrepresented(self, background: Tensor) -> Tensor:
        """ε_k around the members' mean background, (sample, channel, lat, lon)."""
        x_b = background.float().mean(dim=0, keepdim=True)
        errors = self.errors
        base = self.space.decode(self.space.encode(x_b))
        represented = torch.cat(
            [self.space.decode(self.space.encode(x_b + e)) for e in errors.split(self.batch)]
        )
        return errors - (represented - base)

    def analyse(self, state: Tensor, background: Tensor, observations: Observations) -> tuple[Tensor, dict]:
        """The analysis `state` corrected by the B_r 3D-Var, and its diagnostics."""
        if len(observations) == 0:
            return state, {"residual_iterations": 0.0, "residual_cost_reduction": 0.0}
        transform = self.transform.with_samples(self.unrepresented(background))
        result = ThreeDVar(transform, self.max_iterations).analyse(state, observations)
        return result.state, {
            "residual_iterations": result.diagnostics["iterations"],
            "residual_cost_reduction": 1
            - result.diagnostics["cost_final"] / max(result.diagnostics["cost_initial"], 1e-30),
        }
