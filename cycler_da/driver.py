"""The cycle (DESIGN.md §4): forecast → observe → QC → analyse → write, every 6 hours.

Methods keep no state between windows; everything that crosses a window is the analysis the
driver carries and writes. The carried state is exactly what is written (float32, physical
units), so a run resumed from its last complete window gives the same result as one that
never stopped.
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from cycler_da import __version__, nature, run_forecasts
from cycler_da.analysis import MethodContext, build_method, known_methods, method_defaults
from cycler_da.config import ConfigError, dump_config
from cycler_da.normalization import NormStats
from cycler_da.observing import QC_MEANINGS, QC_USED, quality_control, simulate, window_generator
from cycler_da.provenance import config_hash, file_hash, git_commit
from cycler_da.regrid import regrid
from cycler_da.run_config import METHOD_DEFAULTS, RunConfig
from cycler_da.run_io import (
    make_run_dir,
    now,
    read_json,
    read_scores,
    read_state,
    stamp,
    write_json,
    write_observations,
    write_scores,
    write_state,
)
from cycler_da.sources import DataError, open_dataset
from cycler_da.state import Grid, to_tensor
from cycler_da.statistics_cache import TrainingErrors, truth_climatology, truth_norm_stats
from cycler_da.variables import TIME
from forecast_models.checkpoint import check_compatible, load_checkpoint, resolve_checkpoint
from observation_ops.networks import NetworkSpec

STEP = pd.Timedelta(hours=6)


FORECAST_SCORES = "forecast_scores.nc"


class RunError(RuntimeError):
    """A run that cannot start or continue; earlier windows are left intact."""


def resolve(config: RunConfig) -> RunConfig:
    """Checks cross-section choices and fills defaults that depend on them.

    Runs before anything expensive, so a wrong method or channel fails at once.
    """
    if config.method.name not in known_methods():
        raise ConfigError(
            f"method.name: unknown analysis method {config.method.name!r}; known: {', '.join(known_methods())}"
        )
    for n in config.observations.networks:
        if n.channels != "all" and (unknown := set(n.channels) - set(config.channels)):
            raise ConfigError(
                f"observations.networks: channels {sorted(unknown)} are not in channels {config.channels}"
            )
    for label in config.observations.absolute_error:
        if label not in config.channels:
            raise ConfigError(
                f"observations.absolute_error: {label!r} is not one of the channels {config.channels}"
            )
    data = config.model_dump()
    allowed = method_defaults(config.method.name)
    unknown = set(config.method.params) - set(allowed)
    if unknown and allowed:
        raise ConfigError(
            f"method.params: {sorted(unknown)} are not parameters of {config.method.name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    data["method"]["params"] = {**allowed, **config.method.params}
    defaults = METHOD_DEFAULTS.get(config.method.name, {})
    if "members" in defaults and config.ensemble.members == 1:
        data["ensemble"]["members"] = defaults["members"]
    if not data["run"]["name"]:
        data["run"]["name"] = f"{config.method.name}-{config.run.start:%Y%m%dT%H}"
    return RunConfig.model_validate(data)


@dataclass
class Setup:
    """Everything built once per run."""

    config: RunConfig
    run_dir: Path
    labels: list[str]
    grid: Grid
    stats: NormStats
    truth: torch.Tensor  # normalised (time, channel, lat, lon)
    truth_times: pd.DatetimeIndex
    truth_path: str
    emulator: torch.nn.Module
    checkpoint: Path
    checkpoint_sha: str
    method: object
    networks: list[NetworkSpec]
    error_std: np.ndarray  # normalised, (channel,)
    background_std: np.ndarray  # normalised, (channel, lat)
    windows: pd.DatetimeIndex
    device: torch.device
    climatology: np.ndarray | None = None  # physical (channel, lat, lon), for forecast ACC

    def truth_or_none(self, time: pd.Timestamp) -> torch.Tensor | None:
        """The truth at `time` if the loaded truth covers it (forecast verification)."""
        return self.truth_at(time) if time in self.truth_times else None

    def truth_at(self, time: pd.Timestamp) -> torch.Tensor:
        index = self.truth_times.get_indexer([time])[0]
        if index < 0:
            raise RunError(f"the truth has no state at {time}")
        state = self.truth[index : index + 1]
        if not torch.isfinite(state).all():
            bad = [self.labels[c] for c in range(state.shape[1]) if not torch.isfinite(state[0, c]).all()]
            raise RunError(f"the truth at {time} has NaN or infinity in channels {bad}: the data is corrupt")
        return state.to(self.device)


def _open_truth(config: RunConfig, start: pd.Timestamp, end: pd.Timestamp) -> tuple[xr.Dataset, str, str]:
    """The truth dataset covering [start, end] and its training period, its path and a cache key."""
    truth = config.truth
    if truth.source == "nature":
        spec = nature.NatureSpec(truth.nature.resolution, truth.nature.seed, truth.nature.compiled)
        # Lazy: one span covering the training period (statistics) and the run's windows.
        first = min(start, pd.Timestamp(truth.train_period[0]))
        ds = nature.open_nature(first, max(end, pd.Timestamp(truth.train_period[1])), spec)
        return ds, str(spec.cache_dir), spec.key
    ds = open_dataset(truth.path)
    return ds, str(truth.path), f"dataset:{truth.path}"


def setup(config: RunConfig, run_dir: Path) -> Setup:
    cfg = config
    labels = list(cfg.channels)
    device = torch.device(cfg.run.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("run.device is cuda, but torch sees no CUDA device")
    start = pd.Timestamp(cfg.run.start)
    windows = pd.date_range(start + STEP, start + pd.Timedelta(days=cfg.run.days), freq=STEP)
    members = cfg.ensemble.members
    checkpoint = resolve_checkpoint(cfg.forecast.checkpoint)
    emulator, manifest = load_checkpoint(checkpoint, device)
    # The oldest truth any forecast-from-truth needs (the cold start; later seed-protocol
    # backgrounds start after it), 6 h more for a two-frame emulator's previous state.
    earliest = start - pd.Timedelta(
        hours=cfg.cold_start.lead_hours
        + cfg.cold_start.lagged_hours * (members - 1)
        + (6 if emulator.takes_previous else 0)
    )
    # Forecasts from analyses are scored as far as the truth reaches past the last window.
    last = windows[-1] + pd.Timedelta(hours=cfg.forecast.max_lead_hours if cfg.forecast.from_hours else 0)
    ds, truth_path, source_key = _open_truth(cfg, earliest, last)
    model_grid = Grid.from_dict(manifest["grid"])
    if not Grid.from_dataset(ds).same_as(model_grid):
        ds = regrid(ds, model_grid)
    grid = Grid.from_dataset(ds)
    stats = truth_norm_stats(ds, labels, cfg.truth.train_period, source_key)
    try:
        check_compatible(
            manifest,
            labels,
            grid.latitudes,
            grid.longitudes,
            stats.mean,
            stats.std,
            name=f"checkpoint {checkpoint}",
        )
    except ValueError as err:
        raise RunError(str(err)) from err
    sha = file_hash(checkpoint)
    window_ds = ds.sel({TIME: slice(earliest, last)}).load()
    times = pd.DatetimeIndex(window_ds[TIME].values)
    missing = windows.difference(times)
    if len(missing):
        raise RunError(
            f"the truth lacks {len(missing)} window times, first {missing[0]} (source {truth_path})"
        )
    truth = stats.normalise(to_tensor(window_ds, labels))
    training_errors = TrainingErrors(
        ds, labels, cfg.truth.train_period, stats, emulator.cpu(), sha, source_key
    )
    bstats = training_errors.statistics()
    emulator.to(device)
    if cfg.forecast.compile:
        emulator.compile_network()
    # The training errors move with the emulator; an ensemble B asks for them lazily.
    context = MethodContext(
        tuple(labels),
        grid.latitudes,
        grid.longitudes,
        bstats,
        str(device),
        stats,
        training_errors.errors,
        cfg.ensemble.members,
    )
    try:
        method = build_method(cfg.method.name, context, **cfg.method.params)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from err
    index = {label: i for i, label in enumerate(labels)}
    networks = [
        NetworkSpec(
            channels=tuple(range(len(labels)))
            if n.channels == "all"
            else tuple(index[c] for c in n.channels),
            **n.model_dump(exclude={"channels"}),
        )
        for n in cfg.observations.networks
    ]
    error_std = np.full(len(labels), cfg.observations.relative_error)
    for label, value in cfg.observations.absolute_error.items():
        error_std[index[label]] = value / stats.std[index[label]]
    clim = (
        truth_climatology(ds, labels, cfg.truth.train_period, source_key) if cfg.forecast.from_hours else None
    )
    return Setup(
        cfg,
        run_dir,
        labels,
        grid,
        stats,
        truth,
        times,
        truth_path,
        emulator,
        checkpoint,
        sha,
        method,
        networks,
        error_std,
        bstats.std * cfg.observations.qc.background_error_scale,
        windows,
        device,
        clim,
    )


def _truth_before(s: Setup, time: pd.Timestamp, state: torch.Tensor) -> torch.Tensor:
    """The truth 6 h before `time` for a two-frame emulator; a one-frame one never reads it."""
    return s.truth_at(time - STEP) if s.emulator.takes_previous else state


def _forecast_from_truth(s: Setup, valid: pd.Timestamp) -> tuple[torch.Tensor, torch.Tensor]:
    """The cold-start / seed-protocol background: lead-hour forecasts from the truth, lagged per
    member; returns the members at `valid` and 6 h before."""
    cold = s.config.cold_start
    members, before = [], []
    with torch.inference_mode():
        for k in range(s.config.ensemble.members):
            hours = cold.lead_hours + k * cold.lagged_hours
            start = valid - pd.Timedelta(hours=hours)
            state = s.truth_at(start)
            previous = _truth_before(s, start, state)
            for _ in range(hours // 6):
                previous, state = state, s.emulator.step(state, previous)
            members.append(state)
            before.append(previous)
    return torch.cat(members), torch.cat(before)


def cold_start(s: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    """The first members and the states 6 h before them (a two-frame emulator's previous frame)."""
    start = pd.Timestamp(s.config.run.start)
    if s.config.cold_start.kind == "forecast":
        return _forecast_from_truth(s, start)
    rng = window_generator(s.config.run.seed, start, stream=3)
    noise = torch.as_tensor(
        rng.standard_normal((s.config.ensemble.members, *s.truth.shape[1:])) * s.config.cold_start.noise_std,
        dtype=s.truth.dtype,
        device=s.device,
    )
    truth = s.truth_at(start)
    return truth + noise, _truth_before(s, start, truth) + noise


def _previous_frame(s: Setup, x_prev: torch.Tensor, x_now: torch.Tensor) -> torch.Tensor:
    """What the emulator takes as the state 6 h before each member of `x_now` (``forecast.previous``).

    "mean": the previous ensemble mean shifted by the member's departure from the current
    mean, so every member takes the ensemble mean's tendency: a member's departure would
    otherwise read as tendency and be extrapolated, inflating the spread.
    """
    if s.config.forecast.previous == "members":
        return x_prev
    return x_prev.mean(0, keepdim=True) + (x_now - x_now.mean(0, keepdim=True))


def _round_trip(s: Setup, x: torch.Tensor) -> torch.Tensor:
    """`x` as it is after being written as float32 physical values and read back (resume equivalence)."""
    return s.stats.normalise(s.stats.denormalise(x).float())


def _area_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(channel, lat, lon) → (channel,)."""
    return (x * weights[:, None]).mean(dim=(-2, -1))


def window_scores(s: Setup, time, x_b, x_a, truth, wobs, omb, oma, diagnostics, seconds) -> dict:
    """Per-window scores in physical units."""
    w = torch.as_tensor(s.grid.area_weights(), dtype=torch.float64, device=x_b.device)
    std = torch.as_tensor(s.stats.std, dtype=torch.float64, device=x_b.device)
    row: dict = {"time": time}
    for name, x in (("analysis", x_a), ("background", x_b)):
        x = x.double()
        err = (x.mean(0) - truth[0].double()) * std[:, None, None]
        row[f"{name}_rmse"] = _area_mean(err**2, w).sqrt().tolist()
        row[f"{name}_bias"] = _area_mean(err, w).tolist()
        spread = x.var(0, unbiased=True) if x.shape[0] > 1 else torch.zeros_like(x[0])
        row[f"{name}_spread"] = (_area_mean(spread, w).sqrt() * std).tolist()
    used = wobs.flags == QC_USED
    sigma = s.stats.std
    for key, dep in (("omb", omb), ("oma", oma)):
        means, rms = [], []
        for c in range(len(s.labels)):
            sel = used & (wobs.channel == c)
            d = dep[sel] * sigma[c]
            means.append(float(d.mean()) if sel.any() else np.nan)
            rms.append(float(np.sqrt((d**2).mean())) if sel.any() else np.nan)
        row[f"{key}_mean"], row[f"{key}_rms"] = means, rms
    row["obs_error_std"] = (s.error_std * sigma).tolist()
    row["obs_used"] = [float((used & (wobs.channel == c)).sum()) for c in range(len(s.labels))]
    row["obs_rejected"] = [float((~used & (wobs.channel == c)).sum()) for c in range(len(s.labels))]
    row["wall_seconds"] = seconds
    for key, value in diagnostics.items():
        row[f"method_{key}"] = float(value)
    return row


def _attrs(s: Setup, kind: str) -> dict:
    return {
        "title": f"cycler {kind}",
        "cycler_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash(s.config.model_dump(mode="json")),
        "seed": s.config.run.seed,
        "method": s.config.method.name,
        "checkpoint_sha256": s.checkpoint_sha,
    }


def run_cycle(config: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Runs (or resumes) a cycling experiment; returns the run directory."""
    config = resolve(config)
    run_dir = Path(config.run.runs_dir) / str(config.run.name)
    status_path = run_dir / "run.json"
    if run_dir.exists() and not resume:
        raise RunError(f"{run_dir} exists: pass --resume to continue it, or choose another --name")
    if resume:
        if not status_path.exists():
            raise RunError(f"nothing to resume: {status_path} does not exist")
        saved = (run_dir / "config.yaml").read_text()
        if saved != dump_config(config):
            raise RunError(f"{run_dir} was made with another configuration; resume with the same options")
    s = setup(config, run_dir)
    make_run_dir(run_dir)
    if not resume:
        (run_dir / "config.yaml").write_text(dump_config(config))
    status = (
        read_json(status_path)
        if resume
        else {
            "status": "running",
            "created": now(),
            "cycler_version": __version__,
            "git_commit": git_commit(),
            "config_hash": config_hash(config.model_dump(mode="json")),
            "seed": config.run.seed,
            "method": config.method.name,
            "members": config.ensemble.members,
            "checkpoint": {"path": str(s.checkpoint), "sha256": s.checkpoint_sha},
            "truth": s.truth_path,
            "windows_total": len(s.windows),
            "windows_done": [],
            "wall_seconds": {},
            "nfe": {},
        }
    )
    done = set(status["windows_done"])
    rows = read_scores(run_dir / "scores.nc") if done and (run_dir / "scores.nc").exists() else []
    rows = [r for r in rows if stamp(r["time"]) in done]
    forecast_rows = [
        r for r in run_forecasts.read_forecast_scores(run_dir / FORECAST_SCORES) if stamp(r["time"]) in done
    ]
    # x_a: the latest analysis members; x_prev: those 6 h before (a two-frame emulator's input).
    if done:
        last = max(pd.Timestamp(t) for t in status["windows_done"])

        def analysis_at(t: pd.Timestamp) -> torch.Tensor:
            return s.stats.normalise(
                read_state(run_dir / "analysis" / f"{stamp(t)}.nc", s.labels).to(s.device)
            )

        if stamp(last - STEP) in done:
            x_prev = analysis_at(last - STEP)
        else:  # before the second window the previous analysis is the cold start itself
            x_prev = _round_trip(s, cold_start(s)[0])
        x_a = analysis_at(last)
    else:
        x_a, x_prev = (_round_trip(s, x) for x in cold_start(s))
    status["status"] = "running"
    write_json(status_path, status)

    todo = [t for t in s.windows if stamp(t) not in done]
    bar = tqdm(todo, desc=f"{config.method.name} {config.run.name}", unit="window", disable=not progress)
    try:
        for t in bar:
            began = clock.perf_counter()
            if config.run.protocol == "cycle":
                with torch.inference_mode():
                    x_b = s.emulator.step(x_a, _previous_frame(s, x_prev, x_a))
            else:
                # No cycle: the analysis's predecessor is the background's own state 6 h before.
                x_b, x_b_before = _forecast_from_truth(s, t)
            x_b = x_b.clone()
            truth = s.truth_at(t)
            chan, lat, lon, y, sig = simulate(
                t, truth, s.networks, s.error_std, s.grid.latitudes, s.grid.longitudes, config.run.seed
            )
            wobs = quality_control(
                chan,
                lat,
                lon,
                y,
                sig,
                x_b,
                s.background_std,
                s.grid.latitudes,
                s.grid.longitudes,
                config.observations.qc.background_check,
                config.observations.qc.thinning_km,
            )
            generator = torch.Generator(device=s.device).manual_seed(
                int(window_generator(config.run.seed, t, stream=2).integers(2**62))
            )
            if wobs.used is None:
                analysis_state, diagnostics = x_b, {"observations": 0.0}
            else:
                try:
                    result = s.method.analyse(x_b, wobs.used, generator=generator)
                except FloatingPointError as err:
                    raise RunError(
                        f"window {t}: {config.method.name}: {err}; earlier windows are kept, "
                        "--resume continues from this one"
                    ) from err
                analysis_state, diagnostics = result.state, dict(result.diagnostics)
            x_a_phys = s.stats.denormalise(analysis_state.detach()).float()
            x_b_phys = s.stats.denormalise(x_b).float()
            x_prev = x_a if config.run.protocol == "cycle" else _round_trip(s, x_b_before)
            x_a = s.stats.normalise(x_a_phys)
            omb = wobs.values - wobs.background_equivalent
            with torch.no_grad():
                oma = wobs.values - wobs.operator(x_a.double()).mean(0).cpu().numpy()
            seconds = clock.perf_counter() - began
            _write_window(s, t, x_b_phys, x_a_phys, wobs, omb, oma)
            rows.append(window_scores(s, t, x_b, x_a, truth, wobs, omb, oma, diagnostics, seconds))
            write_scores(run_dir / "scores.nc", rows, s.labels)
            if run_forecasts.wanted(config, t):
                forecast_rows.append(_forecast_and_score(s, t, x_a, _previous_frame(s, x_prev, x_a)))
                run_forecasts.write_forecast_scores(
                    run_dir / FORECAST_SCORES, forecast_rows, s.labels, run_forecasts.lead_hours(config)
                )
            status["windows_done"].append(stamp(t))
            status["wall_seconds"][stamp(t)] = round(seconds, 4)
            status["nfe"][stamp(t)] = diagnostics.get("nfe", diagnostics.get("evaluations", 0.0))
            status["updated"] = now()
            write_json(status_path, status)
            rmse = rows[-1]["analysis_rmse"]
            bar.set_postfix(
                {
                    f"a-RMSE {lab}": f"{rmse[i]:.3g}"
                    for i, lab in enumerate(s.labels)
                    if lab in ("z500", "t850")
                }
            )
    except BaseException:
        status["status"] = "interrupted"
        write_json(status_path, status)
        raise
    status["status"] = "complete"
    write_json(status_path, status)
    return run_dir


def _forecast_and_score(s: Setup, t: pd.Timestamp, x_a: torch.Tensor, previous: torch.Tensor) -> dict:
    leads = run_forecasts.lead_hours(s.config)
    forecast = s.stats.denormalise(run_forecasts.make_forecast(s.emulator, x_a, leads, previous)).float()
    written = forecast if s.config.forecast.write_members else forecast.mean(dim=1, keepdim=True)
    attrs = _attrs(s, "forecast") | (
        {} if s.config.forecast.write_members else {"realization": "ensemble mean"}
    )
    run_forecasts.write_forecast(
        s.run_dir / "forecasts" / f"{stamp(t)}.nc", written, s.labels, s.grid, t, leads, attrs
    )
    truths = []
    for hours in leads:
        truth = s.truth_or_none(t + pd.Timedelta(hours=hours))
        truths.append(None if truth is None else s.stats.denormalise(truth)[0].double().cpu().numpy())
    scores = run_forecasts.score_forecast(
        forecast.double().cpu().numpy(), truths, s.climatology, s.grid.area_weights()
    )
    return {"time": t, **scores}


def _write_window(s: Setup, t, x_b_phys, x_a_phys, wobs, omb, oma) -> None:
    name = f"{stamp(t)}.nc"
    labels = s.labels
    sigma, mean = s.stats.std, s.stats.mean
    c = wobs.channel
    table = {
        "channel": c,
        "latitude": wobs.latitude,
        "longitude": wobs.longitude,
        "value": wobs.values * sigma[c] + mean[c],
        "error_std": wobs.error_std * sigma[c],
        "omb": omb * sigma[c],
        "oma": oma * sigma[c],
        "flag": wobs.flags,
    }
    write_state(s.run_dir / "background" / name, x_b_phys, labels, s.grid, t, _attrs(s, "background"))
    write_observations(
        s.run_dir / "observations" / name, table, labels, t, _attrs(s, "observations"), QC_MEANINGS
    )
    # Every member is written: the next window (and a resumed run) starts from them.
    write_state(s.run_dir / "analysis" / name, x_a_phys, labels, s.grid, t, _attrs(s, "analysis"))


__all__ = ["DataError", "RunError", "resolve", "run_cycle"]
