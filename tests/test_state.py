"""The channel table, the tensor⇄dataset bridge and area weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from cycler_da.core.channels import DEFAULT_CHANNELS, channel, channels
from cycler_da.regrid import gaussian_grid
from cycler_da.sources import DataError
from cycler_da.state import Grid, stack_channels, to_dataset, to_tensor


def test_channel_labels():
    z = channel("z500")
    assert (z.variable.name, z.level, z.units) == ("geopotential", 500, "m**2 s**-2")
    assert channel("msl").level is None
    assert len(channels(DEFAULT_CHANNELS)) == 11
    with pytest.raises(ValueError, match="unknown channel 'x500'"):
        channel("x500")
    with pytest.raises(ValueError, match="needs a pressure level"):
        channel("t")
    with pytest.raises(ValueError, match="has no levels"):
        channel("msl500")
    with pytest.raises(ValueError, match="duplicate channels"):
        channels(["z500", "z500"])


def test_tensor_round_trip(era5):
    labels = ["z500", "t500", "z850", "t850"]
    x = to_tensor(era5, labels, dtype=torch.float64)
    assert x.shape == (4, 10, 4, 61, 120)  # (time, realization, channel, lat, lon)
    np.testing.assert_array_equal(
        x[2, 3, 3].numpy(), era5["temperature"].sel(level=850).isel(time=2, realization=3).values
    )
    grid = Grid.from_dataset(era5)
    back = to_dataset(x, labels, grid, {"time": era5.time.values, "realization": era5.realization.values})
    xr.testing.assert_allclose(
        back["geopotential"], era5["geopotential"].transpose(*back["geopotential"].dims)
    )
    assert back["temperature"].attrs["units"] == "K"


def test_stack_channels_errors(era5):
    with pytest.raises(DataError, match="variable 'u_component_of_wind' not in"):
        stack_channels(era5, ["u500"])
    with pytest.raises(DataError, match="level 250 hPa not in"):
        stack_channels(era5, ["z250"])


def test_to_dataset_shape_errors():
    grid = gaussian_grid(4)
    with pytest.raises(ValueError, match="does not match"):
        to_dataset(torch.zeros(3, 4, 8), ["z500", "t500"], grid)  # 3 channels for 2 labels
    with pytest.raises(ValueError, match="differs from the grid"):
        to_dataset(torch.zeros(1, 5, 8), ["z500"], grid)


def test_area_weights_regular_and_gaussian():
    regular = Grid(np.linspace(-90, 90, 61), np.arange(120) * 3.0)
    w = regular.area_weights()
    assert w.mean() == pytest.approx(1) and np.allclose(w, w[::-1])
    # Band areas: the weighted mean of sin² over the sphere is exactly 1/3 for the bands'
    # integral; the midpoint rule on 61 bands comes within 1e-3.
    assert np.mean(w * np.sin(np.radians(regular.latitudes)) ** 2) == pytest.approx(1 / 3, abs=1e-3)
    gauss = gaussian_grid(32)
    assert gauss.kind == "gaussian" and regular.kind == "regular"
    wg = gauss.area_weights()
    # Gauss–Legendre quadrature is exact for polynomials in sin(lat) of degree < 64.
    assert np.mean(wg * np.sin(np.radians(gauss.latitudes)) ** 2) == pytest.approx(1 / 3, abs=1e-12)
    assert np.mean(wg * np.sin(np.radians(gauss.latitudes)) ** 10) == pytest.approx(1 / 11, abs=1e-12)
