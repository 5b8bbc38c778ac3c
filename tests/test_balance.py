"""The balance operators on the grid (geostrophic, hydrostatic, thermal wind), in SI units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cycler_da.core.balance import EARTH_RADIUS_M, OMEGA, R_DRY, Balance, latitude_derivative
from cycler_da.regrid import gaussian_grid

LABELS = ("z500", "z850", "t500", "t850", "u500", "v500", "u850", "v850")  # conftest's BALANCE_LABELS


def _relative(residual: torch.Tensor, reference: torch.Tensor) -> float:
    return float(residual.square().mean().sqrt() / reference.square().mean().sqrt())


def test_the_latitude_derivative_is_exact_for_quartics_on_a_gaussian_grid():
    lat = gaussian_grid(32).latitudes
    phi = np.radians(lat)
    np.testing.assert_allclose(latitude_derivative(lat) @ phi**4, 4 * phi**3, atol=1e-10)


def test_balance_is_zero_for_a_balanced_state_and_large_for_a_perturbed_one(balanced_state):
    state, lat = balanced_state
    balance = Balance(LABELS, lat)
    assert balance.geostrophic_levels == [500, 850] and balance.hydrostatic_layers == [(500, 850)]
    ours = balance.relative_imbalance(state)
    assert float(ours["geostrophic"]) < 2e-3
    assert float(ours["hydrostatic"]) < 1e-12
    perturbed = state.clone()
    perturbed[:, LABELS.index("u500")] = perturbed[:, LABELS.index("u500")].roll(7, -1)
    perturbed[:, LABELS.index("t500")] += 2.0
    theirs = balance.relative_imbalance(perturbed)
    assert float(theirs["geostrophic"]) > 100 * float(ours["geostrophic"])
    assert float(theirs["hydrostatic"]) > 1e-3


def test_thermal_wind_is_zero_for_a_balanced_state_and_large_for_a_perturbed_one(balanced_state):
    state, lat = balanced_state
    balance = Balance(LABELS, lat)
    assert balance.thermal_layers == [(500, 850)]
    shear = (
        state[:, [LABELS.index("u500"), LABELS.index("v500")]]
        - state[:, [LABELS.index("u850"), LABELS.index("v850")]]
    )
    balanced = balance.thermal_wind(state)
    assert balanced.shape == (1, 1, 2, *state.shape[-2:])
    assert _relative(balanced, shear) < 2e-3  # fourth-order differences of smooth fields
    warmer = state.clone()
    # a temperature wave the winds know nothing of; a uniform warming would leave k × ∇T̄ unchanged
    warmer[:, LABELS.index("t500")] += 5.0 * torch.cos(torch.linspace(0, 6 * np.pi, state.shape[-1]))
    assert _relative(balance.thermal_wind(warmer), shear) > 100 * _relative(balanced, shear)
    assert float(balance.relative_imbalance(state)["thermal"]) < 2e-3
    assert float(balance.relative_imbalance(warmer)["thermal"]) > 0.1
    uniform = state.clone()
    uniform[:, LABELS.index("t500")] += 5.0
    torch.testing.assert_close(balance.thermal_wind(uniform), balanced)


def test_layers_need_every_variable_at_both_levels():
    balance = Balance(
        ["z500", "z850", "u250", "v250", "u500", "v500", "t500", "u850", "v850", "t850"],
        np.linspace(-80, 80, 8),
    )
    assert balance.geostrophic_levels == [500, 850]
    assert balance.thermal_layers == [(500, 850)]  # 250 hPa has winds but no temperature


def test_residual_rms_in_si_units():
    grid = gaussian_grid(32)
    lat, lon = np.radians(grid.latitudes)[:, None], np.radians(grid.longitudes)[None, :]
    labels = ["z500", "z850", "t500", "t850", "u500", "v500"]
    balance = Balance(labels, grid.latitudes)
    # Φ500 = C cos 2λ + const with its geostrophic wind v_g = −2C sin 2λ / (f a cos φ), u_g = 0
    f = 2 * OMEGA * np.sin(lat)
    v_g = -2 * 5000.0 * np.sin(2 * lon) / (f * EARTH_RADIUS_M * np.cos(lat))
    z850 = np.full(grid.shape, 13000.0)
    z500 = z850 + R_DRY * 265.0 * np.log(850 / 500) + 5000.0 * np.cos(2 * lon)
    t500 = 250.0 + 5000.0 * np.cos(2 * lon) / (R_DRY * np.log(850 / 500)) * 2  # keeps the layer hydrostatic
    fields = {"z500": z500, "z850": z850, "t500": t500, "t850": np.full(grid.shape, 280.0), "u500": 0 * z500}
    fields = {k: np.broadcast_to(v, grid.shape) for k, v in fields.items()}
    balanced = balance.residual_rms(torch.as_tensor(np.stack([*fields.values(), v_g])))
    at_rest = balance.residual_rms(torch.as_tensor(np.stack([*fields.values(), 0 * v_g])))
    assert float(balanced["geostrophic"]) < 1e-3 * float(at_rest["geostrophic"])
    assert float(balanced["hydrostatic"]) < 1e-9
    fields["z500"] = fields["z500"] + 30.0  # 30 m² s⁻² too thick everywhere
    thick = balance.residual_rms(torch.as_tensor(np.stack([*fields.values(), v_g])))
    assert float(thick["hydrostatic"]) == pytest.approx(30.0)
