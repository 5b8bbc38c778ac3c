"""The method ``phyda``: a physics-regularised state-space prior conditioned on a virtual reconstruction.

PhyDA (Wang et al. 2025) samples a diffusion prior on the grid itself, trained with PRDO
(:mod:`score_da.physics`: the ε-loss plus λ(t) mean(R(x̂0)²) of the balance residuals of
Tweedie's estimate) and conditioned, beside the background, on the field x_v that its
virtual-reconstruction encoder (:mod:`score_da.vre`) makes from the window's observations
and the background. DPS guidance then pulls each reverse step towards what x_v leaves
unfitted. ``prdo: false`` and ``vre: false`` select the priors trained without either (the
ablations); with both off this is ``dps`` on the plain state-space prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cycler_da.core import MethodContext, MethodSpec, Observations
from cycler_da.core.gridded import observations_on_grid
from forecast_models.checkpoint import CheckpointError
from score_da import checkpoint
from score_da.dps import DPS
from score_da.latent import StateSpace
from score_da.sampling import Draw, ReverseParams, check_matches
from score_da.vre import VirtualReconstruction

# The shipped prior of each (prdo, vre) setting.
SHIPPED_PRIORS = {
    (True, True): "phyda",
    (False, True): "phyda-no-prdo",
    (True, False): "phyda-no-vre",
    (False, False): "state-default",
}


@dataclass(frozen=True)
class PhyDAParams(ReverseParams):
    """Parameters of ``phyda``: the reverse process's, the guidance and the prior's training."""

    prior: str = "default"
    """"default": the shipped prior trained with the `prdo` and `vre` settings; else a checkpoint path."""
    scale: float = 1.0
    """ζ, the DPS step on ‖r‖ of the misfit the conditioned prior leaves (0: no guidance)."""
    prdo: bool = True
    """The prior was trained with PRDO's physics penalty (False: the ablation without it)."""
    vre: bool = True
    """The prior is conditioned on the VRE's reconstruction (False: on the background alone)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0; got {self.scale}")


class PhyDA(DPS):
    """DPS on a state-space prior conditioned on the background and, with a VRE, its reconstruction."""

    name = "phyda"

    def __init__(self, *args, vre: VirtualReconstruction | None, latitudes, longitudes, **kwargs):
        super().__init__(*args, **kwargs)
        self.vre, self.latitudes, self.longitudes = vre, latitudes, longitudes
        for p in vre.parameters() if vre is not None else ():
            p.requires_grad_(False)

    @torch.no_grad()
    def condition(self, z_b: Tensor, observations: Observations, draw: Draw) -> Tensor:
        if self.vre is None:
            return z_b
        values, mask = observations_on_grid(observations, self.latitudes, self.longitudes, z_b.shape[1])
        values, mask = (v.to(z_b).expand_as(z_b) for v in (values, mask))
        reconstruction = self.vre(values, mask, z_b)
        fit = 2 * self.state_misfit(reconstruction, observations).mean() / max(len(observations), 1)
        draw.counters["vre_chi2_per_obs"] = float(fit)
        return torch.cat([z_b, reconstruction], dim=1)


def build(context: MethodContext, params: PhyDAParams) -> PhyDA:
    name = SHIPPED_PRIORS[(params.prdo, params.vre)] if params.prior == "default" else params.prior
    path = checkpoint.resolve(name, "prior")
    if not path.exists():
        raise CheckpointError(
            f"no prior {path} for prdo={params.prdo}, vre={params.vre}: train one with "
            "cycler train prior --space state (docs/methods/phyda.md) and pass prior: PATH"
        )
    manifest, _ = checkpoint.read(path, "prior")
    if not checkpoint.in_state_space(manifest):
        raise CheckpointError(
            f"prior {path} samples an autoencoder's latent; phyda needs a state-space prior"
        )
    trained = ("prdo" in manifest, "vre" in manifest)
    if trained != (params.prdo, params.vre):
        raise CheckpointError(
            f"prior {path} was trained with prdo={trained[0]}, vre={trained[1]}, "
            f"but the parameters ask for prdo={params.prdo}, vre={params.vre}"
        )
    vre = None
    if params.vre:
        model, schedule, manifest = checkpoint.load_phyda(path, context.device)
        denoiser, vre = model.denoiser, model.vre
    else:
        denoiser, schedule, manifest = checkpoint.load_prior(path, context.device)
    check_matches(context, f"prior {path}", manifest)
    return PhyDA(
        StateSpace(),
        denoiser,
        schedule,
        params,
        None,
        vre=vre,
        latitudes=context.latitudes,
        longitudes=context.longitudes,
    )


METHOD = MethodSpec("phyda", PhyDAParams, build)
