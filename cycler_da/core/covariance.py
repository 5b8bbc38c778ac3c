"""Background-error covariances B with control-variable transforms, for 3D-Var.

Two models, both estimated from training-set background errors (normalised units):

``ControlTransform`` (Gaussian): B = S (C ⊗ G) S, where

* S: background-error standard deviation per channel and latitude (the statistics of a
  homogeneous-in-longitude atmosphere), times a tunable scale;
* C: cross-channel correlation at a point (channel × channel), estimated from data;
* G: horizontal correlation, a Gaussian function of great-circle distance with length scale L.

The control variable v (shape (channel, lat·lon)) maps to an increment by
``U v = S ⊙ (C^{1/2} v G^{1/2})``, so B = U Uᵀ and the background term of the 3D-Var cost is
½ vᵀv. Square roots come from symmetric eigendecompositions (negative round-off clipped).

``EnsembleControlTransform`` (localised climatological ensemble): B = (X Xᵀ / (N − 1)) ∘ L, the
sample covariance of N error samples X tapered by a horizontal localisation L (the α control
variable of Lorenc 2003 and Buehner 2005, here with a static ensemble). It keeps what the
Gaussian model cannot: covariances between channels at different places (the balance linking
heights and winds), latitude-dependent and anisotropic structure, negative side lobes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cycler_da.core.contract import MethodContext
from cycler_da.core.geometry import EARTH_RADIUS_KM, great_circle_km


def symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


@dataclass(frozen=True)
class BackgroundErrorStats:
    """Statistics of background errors (normalised units), estimated from training data.

    Attributes:
        std: Standard deviation per channel and latitude, shape (channel, lat).
        channel_correlation: Correlation between channels at one point, (channel, channel).
        length_scale_km: Fitted Gaussian correlation length.
        source: How they were estimated (for provenance).
    """

    std: np.ndarray
    channel_correlation: np.ndarray
    length_scale_km: float
    source: str = ""

    def as_dict(self) -> dict:
        return {
            "std": self.std.tolist(),
            "channel_correlation": self.channel_correlation.tolist(),
            "length_scale_km": self.length_scale_km,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> BackgroundErrorStats:
        return cls(
            np.asarray(d["std"]),
            np.asarray(d["channel_correlation"]),
            float(d["length_scale_km"]),
            d.get("source", ""),
        )


def estimate_stats(
    errors: np.ndarray, latitudes: np.ndarray, longitudes: np.ndarray, source: str = ""
) -> BackgroundErrorStats:
    """Estimates B's statistics from samples of background error.

    Args:
        errors: Background minus truth, normalised, shape (sample, channel, lat, lon).
        latitudes: The grid's latitudes in degrees.
        longitudes: The grid's longitudes in degrees.
    """
    e = errors - errors.mean(axis=0, keepdims=True)
    std = np.sqrt((e**2).mean(axis=(0, 3)))  # (channel, lat): zonally homogeneous
    z = e / np.maximum(std[None, :, :, None], 1e-12)
    samples, channels = z.shape[:2]
    flat = z.transpose(1, 0, 2, 3).reshape(channels, -1)
    corr = np.corrcoef(flat)
    # Correlation length: least-squares fit of exp(-d²/2L²) to the point-to-point
    # correlation matrix, pooled over samples and channels.
    points = z.reshape(samples * channels, -1)
    rho = points.T @ points / points.shape[0]
    lat_g, lon_g = np.meshgrid(latitudes, longitudes, indexing="ij")
    d = great_circle_km(lat_g.ravel(), lon_g.ravel(), lat_g.ravel(), lon_g.ravel())
    candidates = np.linspace(200.0, 4000.0, 77)
    misfit = [np.mean((rho - np.exp(-(d**2) / (2 * length**2))) ** 2) for length in candidates]
    return BackgroundErrorStats(std, corr, float(candidates[int(np.argmin(misfit))]), source)


def neighbourhood_channel_coupling(
    errors: np.ndarray, latitudes: np.ndarray, longitudes: np.ndarray, radius_km: float
) -> np.ndarray:
    """How strongly channel c' informs channel c within `radius_km`, (channel, channel) in [0, 1].

    For each displacement (whole grid steps, at most `radius_km` at the equator) the correlation
    of c at x with c' at x + d is taken at every point x, and its RMS over x; the factor is the
    largest over displacements. Unlike the correlation at one point it keeps balanced couplings
    whose extremes are offset: geostrophic height and wind errors are uncorrelated at a point
    (|corr| ≤ 0.01 for z500 and u500 in the shipped 24-h errors) but correlate at ~0.4 a quarter
    wavelength apart. Latitude displacements are not wrapped: rows shifted past a pole are left out.

    Args:
        errors: Background-error samples, (sample, channel, lat, lon).
    """
    e = torch.as_tensor(errors, dtype=torch.float64)
    e = e - e.mean(dim=0)
    z = e / e.std(dim=0, correction=0).clamp_min(1e-12)
    samples, channels, nlat, nlon = z.shape
    step_km = np.deg2rad([abs(latitudes[1] - latitudes[0]), 360.0 / nlon]) * EARTH_RADIUS_KM
    reach = np.floor(radius_km / step_km).astype(int)
    coupling = torch.zeros(channels, channels, dtype=torch.float64)
    for dy in range(-reach[0], reach[0] + 1):
        for dx in range(-reach[1], reach[1] + 1):
            if np.hypot(dy * step_km[0], dx * step_km[1]) > radius_km:
                continue
            rows = slice(max(0, dy), nlat + min(0, dy))
            here = z[:, :, rows].reshape(samples, channels, -1)
            there = torch.roll(z, (dy, dx), dims=(2, 3))[:, :, rows].reshape(samples, channels, -1)
            corr = torch.einsum("sap,sbp->abp", here, there) / samples
            coupling = torch.maximum(coupling, corr.pow(2).mean(dim=2).sqrt())
    coupling = (coupling + coupling.T) / 2  # a shift and its opposite pair (c, c') both ways
    return coupling.fill_diagonal_(1.0).numpy()


def optimal_localization(correlation: np.ndarray, members: int) -> np.ndarray:
    """The localisation factor that minimises the expected error of an N-member sample
    covariance whose true correlation is ρ: ρ² / (ρ² + (1 + ρ²)/N) (Ménétrier et al. 2015,
    Gaussian sampling). Strong couplings are kept almost whole; those near the sampling noise
    1/√N are damped. The diagonal stays 1."""
    rho2 = np.asarray(correlation, dtype=float) ** 2
    factor = rho2 / (rho2 + (1 + rho2) / members)
    np.fill_diagonal(factor, 1.0)  # a channel's own observations: the horizontal localisation only
    return factor


def dense_covariance(transform) -> Tensor:
    """B = U Uᵀ of a control transform as a dense matrix over (channel, lat, lon) — for tests on tiny grids."""
    sigma = transform.sigma
    eye = torch.eye(int(np.prod(transform.shape)), dtype=sigma.dtype, device=sigma.device)
    u = transform(eye.reshape(-1, *transform.shape))
    u = u.reshape(u.shape[0], -1).T  # columns: U e_k
    return u @ u.T


class ControlTransform:
    """U with B = U Uᵀ, applied to control vectors ``(batch, channel, lat·lon)``.

    Args:
        stats: Background-error statistics.
        latitudes: The grid's latitudes in degrees.
        longitudes: The grid's longitudes in degrees.
        scale: Multiplies the standard deviations (B scales with its square).
        length_scale_km: Overrides the fitted correlation length.
        dtype: The dtype of the stored square roots.
        device: Where the stored square roots live.
    """

    def __init__(
        self,
        stats: BackgroundErrorStats,
        latitudes: np.ndarray,
        longitudes: np.ndarray,
        scale: float = 1.0,
        length_scale_km: float | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ):
        length = length_scale_km or stats.length_scale_km
        self.nlat, self.nlon = len(latitudes), len(longitudes)
        self.g_sqrt = torch.as_tensor(
            symmetric_sqrt(gaussian_correlation(latitudes, longitudes, length)), dtype=dtype, device=device
        )
        self.c_sqrt = torch.as_tensor(symmetric_sqrt(stats.channel_correlation), dtype=dtype, device=device)
        sigma = scale * np.repeat(stats.std[:, :, None], self.nlon, axis=2).reshape(stats.std.shape[0], -1)
        self.sigma = torch.as_tensor(sigma, dtype=dtype, device=device)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.c_sqrt.shape[0], self.nlat * self.nlon)

    def __call__(self, v: Tensor) -> Tensor:
        """Increment ``(batch, channel, lat, lon)`` from control ``(batch, channel, lat·lon)``."""
        x = self.sigma * (self.c_sqrt @ v @ self.g_sqrt)
        return x.reshape(v.shape[0], -1, self.nlat, self.nlon)

    def dense(self) -> Tensor:
        return dense_covariance(self)


def gaussian_correlation(latitudes: np.ndarray, longitudes: np.ndarray, length_km: float) -> np.ndarray:
    """exp(−d²/2L²) of great-circle distance d between all grid points, (lat·lon, lat·lon)."""
    lat_g, lon_g = np.meshgrid(latitudes, longitudes, indexing="ij")
    d = great_circle_km(lat_g.ravel(), lon_g.ravel(), lat_g.ravel(), lon_g.ravel())
    return np.exp(-(d**2) / (2 * length_km**2))


class EnsembleControlTransform:
    """U with B = scale² (X Xᵀ / (N − 1)) ∘ L, applied to control vectors ``(batch, member, mode)``.

    U v = scale / √(N − 1) · Σ_k X_k ⊙ (L_r^{1/2} v_k), where X_k is error sample k (all channels)
    and L_r^{1/2} = V_r Λ_r^{1/2} keeps the leading eigenpairs of the localisation matrix holding
    `localization_variance` of its trace: L is smooth, so a few hundred modes suffice and the
    control vector stays small. The same L tapers every channel pair.

    Args:
        samples: Background-error samples, normalised, (sample, channel, lat, lon); their mean is removed.
        latitudes: The grid's latitudes in degrees.
        longitudes: The grid's longitudes in degrees.
        localization_km: Length of the Gaussian localisation.
        scale: Multiplies the standard deviations (B scales with its square).
        localization_variance: Fraction of L's trace its truncation keeps.
        dtype: The dtype of the stored factors.
        device: Where the stored factors live.
    """

    def __init__(
        self,
        samples: np.ndarray,
        latitudes: np.ndarray,
        longitudes: np.ndarray,
        localization_km: float,
        scale: float = 1.0,
        localization_variance: float = 0.99,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ):
        members = samples.shape[0]
        if members < 2:
            raise ValueError(f"an ensemble B needs at least 2 error samples; got {members}")
        if not 0 < localization_variance <= 1:
            raise ValueError(f"localization_variance must be in (0, 1]; got {localization_variance}")
        self.nlat, self.nlon = len(latitudes), len(longitudes)
        values, vectors = np.linalg.eigh(gaussian_correlation(latitudes, longitudes, localization_km))
        values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
        modes = int(np.searchsorted(np.cumsum(values) / values.sum(), localization_variance - 1e-12)) + 1
        l_sqrt = vectors[:, :modes] * np.sqrt(values[:modes])
        self.scale = scale
        self.l_sqrt_t = torch.as_tensor(l_sqrt.T.copy(), dtype=dtype, device=device)
        self.x = self._factor(torch.as_tensor(samples, dtype=dtype, device=device))
        self.sigma = self._std()
        self.modes = modes

    def _factor(self, samples: Tensor) -> Tensor:
        """scale / √(N − 1) × the samples' anomalies as (point, channel, member): one small
        matmul per point then applies Σ_k X_k ⊙ (·)_k."""
        members, channels = samples.shape[:2]
        anomalies = samples - samples.mean(dim=0, keepdim=True)
        x = self.scale / np.sqrt(members - 1) * anomalies.reshape(members, channels, -1)
        return x.permute(2, 1, 0).contiguous()

    def _std(self) -> Tensor:
        """sqrt(diag B), (channel, point): what adaptive variances rescale."""
        l_diag = self.l_sqrt_t.pow(2).sum(dim=0)  # diag of the truncated L, (point,)
        return (self.x.pow(2).sum(dim=2) * l_diag[:, None]).T.sqrt()

    def with_samples(self, samples: Tensor) -> EnsembleControlTransform:
        """The same localisation and scale over other samples (sample >= 2, channel, lat, lon)."""
        if samples.shape[0] < 2:
            raise ValueError(f"an ensemble B needs at least 2 error samples; got {samples.shape[0]}")
        out = copy.copy(self)  # shares the localisation factors
        out.x = self._factor(samples.to(self.x))
        out.sigma = out._std()
        return out

    def hybrid(self, perturbations: Tensor, weight: float) -> EnsembleControlTransform:
        """The transform of B_h = (1 − α) B + α (P_e ∘ L), P_e the sample covariance of an ensemble.

        The flow-dependent ensemble joins the static samples as extra columns of the same
        localised α control variable (Lorenc 2003; the hybrid 3DEnVar of operational centres).

        Args:
            perturbations: Ensemble members or perturbations (member, channel, lat, lon), in
                the transform's units; their mean is removed.
            weight: α in [0, 1], the ensemble covariance's share.
        """
        if not 0 <= weight <= 1:
            raise ValueError(f"the ensemble covariance weight must be in [0, 1]; got {weight}")
        members = perturbations.shape[0]
        if members < 2:
            raise ValueError(f"an ensemble covariance needs at least 2 members; got {members}")
        p = perturbations.to(self.x)
        p = p - p.mean(dim=0, keepdim=True)
        p = np.sqrt(weight / (members - 1)) * p.reshape(members, p.shape[1], -1).permute(2, 1, 0)
        out = copy.copy(self)  # shares the localisation factors
        out.x = torch.cat([np.sqrt(1 - weight) * self.x, p], dim=2).contiguous()
        out.sigma = out._std()
        return out

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x.shape[2], self.modes)

    def __call__(self, v: Tensor) -> Tensor:
        """Increment ``(batch, channel, lat, lon)`` from control ``(batch, member, mode)``."""
        weights = v @ self.l_sqrt_t  # (batch, member, point)
        x = torch.bmm(self.x, weights.permute(2, 1, 0))  # (point, channel, batch)
        return x.permute(2, 1, 0).reshape(v.shape[0], -1, self.nlat, self.nlon)

    def dense(self) -> Tensor:
        return dense_covariance(self)


def innovation_variance_ratio(
    departure: Tensor,
    error_std: Tensor,
    modelled: Tensor,
    weights: Tensor,
    bounds: tuple[float, float],
    min_observations: int,
) -> Tensor:
    """Per-channel ratio of the background variance the innovations imply to the modelled one.

    Since E[d²] = σ_o² + (background variance at the observation) (Desroziers et al. 2005),
    the ratio of channel c is Σ w_c (d² − σ_o²) / Σ w_c · modelled, clipped to `bounds`;
    channels with fewer than `min_observations` observations get 1.

    Args:
        departure: y − H(x_b), shape (obs,).
        error_std: σ_o, shape (obs,).
        modelled: The modelled background variance at each observation, shape (obs,).
        weights: How much each observation belongs to each channel, shape (channel, obs).
    """
    excess = departure.pow(2) - error_std.to(departure.dtype).pow(2)
    ratio = (weights @ excess) / (weights @ modelled).clamp_min(torch.finfo(departure.dtype).tiny)
    ratio = ratio.clamp(*bounds)
    return torch.where(weights.sum(dim=1) >= min_observations, ratio, torch.ones_like(ratio))


def error_statistics(context: MethodContext) -> BackgroundErrorStats:
    """The run's B statistics, or a clear error if the context has none."""
    if context.background_error is None:
        raise ValueError("this method needs background-error statistics (context.background_error)")
    stats = context.background_error
    return BackgroundErrorStats.from_dict(stats) if isinstance(stats, dict) else stats


# The ensemble B's localisation: the 3dvar default, and the hybrids' 3D-Var.
ENSEMBLE_LOCALIZATION_KM = 1500.0


def static_transform(
    context: MethodContext, scale: float, length_scale_km: float | None = None
) -> ControlTransform:
    """The Gaussian (separable) B of the run's training-set statistics, scaled by `scale`."""
    return ControlTransform(
        error_statistics(context),
        context.latitudes,
        context.longitudes,
        scale,
        length_scale_km,
        device=context.device,
    )


def ensemble_transform(
    context: MethodContext, scale: float, localization_km: float, what: str
) -> EnsembleControlTransform:
    """The localised training-set-error B of the run, scaled by `scale`; `what` names who needs it."""
    return EnsembleControlTransform(
        context.error_samples(what),
        context.latitudes,
        context.longitudes,
        localization_km,
        scale,
        device=context.device,
    )
