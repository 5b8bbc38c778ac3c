"""Observation operators and networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cycler_da.regrid import gaussian_grid
from observation_ops.networks import NetworkSpec, network_locations
from observation_ops.operator import PointObservationOperator

GRID = gaussian_grid(8)


def _operator(n: int = 40, seed: int = 0) -> PointObservationOperator:
    rng = np.random.default_rng(seed)
    return PointObservationOperator(
        rng.integers(0, 3, n),
        rng.uniform(-90, 90, n),
        rng.uniform(-180, 360, n),
        GRID.latitudes,
        GRID.longitudes,
    )


def test_on_grid_points_select_exactly():
    x = torch.randn(2, 3, *GRID.shape, dtype=torch.float64)
    h = PointObservationOperator(
        np.array([0, 2, 1]),
        GRID.latitudes[[0, 3, 7]],
        GRID.longitudes[[5, 0, 15]],
        GRID.latitudes,
        GRID.longitudes,
    )
    expected = torch.stack([x[:, 0, 0, 5], x[:, 2, 3, 0], x[:, 1, 7, 15]], dim=1)
    torch.testing.assert_close(h(x), expected)


def test_interpolation_is_exact_for_linear_fields_and_wraps():
    lon = GRID.longitudes
    # A field linear in latitude: bilinear interpolation reproduces it between rows.
    field = torch.as_tensor(np.repeat(GRID.latitudes[:, None], len(lon), 1))[None, None]
    h = PointObservationOperator(
        np.zeros(3, int), np.array([-10.0, 5.5, 30.0]), np.array([3.0, 359.0, -1.0]), GRID.latitudes, lon
    )
    torch.testing.assert_close(h(field)[0], torch.tensor([-10.0, 5.5, 30.0], dtype=torch.float64))
    # Longitude 359 lies between the last column (337.5) and the first (0): periodic weights.
    const_cols = torch.zeros(1, 1, *GRID.shape, dtype=torch.float64)
    const_cols[..., 0] = 1.0
    value = float(
        PointObservationOperator(np.array([0]), np.array([0.0]), np.array([359.0]), GRID.latitudes, lon)(
            const_cols
        )
    )
    assert value == pytest.approx((359.0 - 337.5) / 22.5)


def test_adjoint_consistency():
    """⟨Hx, y⟩ = ⟨x, Hᵀy⟩ with Hᵀ from autograd."""
    h = _operator()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, *GRID.shape, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(1, len(h), dtype=torch.float64, generator=g)
    (hty,) = torch.autograd.grad((h(x) * y).sum(), x)
    with torch.no_grad():
        assert float((h(x) * y).sum()) == pytest.approx(float((x * hty).sum()), rel=1e-12)


def test_subset_and_errors():
    h = _operator()
    keep = np.arange(len(h)) % 2 == 0
    x = torch.randn(1, 3, *GRID.shape, dtype=torch.float64)
    torch.testing.assert_close(h.subset(keep)(x), h(x)[:, keep])
    with pytest.raises(ValueError, match="not the operator's"):
        h(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="within \\[-90, 90\\]"):
        PointObservationOperator(
            np.array([0]), np.array([91.0]), np.array([0.0]), GRID.latitudes, GRID.longitudes
        )


def test_networks():
    lat, lon = GRID.latitudes, GRID.longitudes
    cols = NetworkSpec("columns", (0, 1, 2), fraction=0.25)
    c, la, lo = network_locations(cols, 7, lat, lon)
    assert len(c) == 3 * round(0.25 * 128)
    again = network_locations(cols, 7, lat, lon)
    assert all(np.array_equal(a, b) for a, b in zip((c, la, lo), again, strict=True))  # seeded per window
    other = network_locations(cols, 8, lat, lon)
    assert not np.array_equal(la, other[1]) or not np.array_equal(lo, other[2])  # resampled
    fixed = NetworkSpec("columns", (0,), fraction=0.25, resample=False)
    assert np.array_equal(network_locations(fixed, 1, lat, lon)[2], network_locations(fixed, 2, lat, lon)[2])
    stations = network_locations(NetworkSpec("stations", (0, 2), stations=30), 3, lat, lon)
    assert len(stations[0]) == 60 and set(stations[0]) == {0, 2}
    elements = network_locations(NetworkSpec("elements", (0, 1, 2), fraction=0.5), 0, lat, lon)
    assert 0.35 < len(elements[0]) / (3 * 128) < 0.65
    s1 = network_locations(NetworkSpec("swaths", (0,), fraction=1.0, swaths=1, swath_width=30), 0, lat, lon)
    s2 = network_locations(NetworkSpec("swaths", (0,), fraction=1.0, swaths=1, swath_width=30), 1, lat, lon)
    assert len(s1[0]) > 0 and not np.array_equal(np.sort(s1[2]), np.sort(s2[2]))  # the swath moves
    with pytest.raises(ValueError, match="unknown observation network kind 'radar'"):
        NetworkSpec("radar", (0,))
