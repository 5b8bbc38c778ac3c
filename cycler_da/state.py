"""The only bridge between xarray datasets and tensors.

A state tensor is ``(..., channel, latitude, longitude)``: the leading axes are whatever
the dataset had besides level/lat/lon (``time``, ``realization``), in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from cycler_da.core.channels import LATITUDE, LEVEL, LONGITUDE, REALIZATION, TIME, Channel, channels
from cycler_da.sources import DataError, grid_type


@dataclass(frozen=True)
class Grid:
    """A global latitude/longitude grid.

    Attributes:
        latitudes: Degrees north, increasing.
        longitudes: Degrees east in [0, 360), increasing.
    """

    latitudes: np.ndarray
    longitudes: np.ndarray

    @classmethod
    def from_dataset(cls, ds: xr.Dataset | xr.DataArray) -> Grid:
        return cls(np.asarray(ds[LATITUDE].values, float), np.asarray(ds[LONGITUDE].values, float))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.latitudes.size, self.longitudes.size)

    @property
    def kind(self) -> str:
        return grid_type(self.latitudes)

    def area_weights(self) -> np.ndarray:
        """Latitude weights normalised to mean 1 (WB2 convention), shape (latitude,).

        Gaussian grids use the Gauss–Legendre quadrature weights; regular grids use the
        area of each latitude band (half bands at the poles).
        """
        if self.kind == "gaussian":
            nodes, weights = np.polynomial.legendre.leggauss(self.latitudes.size)
            if not np.allclose(nodes, np.sin(np.radians(self.latitudes)), atol=1e-6):
                raise DataError("latitudes are not a Gaussian grid nor regularly spaced")
        else:
            lat = np.radians(self.latitudes)
            edges = np.concatenate([[-np.pi / 2], (lat[1:] + lat[:-1]) / 2, [np.pi / 2]])
            weights = np.sin(edges[1:]) - np.sin(edges[:-1])
        return weights / weights.mean()

    def same_as(self, other: Grid, atol: float = 1e-4) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.latitudes, other.latitudes, atol=atol)
            and np.allclose(self.longitudes, other.longitudes, atol=atol)
        )

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "latitudes": [float(x) for x in self.latitudes],
            "longitudes": [float(x) for x in self.longitudes],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(np.asarray(d["latitudes"], float), np.asarray(d["longitudes"], float))


def stack_channels(ds: xr.Dataset, labels: list[str] | tuple[str, ...]) -> xr.DataArray:
    """Stacks (variable, level) pairs into one ``channel`` dimension (lazy for dask input).

    Returns:
        DataArray with dims (..., channel, latitude, longitude) and a ``channel`` coordinate
        of labels.

    Raises:
        DataError: If a variable or level is missing.
    """
    pieces = []
    for ch in channels(labels):
        name = ch.variable.name
        if name not in ds.data_vars:
            raise DataError(f"channel {ch.label}: variable {name!r} not in {sorted(ds.data_vars)}")
        var = ds[name]
        if ch.level is not None:
            if LEVEL not in var.dims or ch.level not in var[LEVEL].values:
                have = var[LEVEL].values.tolist() if LEVEL in var.dims else []
                raise DataError(f"channel {ch.label}: level {ch.level} hPa not in {have}")
            var = var.sel({LEVEL: ch.level}, drop=True)
        pieces.append(var.drop_vars([c for c in var.coords if c not in var.dims]))
    stacked = xr.concat(pieces, dim="channel", coords="minimal", compat="override")
    stacked = stacked.assign_coords(channel=list(labels))
    lead = [d for d in (TIME, REALIZATION) if d in stacked.dims]
    other = [d for d in stacked.dims if d not in (*lead, "channel", LATITUDE, LONGITUDE)]
    if other:
        raise DataError(f"unexpected dimensions {other}; expected only {lead} before the grid")
    return stacked.transpose(*lead, "channel", LATITUDE, LONGITUDE)


def to_tensor(
    ds: xr.Dataset, labels: list[str] | tuple[str, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Loads the given channels as a tensor ``(..., channel, latitude, longitude)``."""
    values = stack_channels(ds, labels).values
    return torch.as_tensor(np.ascontiguousarray(values), dtype=dtype)


def to_dataset(
    tensor: torch.Tensor,
    labels: list[str] | tuple[str, ...],
    grid: Grid,
    leading: dict[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """Unstacks a tensor ``(..., channel, latitude, longitude)`` into WB2 variables.

    Args:
        tensor: Physical (not normalised) values.
        labels: Channel labels of the channel axis.
        grid: The tensor's grid.
        leading: Coordinates of the leading axes in order, e.g. ``{"time": times}``.

    Returns:
        Dataset with one variable per WB2 name; pressure-level variables get a ``level``
        dimension, with CF ``units``/``standard_name``/``long_name`` attributes.
    """
    leading = leading or {}
    chans: tuple[Channel, ...] = channels(labels)
    array = tensor.detach().cpu().numpy()
    if array.ndim != len(leading) + 3 or array.shape[-3] != len(chans):
        raise ValueError(
            f"tensor of shape {tuple(array.shape)} does not match leading dims "
            f"{list(leading)} + {len(chans)} channels + grid {grid.shape}"
        )
    if array.shape[-2:] != grid.shape:
        raise ValueError(f"tensor grid {array.shape[-2:]} differs from the grid {grid.shape}")
    dims = (*leading, LATITUDE, LONGITUDE)
    coords = {**leading, LATITUDE: grid.latitudes, LONGITUDE: grid.longitudes}
    by_variable: dict[str, list[tuple[int | None, np.ndarray]]] = {}
    for i, ch in enumerate(chans):
        by_variable.setdefault(ch.variable.name, []).append((ch.level, array[..., i, :, :]))
    data = {}
    for name, items in by_variable.items():
        meta = chans[[c.variable.name for c in chans].index(name)].variable
        attrs = {"units": meta.units, "standard_name": meta.standard_name, "long_name": meta.long_name}
        if meta.has_levels:
            items.sort(key=lambda item: item[0])
            values = np.stack([v for _, v in items], axis=len(leading))
            data[name] = xr.DataArray(
                values,
                dims=(*leading, LEVEL, LATITUDE, LONGITUDE),
                coords={**coords, LEVEL: np.asarray([lev for lev, _ in items], np.int32)},
                attrs=attrs,
            )
        else:
            data[name] = xr.DataArray(items[0][1], dims=dims, coords=coords, attrs=attrs)
    ds = xr.Dataset(data)
    if LEVEL in ds.coords:
        ds[LEVEL].attrs.update(units="hPa", long_name="pressure level")
    ds[LATITUDE].attrs.update(units="degrees_north", standard_name="latitude")
    ds[LONGITUDE].attrs.update(units="degrees_east", standard_name="longitude")
    return ds
