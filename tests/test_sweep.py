"""``cycler sweep``: expansion of the axes, runs on a LocalCluster equal to the same runs made one
by one, a second start that redoes nothing, and a worker killed mid-run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from cycler_da.config import ConfigError, parse_config
from cycler_da.driver import run_cycle
from cycler_da.run_config import RunConfig
from cycler_da.sweep import cluster, expand, load_sweep, run_sweep, run_task, set_key

AXES = {"method.params.b_scale": [1.0, 1.5], "observations.networks[0].fraction": [0.05, 0.1]}


def _sweep(tmp_path: Path, checkpoint: Path | None, axes: dict = AXES) -> Path:
    base = {
        "run": {"start": "2018-02-10", "days": 0.75},
        "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
        "forecast": {"checkpoint": str(checkpoint or "default"), "from_hours": [12], "max_lead_hours": 12},
        "method": {"name": "3dvar"},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"name": "grid", "base": "base.yaml", "runs_dir": str(tmp_path / "runs"), "axes": axes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_sweep_expands_to_one_named_checked_run_per_combination(tmp_path):
    runs = expand(load_sweep(_sweep(tmp_path, None)))
    assert [r.name for r in runs] == [
        "b_scale1.0_fraction0.05",
        "b_scale1.0_fraction0.1",
        "b_scale1.5_fraction0.05",
        "b_scale1.5_fraction0.1",
    ]
    config = parse_config(runs[3].config, RunConfig)
    assert config.method.params == {"b_scale": 1.5} and config.observations.networks[0].fraction == 0.1
    assert config.run.runs_dir == str(tmp_path / "runs" / "grid") and config.run.name == runs[3].name
    assert (
        config.observations.networks[0].kind == RunConfig().observations.networks[0].kind
    )  # the default network


def test_sweep_files_with_bad_axes_are_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="is not a dotted config key"):
        load_sweep(_sweep(tmp_path, None, {"method..name": ["3dvar"]}))
    with pytest.raises(ConfigError, match=r"run\.name is set by the sweep, not an axis"):
        load_sweep(_sweep(tmp_path, None, {"run.name": ["a", "b"]}))
    with pytest.raises(ConfigError, match=r"axis 'run\.seed' repeats a value"):
        load_sweep(_sweep(tmp_path, None, {"run.seed": [1, 1]}))
    with pytest.raises(ConfigError, match="the list has no item 3"):
        expand(load_sweep(_sweep(tmp_path, None, {"observations.networks[3].fraction": [0.1]})))
    with pytest.raises(ConfigError, match=r"^run nonsense1 of sweep grid: method\.params: .*nonsense"):
        expand(load_sweep(_sweep(tmp_path, None, {"method.params.nonsense": [1]})))
    config: dict = {}
    set_key(config, "observations.networks[0].fraction", 0.2)
    assert config["observations"]["networks"][0]["fraction"] == 0.2


def _same_runs(first: Path, second: Path) -> None:
    files = sorted(p.relative_to(first) for p in first.rglob("*.nc"))
    assert files and files == sorted(p.relative_to(second) for p in second.rglob("*.nc"))
    for rel in files:
        with xr.open_dataset(first / rel) as a, xr.open_dataset(second / rel) as b:
            for name in set(a.data_vars) - {"wall_seconds", "method_seconds"}:
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{rel}:{name}")


def die_after_one_window_once(config: dict, threads: int) -> str:
    """run_task, but the first attempt kills its own worker process after the first window."""
    from cycler_da import driver

    marker = Path(config["run"]["runs_dir"]).parent / f"killed-{config['run']['name']}"
    if not marker.exists():
        done = driver.RunStatus.window_done

        def window_done(self, *args, **kwargs):
            done(self, *args, **kwargs)
            if len(self.data["windows_done"]) == 1:
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)

        driver.RunStatus.window_done = window_done
    return run_task(config, threads)


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory, tiny_checkpoint) -> list[Path]:
    tmp = tmp_path_factory.mktemp("one-by-one")
    runs = expand(load_sweep(_sweep(tmp, tiny_checkpoint)))
    return [run_cycle(parse_config(r.config, RunConfig), progress=False) for r in runs]


def test_a_sweep_on_two_workers_equals_its_runs_made_one_by_one_and_is_not_redone(
    tmp_path, tiny_checkpoint, one_by_one
):
    runs = expand(load_sweep(_sweep(tmp_path, tiny_checkpoint)))
    with cluster(None, 2, 1, dashboard=":0") as client:
        assert run_sweep(client, runs, threads=1, progress=False) == {}
        stamps = [(r.run_dir / "run.json").stat().st_mtime_ns for r in runs]
        assert run_sweep(client, runs, threads=1, progress=False) == {}
    assert [(r.run_dir / "run.json").stat().st_mtime_ns for r in runs] == stamps  # nothing redone
    for run, alone in zip(runs, one_by_one, strict=True):
        _same_runs(alone, run.run_dir)


def test_a_run_whose_worker_is_killed_resumes_on_another_and_ends_identical(
    tmp_path, tiny_checkpoint, one_by_one
):
    runs = expand(load_sweep(_sweep(tmp_path, tiny_checkpoint)))[:2]
    with cluster(None, 2, 1, dashboard=":0") as client:
        assert run_sweep(client, runs, threads=1, progress=False, task=die_after_one_window_once) == {}
    assert all((tmp_path / "runs" / f"killed-{r.name}").exists() for r in runs)  # both workers died
    for run, alone in zip(runs, one_by_one[:2], strict=True):
        _same_runs(alone, run.run_dir)


def test_cycler_sweep_dry_run_lists_the_runs_and_bad_files_fail_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from cycler_da.cli import app

    listed = CliRunner().invoke(app, ["sweep", str(_sweep(tmp_path, None)), "--dry-run"])
    assert listed.exit_code == 0, listed.output
    assert f"sweep grid: 4 runs in {tmp_path / 'runs' / 'grid'}, 0 complete, 4 to run" in listed.output
    assert "b_scale1.5_fraction0.1" in listed.output and "0/3 windows" in listed.output
    bad = CliRunner().invoke(app, ["sweep", str(_sweep(tmp_path, None, {"run.name": ["a", "b"]}))])
    assert bad.exit_code == 2
    assert (
        bad.output.strip().splitlines()[-1].startswith("error: ")
        and "run.name is set by the sweep" in bad.output
    )
