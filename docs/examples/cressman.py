"""A Cressman successive-correction analysis, as a plugin: the worked example of "Add a method".

Cressman (1959): each pass adds to every grid point the weighted mean of the innovations of
the observations of its channel within a radius R,

    x ← x + Σ_k w_k (y_k − H(x)_k) / Σ_k w_k,   w_k = (R² − d_k²) / (R² + d_k²) for d_k < R,

with d_k the great-circle distance to observation k; later passes use smaller radii.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cycler_da.core import Analysis, MethodContext, MethodSpec, Observations
from cycler_da.core.geometry import great_circle_km


@dataclass(frozen=True)
class CressmanParams:
    """Parameters of ``cressman``: the YAML keys of ``method.params``."""

    radii_km: tuple[float, ...] = (1500.0, 1000.0, 600.0)
    """Influence radius of each pass, in km."""

    def __post_init__(self) -> None:
        if not self.radii_km or min(self.radii_km) <= 0:
            raise ValueError(f"radii_km must be positive; got {self.radii_km}")


class Cressman:
    """Successive corrections on a latitude–longitude grid (an `AnalysisMethod`)."""

    def __init__(self, latitudes: np.ndarray, longitudes: np.ndarray, radii_km: tuple[float, ...]):
        self.latitudes, self.longitudes, self.radii_km = latitudes, longitudes, radii_km

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        members, channels, nlat, nlon = background.shape
        operator = observations.operator  # the contract: H, and each observation's channel and place
        lat, lon = np.meshgrid(self.latitudes, self.longitudes, indexing="ij")
        distance = great_circle_km(lat.ravel(), lon.ravel(), operator.latitude, operator.longitude)
        own = torch.nn.functional.one_hot(
            torch.as_tensor(operator.channel), channels
        ).double()  # (obs, channel)
        x = background.double()
        for radius in self.radii_km:
            w = torch.as_tensor(
                np.where(distance < radius, (radius**2 - distance**2) / (radius**2 + distance**2), 0)
            )
            innovation = observations.values.double() - operator(x)  # (member, obs)
            total = torch.einsum("po,mo,oc->mcp", w, innovation, own)
            weight = torch.einsum("po,oc->cp", w, own)
            increment = torch.where(weight > 0, total / weight.clamp_min(1e-300), 0.0)
            x = x + increment.reshape(members, channels, nlat, nlon)
        return Analysis(x.to(background.dtype), {"passes": float(len(self.radii_km))})


def build(context: MethodContext, params: CressmanParams) -> Cressman:
    return Cressman(np.asarray(context.latitudes), np.asarray(context.longitudes), params.radii_km)


METHOD = MethodSpec("cressman", CressmanParams, build)
