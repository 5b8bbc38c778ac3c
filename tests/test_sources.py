"""Readers: real ERA5 GRIB, NetCDF (old/new CDS), zarr; renaming and validation errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import ERA5_GRIB

from cycler_da.io import write_dataset
from cycler_da.sources import DataError, describe, open_dataset, validate_dataset


def test_grib_opens_with_expected_content(era5):
    assert set(era5.data_vars) == {"geopotential", "temperature"}
    assert era5["level"].values.tolist() == [500, 850]
    assert era5.sizes == {"realization": 10, "time": 4, "level": 2, "latitude": 61, "longitude": 120}
    lat = era5["latitude"].values
    assert lat[0] == -90 and lat[-1] == 90 and np.all(np.diff(lat) == 3)
    assert era5["longitude"].values[0] == 0 and era5["longitude"].values[-1] == 357
    times = era5["time"].values.astype("datetime64[h]").astype(str).tolist()
    assert times == ["2017-01-01T00", "2017-01-01T12", "2017-01-02T00", "2017-01-02T12"]
    z500 = era5["geopotential"].sel(level=500)
    assert 45_000 < float(z500.min()) < float(z500.max()) < 60_000  # ~4.6–5.9 km × g
    assert 200 < float(era5["temperature"].min()) < float(era5["temperature"].max()) < 320
    assert era5["geopotential"].attrs["units"] == "m**2 s**-2"


def test_grib_is_lazy():
    ds = open_dataset(ERA5_GRIB)
    assert ds["geopotential"].chunks is not None


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_round_trip_unchanged(era5, tmp_path, suffix):
    path = write_dataset(era5, tmp_path / f"era5{suffix}")
    back = open_dataset(path).load()
    xr.testing.assert_identical(back.drop_attrs(), era5.drop_attrs())
    assert back["temperature"].attrs["units"] == "K"


def test_write_refuses_to_overwrite(era5, tmp_path):
    path = write_dataset(era5, tmp_path / "a.nc")
    with pytest.raises(FileExistsError, match="exists"):
        write_dataset(era5, path)


def _raw_era5() -> xr.Dataset:
    return xr.open_dataset(ERA5_GRIB, engine="cfgrib", backend_kwargs={"indexpath": ""}).load()


def test_new_cds_netcdf_names(era5, tmp_path):
    raw = _raw_era5().isel(number=0)
    new = raw.drop_vars(["time", "step", "number"]).rename(
        {"valid_time": "valid_time", "isobaricInhPa": "pressure_level"}
    )
    new = new.swap_dims({"time": "valid_time"})
    new.to_netcdf(tmp_path / "new.nc")
    ds = open_dataset(tmp_path / "new.nc").load()
    assert ds.attrs["cycler_source_conventions"] == "ERA5 NetCDF (new CDS names)"
    assert set(ds.dims) == {"time", "level", "latitude", "longitude"}
    np.testing.assert_array_equal(ds["temperature"].values, era5["temperature"].isel(realization=0).values)


def test_old_cds_netcdf_names(era5, tmp_path):
    raw = _raw_era5().isel(number=0).drop_vars(["step", "valid_time", "number"])
    old = raw.rename({"isobaricInhPa": "level"})
    old.attrs = {"Conventions": "CF-1.6"}  # old CDS NetCDF carries no GRIB_* attributes
    # Old CDS files have longitudes in [-180, 180) in some requests: renaming must fix it.
    old = old.assign_coords(longitude=((old.longitude + 180) % 360) - 180).sortby("longitude")
    old.to_netcdf(tmp_path / "old.nc")
    ds = open_dataset(tmp_path / "old.nc").load()
    assert ds.attrs["cycler_source_conventions"] == "ERA5 NetCDF (old CDS names)"
    assert ds["longitude"].values.min() == 0 and ds["latitude"].values[0] == -90
    np.testing.assert_array_equal(ds["geopotential"].values, era5["geopotential"].isel(realization=0).values)


def test_truncated_grib_is_an_error(tmp_path):
    data = ERA5_GRIB.read_bytes()
    bad = tmp_path / "truncated.grib"
    bad.write_bytes(data[: len(data) // 2 + 123])
    with pytest.raises(DataError, match=r"cannot read .*truncated\.grib"):
        open_dataset(bad)


def test_corrupt_and_missing_files(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not a dataset at all" * 10)
    with pytest.raises(DataError, match="unknown or corrupt"):
        open_dataset(junk)
    fake = tmp_path / "fake.grib"
    fake.write_bytes(b"hello" * 10)
    with pytest.raises(DataError, match="not a GRIB file"):
        open_dataset(fake)
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        open_dataset(tmp_path / "absent.nc")


def test_wrong_units_named(era5, tmp_path):
    bad = era5.copy()
    bad["geopotential"] = bad["geopotential"] / 9.80665
    bad["geopotential"].attrs["units"] = "m"
    write_dataset(bad, tmp_path / "zm.nc")
    with pytest.raises(DataError, match=r"'geopotential' has units 'm'.*multiply by g"):
        open_dataset(tmp_path / "zm.nc")
    bad = era5.copy()
    bad["temperature"] = bad["temperature"] - 273.15
    bad["temperature"].attrs["units"] = "degC"
    write_dataset(bad, tmp_path / "tc.nc")
    with pytest.raises(DataError, match=r"'temperature' has units 'degC'.*273\.15"):
        open_dataset(tmp_path / "tc.nc")


def test_missing_variable_and_dimension_named(era5):
    with pytest.raises(DataError, match="missing variable 'u_component_of_wind'"):
        validate_dataset(era5, required=["u_component_of_wind"])
    with pytest.raises(DataError, match="missing dimension 'latitude'"):
        validate_dataset(era5.isel(latitude=0))
    with pytest.raises(DataError, match="no known variables"):
        validate_dataset(era5.rename({"geopotential": "gz", "temperature": "tt"}))


def test_describe(era5):
    info = describe(era5)
    assert info["levels_hpa"] == [500, 850]
    assert info["grid"] == {"latitude": [-90.0, 90.0, 61], "longitude": [0.0, 357.0, 120], "type": "regular"}
    assert info["time"]["count"] == 4 and info["time"]["step_hours"] == [12.0]
    assert info["members"] == 10
