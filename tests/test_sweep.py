"""``cycler sweep``: expansion of the axes, runs on a LocalCluster equal to the same runs made one
by one, a second start that redoes nothing, and a worker killed mid-run."""

from __future__ import annotations

import json
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
    """The sweep's runs made one after another by a single worker: the same environment as the
    sweep's workers (Dask starts them with one BLAS thread; another thread count sums in another
    order, and the 3D-Var's iterations carry that round-off further)."""
    tmp = tmp_path_factory.mktemp("one-by-one")
    runs = expand(load_sweep(_sweep(tmp, tiny_checkpoint)))
    with cluster(None, 1, 1, dashboard=":0") as client:
        assert run_sweep(client, runs, threads=1, progress=False) == {}
    return [run.run_dir for run in runs]


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


@pytest.fixture(scope="module")
def two_starts(tmp_path_factory, tiny_checkpoint) -> Path:
    """A sweep directory of 3D-Var at two B scales from two start dates, run one by one."""
    tmp = tmp_path_factory.mktemp("two-starts")
    axes = {"method.params.b_scale": [1.0, 1.5], "run.start": ["2018-02-10", "2018-02-12T06:00"]}
    for run in expand(load_sweep(_sweep(tmp, tiny_checkpoint, axes))):
        run_cycle(parse_config(run.config, RunConfig), progress=False)
    return tmp / "runs" / "grid"


def test_verify_pools_a_sweep_over_start_dates_with_the_pooled_paired_test(two_starts):
    from cycler_da import metrics
    from cycler_da.verify import load_run, scorecard
    from cycler_da.verify_sweep import is_sweep, pooled_scorecard, pooled_summary, settings

    assert is_sweep(two_starts) and not is_sweep(two_starts / "b_scale1.0_start2018-02-10")
    groups = settings(two_starts)
    assert [g.label for g in groups] == ["b_scale=1.0", "b_scale=1.5"]
    assert sorted(groups[0].runs) == [("2018-02-10T00", 0), ("2018-02-12T06", 0)]
    errors = {
        (b, start): load_run(two_starts / f"b_scale{b}_start{start}")
        .scores["analysis_rmse"]
        .sel(channel="z500")
        .values
        for b in ("1.0", "1.5")
        for start in ("2018-02-10", "2018-02-12T06-00")
    }
    summary = pooled_summary(groups[1])
    expected = np.sqrt(
        np.mean(np.concatenate([errors["1.5", "2018-02-10"], errors["1.5", "2018-02-12T06-00"]]) ** 2)
    )
    assert summary["analysis_rmse"]["z500"] == pytest.approx(expected, rel=1e-6) and summary["windows"] == 6
    (row,) = [r for r in pooled_scorecard(groups) if r["channel"] == "z500"]
    starts = ("2018-02-10", "2018-02-12T06-00")
    _, p = metrics.pooled_paired_test(
        [errors["1.5", s] ** 2 for s in starts], [errors["1.0", s] ** 2 for s in starts]
    )
    assert row["starts"] == 2 and row["analysis"]["p_value"] == pytest.approx(p, abs=1e-4)
    # One start: the pooled scorecard is the ordinary one.
    one = [load_run(two_starts / f"b_scale{b}_start2018-02-10") for b in ("1.0", "1.5")]
    (ordinary,) = [r for r in scorecard(one) if r["channel"] == "z500"]
    _, p_one = metrics.pooled_paired_test([errors["1.5", starts[0]] ** 2], [errors["1.0", starts[0]] ** 2])
    assert ordinary["analysis"][1] == pytest.approx(p_one)


def test_cycler_verify_of_a_sweep_directory_prints_pooled_json(two_starts, tmp_path):
    from typer.testing import CliRunner

    from cycler_da.cli import app

    result = CliRunner().invoke(app, ["verify", str(two_starts), "--json", "--plots", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [s["setting"] for s in out["settings"]] == ["b_scale=1.0", "b_scale=1.5"]
    assert {row["channel"] for row in out["scorecard"]} == set(out["settings"][0]["analysis_rmse"])
    assert (tmp_path / "rmse_by_start.png").stat().st_size > 0


def test_pooled_paired_test_with_one_period_is_the_paired_test_and_independent_periods_sharpen_it():
    from cycler_da import metrics

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 60), rng.normal(0, 1, 60)
    assert metrics.pooled_paired_test([a], [b]) == pytest.approx(metrics.paired_test(a, b))
    _, p_one = metrics.pooled_paired_test([a[:30]], [b[:30]])
    _, p_two = metrics.pooled_paired_test([a[:30], a[30:]], [b[:30], b[30:]])
    assert p_two < p_one
