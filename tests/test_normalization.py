"""Normalisation statistics and climatology against values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from cycler_da.normalization import NormStats, climatology, compute_stats
from cycler_da.regrid import gaussian_grid
from cycler_da.sources import DataError
from cycler_da.state import to_dataset


def _dataset(values: np.ndarray, times) -> xr.Dataset:
    """values: (time, channel=2 [t500, msl], lat, lon)."""
    grid = gaussian_grid(8)
    return to_dataset(torch.as_tensor(values), ["t500", "msl"], grid, {"time": times})


def test_stats_of_known_fields():
    times = pd.date_range("2016-01-01", periods=4, freq="6h")
    values = np.zeros((4, 2, 8, 16))
    values[:, 0] = 250.0 + np.array([-1, 1, -1, 1])[:, None, None]  # mean 250, std 1
    values[:, 1] = 1.0e5
    values[:, 1, :, :8] += 100.0  # half the globe +100 Pa, half -100 Pa
    values[:, 1, :, 8:] -= 100.0
    stats = compute_stats(_dataset(values, times), ["t500", "msl"], "2016-01-01", "2016-01-02")
    np.testing.assert_allclose(stats.mean, [250.0, 1.0e5])
    np.testing.assert_allclose(stats.std, [1.0, 100.0])
    x = torch.as_tensor(values)
    np.testing.assert_allclose(stats.denormalise(stats.normalise(x)).numpy(), values)
    assert stats.normalise(x)[:, 1].abs().max() == pytest.approx(1.0)


def test_stats_period_and_degenerate_errors():
    times = pd.date_range("2016-01-01", periods=4, freq="6h")
    ds = _dataset(np.ones((4, 2, 8, 16)), times)
    with pytest.raises(DataError, match="no data between 2018-01-01"):
        compute_stats(ds, ["t500"], "2018-01-01", "2018-02-01")
    with pytest.raises(DataError, match="degenerate standard deviation"):
        compute_stats(ds, ["t500"], "2016-01-01", "2016-01-02")


def test_stats_dict_round_trip_and_mismatch():
    a = NormStats(
        ("z500", "t850"), np.array([5e4, 270.0]), np.array([3e3, 10.0]), ("2016-01-01", "2017-12-31")
    )
    assert NormStats.from_dict(a.as_dict()).mismatch(a) is None
    b = NormStats(("z500", "t850"), np.array([5e4, 271.0]), np.array([3e3, 10.0]), a.period)
    assert "mean differs for channels ['t850']" in b.mismatch(a)
    c = NormStats(("z500",), np.array([5e4]), np.array([3e3]), a.period)
    assert "channels differ" in c.mismatch(a)


def test_climatology_by_hour():
    times = pd.date_range("2016-01-01", periods=8, freq="6h")
    values = np.zeros((8, 2, 8, 16))
    values[:, 0] = (times.hour.values / 6.0)[:, None, None]  # 0,1,2,3 by hour
    values[:, 1] = 7.0
    ds = _dataset(values, times)
    clim = climatology(ds, ["t500", "msl"], "2016-01-01", "2016-01-03", by="hour")
    np.testing.assert_allclose(clim.sel(channel="t500").mean(["latitude", "longitude"]), [0, 1, 2, 3])
    mean = climatology(ds, ["t500", "msl"], "2016-01-01", "2016-01-03")
    np.testing.assert_allclose(mean.sel(channel="t500"), 1.5)
    with pytest.raises(ValueError, match="choose none, hour or dayofyear"):
        climatology(ds, ["t500"], "2016-01-01", "2016-01-03", by="week")
