"""Regridding a real dataset onto the model grid (xarray-regrid does the work)."""

from __future__ import annotations

import numpy as np
import xarray as xr
import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

from cycler_da.core.channels import LATITUDE, LONGITUDE
from cycler_da.state import Grid

METHODS = ("conservative", "linear", "nearest")


def _wrap_longitude(ds: xr.Dataset) -> xr.Dataset:
    """Adds a cyclic column on each side so interpolation near 0°/360° has neighbours."""
    first = ds.isel({LONGITUDE: [0]})
    last = ds.isel({LONGITUDE: [-1]})
    first = first.assign_coords({LONGITUDE: first[LONGITUDE] + 360})
    last = last.assign_coords({LONGITUDE: last[LONGITUDE] - 360})
    return xr.concat([last, ds, first], dim=LONGITUDE, data_vars="minimal", coords="minimal")


def regrid(ds: xr.Dataset, grid: Grid, method: str = "conservative") -> xr.Dataset:
    """Regrids `ds` onto `grid` (no-op when the grids already agree).

    Args:
        ds: Dataset in our conventions.
        grid: Target grid.
        method: "conservative" (area-weighted; right for coarsening), "linear" or "nearest".
    """
    if method not in METHODS:
        raise ValueError(f"unknown regrid method {method!r}; choose one of {METHODS}")
    if Grid.from_dataset(ds).same_as(grid):
        return ds
    target = xr.Dataset(coords={LATITUDE: grid.latitudes, LONGITUDE: grid.longitudes})
    if method == "conservative":
        out = ds.regrid.conservative(target, latitude_coord=LATITUDE)
    else:
        out = getattr(_wrap_longitude(ds).regrid, method)(target)
    out = out.assign_coords({LATITUDE: grid.latitudes, LONGITUDE: grid.longitudes})
    for name in out.data_vars:
        out[name].attrs = ds[name].attrs
    out.attrs = {**ds.attrs, "cycler_regridded": f"{method} to {grid.shape} {grid.kind} grid"}
    return out


def gaussian_grid(n_lat: int) -> Grid:
    """The regular Gaussian grid with `n_lat` latitudes and 2·n_lat longitudes."""
    nodes, _ = np.polynomial.legendre.leggauss(n_lat)
    return Grid(np.degrees(np.arcsin(nodes)), np.arange(2 * n_lat) * 360.0 / (2 * n_lat))
