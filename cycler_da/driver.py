"""The cycle: forecast → observe → QC → analyse → write, every 6 hours.

Methods keep no state between windows; everything that crosses a window is the analysis the
driver carries and writes. The carried analysis is exactly what is written (float32,
physical units, read back), so a run resumed from its last complete window gives the same
result as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cycler_da import __version__, guard, metrics, run_forecasts
from cycler_da.config import ConfigError
from cycler_da.core.registry import MethodError, method_spec
from cycler_da.observing import (
    QC_MEANINGS,
    QC_USED,
    WindowObservations,
    quality_control,
    simulate,
    window_generator,
)
from cycler_da.provenance import config_hash, git_commit
from cycler_da.run_config import RunConfig
from cycler_da.run_io import (
    make_run_dir,
    read_scores,
    read_state,
    stamp,
    write_observations,
    write_scores,
    write_state,
)
from cycler_da.run_lock import RunLock
from cycler_da.run_setup import STEP, RunError, Setup, build_setup
from cycler_da.run_status import RunStatus
from cycler_da.sources import DataError

FORECAST_SCORES = "forecast_scores.nc"
SCORES = "scores.nc"


def resolve(config: RunConfig) -> RunConfig:
    """Checks cross-section choices and writes every default that depends on them.

    Runs before anything expensive, so a wrong method, parameter or channel fails at once.
    """
    try:
        spec = method_spec(config.method.name)
    except MethodError as err:
        raise ConfigError(f"method.name: {err}") from None
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
    try:
        params = spec.parameters(config.method.params)
    except MethodError as err:
        raise ConfigError(f"method.params: {err}") from None
    data = config.model_dump()
    data["method"]["params"] = dataclasses.asdict(params)
    if config.ensemble.members == 1:
        data["ensemble"]["members"] = spec.members
    if not data["run"]["name"]:
        data["run"]["name"] = f"{config.method.name}-{config.run.start:%Y%m%dT%H}"
    return RunConfig.model_validate(data)


@dataclass(frozen=True, kw_only=True)
class Window:
    """One analysis window, normalised.

    Attributes:
        time: The analysis time t (observations from [t − 3 h, t + 3 h)).
        truth: (1, channel, lat, lon).
        background: (realization, channel, lat, lon).
        observations: Every observation with its QC flag.
        analysis: As written and read back, (realization, channel, lat, lon).
        analysis_physical: As written: physical units, float32.
        previous: What a two-frame emulator takes as the state 6 h before `analysis`.
        omb, oma: Observation minus background (ensemble mean) and minus analysis, (obs,).
        diagnostics: The method's scalars.
        flag: What the divergence guard did ("" when the analysis passed).
        seconds: Wall time of the background, QC and analysis.
    """

    time: pd.Timestamp
    truth: torch.Tensor
    background: torch.Tensor
    observations: WindowObservations
    analysis: torch.Tensor
    analysis_physical: torch.Tensor
    previous: torch.Tensor
    omb: np.ndarray
    oma: np.ndarray
    diagnostics: dict
    flag: str
    seconds: float


def run_cycle(config: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Runs (or resumes) a cycling experiment; returns the run directory.

    The run is locked while this process writes it: a second writer is refused.
    """
    config = resolve(config)
    runs_dir = Path(config.run.runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise RunError(f"run.runs_dir {runs_dir} is a file, not a directory")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(runs_dir, os.W_OK):
            raise PermissionError(f"no write permission for {runs_dir}")
    except OSError as err:
        raise RunError(f"run.runs_dir {runs_dir} cannot hold runs: {err.strerror or err}") from None
    with RunLock(runs_dir, str(config.run.name)):
        return _cycle(config, runs_dir / str(config.run.name), resume, progress)


def _cycle(config: RunConfig, run_dir: Path, resume: bool, progress: bool) -> Path:
    RunStatus.check(run_dir, config, resume)
    if resume:  # half-written files of a killed writer (this process holds the lock now)
        for stale in run_dir.rglob(".*.tmp-*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    s = build_setup(config, run_dir)
    make_run_dir(run_dir)
    status = RunStatus.load(run_dir) if resume else RunStatus.create(s)
    rows = status.kept(read_scores(run_dir / SCORES)) if status.done and (run_dir / SCORES).exists() else []
    forecast_rows = status.kept(run_forecasts.read_forecast_scores(run_dir / FORECAST_SCORES))
    x_a, x_prev = starting_states(s, status)
    status.mark("running")
    todo = [t for t in s.windows if stamp(t) not in status.done]
    bar = tqdm(todo, desc=f"{config.method.name} {config.run.name}", unit="window", disable=not progress)
    try:
        for t in bar:
            window = cycle_window(s, t, x_a, x_prev)
            x_a, x_prev = window.analysis, window.previous
            try:
                record_window(s, window, rows, forecast_rows, status)
            except OSError as err:  # a full disk, say: this window is not done, the ones before are
                raise RunError(
                    f"window {t}: writing {err.filename or run_dir} failed: {err.strerror or err}; the windows "
                    "before it are complete, and --resume continues from this one"
                ) from err
            rmse = rows[-1]["analysis_rmse"]
            bar.set_postfix(
                {f"a-RMSE {c}": f"{rmse[i]:.3g}" for i, c in enumerate(s.labels) if c in ("z500", "t850")}
            )
    except BaseException:
        status.mark("interrupted")
        raise
    status.mark("complete")
    return run_dir


def record_window(s: Setup, window: Window, rows: list, forecast_rows: list, status: RunStatus) -> None:
    """Writes the window's files, scores and forecast, then marks it done in run.json (last)."""
    t, config = window.time, s.config
    write_window(s, window)
    rows.append(window_scores(s, window))
    write_scores(s.run_dir / SCORES, rows, s.labels)
    if run_forecasts.wanted(config, t):
        forecast_rows.append(
            forecast_and_score(s, t, window.analysis, previous_frame(s, window.previous, window.analysis))
        )
        leads = run_forecasts.lead_hours(config)
        run_forecasts.write_forecast_scores(s.run_dir / FORECAST_SCORES, forecast_rows, s.labels, leads)
    d = window.diagnostics
    status.window_done(t, window.seconds, d.get("nfe", d.get("evaluations", 0.0)), window.flag)


def round_trip(s: Setup, state: torch.Tensor) -> torch.Tensor:
    """`state` as it is after being written (float32, physical) and read back."""
    return s.normalised(s.physical(state))


def starting_states(s: Setup, status: RunStatus) -> tuple[torch.Tensor, torch.Tensor]:
    """The analysis the next window starts from and the one 6 h before it: the cold start,
    or the last complete windows' analyses read back from the run directory."""
    last = status.last_done()
    if last is None:
        x_a, x_prev = cold_start(s)
        return round_trip(s, x_a), round_trip(s, x_prev)

    def analysis_at(t: pd.Timestamp) -> torch.Tensor:
        return s.normalised(read_state(s.run_dir / "analysis" / f"{stamp(t)}.nc", s.labels).to(s.device))

    # Before the second window the previous analysis is the cold start itself.
    done_before = stamp(last - STEP) in status.done
    x_prev = analysis_at(last - STEP) if done_before else round_trip(s, cold_start(s)[0])
    return analysis_at(last), x_prev


def _truth_before(s: Setup, time: pd.Timestamp, state: torch.Tensor) -> torch.Tensor:
    """The truth 6 h before `time` for a two-frame emulator; a one-frame one never reads it."""
    return s.truth_at(time - STEP) if s.emulator.takes_previous else state


def forecast_from_truth(s: Setup, valid: pd.Timestamp) -> tuple[torch.Tensor, torch.Tensor]:
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
        return forecast_from_truth(s, start)
    rng = window_generator(s.config.run.seed, start, stream=3)
    noise = (
        rng.standard_normal((s.config.ensemble.members, *s.truth.shape[1:])) * s.config.cold_start.noise_std
    )
    noise = torch.as_tensor(noise, dtype=s.truth.dtype, device=s.device)
    truth = s.truth_at(start)
    return truth + noise, _truth_before(s, start, truth) + noise


def previous_frame(s: Setup, x_prev: torch.Tensor, x_now: torch.Tensor) -> torch.Tensor:
    """What the emulator takes as the state 6 h before each member of `x_now` (``forecast.previous``).

    "mean": the previous ensemble mean shifted by the member's departure from the current
    mean, so every member takes the ensemble mean's tendency: a member's departure would
    otherwise read as tendency and be extrapolated, inflating the spread.
    """
    if s.config.forecast.previous == "members":
        return x_prev
    return x_prev.mean(0, keepdim=True) + (x_now - x_now.mean(0, keepdim=True))


def cycle_window(s: Setup, t: pd.Timestamp, x_a: torch.Tensor, x_prev: torch.Tensor) -> Window:
    """One window: the background from the carried analysis (or from the truth in the seed
    protocol), simulated observations, QC, the method's analysis."""
    began = clock.perf_counter()
    seed = s.config.run.seed
    if s.config.run.protocol == "cycle":
        with torch.inference_mode():
            x_b = s.emulator.step(x_a, previous_frame(s, x_prev, x_a))
        previous = x_a
    else:  # no cycle: the analysis's predecessor is the background's own state 6 h before
        x_b, x_b_before = forecast_from_truth(s, t)
        previous = round_trip(s, x_b_before)
    x_b = x_b.clone()
    truth = s.truth_at(t)
    lat, lon = s.grid.latitudes, s.grid.longitudes
    observed = simulate(t, truth, s.networks, s.error_std, lat, lon, seed)
    qc = s.config.observations.qc
    wobs = quality_control(*observed, x_b, s.background_std, lat, lon, qc.background_check, qc.thinning_km)
    generator = torch.Generator(device=s.device).manual_seed(
        int(window_generator(seed, t, stream=2).integers(2**62))
    )
    state, diagnostics, flag = analyse_window(s, t, x_b, wobs, generator)
    written = s.physical(state.detach())
    x_a = s.normalised(written)
    with torch.no_grad():
        oma = wobs.values - wobs.operator(x_a.double()).mean(0).cpu().numpy()
    return Window(
        time=t,
        truth=truth,
        background=x_b,
        observations=wobs,
        analysis=x_a,
        analysis_physical=written,
        previous=previous,
        omb=wobs.values - wobs.background_equivalent,
        oma=oma,
        diagnostics=diagnostics,
        flag=flag,
        seconds=clock.perf_counter() - began,
    )


def _check(s: Setup, x_b: torch.Tensor, state: torch.Tensor, wobs: WindowObservations, diagnostics: dict):
    g = s.config.guard
    return guard.check(x_b, state, wobs, diagnostics, s.error_std_b, g.max_increment, g.max_fit_ratio)


def analyse_window(
    s: Setup, t: pd.Timestamp, x_b: torch.Tensor, wobs: WindowObservations, generator: torch.Generator
) -> tuple[torch.Tensor, dict, str]:
    """The method's analysis through the divergence guard: (state, diagnostics, what the guard did)."""
    if wobs.used is None:
        return x_b, {"observations": 0.0}, ""
    try:
        result = s.method.analyse(x_b, wobs.used, generator=generator)
        state, diagnostics = result.state, dict(result.diagnostics)
        reason = _check(s, x_b, state, wobs, diagnostics)
    except FloatingPointError as err:
        state, diagnostics, reason = None, {}, str(err)
    if reason is None:
        return state, diagnostics, ""
    policy = s.config.guard.on_divergence
    where = f"window {t}: {s.config.method.name} diverged: {reason}"
    if policy == "stop":
        raise RunError(
            f"{where}; earlier windows are kept (guard.on_divergence 'background' or '3dvar' would replace it)"
        )
    if policy == "background":
        return x_b, diagnostics, f"{reason}; replaced by the background"
    fallback = s.fallback.analyse(x_b, wobs.used, generator=generator)
    if (again := _check(s, x_b, fallback.state, wobs, dict(fallback.diagnostics))) is not None:
        raise RunError(f"{where}; the 3dvar fallback failed too: {again}")
    return fallback.state, diagnostics, f"{reason}; replaced by a 3D-Var analysis"


def window_scores(s: Setup, w: Window) -> dict:
    """The window's row of ``scores.nc``, physical units."""
    weights = torch.as_tensor(s.grid.area_weights(), dtype=torch.float64, device=w.background.device)
    std = torch.as_tensor(s.stats.std, dtype=torch.float64, device=w.background.device)
    obs = w.observations
    used = obs.flags == QC_USED
    sigma = s.stats.std
    channels = range(len(s.labels))
    return {
        "time": w.time,
        **metrics.state_scores("analysis", w.analysis, w.truth, std, weights),
        **metrics.state_scores("background", w.background, w.truth, std, weights),
        **metrics.departure_scores("omb", w.omb, obs.channel, used, sigma),
        **metrics.departure_scores("oma", w.oma, obs.channel, used, sigma),
        "obs_error_std": (s.error_std * sigma).tolist(),
        "obs_used": [float((used & (obs.channel == c)).sum()) for c in channels],
        "obs_rejected": [float((~used & (obs.channel == c)).sum()) for c in channels],
        "wall_seconds": w.seconds,
        "flagged": float(bool(w.flag)),
        **{f"method_{key}": float(value) for key, value in w.diagnostics.items()},
    }


def file_attrs(s: Setup, kind: str) -> dict:
    """The global attributes of every file a run writes."""
    return {
        "title": f"cycler {kind}",
        "cycler_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash(s.config.model_dump(mode="json")),
        "seed": s.config.run.seed,
        "method": s.config.method.name,
        "checkpoint_sha256": s.checkpoint_sha,
    }


def write_window(s: Setup, w: Window) -> None:
    """The window's background, observations (with O−B, O−A and QC flags) and analysis, physical units."""
    name = f"{stamp(w.time)}.nc"
    obs = w.observations
    sigma, mean, c = s.stats.std, s.stats.mean, obs.channel
    table = {
        "channel": c,
        "latitude": obs.latitude,
        "longitude": obs.longitude,
        "value": obs.values * sigma[c] + mean[c],
        "error_std": obs.error_std * sigma[c],
        "omb": w.omb * sigma[c],
        "oma": w.oma * sigma[c],
        "flag": obs.flags,
    }
    background = s.physical(w.background)
    write_state(
        s.run_dir / "background" / name, background, s.labels, s.grid, w.time, file_attrs(s, "background")
    )
    write_observations(
        s.run_dir / "observations" / name, table, s.labels, w.time, file_attrs(s, "observations"), QC_MEANINGS
    )
    # Every member is written: the next window (and a resumed run) starts from them.
    attrs = file_attrs(s, "analysis") | ({"divergence_guard": w.flag} if w.flag else {})
    write_state(s.run_dir / "analysis" / name, w.analysis_physical, s.labels, s.grid, w.time, attrs)


def forecast_and_score(s: Setup, t: pd.Timestamp, x_a: torch.Tensor, previous: torch.Tensor) -> dict:
    """The forecast from the analysis at `t`, written to ``forecasts/`` and scored against the truth."""
    leads = run_forecasts.lead_hours(s.config)
    forecast = s.physical(run_forecasts.make_forecast(s.emulator, x_a, leads, previous))
    members = s.config.forecast.write_members
    written = forecast if members else forecast.mean(dim=1, keepdim=True)
    attrs = file_attrs(s, "forecast") | ({} if members else {"realization": "ensemble mean"})
    path = s.run_dir / "forecasts" / f"{stamp(t)}.nc"
    run_forecasts.write_forecast(path, written, s.labels, s.grid, t, leads, attrs)
    truths = []
    for hours in leads:
        truth = s.truth_or_none(t + pd.Timedelta(hours=hours))
        truths.append(None if truth is None else s.physical(truth)[0].double().cpu().numpy())
    scores = run_forecasts.score_forecast(
        forecast.double().cpu().numpy(), truths, s.climatology, s.grid.area_weights()
    )
    return {"time": t, **scores}


__all__ = ["DataError", "RunError", "resolve", "run_cycle"]
