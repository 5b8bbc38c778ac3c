"""Held–Suarez dry primitive-equation model on the dinosaur-torch spectral core.

This is the physical "nature run" behind the embedded default truth. The dynamical
core (spectral transforms, semi-implicit primitive equations, SIL3 IMEX stepping)
comes from ``dinosaur-torch``; this module adds what that package leaves out:

* the Held & Suarez (1994) forcing: Newtonian cooling towards a zonally symmetric
  radiative-equilibrium temperature and Rayleigh friction in the boundary layer;
* an isothermal resting initial state with seeded surface-pressure noise;
* diagnosis of ERA5-like fields on pressure levels (geopotential from the
  hydrostatic/hypsometric relation, then interpolation in log-pressure).

Tensors only: no files, no xarray. States are dinosaur ``State`` pytrees of spectral
coefficients; diagnosed fields are nodal tensors laid out (level, longitude, latitude)
as dinosaur does, in SI units.

Reference: Held, I. M. & Suarez, M. J. (1994). A proposal for the intercomparison of
the dynamical cores of atmospheric general circulation models. BAMS 75, 1825–1830.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from dinosaur_torch import (
    coordinate_systems,
    primitive_equations,
    sigma_coordinates,
    spherical_harmonic,
    time_integration,
    units,
)
from dinosaur_torch.scales import units as u
from torch import nn

State = primitive_equations.State

RESOLUTIONS = {"T21": spherical_harmonic.GridSpec.T21, "T42": spherical_harmonic.GridSpec.T42}
P0_PA = 1.0e5  # reference surface pressure of Held & Suarez
REFERENCE_TEMPERATURE_K = 288.0


@dataclasses.dataclass(frozen=True)
class HeldSuarezConfig:
    """Everything that defines the model's trajectory (hashed into cache keys).

    Attributes:
        resolution: Spectral truncation, "T21" (32×64 Gaussian) or "T42" (64×128).
        layers: Number of equidistant sigma layers.
        dt_minutes: Time step of the SIL3 integrator.
        filter_tau: Exponential filter time scale in dinosaur's nondimensional units.
        filter_order: Exponential filter order.
        filter_cutoff: Fraction of the maximum wavenumber where filtering starts.
    """

    resolution: str = "T21"
    layers: int = 8
    dt_minutes: float = 30.0
    filter_tau: float = 0.0087504
    filter_order: float = 1.5
    filter_cutoff: float = 0.8

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution {self.resolution!r}; choose one of {sorted(RESOLUTIONS)}")
        if (6 * 60) % self.dt_minutes:
            raise ValueError(f"dt_minutes={self.dt_minutes} must divide 6 hours")

    @property
    def steps_per_6h(self) -> int:
        return round(6 * 60 / self.dt_minutes)


class HeldSuarezForcing(time_integration.ExplicitODE):
    """Held–Suarez (1994) Newtonian cooling and boundary-layer Rayleigh friction."""

    def __init__(self, coords: coordinate_systems.CoordinateSystem, sim: units.SimUnits):
        grid = coords.horizontal
        self.grid = grid
        nd = sim.nondimensionalize
        ref = grid.cos_lat
        sigma = torch.as_tensor(coords.vertical.coordinates.centers, dtype=ref.dtype)
        _, sin_lat = grid.spec.nodal_axes
        sin_lat = torch.as_tensor(sin_lat, dtype=ref.dtype)
        cos_lat = torch.sqrt(1 - sin_lat**2)

        k_f = nd(1.0 / u.day)
        k_a = nd(1.0 / (40 * u.day))
        k_s = nd(1.0 / (4 * u.day))
        # Forcing is switched on below sigma_b = 0.7 (the "boundary layer").
        boundary_layer = torch.clamp((sigma - 0.7) / 0.3, min=0.0)
        self.k_v = (k_f * boundary_layer)[:, None, None]  # (level, 1, 1)
        self.k_t = k_a + (k_s - k_a) * boundary_layer[:, None, None] * cos_lat**4  # (level, 1, lat)
        self.sigma = sigma[:, None, None]
        self.sin2_lat = sin_lat**2
        self.cos2_lat = cos_lat**2
        self.t_ref = nd(REFERENCE_TEMPERATURE_K * u.degK)
        self.p0 = nd(P0_PA * u.pascal)
        self.t_min = nd(200.0 * u.degK)
        self.t_max = nd(315.0 * u.degK)
        self.dt_y = nd(60.0 * u.degK)
        self.dtheta_z = nd(10.0 * u.degK)
        self.kappa = sim.kappa

    def equilibrium_temperature(self, surface_pressure: torch.Tensor) -> torch.Tensor:
        """T_eq(lat, p), nondimensional, shape (level, lon, lat)."""
        p_ratio = self.sigma * surface_pressure / self.p0
        t_eq = p_ratio**self.kappa * (
            self.t_max - self.dt_y * self.sin2_lat - self.dtheta_z * torch.log(p_ratio) * self.cos2_lat
        )
        return torch.clamp(t_eq, min=self.t_min)

    def explicit_terms(self, state: State) -> State:
        grid = self.grid
        temperature = grid.to_nodal(state.temperature_variation) + self.t_ref
        surface_pressure = torch.exp(grid.to_nodal(state.log_surface_pressure))
        cooling = -self.k_t * (temperature - self.equilibrium_temperature(surface_pressure))
        return State(
            vorticity=-self.k_v * state.vorticity,
            divergence=-self.k_v * state.divergence,
            temperature_variation=grid.to_modal(cooling),
            log_surface_pressure=torch.zeros_like(state.log_surface_pressure),
            sim_time=None,
        )


class HeldSuarezModel(nn.Module):
    """The Held–Suarez atmosphere: stepping and diagnosis of ERA5-like fields.

    Args:
        config: Model configuration.
    """

    def __init__(self, config: HeldSuarezConfig = HeldSuarezConfig()):
        super().__init__()
        self.config = config
        self.sim = units.SimUnits.from_si()
        spec = RESOLUTIONS[config.resolution](radius=self.sim.radius)
        grid = spherical_harmonic.Grid(spec)
        vertical = sigma_coordinates.SigmaLevels(
            sigma_coordinates.SigmaCoordinates.equidistant(config.layers)
        )
        self.coords = coordinate_systems.CoordinateSystem(grid, vertical)
        self.dynamics = primitive_equations.PrimitiveEquations(
            np.full(config.layers, REFERENCE_TEMPERATURE_K),
            torch.zeros(grid.modal_shape),
            self.coords,
            self.sim,
        )
        self.forcing = HeldSuarezForcing(self.coords, self.sim)
        dt = self.sim.nondimensionalize(config.dt_minutes * u.minute)
        equation = time_integration.compose_equations([self.dynamics, self.forcing])
        self._step = time_integration.step_with_filters(
            time_integration.imex_rk_sil3(equation, dt),
            [
                time_integration.exponential_step_filter(
                    grid, dt, config.filter_tau, config.filter_order, config.filter_cutoff
                )
            ],
        )
        self.geopotential = primitive_equations.Geopotential(vertical.coordinates, self.sim.g, self.sim.R)

    @property
    def grid(self) -> spherical_harmonic.Grid:
        return self.coords.horizontal

    @property
    def latitudes_deg(self) -> np.ndarray:
        """Gaussian latitudes in degrees, increasing (south to north)."""
        return np.degrees(self.grid.spec.latitudes)

    @property
    def longitudes_deg(self) -> np.ndarray:
        return np.degrees(self.grid.spec.longitudes)

    def rest_state(self, generator: torch.Generator) -> State:
        """An isothermal atmosphere at rest with 1e-3 relative surface-pressure noise."""
        modal = self.coords.modal_shape
        nodal_shape = self.coords.surface_nodal_shape
        log_ps = np.log(self.sim.nondimensionalize(P0_PA * u.pascal))
        noise = 1e-3 * torch.randn(nodal_shape, generator=generator)
        return State(
            vorticity=torch.zeros(modal),
            divergence=torch.zeros(modal),
            temperature_variation=torch.zeros(modal),
            log_surface_pressure=self.grid.to_modal(log_ps + noise),
            sim_time=None,
        )

    def perturb(self, state: State, kelvin: float, generator: torch.Generator) -> State:
        """Adds white noise of `kelvin` standard deviation to the temperature."""
        noise = self.sim.nondimensionalize(kelvin * u.degK) * torch.randn(
            self.coords.nodal_shape, generator=generator
        )
        return dataclasses.replace(
            state, temperature_variation=state.temperature_variation + self.grid.to_modal(noise)
        )

    @torch.no_grad()
    def advance(self, state: State, steps: int) -> State:
        """Integrates `steps` time steps."""
        for _ in range(steps):
            state = self._step(state)
        return state

    @torch.no_grad()
    def advance_6h(self, state: State) -> State:
        return self.advance(state, self.config.steps_per_6h)

    @torch.no_grad()
    def diagnose(self, state: State, levels_hpa: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """ERA5-like fields in SI units on pressure levels.

        Args:
            state: Spectral model state.
            levels_hpa: Target pressure levels in hPa.

        Returns:
            ``geopotential`` (m² s⁻²), ``temperature`` (K), ``u_component_of_wind`` and
            ``v_component_of_wind`` (m s⁻¹), each (level, longitude, latitude), and
            ``surface_pressure`` (Pa), (longitude, latitude).
        """
        sim, grid = self.sim, self.grid
        temperature = grid.to_nodal(state.temperature_variation) + sim.nondimensionalize(
            REFERENCE_TEMPERATURE_K * u.degK
        )
        u_wind, v_wind = grid.vor_div_to_uv_nodal(state.vorticity, state.divergence)
        surface_pressure = torch.exp(grid.to_nodal(state.log_surface_pressure))[0]
        geopotential = self.geopotential(temperature, torch.zeros(grid.nodal_shape))

        sigma = torch.as_tensor(self.coords.vertical.coordinates.centers, dtype=temperature.dtype)
        log_p = torch.log(sigma[:, None, None] * surface_pressure)  # (level, lon, lat)
        target = torch.log(
            torch.as_tensor(
                [sim.nondimensionalize(p * 100 * u.pascal) for p in levels_hpa],
                dtype=temperature.dtype,
            )
        )
        # Geopotential is zero at the surface (no orography): add it as an extra level so
        # levels below the lowest model level interpolate rather than extrapolate.
        log_p_z = torch.cat([log_p, torch.log(surface_pressure)[None]], dim=0)
        z_ext = torch.cat([geopotential, torch.zeros_like(geopotential[:1])], dim=0)

        out = {
            "geopotential": _interp_levels(target, log_p_z, z_ext),
            "temperature": _interp_levels(target, log_p, temperature),
            "u_component_of_wind": _interp_levels(target, log_p, u_wind),
            "v_component_of_wind": _interp_levels(target, log_p, v_wind),
        }
        scale = {
            "geopotential": u.m**2 / u.s**2,
            "temperature": u.degK,
            "u_component_of_wind": u.m / u.s,
            "v_component_of_wind": u.m / u.s,
        }
        result = {k: _to_si(sim, v, scale[k]) for k, v in out.items()}
        result["surface_pressure"] = _to_si(sim, surface_pressure, u.pascal)
        return result


def _to_si(sim: units.SimUnits, value: torch.Tensor, unit) -> torch.Tensor:
    factor = sim.dimensionalize(1.0, unit).m
    return value * factor


def _interp_levels(target: torch.Tensor, source: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along axis 0 with linear extrapolation at both ends.

    Args:
        target: Target coordinates, shape (k,), increasing.
        source: Source coordinates per column, shape (n, lon, lat), increasing along axis 0.
        values: Values at `source`, shape (n, lon, lat).

    Returns:
        Values at `target`, shape (k, lon, lat).
    """
    n = source.shape[0]
    tgt = target[:, None, None].expand(-1, *source.shape[1:]).contiguous()
    idx = torch.searchsorted(source.permute(1, 2, 0).contiguous(), tgt.permute(1, 2, 0).contiguous())
    idx = idx.permute(2, 0, 1).clamp(1, n - 1)
    x0, x1 = source.gather(0, idx - 1), source.gather(0, idx)
    y0, y1 = values.gather(0, idx - 1), values.gather(0, idx)
    weight = (tgt - x0) / (x1 - x0)
    return y0 + weight * (y1 - y0)
