"""kill -9 at any moment of an enkf run, then --resume: every data variable of every file equals
an uninterrupted run's. The kill is real (SIGKILL to a separate process), at three points:
in the middle of writing a file, after a window's files but before run.json says it is done,
and between windows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cycler_da.config import parse_config
from cycler_da.driver import run_cycle
from cycler_da.run_config import RunConfig

KILLER = """
import json, os, signal, sys
from cycler_da import driver, io
from cycler_da.config import parse_config
from cycler_da.run_config import RunConfig

point, config = sys.argv[1], json.loads(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-write":  # the second window's analysis file, half written
    write = io._write
    def partial(ds, tmp, fmt):
        if tmp.parent.name == "analysis" and "20180210T12" in tmp.name:
            tmp.write_bytes(b"CDF\\x01 half a file")
            die()
        return write(ds, tmp, fmt)
    io._write = partial
else:  # "before-status": files written, run.json not; "between": run.json written
    done = driver.RunStatus.window_done
    def window_done(self, time, *args):
        if f"{time:%H}" == "12" and point == "before-status":
            die()
        done(self, time, *args)
        if f"{time:%H}" == "12" and point == "between":
            die()
    driver.RunStatus.window_done = window_done
driver.run_cycle(parse_config(config, RunConfig), progress=False)
"""


def _config(tmp_path: Path, checkpoint: Path, name: str) -> dict:
    return {
        "run": {"start": "2018-02-10", "days": 0.75, "runs_dir": str(tmp_path / "runs"), "name": name},
        "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
        "forecast": {"checkpoint": str(checkpoint), "from_hours": [12], "max_lead_hours": 12},
        "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
        "method": {"name": "enkf"},
        "ensemble": {"members": 6},
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_checkpoint) -> Path:
    tmp = tmp_path_factory.mktemp("whole")
    return run_cycle(parse_config(_config(tmp, tiny_checkpoint, "whole"), RunConfig), progress=False)


@pytest.mark.parametrize("point", ["mid-write", "before-status", "between"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_checkpoint, uninterrupted, point):
    config = _config(tmp_path, tiny_checkpoint, "killed")
    killed = subprocess.run([sys.executable, "-c", KILLER, point, json.dumps(config)], env=os.environ.copy())
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "runs" / "killed"
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "running"  # nobody could say otherwise: the process died at once
    assert status["windows_done"] == (
        ["20180210T06", "20180210T12"] if point == "between" else ["20180210T06"]
    )
    run_cycle(parse_config(config, RunConfig), resume=True, progress=False)  # no cleaning up by hand
    assert not list(run_dir.rglob(".*tmp*"))
    files = sorted(p.relative_to(uninterrupted) for p in uninterrupted.rglob("*.nc"))
    assert files == sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.nc"))
    for rel in files:
        with xr.open_dataset(uninterrupted / rel) as a, xr.open_dataset(run_dir / rel) as b:
            assert set(a.data_vars) == set(b.data_vars)
            for name in set(a.data_vars) - {"wall_seconds", "method_seconds"}:
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{rel}:{name}")
