"""Every kind of file a run writes passes the IOOS compliance checker's CF 1.8 suite without errors.

What remains are warnings, printed here and listed in docs/architecture.md: the state files
keep WeatherBench 2's dimension order (time, realization, level, latitude, longitude), where
CF would put realization before time.
"""

from __future__ import annotations

import json

import pytest

from cycler_da.config import parse_config
from cycler_da.driver import run_cycle
from cycler_da.run_config import RunConfig

runner = pytest.importorskip("compliance_checker.runner")


def _cf_errors(path, tmp_path) -> list[str]:
    runner.CheckSuite.load_all_available_checkers()
    out = tmp_path / f"{path.parent.name}-{path.stem}.json"
    runner.ComplianceChecker.run_checker(
        str(path), ["cf:1.8"], 0, "normal", output_filename=str(out), output_format="json"
    )
    report = json.loads(out.read_text())["cf:1.8"]
    for item in report["medium_priorities"]:
        for message in item["msgs"]:
            print(f"{path.parent.name}/{path.name}: warning: {item['name']}: {message}")
    return [f"{item['name']}: {m}" for item in report["high_priorities"] for m in item["msgs"]]


def test_every_file_kind_passes_the_cf_checks(tmp_path, tiny_checkpoint):
    config = parse_config(
        {
            "run": {"start": "2018-02-10", "days": 1, "runs_dir": str(tmp_path / "runs")},
            "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
            "forecast": {"checkpoint": str(tiny_checkpoint), "max_lead_hours": 12},
            "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
            "method": {"name": "3dvar"},
        },
        RunConfig,
    )
    run_dir = run_cycle(config, progress=False)
    files = [
        run_dir / "analysis" / "20180211T00.nc",
        run_dir / "background" / "20180211T00.nc",
        run_dir / "observations" / "20180211T00.nc",
        run_dir / "forecasts" / "20180211T00.nc",
        run_dir / "scores.nc",
        run_dir / "forecast_scores.nc",
    ]
    errors = {path.relative_to(run_dir).as_posix(): _cf_errors(path, tmp_path) for path in files}
    assert not any(errors.values()), errors
