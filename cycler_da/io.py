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


def _write(ds: xr.Dataset, tmp: Path, fmt: str) -> None:
    if fmt == "netcdf":
        encoding = {name: {"zlib": True, "complevel": 1} for name in ds.data_vars}
        ds.to_netcdf(tmp, encoding=encoding)
        return
    for var in ds.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    # Zarr format 2 with consolidated metadata, as WeatherBench 2 stores are.
    ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
