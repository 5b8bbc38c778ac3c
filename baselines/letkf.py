"""The local ensemble transform Kalman filter (Hunt et al. 2007), column by column.

For every grid column the observations within the localisation radius are weighted by the
Gaspari–Cohn function of their great-circle distance (R-localisation) and the ensemble-space
analysis is computed in closed form:

    P̃a = [(N−1) I + Ỹᵀ R_loc⁻¹ Ỹ]⁻¹,   w̄ = P̃a Ỹᵀ R_loc⁻¹ (y − ȳ),   W = [(N−1) P̃a]^{1/2},

with Ỹ the observation-space ensemble perturbations. All columns are solved at once as a
batch of N×N symmetric eigenproblems, and every channel of a column shares its weights.
Inflation: multiplicative (of the prior perturbations), relaxation to prior spread (RTPS,
Whitaker & Hamill 2012) and additive (zero-mean draws from a climatological B added to the
analysis members, Whitaker et al. 2008). Additive inflation stands in for the model error the
ensemble cannot represent: the neural forecast model damps perturbations, so without it the
spread collapses. Optionally the multiplicative inflation adapts per channel to each
window's innovations (Li, Kalnay & Miyoshi 2009, without their temporal smoothing, so a resumed
run stays identical): λ_c² = Σ(d² − σ_o²) / Σ var_ens(Hx) over the observations of channel c,
bounded below by 1. Without localisation and inflation this is exactly the ETKF.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from cycler_da.core.contract import Analysis, Observations
from cycler_da.core.covariance import innovation_variance_ratio
from cycler_da.core.geometry import great_circle_km


def gaspari_cohn(distance: Tensor, half_width: float) -> Tensor:
    """Gaspari & Cohn (1999) fifth-order function; zero beyond 2 × half_width."""
    r = distance / half_width
    out = torch.zeros_like(r)
    near = r <= 1
    far = (r > 1) & (r < 2)
    rn, rf = r[near], r[far]
    out[near] = -0.25 * rn**5 + 0.5 * rn**4 + 0.625 * rn**3 - 5 / 3 * rn**2 + 1
    out[far] = rf**5 / 12 - 0.5 * rf**4 + 0.625 * rf**3 + 5 / 3 * rf**2 - 5 * rf + 4 - 2 / (3 * rf)
    return out


class LETKF:
    """LETKF analysis of an ensemble background.

    Args:
        latitudes: The model grid's latitudes in degrees.
        longitudes: The model grid's longitudes in degrees.
        localization_km: Gaspari–Cohn half-width c (weights vanish beyond 2c); None or
            inf disables localisation (ETKF).
        inflation: Multiplicative prior inflation factor (1 = none).
        rtps: Relaxation-to-prior-spread coefficient α in [0, 1] (0 = none).
        additive: Optional ``sample(members, generator) -> (members, channel, lat, lon)``
            drawing additive-inflation perturbations; their ensemble mean is removed before
            they are added, so the analysis mean is unchanged.
        channel_localization: Optional (channel, channel) factors in [0, 1]: the analysis of
            channel c weights observations of channel c' by L[c, c'] on top of the distance
            weights (None: every channel of a column shares one set of weights).
        adaptive_inflation: Per-channel multiplicative inflation from this window's
            innovations (on top of `inflation`), between 1 and `max_inflation`.
        max_inflation: Upper bound of the adaptive factor.
        min_observations: Channels with fewer observations are not inflated adaptively.
    """

    def __init__(
        self,
        latitudes: np.ndarray,
        longitudes: np.ndarray,
        localization_km: float | None = None,
        inflation: float = 1.0,
        rtps: float = 0.0,
        additive: Callable[[int, torch.Generator | None], Tensor] | None = None,
        channel_localization: Tensor | None = None,
        adaptive_inflation: bool = False,
        max_inflation: float = 3.0,
        min_observations: int = 10,
    ):
        self.latitudes = np.asarray(latitudes, float)
        self.longitudes = np.asarray(longitudes, float)
        self.localization_km = localization_km
        self.inflation = inflation
        self.rtps = rtps
        self.additive = additive
        self.channel_localization = channel_localization
        self.adaptive_inflation = adaptive_inflation
        self.max_inflation = max_inflation
        self.min_observations = min_observations

    def inflation_factors(self, background: Tensor, observations: Observations) -> Tensor:
        """Per-channel adaptive inflation factors λ_c (of the perturbations), shape (channel,)."""
        x = background.to(torch.float64)
        hx = observations.operator(x)
        channel = torch.as_tensor(observations.operator.channel, device=x.device)
        weights = torch.nn.functional.one_hot(channel, x.shape[1]).T.to(x.dtype)
        variance = innovation_variance_ratio(
            observations.values.to(x.dtype) - hx.mean(dim=0),
            observations.error_std,
            hx.var(dim=0),
            weights,
            (1.0, self.max_inflation**2),
            self.min_observations,
        )
        return variance.sqrt()

    def _localisation(self, obs_lat: np.ndarray, obs_lon: np.ndarray, dtype, device) -> Tensor:
        """Weights (column, obs)."""
        lat_g, lon_g = np.meshgrid(self.latitudes, self.longitudes, indexing="ij")
        if self.localization_km is None or not np.isfinite(self.localization_km):
            return torch.ones(lat_g.size, len(obs_lat), dtype=dtype, device=device)
        d = great_circle_km(lat_g.ravel(), lon_g.ravel(), obs_lat, obs_lon)
        return gaspari_cohn(torch.as_tensor(d, dtype=dtype, device=device), self.localization_km)

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        members, channels, nlat, nlon = background.shape
        if members < 2:
            raise ValueError("the LETKF needs an ensemble background (realization >= 2)")
        dtype = torch.float64
        x = background.to(dtype)
        mean = x.mean(dim=0, keepdim=True)
        prior_pert = x - mean
        lam = torch.ones(channels, dtype=dtype, device=x.device)
        if self.adaptive_inflation:
            lam = self.inflation_factors(x, observations)
        x = mean + self.inflation * lam[:, None, None] * prior_pert
        hx = observations.operator(x)  # (N, obs)
        y_mean = hx.mean(dim=0)
        y_pert = (hx - y_mean).T  # (obs, N)
        inv_r = observations.error_std.to(dtype).pow(-2)
        operator = observations.operator  # the contract declares where each observation is
        lat, lon = np.asarray(operator.latitude), np.asarray(operator.longitude)
        rho = self._localisation(lat, lon, dtype, x.device) * inv_r  # (column, obs)
        innovation = observations.values.to(dtype) - y_mean  # (obs,)

        pert = (
            (x - x.mean(dim=0, keepdim=True)).reshape(members, channels, -1).permute(2, 1, 0)
        )  # (col, C, N)
        column_mean = x.mean(dim=0).reshape(channels, -1).T  # (col, C)
        if self.channel_localization is None:
            weights = _transform_weights(rho, y_pert, innovation)  # one set for every channel
            analysis = column_mean[:, :, None] + pert @ weights  # (col, C, N)
        else:
            # Each analysed channel c weights observations of channel c' by L[c, c'] too.
            obs_channel = torch.as_tensor(observations.operator.channel, device=x.device)
            analysis = torch.empty_like(pert)
            for c in range(channels):
                factor = self.channel_localization[c].to(device=x.device, dtype=dtype)[obs_channel]
                weights = _transform_weights(rho * factor, y_pert, innovation)
                analysis[:, c] = column_mean[:, c, None] + (pert[:, c : c + 1] @ weights)[:, 0]
        analysis = analysis.permute(2, 1, 0).reshape(members, channels, nlat, nlon)
        if self.rtps > 0:
            a_mean = analysis.mean(dim=0, keepdim=True)
            a_pert = analysis - a_mean
            prior_spread = prior_pert.std(dim=0, keepdim=True)
            post_spread = a_pert.std(dim=0, keepdim=True).clamp_min(1e-12)
            factor = self.rtps * (prior_spread - post_spread) / post_spread + 1
            analysis = a_mean + a_pert * factor
        if self.additive is not None:
            noise = self.additive(members, generator).to(dtype)
            analysis = analysis + noise - noise.mean(dim=0, keepdim=True)
        observed = rho.sum(dim=1) > 0
        return Analysis(
            analysis.to(background.dtype),
            {
                "columns_with_observations": float(observed.float().mean()),
                "prior_spread": float(prior_pert.std(dim=0).pow(2).mean().sqrt()),
                "posterior_spread": float((analysis - analysis.mean(0)).std(dim=0).pow(2).mean().sqrt()),
                **(
                    {"inflation_max": float(lam.max()), "inflation_mean": float(lam.mean())}
                    if self.adaptive_inflation
                    else {}
                ),
            },
        )


def _transform_weights(rho: Tensor, y_pert: Tensor, innovation: Tensor) -> Tensor:
    """Per-column analysis weights ``w̄ + W`` (column, N, N) for localised inverse error variances rho."""
    members = y_pert.shape[1]
    n1 = members - 1
    outer = (y_pert[:, :, None] * y_pert[:, None, :]).reshape(len(innovation), -1)  # (obs, N·N)
    eye = torch.eye(members, dtype=rho.dtype, device=rho.device)
    values, vectors = torch.linalg.eigh((rho @ outer).reshape(-1, members, members) + n1 * eye)
    pa = (vectors / values[:, None, :]) @ vectors.transpose(1, 2)
    w_mean = pa @ (y_pert.T @ (rho * innovation).T).T[..., None]  # (column, N, 1)
    w_pert = (vectors * torch.sqrt(n1 / values)[:, None, :]) @ vectors.transpose(1, 2)
    return w_pert + w_mean  # member j's analysis weights in column k: [k, :, j]


def recentre(ensemble: Analysis, mean: Tensor, refined: Analysis, dtype: torch.dtype) -> Analysis:
    """The ensemble's perturbations about `mean`, with a 3D-Var's diagnostics beside the LETKF's.

    The hybrids (``envar``, ``hybrid-gain``) keep the LETKF's perturbations and take their
    mean from a variational analysis (`refined`).
    """
    members = ensemble.state.to(torch.float64)
    state = members - members.mean(dim=0, keepdim=True) + mean
    diagnostics = dict(ensemble.diagnostics)
    diagnostics.update({f"var_{key}": value for key, value in refined.diagnostics.items()})
    return Analysis(state.to(dtype), diagnostics)
