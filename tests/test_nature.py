"""The Held–Suarez nature run: physics, reproducibility, caching and the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cycler_da import nature
from cycler_da.cli import app
from cycler_da.core.channels import NATURE_LEVELS
from cycler_da.sources import open_dataset
from cycler_da.state import Grid

runner = CliRunner()


def _assert_plausible(fields: dict[str, np.ndarray]) -> None:
    """Physical bounds of an Earth-like dry atmosphere on 250/500/850 hPa."""
    for name, value in fields.items():
        assert np.isfinite(value).all(), name
    assert 180 < fields["temperature"].min() and fields["temperature"].max() < 330
    speed = np.hypot(fields["u_component_of_wind"], fields["v_component_of_wind"])
    assert speed.max() < 150
    z = fields["geopotential"]  # levels ascending in hPa: 250, 500, 850 → z decreasing
    assert (z[..., 0, :, :] > z[..., 1, :, :]).all() and (z[..., 1, :, :] > z[..., 2, :, :]).all()
    assert (z[..., 2, :, :] > 0).all()
    ps = fields["surface_pressure"]
    assert 90_000 < ps.min() and ps.max() < 110_000


def test_snapshots_ship_every_month():
    snapshots = nature.shipped_snapshots("T21")
    expected = pd.date_range("2016-01-01", "2019-01-01", freq="MS")
    assert list(snapshots) == list(expected)


def test_model_from_snapshot_is_plausible_and_deterministic():
    model = nature._model("T21")
    start = nature.shipped_snapshots("T21")[pd.Timestamp("2018-01-01")]
    runs = []
    for _ in range(2):
        state = model.advance(start, 48)  # one day, eager
        runs.append({k: v.numpy() for k, v in model.diagnose(state, NATURE_LEVELS).items()})
    for name in runs[0]:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])
    _assert_plausible(runs[0])
    # A spun-up atmosphere, not a resting one: Held–Suarez jets of 20–50 m/s at 250 hPa.
    zonal_mean_u250 = runs[0]["u_component_of_wind"][0].mean(axis=0)
    assert 20 < zonal_mean_u250.max() < 60


def test_rest_state_and_perturbation_are_seeded():
    model = nature._model("T21")
    a = model.rest_state(torch.Generator().manual_seed(3))
    b = model.rest_state(torch.Generator().manual_seed(3))
    c = model.rest_state(torch.Generator().manual_seed(4))
    assert torch.equal(a.log_surface_pressure, b.log_surface_pressure)
    assert not torch.equal(a.log_surface_pressure, c.log_surface_pressure)
    p1 = model.perturb(a, 1.0, torch.Generator().manual_seed(1))
    p2 = model.perturb(a, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(p1.temperature_variation, p2.temperature_variation)


def test_spec_errors():
    with pytest.raises(ValueError, match="unknown resolution 'T63'"):
        nature.NatureSpec(resolution="T63")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        nature.NatureSpec(seed=-1)
    assert nature.NatureSpec(seed=1).key != nature.NatureSpec(seed=0).key
    assert nature.NatureSpec(compiled=False).key != nature.NatureSpec().key


def test_calendar_bounds(data_dir):
    with pytest.raises(ValueError, match="calendar starts at 2016-01-01"):
        nature.ensure_nature("2015-12-01", "2016-01-02")
    with pytest.raises(ValueError, match="before start"):
        nature.ensure_nature("2018-01-05", "2018-01-01")


def test_cli_nature_end_to_end(nature_cache, tmp_path):
    """A real (eager) month of the nature run through the CLI, then from the cache."""
    out = tmp_path / "feb.nc"
    args = ["data", "nature", "--start", "2018-02-01", "--end", "2018-02-02T06", "--eager", "--threads", "2"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    ds = open_dataset(out).load()
    assert ds.attrs["cycler_source_conventions"] == "cycler nature run"
    assert ds.sizes == {"time": 6, "level": 3, "latitude": 32, "longitude": 64}
    assert str(ds.time.values[-1])[:13] == "2018-02-02T06"
    assert ds.attrs["seed"] == 0 and ds.attrs["cycler_version"] and ds.attrs["config_hash"]
    assert Grid.from_dataset(ds).kind == "gaussian"
    _assert_plausible({k: ds[k].values for k in ds.data_vars})
    np.testing.assert_array_equal(ds["surface_pressure"], ds["mean_sea_level_pressure"])

    # The first time is the shipped snapshot itself.
    model = nature._model("T21")
    snap = nature.shipped_snapshots("T21")[pd.Timestamp("2018-02-01")]
    t0 = model.diagnose(snap, NATURE_LEVELS)["temperature"].numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(ds["temperature"].isel(time=0).values, t0, rtol=1e-6)

    cached = sorted(nature_cache.rglob("2018-02.nc"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "again.zarr")])
    assert again.exit_code == 0, again.output
    assert cached[0].stat().st_mtime_ns == mtime  # served from the cache
    np.testing.assert_array_equal(open_dataset(tmp_path / "again.zarr")["geopotential"], ds["geopotential"])

    refused = runner.invoke(app, [*args, "--out", str(out)])
    assert refused.exit_code == 2 and "exists" in refused.output

    info = runner.invoke(app, ["data", "info", str(out)])
    assert info.exit_code == 0 and "cycler nature run" in info.output and "gaussian 32x64" in info.output


def test_cli_errors(data_dir):
    result = runner.invoke(app, ["data", "nature", "--start", "2015-01-01", "--end", "2015-01-02"])
    assert result.exit_code == 2 and "calendar starts at 2016-01-01" in result.output
    result = runner.invoke(
        app, ["data", "nature", "--start", "2018-01-01", "--end", "2018-01-02", "--resolution", "T5"]
    )
    assert result.exit_code == 2 and "unknown resolution" in result.output
    result = runner.invoke(app, ["data", "info", "/nonexistent.grib"])
    assert result.exit_code == 2 and "no such dataset" in result.output


@pytest.mark.slow
def test_eager_month_lands_near_next_snapshot():
    """Integrating January 2018 from its snapshot reaches the February snapshot.

    The snapshots were made with the compiled integrator; eager round-off differences
    grow chaotically (doubling ~2.5 days) but stay far below the weather signal in 31 days.
    """
    model = nature._model("T21")
    snaps = nature.shipped_snapshots("T21")
    end = model.advance(snaps[pd.Timestamp("2018-01-01")], 31 * 48)
    target = model.diagnose(snaps[pd.Timestamp("2018-02-01")], NATURE_LEVELS)["temperature"]
    got = model.diagnose(end, NATURE_LEVELS)["temperature"]
    assert float((got - target).pow(2).mean().sqrt()) < 0.5  # K; climatological spread is ~10 K


@pytest.mark.slow
def test_other_seed_branches_off(data_dir):
    spec = nature.NatureSpec(seed=1, compiled=False)
    ds = nature.open_nature("2016-01-01", "2016-01-02", spec, progress=False).load()
    canonical = nature._model("T21").diagnose(nature.shipped_snapshots("T21")[nature.ORIGIN], NATURE_LEVELS)
    diff = ds["temperature"].isel(time=0).values - canonical["temperature"].numpy().transpose(0, 2, 1)
    assert np.sqrt((diff**2).mean()) > 1.0  # decorrelated weather after the 60-day spin-up
    _assert_plausible({k: ds[k].values for k in ds.data_vars})


@pytest.mark.slow
def test_t42_is_plausible(data_dir):
    spec = dataclasses.replace(nature.NatureSpec(resolution="T42"), compiled=False)
    ds = nature.open_nature("2016-01-01", "2016-01-01T06", spec, progress=False).load()
    assert ds.sizes["latitude"] == 64 and ds.sizes["longitude"] == 128
    _assert_plausible({k: ds[k].values for k in ds.data_vars})
