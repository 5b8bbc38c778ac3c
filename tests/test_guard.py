"""The divergence guard catches a NaN analysis and a blow-up, and applies each declared policy;
one writer per run; an operator refuses a grid it cannot interpolate on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from cycler_da.config import parse_config
from cycler_da.core import Analysis, MethodSpec, register
from cycler_da.core.registry import unregister
from cycler_da.driver import RunError, run_cycle
from cycler_da.run_config import RunConfig
from cycler_da.run_lock import RunLock
from observation_ops.operator import PointObservationOperator

BAD_WINDOW = "20180210T12"


@dataclass(frozen=True)
class FaultyParams:
    """A test double: the free run, except in one window."""

    fault: str = "nan"
    """What goes wrong in the window at BAD_WINDOW: "nan", "blowup" or "cost"."""


class Faulty:
    """Keeps the background, except on its second call (the second window)."""

    def __init__(self, fault: str):
        self.fault, self.calls = fault, 0

    def analyse(self, background, observations, *, generator=None):
        self.calls += 1
        if self.calls != 2:
            return Analysis(background, {"cost": 1.0})
        if self.fault == "nan":
            return Analysis(torch.full_like(background, float("nan")), {"cost": 1.0})
        if self.fault == "blowup":
            return Analysis(background + 1e3, {"cost": 1.0})
        return Analysis(background, {"cost": float("nan")})


@pytest.fixture
def faulty():
    register(MethodSpec("faulty", FaultyParams, lambda context, params: Faulty(params.fault)))
    yield
    unregister("faulty")


def _config(tmp_path: Path, checkpoint: Path, fault: str, policy: str, name: str) -> RunConfig:
    return parse_config(
        {
            "run": {"start": "2018-02-10", "days": 0.75, "runs_dir": str(tmp_path / "runs"), "name": name},
            "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
            "forecast": {"checkpoint": str(checkpoint), "from_hours": []},
            "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
            "method": {"name": "faulty", "params": {"fault": fault}},
            "guard": {"on_divergence": policy},
        },
        RunConfig,
    )


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("nan", "the analysis is not finite"),
        ("blowup", r"an increment of RMS .* background-error standard deviations \(bound 25\)"),
        ("cost", "the method reports non-finite cost"),
    ],
)
def test_stop_ends_the_run_at_the_diverged_window_and_keeps_the_earlier_ones(
    tmp_path, tiny_checkpoint, faulty, fault, reason
):
    with pytest.raises(
        RunError, match=f"window 2018-02-10 12:00:00: faulty diverged: {reason}; earlier windows"
    ):
        run_cycle(_config(tmp_path, tiny_checkpoint, fault, "stop", "stop"), progress=False)
    status = json.loads((tmp_path / "runs" / "stop" / "run.json").read_text())
    assert status["status"] == "interrupted" and status["windows_done"] == ["20180210T06"]


@pytest.mark.parametrize("fault", ["nan", "blowup"])
def test_background_policy_replaces_the_analysis_and_says_so(tmp_path, tiny_checkpoint, faulty, fault):
    run_dir = run_cycle(_config(tmp_path, tiny_checkpoint, fault, "background", "bg"), progress=False)
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "complete" and list(status["flagged"]) == [BAD_WINDOW]
    assert status["flagged"][BAD_WINDOW].endswith("replaced by the background")
    with (
        xr.open_dataset(run_dir / "analysis" / f"{BAD_WINDOW}.nc") as a,
        xr.open_dataset(run_dir / "background" / f"{BAD_WINDOW}.nc") as b,
    ):
        xr.testing.assert_equal(a, b)
        assert a.attrs["divergence_guard"] == status["flagged"][BAD_WINDOW]
    with xr.open_dataset(run_dir / "scores.nc") as scores:
        assert scores["flagged"].values.tolist() == [0.0, 1.0, 0.0]
    from cycler_da.verify import load_run, summary

    assert summary(load_run(run_dir))["flagged_windows"] == ["2018-02-10T12"]  # counted by cycler verify


def test_3dvar_policy_analyses_the_window_with_3dvar(tmp_path, tiny_checkpoint, faulty):
    run_dir = run_cycle(_config(tmp_path, tiny_checkpoint, "nan", "3dvar", "var"), progress=False)
    status = json.loads((run_dir / "run.json").read_text())
    assert status["flagged"][BAD_WINDOW].endswith("replaced by a 3D-Var analysis")
    with xr.open_dataset(run_dir / "observations" / f"{BAD_WINDOW}.nc") as obs:
        used = obs["qc_flag"].values == 0
        oma, omb = (
            np.sqrt(np.mean((obs[k].values[used] / obs["error_std"].values[used]) ** 2))
            for k in ("analysis_departure", "background_departure")
        )
    assert np.isfinite(oma) and oma < 0.8 * omb  # a real analysis of the window, not the background


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_no_lock(tmp_path, tiny_checkpoint):
    runs = tmp_path / "runs"
    runs.mkdir()
    config = parse_config(
        {
            "run": {"start": "2018-02-10", "days": 0.25, "runs_dir": str(runs), "name": "one"},
            "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
            "forecast": {"checkpoint": str(tiny_checkpoint), "from_hours": []},
            "method": {"name": "none"},
        },
        RunConfig,
    )
    with RunLock(runs, "one"):  # another process writing run "one"
        with pytest.raises(RunError, match=r"runs/one is being written by pid \d+ on .*: wait for it"):
            run_cycle(config, progress=False)
    # The holder is gone (a killed process releases its lock with it): the run goes ahead.
    assert run_cycle(config, progress=False).name == "one"
    assert not (runs / ".one.owner").exists()


def test_the_operator_refuses_a_grid_it_cannot_interpolate_on():
    one = dict(channel=np.array([0]), latitude=np.array([10.0]), longitude=np.array([20.0]))
    with pytest.raises(ValueError, match="the grid needs at least 2 strictly increasing latitudes; got 1"):
        PointObservationOperator(**one, grid_latitudes=np.array([0.0]), grid_longitudes=np.arange(8) * 45.0)
    with pytest.raises(ValueError, match="strictly increasing latitudes"):
        PointObservationOperator(
            **one, grid_latitudes=np.array([45.0, -45.0]), grid_longitudes=np.arange(8) * 45.0
        )
    with pytest.raises(ValueError, match="must be finite"):
        PointObservationOperator(
            np.array([0]), np.array([np.nan]), np.array([20.0]), np.array([-45.0, 45.0]), np.arange(8) * 45.0
        )
