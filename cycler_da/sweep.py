"""``cycler sweep``: a grid of runs from one base config, run as tasks on a Dask cluster.

A sweep file names a base run config and the axes to vary; every combination of the axes'
values is one run, named after its values, in ``runs_dir/<sweep name>/``::

    name: density
    base: ../3dvar.yaml                  # a run config, relative to this file
    set: {run.days: 10}                  # the same in every run
    axes:                                # every combination: 8 runs
      method: [{name: 3dvar, params: {b_scale: 1.5}}, {name: enkf}]
      observations.networks[0].fraction: [0.01, 0.05]
      run.start: ["2018-01-01", "2018-04-01"]
    threads: 1                           # torch threads per run

Each run is one task of a ``dask.distributed`` cluster (a ``LocalCluster`` with as many
single-threaded workers as the cores hold runs of `threads`, or any scheduler). A finished run
is never redone; an unfinished one, whether its worker died or the sweep was stopped, resumes
from its last complete window (``cycler run --resume``), and the run lock keeps two writers off
one run, so a sweep started again finishes exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from cycler_da.config import ConfigError, Strict, parse_config
from cycler_da.driver import resolve
from cycler_da.run_config import RunConfig
from cycler_da.run_io import read_json

_PART = re.compile(r"([A-Za-z_]\w*)((?:\[\d+\])*)")


class SweepConfig(Strict):
    """A sweep file (see the module docstring)."""

    name: str = Field(pattern=r"^[\w.-]+$")
    base: Path
    axes: dict[str, list[Any]] = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    runs_dir: Path = Path("runs")
    threads: int = Field(1, ge=1)

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in axes.items():
            _settable(key)
            if not values:
                raise ValueError(f"axis {key!r} has no values")
            if len(set(map(str, values))) != len(values):
                raise ValueError(f"axis {key!r} repeats a value")
        return axes

    @field_validator("set")
    @classmethod
    def _fixed(cls, fixed: dict[str, Any]) -> dict[str, Any]:
        for key in fixed:
            _settable(key)
        return fixed


def _settable(key: str) -> None:
    _path(key)
    if key in ("run.name", "run.runs_dir"):
        raise ValueError(f"{key} is set by the sweep, not an axis")


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its name, its values on each axis and its full config mapping."""

    name: str
    values: dict[str, Any]
    config: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.config["run"]["runs_dir"]) / self.name


def _path(key: str) -> list[str | int]:
    """``observations.networks[0].fraction`` → ["observations", "networks", 0, "fraction"]."""
    tokens: list[str | int] = []
    for part in key.split("."):
        found = _PART.fullmatch(part)
        if not found:
            raise ValueError(
                f"axis {key!r} is not a dotted config key (e.g. observations.networks[0].fraction)"
            )
        tokens += [found[1], *(int(i) for i in re.findall(r"\d+", found[2]))]
    return tokens


def set_key(config: dict, key: str, value: Any) -> None:
    """Sets dotted `key` of a run-config mapping, making the sections it lacks; a list it lacks
    is the run config's default (``observations.networks[0]`` is then the default network)."""
    tokens = _path(key)
    node: Any = config
    for depth, token in enumerate(tokens[:-1]):
        if isinstance(token, int):
            if token >= len(node):
                raise ConfigError(f"axis {key!r}: the list has no item {token}")
        elif token not in node:
            node[token] = _default(tokens[: depth + 1]) if isinstance(tokens[depth + 1], int) else {}
        node = node[token]
    if isinstance(tokens[-1], int) and tokens[-1] >= len(node):
        raise ConfigError(f"axis {key!r}: the list has no item {tokens[-1]}")
    node[tokens[-1]] = value


def _default(tokens: list[str | int]) -> list:
    node: Any = RunConfig().model_dump(mode="json")
    try:
        for token in tokens:
            node = node[token]
    except (KeyError, IndexError, TypeError):
        return []
    return copy.deepcopy(node)


def _label(key: str, value: Any) -> str:
    """A run name's part for one axis: the value, after the key's last name unless that is
    ``name`` (``method.name: enkf`` → ``enkf``; a whole section → its ``name``)."""
    last = next(t for t in reversed(_path(key)) if isinstance(t, str))
    if isinstance(value, dict) and "name" in value:
        last, value = "name", value["name"]
    text = re.sub(r"[^\w.-]+", "-", str(value)).strip("-")
    return text if last == "name" else f"{last}{text}"


def load_sweep(path: str | Path) -> SweepConfig:
    """Reads and checks a sweep file; `base` and `runs_dir` are taken relative to it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no such sweep file: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    sweep = parse_config(data, SweepConfig, str(path))
    base = sweep.base if sweep.base.is_absolute() else path.parent / sweep.base
    if not base.exists():
        raise ConfigError(f"{path}: base run config {base} does not exist")
    return sweep.model_copy(update={"base": base})


def expand(sweep: SweepConfig) -> list[SweepRun]:
    """Every run of the sweep, each config checked before anything runs."""
    base = yaml.safe_load(sweep.base.read_text()) or {}
    runs_dir = sweep.runs_dir / sweep.name
    runs = []
    for combination in itertools.product(*sweep.axes.values()):
        values = dict(zip(sweep.axes, combination, strict=True))
        name = "_".join(_label(key, value) for key, value in values.items())
        config = copy.deepcopy(base)
        for key, value in [*sweep.set.items(), *values.items()]:
            set_key(config, key, value)
        set_key(config, "run.name", name)
        set_key(config, "run.runs_dir", str(runs_dir))
        try:
            resolve(parse_config(config, RunConfig, f"run {name} of sweep {sweep.name}"))
        except ConfigError as err:
            message = str(err)
            raise ConfigError(
                message if message.startswith("run ") else f"run {name} of sweep {sweep.name}: {message}"
            ) from None
        runs.append(SweepRun(name, values, config))
    return runs


def progress_of(run: SweepRun) -> tuple[int, bool]:
    """(windows done, complete) from the run's ``run.json``; (0, False) before it starts."""
    try:
        status = read_json(run.run_dir / "run.json")
    except (OSError, ValueError):
        return 0, False
    return len(status["windows_done"]), status["status"] == "complete"


def windows_of(run: SweepRun) -> int:
    return round(float(run.config.get("run", {}).get("days", RunConfig().run.days)) * 4)


def run_task(config: dict, threads: int) -> str:
    """One run on a worker: started, or resumed from its last complete window."""
    import torch

    from cycler_da.driver import run_cycle

    torch.set_num_threads(threads)
    run_dir = Path(config["run"]["runs_dir"]) / config["run"]["name"]
    resume = (run_dir / "run.json").exists()
    return str(run_cycle(parse_config(config, RunConfig), resume=resume, progress=False))


def local_workers(threads: int) -> int:
    """Workers whose runs of `threads` torch threads each fill the cores and no more."""
    return max(1, len(os.sched_getaffinity(0)) // threads)


@contextmanager
def cluster(scheduler: str | None, workers: int | None, threads: int, dashboard: str | None = ":8787"):
    """A client of `scheduler`, or of a LocalCluster of single-task worker processes."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or local_workers(threads),
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard,
        ) as local,
        Client(local) as client,
    ):
        yield client


def run_sweep(
    client, runs: list[SweepRun], threads: int, progress: bool = True, task: Callable = run_task
) -> dict[str, str]:
    """Runs every unfinished run of `runs` as a `task` of `client`; returns {run: error} of those
    that failed (the others are complete). A task whose worker dies is given to another worker,
    which resumes the run from its last complete window."""
    from dask.distributed import wait

    todo = [run for run in runs if not progress_of(run)[1]]
    tasks = {
        client.submit(task, run.config, threads, key=f"cycler-run-{run.name}", pure=False): run
        for run in todo
    }
    failed: dict[str, str] = {}
    windows = tqdm(total=sum(map(windows_of, runs)), desc="windows", unit="window", disable=not progress)
    finished = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress)
    pending = set(tasks)
    while True:
        states = [progress_of(run) for run in runs]
        windows.update(sum(w for w, _ in states) - windows.n)
        finished.update(sum(done for _, done in states) + len(failed) - finished.n)
        if not pending:
            break
        try:
            done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
        except TimeoutError:  # none finished this second: update the bars
            continue
        for task in done:
            if task.status == "error":
                error = task.exception()
                failed[tasks[task].name] = " ".join(f"{type(error).__name__}: {error}".split())
    windows.close()
    finished.close()
    return failed
