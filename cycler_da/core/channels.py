"""The one naming table: dimension names, WB2/ERA5 variables, and tensor channels.

On disk and in xarray everything uses WeatherBench 2 / ERA5 long names and units. In
tensors one ``channel`` axis stacks (variable, level); its short labels (``z500``,
``t850``, ``msl``) are defined here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TIME = "time"
LEAD = "prediction_timedelta"
LEVEL = "level"
LATITUDE = "latitude"
LONGITUDE = "longitude"
REALIZATION = "realization"


@dataclass(frozen=True)
class Variable:
    """A physical variable as written to disk.

    Attributes:
        name: WB2/ERA5 long name.
        short: Short prefix used in channel labels (``z``, ``t``, ``msl``).
        units: ERA5 units, as written in the ``units`` attribute.
        standard_name: CF standard name.
        long_name: Human-readable name.
        has_levels: Whether the variable lives on pressure levels.
    """

    name: str
    short: str
    units: str
    standard_name: str
    long_name: str
    has_levels: bool


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("geopotential", "z", "m**2 s**-2", "geopotential", "Geopotential", True),
        Variable("temperature", "t", "K", "air_temperature", "Temperature", True),
        Variable("u_component_of_wind", "u", "m s**-1", "eastward_wind", "U component of wind", True),
        Variable("v_component_of_wind", "v", "m s**-1", "northward_wind", "V component of wind", True),
        Variable("specific_humidity", "q", "kg kg**-1", "specific_humidity", "Specific humidity", True),
        Variable(
            "mean_sea_level_pressure",
            "msl",
            "Pa",
            "air_pressure_at_mean_sea_level",
            "Mean sea level pressure",
            False,
        ),
        Variable("surface_pressure", "sp", "Pa", "surface_air_pressure", "Surface pressure", False),
    )
}
_BY_SHORT = {v.short: v for v in VARIABLES.values()}


@dataclass(frozen=True)
class Channel:
    """One tensor channel: a variable at one level (or a surface variable).

    Attributes:
        label: Short label, e.g. ``z500`` or ``msl``.
        variable: The physical variable.
        level: Pressure level in hPa, or None for surface variables.
    """

    label: str
    variable: Variable
    level: int | None

    @property
    def units(self) -> str:
        return self.variable.units


def channel(label: str) -> Channel:
    """Parses a channel label such as ``z500``, ``u250`` or ``msl``.

    Raises:
        ValueError: If the label names no known variable or misses/has a level wrongly.
    """
    match = re.fullmatch(r"([a-z]+?)(\d+)?", label)
    if match is None or match.group(1) not in _BY_SHORT:
        known = ", ".join(sorted(_BY_SHORT))
        raise ValueError(f"unknown channel {label!r}: prefixes are {known} (+ level in hPa)")
    variable = _BY_SHORT[match.group(1)]
    level = int(match.group(2)) if match.group(2) else None
    if variable.has_levels and level is None:
        raise ValueError(f"channel {label!r} needs a pressure level, e.g. {variable.short}500")
    if not variable.has_levels and level is not None:
        raise ValueError(f"channel {label!r}: {variable.name} has no levels; use {variable.short!r}")
    return Channel(label, variable, level)


def channels(labels: list[str] | tuple[str, ...]) -> tuple[Channel, ...]:
    """Parses several labels, rejecting duplicates."""
    parsed = tuple(channel(label) for label in labels)
    seen = [c.label for c in parsed]
    duplicates = sorted({label for label in seen if seen.count(label) > 1})
    if duplicates:
        raise ValueError(f"duplicate channels: {duplicates}")
    return parsed


DEFAULT_CHANNELS: tuple[str, ...] = (
    "z500",
    "z850",
    "t500",
    "t850",
    "u250",
    "v250",
    "u500",
    "v500",
    "u850",
    "v850",
    "msl",
)
NATURE_LEVELS: tuple[int, ...] = (250, 500, 850)
