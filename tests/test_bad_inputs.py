"""Every bad input is a clear one-line error, and nothing is lost.

Each case was tried by hand first; several used to raise a traceback or start an hour-long
computation instead.
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from cycler_da.cli import app
from cycler_da.config import ConfigError, load_config, parse_config
from cycler_da.driver import RunError, run_cycle
from cycler_da.run_config import RunConfig
from cycler_da.sources import DataError, open_dataset
from forecast_models.checkpoint import CheckpointError, load_checkpoint

eccodes = pytest.importorskip("eccodes")

TRAIN = ["2018-02-01", "2018-02-20T18"]


def _state_file(path: Path, times, dims=("time",)) -> Path:
    """A small dataset in our conventions (temperature at 500 hPa on a 4 x 8 grid)."""
    coords = {"level": [500], "latitude": [-60.0, -20.0, 20.0, 60.0], "longitude": np.arange(8) * 45.0}
    coords[dims[0]] = times
    values = np.random.default_rng(0).random((len(times), 1, 4, 8)).astype("f4")
    data = {"temperature": ((dims[0], "level", "latitude", "longitude"), 250 + values, {"units": "K"})}
    xr.Dataset(data, coords=coords).to_netcdf(path)
    return path


def _grib(path: Path, sample: str) -> Path:
    """One 500 hPa temperature field from an ecCodes sample grid."""
    handle = eccodes.codes_grib_new_from_samples(sample)
    eccodes.codes_set(handle, "dataDate", 20180101)
    eccodes.codes_set(handle, "dataTime", 0)
    eccodes.codes_set_string(handle, "shortName", "t")
    eccodes.codes_set_string(handle, "typeOfLevel", "isobaricInhPa")
    eccodes.codes_set(handle, "level", 500)
    eccodes.codes_set_values(handle, np.full(eccodes.codes_get(handle, "numberOfDataPoints"), 250.0))
    with open(path, "wb") as out:
        eccodes.codes_write(handle, out)
    eccodes.codes_release(handle)
    return path


def _junk_yaml(tmp: Path):
    path = tmp / "junk.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    return lambda: load_config(path, RunConfig)


def _corrupt_checkpoint(tmp: Path):
    from forecast_models.checkpoint import DEFAULT_CHECKPOINT

    path = tmp / "corrupt.pt"
    path.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:2000])
    return lambda: load_checkpoint(path, "cpu")


def _duplicated_times(tmp: Path):
    times = pd.to_datetime(["2018-01-01T00", "2018-01-01T06", "2018-01-01T06", "2018-01-01T12"])
    return lambda: open_dataset(_state_file(tmp / "dup.nc", times))


def _unsorted_times(tmp: Path):
    times = pd.to_datetime(["2018-01-01T06", "2018-01-01T00"])
    return lambda: open_dataset(_state_file(tmp / "unsorted.nc", times))


def _truncated_file(tmp: Path):
    full = _state_file(tmp / "full.nc", pd.date_range("2018-01-01", periods=4, freq="6h")).read_bytes()
    (tmp / "cut.nc").write_bytes(full[: len(full) // 2])
    return lambda: open_dataset(tmp / "cut.nc")


def _monthly_means(tmp: Path):
    path = _state_file(tmp / "monthly.nc", np.arange(1, 4), dims=("month",))
    config = parse_config({"truth": {"source": "dataset", "path": str(path)}, "run": {"days": 1}}, RunConfig)
    from cycler_da.run_setup import open_truth

    return lambda: open_truth(config, pd.Timestamp("2018-01-01"), pd.Timestamp("2018-01-02"))


def _reduced_gaussian_grib(tmp: Path):
    return lambda: open_dataset(_grib(tmp / "reduced.grib", "reduced_gg_pl_32_grib2"))


def _runs_dir_is_a_file(tmp: Path):
    (tmp / "runs").write_text("not a directory")
    config = parse_config({"run": {"runs_dir": str(tmp / "runs"), "days": 1}}, RunConfig)
    return lambda: run_cycle(config, progress=False)


CASES = {
    "binary junk as YAML": (_junk_yaml, ConfigError, r".*junk\.yaml: not a YAML file \(not UTF-8 text\)"),
    "corrupt checkpoint": (
        _corrupt_checkpoint,
        CheckpointError,
        r"cannot read checkpoint .*corrupt\.pt \(corrupt or truncated\?\): PytorchStreamReader failed reading "
        r"zip archive: failed finding central directory",
    ),
    "duplicated times": (
        _duplicated_times,
        DataError,
        r"dimension 'time' repeats 2018-01-01T06:00: keep one state per time \(ds\.drop_duplicates\('time'\)\)",
    ),
    "times out of order": (
        _unsorted_times,
        DataError,
        r"dimension 'time' is not in increasing order: sort it \(ds\.sortby\('time'\)\)",
    ),
    "truncated file": (
        _truncated_file,
        DataError,
        r"cannot read .*cut\.nc as netcdf \(truncated or corrupt\?\): ",
    ),
    "monthly means as truth": (
        _monthly_means,
        RunError,
        r"truth\.path .*monthly\.nc: the truth needs a 'time' dimension of 6-hourly states; its dimensions are "
        r"\['latitude', 'level', 'longitude', 'month'\] \(monthly means are a climatology, not states\)",
    ),
    "reduced Gaussian GRIB": (
        _reduced_gaussian_grib,
        DataError,
        r"a reduced grid \(GRIB gridType reduced_gg\) is not supported: interpolate it to a regular grid first, "
        r"e\.g\. `cdo setgridtype,regular in\.grib out\.grib`",
    ),
    "runs dir is a file": (_runs_dir_is_a_file, RunError, r"run\.runs_dir .*runs is a file, not a directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case, tmp_path):
    make, error, message = CASES[case]
    call = make(tmp_path)
    with pytest.raises(error) as caught:
        call()
    assert re.fullmatch(message + ".*", str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


CLI_CASES = {
    "--start that is not a date": (["--start", "yesterday"], "Invalid value for '--start'"),
    "--members 0": (
        ["--members", "0"],
        "error: config: ensemble.members: Input should be greater than or equal to 1",
    ),
    "--threads 0": (["--threads", "0"], "Invalid value for '--threads'"),
    "--days 0.1": (["--days", "0.1"], "error: config: run.days: days must be positive and a whole number"),
    "unknown method": (
        ["--method", "kalman"],
        "error: method.name: unknown analysis method 'kalman'; known: 3dvar,",
    ),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_command_line_fails_before_any_work(case, tmp_path):
    args, message = CLI_CASES[case]
    result = CliRunner().invoke(app, ["run", "--runs-dir", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert (
        message in " ".join(result.output.split()).replace("│", "").replace("  ", " ")
        or message in result.output
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_gaussian_grid_grib_keeps_its_true_latitudes(tmp_path):
    ds = open_dataset(_grib(tmp_path / "gaussian.grib", "regular_gg_pl_grib2"))
    nodes, _ = np.polynomial.legendre.leggauss(64)
    np.testing.assert_allclose(ds["latitude"].values, np.degrees(np.arcsin(np.sort(nodes))), atol=1e-5)
    assert ds["temperature"].dims == ("level", "latitude", "longitude")


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, tiny_checkpoint, monkeypatch):
    """ENOSPC while writing the second window: a one-line error, the first window intact, no
    partial files, and --resume gives what an uninterrupted run gives."""
    from cycler_da import io

    def config(name):
        return parse_config(
            {
                "run": {
                    "start": "2018-02-10",
                    "days": 0.75,
                    "runs_dir": str(tmp_path / "runs"),
                    "name": name,
                },
                "truth": {"nature": {"compiled": False}, "train_period": TRAIN},
                "forecast": {"checkpoint": str(tiny_checkpoint), "from_hours": []},
                "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
            },
            RunConfig,
        )

    whole = run_cycle(config("whole"), progress=False)
    write = io._write

    def full_disk(ds, tmp, fmt):
        if tmp.parent.name == "analysis" and "20180210T12" in tmp.name:  # the second window's analysis
            tmp.write_bytes(b"CDF\x01 half a file")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        return write(ds, tmp, fmt)

    monkeypatch.setattr(io, "_write", full_disk)
    with pytest.raises(RunError) as caught:
        run_cycle(config("full"), progress=False)
    message = str(caught.value)
    assert re.fullmatch(
        r"window 2018-02-10 12:00:00: writing .*analysis/\.20180210T12\.nc\.tmp-\d+ failed: No space left on "
        r"device; the windows before it are complete, and --resume continues from this one",
        message,
    ), message
    run_dir = tmp_path / "runs" / "full"
    assert json.loads((run_dir / "run.json").read_text())["windows_done"] == ["20180210T06"]
    assert not list(run_dir.rglob(".*tmp*"))  # no partial file left behind
    monkeypatch.setattr(io, "_write", write)
    run_cycle(config("full"), resume=True, progress=False)
    for path in sorted(whole.rglob("*.nc")):
        with xr.open_dataset(path) as a, xr.open_dataset(run_dir / path.relative_to(whole)) as b:
            for name in set(a.data_vars) - {"wall_seconds", "method_seconds"}:
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{path.name}:{name}")


@pytest.mark.parametrize(
    ("start", "days", "message"),
    [
        (
            "2018-02-19",
            3,
            r"the truth \(.*feb\.nc\) ends at 2018-02-20 18:00, before the run's last window 2018-02-22 00:00: "
            r"shorten run\.days or extend the truth",
        ),
        (
            "2018-02-02",
            1,
            r"the truth \(.*feb\.nc\) starts at 2018-02-01 00:00, after 2018-01-31 00:00, the oldest state the "
            r"cold start forecasts from: start the run later or extend the truth",
        ),
    ],
    ids=["ends before the run", "starts after the cold start"],
)
def test_a_truth_too_short_for_the_run_is_refused_before_any_work(
    tmp_path, tiny_checkpoint, start, days, message
):
    from cycler_da import nature

    truth = nature.open_nature("2018-02-01", "2018-02-20T18", nature.NatureSpec("T21", 0, False))
    truth.to_netcdf(tmp_path / "feb.nc")
    config = parse_config(
        {
            "run": {"start": start, "days": days, "runs_dir": str(tmp_path / "runs")},
            "truth": {"source": "dataset", "path": str(tmp_path / "feb.nc"), "train_period": TRAIN},
            "forecast": {"checkpoint": str(tiny_checkpoint), "from_hours": []},
        },
        RunConfig,
    )
    with pytest.raises(RunError) as caught:
        run_cycle(config, progress=False)
    assert re.fullmatch(message, str(caught.value)), str(caught.value)
    assert not any((tmp_path / "runs").glob("*/analysis/*.nc"))


def test_a_leftover_training_state_is_refused_unless_resuming(tmp_path):
    from cycler_da.provenance import interrupted_state

    out = tmp_path / "prior.pt"
    assert interrupted_state(out, resume=False) == tmp_path / "prior.pt.train-state"
    (tmp_path / "prior.pt.train-state").write_bytes(b"")
    with pytest.raises(FileExistsError) as caught:
        interrupted_state(out, resume=False)
    assert str(caught.value) == (
        f"{tmp_path / 'prior.pt.train-state'} exists from an interrupted run: pass --resume, or delete it"
    )
    assert interrupted_state(out, resume=True) == tmp_path / "prior.pt.train-state"
