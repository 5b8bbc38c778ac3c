"""Readers for every data source, renamed to our conventions in one place.

Supported: ERA5 GRIB (cfgrib), ERA5 NetCDF with old-CDS (``time``, ``level``) or new-CDS
(``valid_time``, ``pressure_level``) names, WeatherBench 2 zarr, and our own nature-run
NetCDF/zarr. :func:`open_dataset` detects the format, opens it lazily (dask), renames to
WB2/ERA5 conventions (see :mod:`cycler_da.core.channels`) and validates. Nothing downstream
sees ``isobaricInhPa``, ``number``, ``valid_time`` or short ERA5 names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from cycler_da.core.channels import LATITUDE, LEVEL, LONGITUDE, REALIZATION, TIME, VARIABLES


class DataError(ValueError):
    """A dataset that cannot be read or does not follow the conventions."""


# ERA5/cfgrib short names → WB2 long names.
_SHORT_NAMES = {
    "z": "geopotential",
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "q": "specific_humidity",
    "msl": "mean_sea_level_pressure",
    "sp": "surface_pressure",
}
_DIM_NAMES = {
    "isobaricInhPa": LEVEL,
    "pressure_level": LEVEL,
    "plev": LEVEL,
    "number": REALIZATION,
    "lat": LATITUDE,
    "lon": LONGITUDE,
}
# Accepted spellings of each variable's units (ERA5 GRIB, CDS NetCDF, CF/udunits).
_UNIT_SPELLINGS = {
    "m**2 s**-2": {"m**2 s**-2", "m2 s-2", "m^2 s^-2", "m^2/s^2", "m2/s2", "m**2/s**2"},
    "K": {"K", "kelvin", "Kelvin", "degK"},
    "m s**-1": {"m s**-1", "m s-1", "m/s", "m s^-1"},
    "kg kg**-1": {"kg kg**-1", "kg kg-1", "kg/kg", "1"},
    "Pa": {"Pa", "pascal", "Pascal"},
}
_UNIT_HINTS = {
    ("geopotential", "m"): "geopotential height in metres? multiply by g = 9.80665 m s-2",
    ("geopotential", "gpm"): "geopotential height in metres? multiply by g = 9.80665 m s-2",
    ("temperature", "degC"): "Celsius? add 273.15",
    ("temperature", "C"): "Celsius? add 273.15",
    ("mean_sea_level_pressure", "hPa"): "hectopascal? multiply by 100",
    ("surface_pressure", "hPa"): "hectopascal? multiply by 100",
}


def detect_format(path: Path) -> str:
    """Returns "grib", "netcdf" or "zarr" from the path and the file's magic bytes."""
    if path.is_dir():
        if (path / ".zgroup").exists() or (path / "zarr.json").exists() or path.suffix == ".zarr":
            return "zarr"
        raise DataError(f"{path} is a directory but not a zarr store (no .zgroup or zarr.json)")
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic.startswith(b"GRIB"):
        return "grib"
    if magic.startswith((b"CDF", b"\x89HDF")):
        return "netcdf"
    if path.suffix.lower() in {".grib", ".grb", ".grib2", ".grb2"}:
        raise DataError(f"{path}: not a GRIB file (it does not start with 'GRIB')")
    raise DataError(f"{path}: unknown or corrupt file (not GRIB, NetCDF or zarr; first bytes {magic!r})")


def _open_raw(path: Path, fmt: str, chunks: dict | None) -> xr.Dataset:
    if fmt == "grib":
        try:
            import cfgrib  # noqa: F401  (the engine; imported lazily because of ecCodes)
        except ImportError as err:
            raise DataError("reading GRIB needs cfgrib: pip install cfgrib eccodes") from err
        # errors="raise": cfgrib otherwise skips corrupt messages and returns partial data.
        kwargs = {"indexpath": "", "errors": "raise"}
        return xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs, chunks=chunks)
    if fmt == "zarr":
        return xr.open_zarr(path, chunks=chunks)
    return xr.open_dataset(path, engine="netcdf4", chunks=chunks)


def open_dataset(path: str | Path, *, chunks: dict | None = None) -> xr.Dataset:
    """Opens any supported dataset lazily, in our conventions, validated.

    Args:
        path: A GRIB file, a NetCDF file or a zarr store.
        chunks: dask chunks; by default the file's own chunking (lazy).

    Raises:
        FileNotFoundError: If the path does not exist.
        DataError: If the file is corrupt, truncated, or breaks the conventions
            (the message names the dimension, variable or unit at fault).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path}")
    fmt = detect_format(path)
    try:
        raw = _open_raw(path, fmt, {} if chunks is None else chunks)
    except DataError:
        raise
    except Exception as err:
        raise DataError(
            f"cannot read {path} as {fmt} (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
    ds = to_conventions(raw)
    ds.attrs["cycler_source_path"] = str(path)
    ds.attrs["cycler_source_format"] = fmt
    validate_dataset(ds)
    return ds


def source_conventions(ds: xr.Dataset) -> str:
    """Names the conventions a raw dataset follows (before renaming)."""
    names = set(ds.variables) | set(ds.dims)
    # New-CDS NetCDF is converted from GRIB and keeps GRIB_* attributes: test it first.
    if "valid_time" in ds.dims or "pressure_level" in names:
        return "ERA5 NetCDF (new CDS names)"
    if "isobaricInhPa" in names or "GRIB_edition" in ds.attrs:
        return "ERA5 GRIB via cfgrib"
    if str(ds.attrs.get("title", "")).startswith("Held-Suarez nature run"):
        return "cycler nature run"
    if set(ds.data_vars) & set(_SHORT_NAMES):
        return "ERA5 NetCDF (old CDS names)"
    if set(ds.data_vars) & set(VARIABLES):
        return "WeatherBench 2 / ERA5 long names"
    return "unknown"


def to_conventions(ds: xr.Dataset) -> xr.Dataset:
    """Renames a raw dataset to WB2/ERA5 conventions; the only place that knows raw names.

    * dims: ``isobaricInhPa``/``pressure_level`` → ``level``, ``number`` → ``realization``,
      ``valid_time`` → ``time`` (analyses: step 0);
    * variables: ERA5 short names (``z``, ``t``, ``msl``…) → WB2 long names;
    * latitude increasing, longitude in [0, 360) and sorted; levels as integer hPa.
    """
    conventions = source_conventions(ds)
    grid = {str(v.attrs.get("GRIB_gridType")) for v in ds.data_vars.values()} & {"reduced_gg", "reduced_ll"}
    if grid:
        raise DataError(
            f"a reduced grid (GRIB gridType {grid.pop()}) is not supported: interpolate it to a regular "
            "grid first, e.g. `cdo setgridtype,regular in.grib out.grib` (a regular Gaussian grid keeps "
            "the same latitudes)"
        )
    if "valid_time" in ds.dims:  # new CDS NetCDF
        ds = ds.drop_vars([TIME], errors="ignore").rename({"valid_time": TIME})
    elif "step" in ds.coords and TIME in ds.dims and ds["step"].size == 1:
        # cfgrib analyses: time is the reference time and step is 0; keep valid time.
        if "valid_time" in ds.coords:
            ds = ds.drop_vars("valid_time")
    ds = ds.drop_vars(
        [c for c in ("step", "surface", "expver", "heightAboveGround") if c in ds.coords and c not in ds.dims]
    )
    ds = ds.rename({k: v for k, v in _DIM_NAMES.items() if k in ds.variables or k in ds.dims})
    ds = ds.rename({k: v for k, v in _SHORT_NAMES.items() if k in ds.data_vars})
    if LEVEL in ds.coords:
        levels = ds[LEVEL].values
        if np.any(levels != np.round(levels)):
            raise DataError(f"dimension {LEVEL!r}: non-integer pressure levels {levels}")
        if ds[LEVEL].attrs.get("units") in {"Pa", "pascal"}:
            levels = levels / 100
        ds = ds.assign_coords({LEVEL: levels.astype(np.int32)})
        ds = ds.sortby(LEVEL) if LEVEL in ds.dims else ds.expand_dims(LEVEL)  # one level: a scalar coordinate
        ds[LEVEL].attrs.update(units="hPa", long_name="pressure level")
    if LATITUDE in ds.coords and ds[LATITUDE].size > 1 and ds[LATITUDE][0] > ds[LATITUDE][-1]:
        ds = ds.isel({LATITUDE: slice(None, None, -1)})
    if LONGITUDE in ds.coords and (ds[LONGITUDE] < 0).any():
        ds = ds.assign_coords({LONGITUDE: ds[LONGITUDE] % 360}).sortby(LONGITUDE)
    ds.attrs["cycler_source_conventions"] = conventions
    return ds


def _canonical_units(text: str) -> str | None:
    for canonical, spellings in _UNIT_SPELLINGS.items():
        if text.strip() in spellings:
            return canonical
    return None


def validate_dataset(ds: xr.Dataset, required: list[str] | None = None) -> None:
    """Checks a renamed dataset against the conventions.

    Args:
        ds: Dataset after :func:`to_conventions`.
        required: WB2 variable names that must be present.

    Raises:
        DataError: Naming the offending dimension, variable or unit.
    """
    for dim in (LATITUDE, LONGITUDE):
        if dim not in ds.dims:
            raise DataError(f"missing dimension {dim!r}; dims are {sorted(map(str, ds.dims))}")
    lat = ds[LATITUDE].values
    if lat.min() < -90 or lat.max() > 90 or np.any(np.diff(lat) <= 0):
        raise DataError(f"dimension {LATITUDE!r} must increase within [-90, 90]")
    lon = ds[LONGITUDE].values
    if lon.min() < 0 or lon.max() >= 360 or np.any(np.diff(lon) <= 0):
        raise DataError(f"dimension {LONGITUDE!r} must increase within [0, 360)")
    if TIME in ds.dims and not np.issubdtype(ds[TIME].dtype, np.datetime64):
        raise DataError(f"dimension {TIME!r} must hold datetimes, got {ds[TIME].dtype}")
    if TIME in ds.dims and ds.sizes[TIME] > 1:
        times = ds[TIME].values
        if len(np.unique(times)) < len(times):
            first = pd.Timestamp(times[np.flatnonzero(pd.Index(times).duplicated())[0]])
            raise DataError(
                f"dimension {TIME!r} repeats {first:%Y-%m-%dT%H:%M}: keep one state per time "
                "(ds.drop_duplicates('time'))"
            )
        if (np.diff(times) < np.timedelta64(0)).any():
            raise DataError(f"dimension {TIME!r} is not in increasing order: sort it (ds.sortby('time'))")
    for name in required or []:
        if name not in ds.data_vars:
            raise DataError(f"missing variable {name!r}; the dataset has {sorted(ds.data_vars)}")
    known = [name for name in ds.data_vars if name in VARIABLES]
    if not known:
        raise DataError(
            f"no known variables: the dataset has {sorted(map(str, ds.data_vars))}, expected "
            f"some of {sorted(VARIABLES)} (or ERA5 short names {sorted(_SHORT_NAMES)})"
        )
    for name in known:
        expected = VARIABLES[name]
        units = ds[name].attrs.get("units")
        if units is None:
            raise DataError(f"variable {name!r} has no 'units' attribute (expected {expected.units!r})")
        if _canonical_units(str(units)) != expected.units:
            hint = _UNIT_HINTS.get((name, str(units).strip()), "")
            raise DataError(
                f"variable {name!r} has units {units!r}, expected {expected.units!r}"
                + (f" ({hint})" if hint else "")
            )
        if expected.has_levels and LEVEL not in ds[name].dims:
            raise DataError(f"variable {name!r} lacks the {LEVEL!r} dimension")


def describe(ds: xr.Dataset) -> dict:
    """A summary for ``cycler data info``: variables, levels, grid, time span, conventions."""
    lat, lon = ds[LATITUDE].values, ds[LONGITUDE].values
    info = {
        "path": ds.attrs.get("cycler_source_path", ""),
        "format": ds.attrs.get("cycler_source_format", ""),
        "conventions": ds.attrs.get("cycler_source_conventions", "unknown"),
        "variables": {
            name: {"dims": list(map(str, var.dims)), "units": var.attrs.get("units", "")}
            for name, var in ds.data_vars.items()
        },
        "levels_hpa": [int(x) for x in ds[LEVEL].values] if LEVEL in ds.coords else [],
        "grid": {
            "latitude": [float(lat[0]), float(lat[-1]), len(lat)],
            "longitude": [float(lon[0]), float(lon[-1]), len(lon)],
            "type": grid_type(lat),
        },
        "members": int(ds.sizes[REALIZATION]) if REALIZATION in ds.dims else 0,
    }
    if TIME in ds.coords:
        times = ds[TIME].values
        steps = np.unique(np.diff(times)) if times.size > 1 else []
        info["time"] = {
            "start": str(np.datetime_as_string(times.min(), unit="h")),
            "end": str(np.datetime_as_string(times.max(), unit="h")),
            "count": int(times.size),
            "step_hours": [float(s / np.timedelta64(1, "h")) for s in steps],
        }
    return info


def grid_type(latitudes: np.ndarray) -> str:
    """ "regular" for equally spaced latitudes, otherwise "gaussian"."""
    spacing = np.diff(latitudes)
    return "regular" if np.allclose(spacing, spacing[0], atol=1e-6) else "gaussian"
