"""Regridding a real dataset onto the model grid."""

from __future__ import annotations

import numpy as np
import pytest

from cycler_da.regrid import gaussian_grid, regrid
from cycler_da.state import Grid


def _area_mean(da, grid: Grid) -> float:
    w = grid.area_weights()[:, None]
    return float((da * w).mean(["latitude", "longitude"]).mean())


@pytest.mark.parametrize("method", ["conservative", "linear"])
def test_era5_to_t21(era5, method):
    t21 = gaussian_grid(32)
    out = regrid(era5, t21, method)
    assert out.sizes["latitude"] == 32 and out.sizes["longitude"] == 64
    assert not out["geopotential"].isnull().any()
    src = _area_mean(era5["geopotential"], Grid.from_dataset(era5))
    dst = _area_mean(out["geopotential"], t21)
    tolerance = 1e-4 if method == "conservative" else 5e-3
    assert dst == pytest.approx(src, rel=tolerance)
    assert out["geopotential"].attrs["units"] == "m**2 s**-2"


def test_constant_field_stays_constant(era5):
    const = era5.copy()
    const["temperature"] = const["temperature"] * 0 + 250.0
    out = regrid(const, gaussian_grid(16))
    np.testing.assert_allclose(out["temperature"].values, 250.0, rtol=1e-6)


def test_linear_wraps_longitude(era5):
    # Target points between 357° and 360° need the 0° column as a neighbour.
    grid = Grid(np.array([-30.0, 0.0, 30.0]), np.array([358.5, 359.9]))
    out = regrid(era5, grid, "linear")
    assert not out["temperature"].isnull().any()
    expected = 0.5 * (era5["temperature"].sel(longitude=357.0) + era5["temperature"].sel(longitude=0.0))
    np.testing.assert_allclose(
        out["temperature"].sel(longitude=358.5).values,
        expected.sel(latitude=[-30.0, 0.0, 30.0]).values,
        rtol=1e-5,
    )


def test_same_grid_is_noop(era5):
    assert regrid(era5, Grid.from_dataset(era5)) is era5
    with pytest.raises(ValueError, match="unknown regrid method"):
        regrid(era5, gaussian_grid(4), "bicubic")
