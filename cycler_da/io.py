"""Writing datasets: NetCDF or zarr by suffix, always atomically (temp name, then rename)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import xarray as xr

FORMATS = {".nc": "netcdf", ".nc4": "netcdf", ".zarr": "zarr"}


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unknown output format for {path}: use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def write_dataset(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Writes `ds` to NetCDF (``.nc``) or zarr (``.zarr``) without a half-written result.

    Raises:
        FileExistsError: If `path` exists and `overwrite` is false.
    """
    path = Path(path)
    fmt = output_format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another path or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write(ds, tmp, fmt)
    except BaseException:  # a full disk or a kill: leave no partial file behind
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)
    return path


# CF names of the coordinates every file shares (WeatherBench 2 dimension names).
_COORDINATE_ATTRS = {
    "time": {"standard_name": "time", "long_name": "time"},
    "realization": {"standard_name": "realization", "long_name": "ensemble member", "units": "1"},
    "prediction_timedelta": {"standard_name": "forecast_period", "long_name": "forecast lead time"},
    "level": {"standard_name": "air_pressure", "long_name": "pressure level", "units": "hPa"},
    "latitude": {"standard_name": "latitude", "units": "degrees_north"},
    "longitude": {"standard_name": "longitude", "units": "degrees_east"},
}


def cf_netcdf(ds: xr.Dataset) -> tuple[xr.Dataset, dict]:
    """`ds` with the attributes CF asks for, and its NetCDF encoding: compressed data, no fill
    value on coordinates, times as 32-bit integers (CF 1.8 has no 64-bit integer type)."""
    ds = ds.copy()
    for name, attrs in _COORDINATE_ATTRS.items():
        if name in ds.variables:
            ds[name].attrs = attrs | ds[name].attrs
    for name, var in ds.data_vars.items():
        if "long_name" not in var.attrs and "standard_name" not in var.attrs:
            var.attrs["long_name"] = str(name).replace("_", " ")
    if not ds.attrs.get("history"):
        from cycler_da import __version__

        # No time stamp: a resumed run's files must equal an uninterrupted run's, attributes too.
        ds.attrs["history"] = f"written by cycler {__version__}"
    encoding = {name: {"zlib": True, "complevel": 1} for name in ds.data_vars}
    for name, var in ds.variables.items():
        entry = encoding.setdefault(name, {})
        if name in ds.coords:
            entry["_FillValue"] = None
        if var.dtype.kind in "mM":
            entry["dtype"] = "int32"
    return ds, encoding


def _write(ds: xr.Dataset, tmp: Path, fmt: str) -> None:
    if fmt == "netcdf":
        ds, encoding = cf_netcdf(ds)
        ds.to_netcdf(tmp, encoding=encoding)
        return
    for var in ds.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    # Zarr format 2 with consolidated metadata, as WeatherBench 2 stores are.
    ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
