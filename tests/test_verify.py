"""cycler verify on two tiny runs: tables, scorecard, JSON, plots, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from cycler_da.cli import app
from cycler_da.config import parse_config
from cycler_da.driver import run_cycle
from cycler_da.run_config import RunConfig
from cycler_da.verify import VerifyError, align, load_run

TRAIN = ("2018-02-01", "2018-02-20T18")


def _run(root: Path, checkpoint: Path, method: str, days: float = 1.0, start: str = "2018-02-10") -> Path:
    cfg = parse_config(
        {
            "run": {
                "start": start,
                "days": days,
                "runs_dir": str(root),
                "name": f"{method}-{start}-{days:g}",
            },
            "truth": {"nature": {"compiled": False}, "train_period": list(TRAIN)},
            "forecast": {"checkpoint": str(checkpoint), "from_hours": [0, 12], "max_lead_hours": 24},
            "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
            "method": {"name": method},
        },
        RunConfig,
    )
    return run_cycle(cfg, progress=False)


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("verify-runs")
    return _run(root, tiny_checkpoint, "3dvar"), _run(root, tiny_checkpoint, "none")


def test_verify_tables_json_and_plots(runs, tmp_path):
    a, b = runs
    result = CliRunner().invoke(app, ["verify", str(a), str(b), "--plots", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert "Scorecard against 3dvar-2018-02-10-1" in result.output and "forecast 24 h" in result.output
    for name in (
        "error_vs_window.png",
        "error_vs_lead.png",
        "maps.png",
        "increment_spectra.png",
        "verify.nc",
    ):
        assert (tmp_path / "figs" / name).stat().st_size > 1000
    with xr.open_dataset(tmp_path / "figs" / "verify.nc") as combined:
        assert combined.sizes["run"] == 2 and "forecast_rmse" in combined

    result = CliRunner().invoke(app, ["verify", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    first, second = summary["runs"]
    assert first["method"] == "3dvar" and second["method"] == "none" and first["windows"] == 4
    assert set(first["analysis_rmse"]) == set(first["background_rmse"]) and len(first["analysis_rmse"]) == 11
    assert set(first["forecast_rmse"]["z500"]) == {"6", "12", "18", "24"}
    # The summary's RMSE is sqrt of the time-mean MSE of scores.nc.
    with xr.open_dataset(a / "scores.nc") as scores:
        expected = float(np.sqrt((scores["analysis_rmse"].sel(channel="z500") ** 2).mean()))
    assert first["analysis_rmse"]["z500"] == pytest.approx(expected, rel=1e-5)
    assert second["balance"]["geostrophic_increment"] == 0.0  # a free run has no increments
    assert {row["channel"] for row in summary["scorecard"]} == set(first["analysis_rmse"])
    assert 0 <= summary["scorecard"][0]["analysis"]["p_value"] <= 1


def test_verify_refuses_what_it_cannot_compare(runs, tiny_checkpoint, tmp_path):
    a, _ = runs
    shorter = _run(tmp_path, tiny_checkpoint, "none", days=0.5)
    with pytest.raises(VerifyError, match=r"different windows.*--common"):
        align([load_run(a), load_run(shorter)])
    aligned = align([load_run(a), load_run(shorter)], common=True)
    assert all(r.scores.sizes["time"] == 2 for r in aligned)
    other = tmp_path / "other-truth"
    shutil.copytree(shorter, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["truth"]["nature"]["seed"] = 5
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(VerifyError, match="different truths"):
        align([load_run(shorter), load_run(other)])
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["verify", str(empty)])
    assert result.exit_code != 0 and "not a cycler run directory" in result.output
    result = CliRunner().invoke(app, ["verify", str(tmp_path)])  # a directory of runs: a sweep
    assert result.exit_code == 2 and "verify against different truths" in result.output


def _era5_style_truth(path: Path) -> Path:
    """February 2018 of the nature run written as a new-CDS ERA5 NetCDF (short names,
    ``valid_time``/``pressure_level``, latitude north to south): a reanalysis-format truth."""
    from cycler_da import nature

    ds = nature.open_nature("2018-02-01", "2018-02-20T18", nature.NatureSpec("T21", 0, False)).load()
    names = {
        "geopotential": "z",
        "temperature": "t",
        "u_component_of_wind": "u",
        "v_component_of_wind": "v",
        "mean_sea_level_pressure": "msl",
    }
    era5 = ds[list(names)].rename(names).rename({"time": "valid_time", "level": "pressure_level"})
    era5 = era5.isel(latitude=slice(None, None, -1))
    era5.attrs = {"GRIB_centre": "ecmf", "Conventions": "CF-1.7"}
    era5.to_netcdf(path)
    return path


def test_verify_runs_whose_truth_is_a_reanalysis_file(runs, tiny_checkpoint, tmp_path):
    truth = _era5_style_truth(tmp_path / "era5-2018-02.nc")
    made = []
    for method in ("3dvar", "none"):
        cfg = parse_config(
            {
                "run": {
                    "start": "2018-02-10",
                    "days": 0.5,
                    "runs_dir": str(tmp_path),
                    "name": f"era5-{method}",
                },
                "truth": {"source": "dataset", "path": str(truth), "train_period": list(TRAIN)},
                "forecast": {"checkpoint": str(tiny_checkpoint), "from_hours": [0], "max_lead_hours": 12},
                "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
                "method": {"name": method},
            },
            RunConfig,
        )
        made.append(run_cycle(cfg, progress=False))
    a, b = made
    result = CliRunner().invoke(app, ["verify", str(a), str(b), "--plots", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert "no bias maps" not in result.output  # the truth was re-read from the file for the maps
    assert (tmp_path / "figs" / "maps.png").stat().st_size > 1000
    summary = json.loads(CliRunner().invoke(app, ["verify", str(a), str(b), "--json"]).output)
    assert [run["windows"] for run in summary["runs"]] == [2, 2]
    assert summary["runs"][0]["analysis_rmse"]["z500"] < summary["runs"][1]["analysis_rmse"]["z500"]
    # The same states from the nature run are still another truth: never compared silently.
    nature_run = _run(tmp_path, tiny_checkpoint, "none", days=0.5)
    with pytest.raises(VerifyError, match="different truths"):
        align([load_run(a), load_run(nature_run)])
