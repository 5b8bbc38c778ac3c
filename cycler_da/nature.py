"""The embedded truth: a Held–Suarez nature run, generated on demand and cached by month.

One canonical trajectory defines the default calendar. Its spun-up spectral states at the
first of every month of 2016–2018 ship with the package (``data/held_suarez_T21.npz``,
made by ``scripts/make_nature_snapshots.py``), so any T21 segment starts from the nearest
snapshot in seconds. Other seeds and T42 branch off the 2016-01-01 snapshot (perturbed
and/or upsampled, then spun up) and are integrated month after month.

Each month is one NetCDF file in the data directory, written atomically together with
the spectral state that starts the next month; a second request costs nothing.
"""

from __future__ import annotations

import dataclasses
import os
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from cycler_da.core.channels import LATITUDE, LEVEL, LONGITUDE, NATURE_LEVELS, TIME, VARIABLES
from cycler_da.paths import PACKAGE_DATA, data_dir
from cycler_da.provenance import config_hash, provenance_attrs

NATURE_VERSION = 1  # bump when the generated fields change for the same spec
ORIGIN = pd.Timestamp("2016-01-01")
STEP = pd.Timedelta(hours=6)
DT_MINUTES = {"T21": 30.0, "T42": 15.0}
SPINUP_DAYS = {"seed": 60, "upsample": 30}  # branch spin-up: decorrelate / fill small scales
PERTURBATION_K = 1.0  # temperature noise that starts a non-default seed
STATE_FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")


@dataclasses.dataclass(frozen=True)
class NatureSpec:
    """Which nature run: everything that changes its values.

    Attributes:
        resolution: "T21" (32×64 Gaussian, default) or "T42" (64×128).
        seed: 0 is the canonical trajectory that ships as snapshots; other seeds are
            independent realisations of the same climate.
        compiled: Integrate with ``torch.compile`` (3× faster after a ~1.5 min compile).
            Compiled and eager integration differ by round-off, so it is part of the key.
    """

    resolution: str = "T21"
    seed: int = 0
    compiled: bool = True

    def __post_init__(self) -> None:
        if self.resolution not in DT_MINUTES:
            raise ValueError(f"unknown resolution {self.resolution!r}; choose one of {sorted(DT_MINUTES)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def model_config(self):
        from forecast_models.held_suarez import HeldSuarezConfig

        return HeldSuarezConfig(resolution=self.resolution, dt_minutes=DT_MINUTES[self.resolution])

    def as_dict(self) -> dict:
        return {
            "model": "held-suarez",
            "nature_version": NATURE_VERSION,
            **dataclasses.asdict(self.model_config()),
            "seed": self.seed,
            "integrator": "compiled" if self.compiled else "eager",
            "levels_hpa": list(NATURE_LEVELS),
        }

    @property
    def key(self) -> str:
        return f"held-suarez-{self.resolution}-seed{self.seed}-{config_hash(self.as_dict())}"

    @property
    def cache_dir(self) -> Path:
        return data_dir() / "nature" / self.key


@cache
def _model(resolution: str):
    from forecast_models.held_suarez import HeldSuarezModel

    return HeldSuarezModel(NatureSpec(resolution).model_config())


@cache
def _stepper(resolution: str, compiled: bool):
    """One 6-hour step function (compiled once per process when asked)."""
    model = _model(resolution)
    # One eager step fills dinosaur's cache of implicit-solver matrices (NumPy code that
    # torch.compile cannot trace); the compiled graph then only reads the cache.
    with torch.no_grad():
        model._step(model.rest_state(torch.Generator().manual_seed(0)))
    step = torch.compile(model._step, fullgraph=True) if compiled else model._step
    steps = model.config.steps_per_6h

    @torch.no_grad()
    def advance_6h(state):
        for _ in range(steps):
            state = step(state)
        return state

    return advance_6h


def snapshot_path(resolution: str = "T21") -> Path:
    return PACKAGE_DATA / f"held_suarez_{resolution}.npz"


def save_states(path: Path, states: dict[pd.Timestamp, object]) -> None:
    """Writes spectral states keyed by date (``YYYY-MM-DDTHH/field``), atomically."""
    arrays = {
        f"{t:%Y-%m-%dT%H}/{f}": getattr(s, f).cpu().numpy() for t, s in states.items() for f in STATE_FIELDS
    }
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_states(path: Path) -> dict[pd.Timestamp, object]:
    """Reads states written by :func:`save_states`."""
    from forecast_models.held_suarez import State

    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read nature-run states from {path}: {err}") from err
    dates = sorted({k.split("/")[0] for k in arrays})
    return {
        pd.Timestamp(d): State(
            **{f: torch.from_numpy(arrays[f"{d}/{f}"]) for f in STATE_FIELDS}, sim_time=None
        )
        for d in dates
    }


@cache
def shipped_snapshots(resolution: str = "T21") -> dict[pd.Timestamp, object]:
    path = snapshot_path(resolution)
    return load_states(path) if path.exists() else {}


def month_starts(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """First-of-month timestamps of every month that [start, end] touches."""
    first = start.to_period("M").to_timestamp()
    last = end.to_period("M").to_timestamp()
    return list(pd.date_range(first, last, freq="MS"))


def _branch_origin(spec: NatureSpec, progress: bool):
    """The 2016-01-01 state of a non-canonical trajectory (other seed or resolution)."""
    from dinosaur_torch import coordinate_systems

    snapshots = shipped_snapshots("T21")
    if ORIGIN not in snapshots:
        raise FileNotFoundError(f"the shipped snapshot file {snapshot_path()} is missing")
    state = snapshots[ORIGIN]
    model = _model(spec.resolution)
    spinup = 0
    if spec.resolution != "T21":
        upsample = coordinate_systems.get_spectral_upsample_fn(_model("T21").coords, model.coords)
        state = upsample(state)
        spinup = SPINUP_DAYS["upsample"]
    if spec.seed:
        generator = torch.Generator().manual_seed(spec.seed)
        state = model.perturb(state, PERTURBATION_K, generator)
        spinup = max(spinup, SPINUP_DAYS["seed"])
    advance = _stepper(spec.resolution, spec.compiled)
    for _ in tqdm(range(spinup * 4), desc=f"spin-up {spec.key}", disable=not progress):
        state = advance(state)
    return state


def _month_files(spec: NatureSpec, month: pd.Timestamp) -> tuple[Path, Path]:
    stem = f"{month:%Y-%m}"
    return spec.cache_dir / f"{stem}.nc", spec.cache_dir / f"{stem}.next-state.npz"


def _shipped_start(spec: NatureSpec, month: pd.Timestamp):
    """The shipped state that starts `month` of the canonical trajectory, or None."""
    if spec.resolution == "T21" and spec.seed == 0:
        return shipped_snapshots("T21").get(month)
    return None


def _start_state(spec: NatureSpec, month: pd.Timestamp, progress: bool):
    shipped = _shipped_start(spec, month)
    if shipped is not None:
        return shipped
    if month == ORIGIN:
        return _branch_origin(spec, progress)
    previous = month - pd.offsets.MonthBegin(1)
    _, next_state = _month_files(spec, previous)
    if not next_state.exists():
        raise RuntimeError(f"internal: month {previous:%Y-%m} of {spec.key} not generated")
    return load_states(next_state)[month]


def _fields_to_dataset(fields: list[dict], times: pd.DatetimeIndex, spec: NatureSpec) -> xr.Dataset:
    model = _model(spec.resolution)
    coords = {
        TIME: times,
        LEVEL: np.asarray(NATURE_LEVELS, dtype=np.int32),
        LATITUDE: model.latitudes_deg,
        LONGITUDE: model.longitudes_deg,
    }
    data = {}
    for name in ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind"):
        # dinosaur lays nodal fields out (level, longitude, latitude).
        stacked = np.stack([f[name].numpy() for f in fields]).transpose(0, 1, 3, 2)
        data[name] = ((TIME, LEVEL, LATITUDE, LONGITUDE), stacked.astype(np.float32))
    surface = np.stack([f["surface_pressure"].numpy().T for f in fields]).astype(np.float32)
    data["surface_pressure"] = ((TIME, LATITUDE, LONGITUDE), surface)
    # No orography: the surface is at sea level, so mean-sea-level pressure equals it.
    data["mean_sea_level_pressure"] = ((TIME, LATITUDE, LONGITUDE), surface.copy())
    ds = xr.Dataset(data, coords=coords)
    for name, var in ds.data_vars.items():
        meta = VARIABLES[name]
        var.attrs.update(units=meta.units, standard_name=meta.standard_name, long_name=meta.long_name)
    ds[LEVEL].attrs.update(units="hPa", long_name="pressure level", positive="down")
    ds[LATITUDE].attrs.update(units="degrees_north", standard_name="latitude", grid="gaussian")
    ds[LONGITUDE].attrs.update(units="degrees_east", standard_name="longitude")
    ds.attrs.update(
        Conventions="CF-1.8",
        title=f"Held-Suarez nature run ({spec.resolution}, seed {spec.seed})",
        source="Held & Suarez (1994) dry primitive equations on dinosaur-torch "
        f"{_dinosaur_version()}, {spec.resolution} L8",
        institution="cycler",
        **provenance_attrs(spec.as_dict(), seed=spec.seed),
    )
    return ds


def _dinosaur_version() -> str:
    from importlib.metadata import version

    return version("dinosaur-torch")


def generate_month(spec: NatureSpec, month: pd.Timestamp, bar: tqdm | None = None) -> Path:
    """Integrates one calendar month and writes it (and the next month's start state)."""
    data_path, state_path = _month_files(spec, month)
    state = _start_state(spec, month, progress=bar is not None)
    model = _model(spec.resolution)
    advance = _stepper(spec.resolution, spec.compiled)
    times = pd.date_range(month, month + pd.offsets.MonthBegin(1), freq=STEP, inclusive="left")
    fields = []
    for _ in times:
        fields.append(model.diagnose(state, NATURE_LEVELS))
        state = advance(state)
        if bar is not None:
            bar.update(1)
    ds = _fields_to_dataset(fields, times, spec)
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    save_states(state_path, {month + pd.offsets.MonthBegin(1): state})
    tmp = data_path.with_name(data_path.name + ".tmp")
    encoding = {name: {"zlib": True, "complevel": 1} for name in ds.data_vars}
    ds.to_netcdf(tmp, encoding=encoding)
    os.replace(tmp, data_path)
    return data_path


def ensure_nature(
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    spec: NatureSpec = NatureSpec(),
    progress: bool = True,
) -> list[Path]:
    """Makes sure every month touching [start, end] is in the cache; returns their files."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if end < start:
        raise ValueError(f"end {end:%Y-%m-%d} is before start {start:%Y-%m-%d}")
    if start < ORIGIN:
        raise ValueError(f"the nature run's calendar starts at {ORIGIN:%Y-%m-%d}; got start {start:%Y-%m-%d}")
    needed = month_starts(start, end)
    # Months without their own start state need every month before them.
    todo: list[pd.Timestamp] = []
    for month in needed:
        chain = [month]
        while not _has_start(spec, chain[-1]) and chain[-1] > ORIGIN:
            chain.append(chain[-1] - pd.offsets.MonthBegin(1))
        todo.extend(m for m in reversed(chain) if m not in todo and not _month_files(spec, m)[0].exists())
    todo.sort()
    if todo:
        total = sum(_steps_in_month(m) for m in todo)
        if progress:
            tqdm.write(
                f"the nature run: integrating {len(todo)} month(s) ({todo[0]:%Y-%m} to {todo[-1]:%Y-%m}), about "
                f"{_estimate_minutes(spec, total):.1f} min on 2 cores; cached in {spec.cache_dir}"
            )
        with tqdm(
            total=total,
            desc=f"nature run {spec.resolution} seed {spec.seed}",
            unit="6h",
            disable=not progress,
        ) as bar:
            for month in todo:
                generate_month(spec, month, bar if progress else None)
    return [_month_files(spec, m)[0] for m in needed]


# Minutes per simulated year on 2 cores with the compiled integrator (benchmarks/results-nature_run.txt);
# the eager one is about 3.2 times slower.
MINUTES_PER_YEAR = {"T21": 3.4, "T42": 17.4}


def _estimate_minutes(spec: NatureSpec, steps: int) -> float:
    years = steps / (4 * 365.25)
    return years * MINUTES_PER_YEAR[spec.resolution] * (1.0 if spec.compiled else 3.2)


def _has_start(spec: NatureSpec, month: pd.Timestamp) -> bool:
    if _shipped_start(spec, month) is not None:
        return True
    return _month_files(spec, month - pd.offsets.MonthBegin(1))[1].exists()


def _steps_in_month(month: pd.Timestamp) -> int:
    return int((month + pd.offsets.MonthBegin(1) - month) / STEP)


def open_nature(
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    spec: NatureSpec = NatureSpec(),
    progress: bool = True,
) -> xr.Dataset:
    """The nature run on [start, end] (6-hourly, inclusive), generating what is missing.

    The dataset is lazy (dask), one chunk per month file.
    """
    files = ensure_nature(start, end, spec, progress)
    ds = xr.open_mfdataset(
        files, combine="by_coords", data_vars="minimal", coords="minimal", compat="override", join="exact"
    )
    return ds.sel({TIME: slice(pd.Timestamp(start), pd.Timestamp(end))})
