"""Balance of a state on the global lat-lon grid: geostrophic and hydrostatic, in SI units.

One implementation for every user: `cycler verify`'s balance diagnostics, Align-DA's physics
reward, PhyDA's residual loss. Everything is a differentiable torch function of a state in
physical units ``(..., channel, lat, lon)``.

* Geostrophic imbalance at each level that has z, u and v:
  (u − u_g, v − v_g), u_g = −(1/f a) ∂Φ/∂φ, v_g = (1/(f a cos φ)) ∂Φ/∂λ, f = 2Ω sin φ,
  masked within ``band`` degrees of the equator, where f → 0.
* Hydrostatic imbalance between adjacent levels that have z and t:
  (Φ_top − Φ_bottom) − R_d T̄ ln(p_bottom / p_top), T̄ the mean of the two levels' temperatures.
* Thermal-wind imbalance between adjacent levels that have u, v and t: the wind shear
  (u_top − u_bottom, v_top − v_bottom) minus R_d ln(p_bottom / p_top)/f · k × ∇T̄, masked as the
  geostrophic terms (with the default channels only 500/850 hPa: 250 hPa has no temperature).

Derivatives are fourth-order: centred and periodic in longitude, five-point in latitude
(off-centre at the two rows next to each pole; exact for quartics on any latitude spacing, so
Gaussian grids are fine). A relative imbalance is the area-weighted RMS residual over the
RMS of what it is measured against (the wind; the thickness), so it is unitless.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from cycler_da.core.channels import channels

EARTH_RADIUS_M = 6.371e6
OMEGA = 7.292e-5
R_DRY = 287.05
TERMS = ("geostrophic", "hydrostatic", "thermal")
VECTOR_TERMS = ("geostrophic", "thermal")  # (u, v) residuals, masked near the equator


def latitude_derivative(latitudes: np.ndarray) -> np.ndarray:
    """(lat, lat) matrix D with (D f)_i ≈ ∂f/∂φ at latitude i (φ in radians), five points per row."""
    phi = np.radians(np.asarray(latitudes, dtype=np.float64))
    n = len(phi)
    if n < 5:
        raise ValueError(f"a fourth-order latitude derivative needs at least 5 latitudes; got {n}")
    matrix = np.zeros((n, n))
    for i in range(n):
        first = min(max(i - 2, 0), n - 5)
        offsets = phi[first : first + 5] - phi[i]
        # Weights w with Σ w_j offset_j^k = [k == 1] for k = 0..4 (exact for quartics).
        vandermonde = np.vander(offsets, 5, increasing=True).T
        target = np.zeros(5)
        target[1] = 1.0
        matrix[i, first : first + 5] = np.linalg.solve(vandermonde, target)
    return matrix


def longitude_derivative(field: Tensor) -> Tensor:
    """∂f/∂λ (λ in radians) of ``(..., lat, lon)`` on a periodic, equally spaced longitude axis."""
    step = 2 * np.pi / field.shape[-1]
    east1, west1 = field.roll(-1, -1), field.roll(1, -1)
    east2, west2 = field.roll(-2, -1), field.roll(2, -1)
    return (8 * (east1 - west1) - (east2 - west2)) / (12 * step)


class Balance:
    """The balance operators of one grid and channel set.

    Args:
        labels: The state's channel labels (e.g. ``z500``, ``u500``, ``v500``, ``t850``).
        latitudes: Grid latitudes in degrees, pole to pole (either direction).
        band: Half-width in degrees of the equatorial band left out of the geostrophic terms.

    Attributes:
        geostrophic_levels: Levels (hPa) with z, u and v.
        hydrostatic_layers: Adjacent (top, bottom) levels in hPa, both with z and t.
        thermal_layers: Adjacent (top, bottom) levels in hPa, both with u, v and t.
    """

    def __init__(self, labels: list[str] | tuple[str, ...], latitudes: np.ndarray, band: float = 15.0):
        self.index = {(c.variable.short, c.level): i for i, c in enumerate(channels(list(labels)))}
        levels = sorted({level for (_, level) in self.index if level is not None})
        self.geostrophic_levels = [p for p in levels if all((v, p) in self.index for v in ("z", "u", "v"))]
        thermal = [p for p in levels if ("z", p) in self.index and ("t", p) in self.index]
        self.hydrostatic_layers = list(itertools.pairwise(thermal))
        sheared = [p for p in levels if all((v, p) in self.index for v in ("u", "v", "t"))]
        self.thermal_layers = list(itertools.pairwise(sheared))
        self.latitudes = np.array(latitudes, dtype=np.float64)
        self.band = band
        self._dphi = latitude_derivative(self.latitudes)

    @property
    def terms(self) -> list[str]:
        """The residual terms the channels support, in :data:`TERMS` order."""
        present = {
            "geostrophic": self.geostrophic_levels,
            "hydrostatic": self.hydrostatic_layers,
            "thermal": self.thermal_layers,
        }
        return [term for term in TERMS if present[term]]

    def residuals(self, state: Tensor, terms: list[str] | tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Each term's residual field in SI units (:meth:`geostrophic`, :meth:`hydrostatic`,
        :meth:`thermal_wind`); `terms` default to all the channels support."""
        operator = {
            "geostrophic": self.geostrophic,
            "hydrostatic": self.hydrostatic,
            "thermal": self.thermal_wind,
        }
        return {term: operator[term](state) for term in (self.terms if terms is None else terms)}

    def _geometry(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """f (1 inside the band, where the terms are masked: no division by ~0), cos φ, the
        band mask and the latitude derivative, each on `like`'s dtype and device."""
        lat = torch.as_tensor(self.latitudes, dtype=like.dtype, device=like.device)
        phi = torch.deg2rad(lat)
        mask = (lat.abs() >= self.band).to(like.dtype)
        coriolis = torch.where(mask > 0, 2 * OMEGA * torch.sin(phi), torch.ones_like(phi))
        dphi = torch.as_tensor(self._dphi, dtype=like.dtype, device=like.device)
        return coriolis, torch.cos(phi), mask, dphi

    def geostrophic(self, state: Tensor) -> Tensor:
        """(u − u_g, v − v_g) in m/s, ``(..., level, 2, lat, lon)``, zero in the equatorial band."""
        index = self.index
        coriolis, cos_phi, mask, dphi = self._geometry(state)
        f = coriolis[:, None]
        out = []
        for p in self.geostrophic_levels:
            z, u, v = (state[..., index[(name, p)], :, :] for name in ("z", "u", "v"))
            u_g = -torch.einsum("ij,...jk->...ik", dphi, z) / (f * EARTH_RADIUS_M)
            v_g = longitude_derivative(z) / (f * EARTH_RADIUS_M * cos_phi[:, None])
            out.append(torch.stack([u - u_g, v - v_g], dim=-3) * mask[:, None])
        return torch.stack(out, dim=-4)

    def thickness(self, state: Tensor) -> Tensor:
        """Φ_top − Φ_bottom of each layer in m²/s², ``(..., layer, lat, lon)``."""
        z = {p: state[..., self.index[("z", p)], :, :] for layer in self.hydrostatic_layers for p in layer}
        return torch.stack([z[top] - z[bottom] for top, bottom in self.hydrostatic_layers], dim=-3)

    def hydrostatic(self, state: Tensor) -> Tensor:
        """Thickness minus R_d T̄ ln(p_bottom/p_top) in m²/s², ``(..., layer, lat, lon)``."""
        index = self.index
        out = []
        for thickness, (top, bottom) in zip(
            self.thickness(state).unbind(-3), self.hydrostatic_layers, strict=True
        ):
            mean_t = 0.5 * (state[..., index[("t", top)], :, :] + state[..., index[("t", bottom)], :, :])
            out.append(thickness - R_DRY * mean_t * float(np.log(bottom / top)))
        return torch.stack(out, dim=-3)

    def shear(self, state: Tensor) -> Tensor:
        """(u_top − u_bottom, v_top − v_bottom) of each thermal layer in m/s, ``(..., layer, 2, lat, lon)``."""
        wind = [
            torch.stack(
                [
                    state[..., self.index[(v, top)], :, :] - state[..., self.index[(v, bottom)], :, :]
                    for v in "uv"
                ],
                dim=-3,
            )
            for top, bottom in self.thermal_layers
        ]
        return torch.stack(wind, dim=-4)

    def thermal_wind(self, state: Tensor) -> Tensor:
        """Wind shear minus the thermal wind in m/s, ``(..., layer, 2, lat, lon)``, zero in the equatorial band."""
        index = self.index
        coriolis, cos_phi, mask, dphi = self._geometry(state)
        out = []
        for shear, (top, bottom) in zip(self.shear(state).unbind(-4), self.thermal_layers, strict=True):
            mean_t = 0.5 * (state[..., index[("t", top)], :, :] + state[..., index[("t", bottom)], :, :])
            factor = R_DRY * float(np.log(bottom / top)) / (coriolis[:, None] * EARTH_RADIUS_M)
            u_thermal = -factor * torch.einsum("ij,...jk->...ik", dphi, mean_t)
            v_thermal = factor * longitude_derivative(mean_t) / cos_phi[:, None]
            out.append((shear - torch.stack([u_thermal, v_thermal], dim=-3)) * mask[:, None])
        return torch.stack(out, dim=-4)

    def _area_rms(self, field: Tensor, weights: Tensor) -> Tensor:
        dims = (-2, -1)
        return torch.sqrt((field.square() * weights).sum(dims) / weights.expand_as(field).sum(dims))

    def residual_rms(self, state: Tensor) -> dict[str, Tensor]:
        """Area-weighted RMS residuals in SI units, each ``(...)``, over all levels or layers:
        ``geostrophic`` and ``thermal`` in m/s (outside the equatorial band), ``hydrostatic`` in m² s⁻²."""
        _, cos_phi, mask, _ = self._geometry(state)
        result = {}
        for term, residual in self.residuals(state).items():
            vector = term in VECTOR_TERMS
            weights = cos_phi * mask if vector else cos_phi
            field = (residual.square().sum(-3) if vector else residual.square()).mean(
                -3
            )  # over levels or layers
            result[term] = torch.sqrt(
                (field * weights[:, None]).sum((-2, -1)) / (weights.sum() * field.shape[-1])
            )
        return result

    def relative_imbalance(self, state: Tensor) -> dict[str, Tensor]:
        """Unitless imbalances, each ``(...)``: ``geostrophic`` (RMS residual wind over RMS wind,
        mean over levels), ``hydrostatic`` (RMS residual over RMS thickness, mean over layers) and
        ``thermal`` (RMS residual shear over RMS wind shear, mean over layers), where the channels allow."""
        index = self.index
        _, cos_phi, mask, _ = self._geometry(state)
        result = {}
        if self.geostrophic_levels:
            weights = (cos_phi * mask)[:, None]
            residual = self._area_rms(self.geostrophic(state).square().sum(-3).sqrt(), weights)
            wind = torch.stack(
                [
                    torch.sqrt(
                        state[..., index[("u", p)], :, :] ** 2 + state[..., index[("v", p)], :, :] ** 2
                    )
                    for p in self.geostrophic_levels
                ],
                dim=-3,
            )
            result["geostrophic"] = (residual / self._area_rms(wind, weights)).mean(-1)
        if self.hydrostatic_layers:
            weights = cos_phi[:, None]
            residual = self._area_rms(self.hydrostatic(state), weights)
            result["hydrostatic"] = (residual / self._area_rms(self.thickness(state), weights)).mean(-1)
        if self.thermal_layers:
            weights = (cos_phi * mask)[:, None]
            residual = self._area_rms(self.thermal_wind(state).square().sum(-3).sqrt(), weights)
            shear = self.shear(state).square().sum(-3).sqrt()
            result["thermal"] = (residual / self._area_rms(shear, weights)).mean(-1)
        return result


def balance_score(imbalance: Tensor, reference: Tensor, floor: float = 1e-6) -> Tensor:
    """1 where a state's relative imbalance equals the reference's (the truth's), falling
    towards 0 as they part: 2 σ(−|D − D_ref| / D_ref) (Align-DA's Geo-Score form)."""
    reference = reference.clamp_min(floor)
    return 2 * torch.sigmoid(-(imbalance - reference).abs() / reference)
