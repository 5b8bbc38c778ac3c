"""The cycle driver: the run-directory layout, every baseline, resume, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

from cycler_da import driver, run_setup
from cycler_da.cli import app
from cycler_da.config import ConfigError, parse_config
from cycler_da.driver import RunError, run_cycle
from cycler_da.run_config import RunConfig

TRAIN = ("2018-02-01", "2018-02-20T18")


def _config(tmp_path: Path, checkpoint: Path, **sections) -> RunConfig:
    data = {
        "run": {"start": "2018-02-10", "days": 0.75, "runs_dir": str(tmp_path / "runs")},
        "truth": {"nature": {"compiled": False}, "train_period": list(TRAIN)},
        "forecast": {"checkpoint": str(checkpoint)},
        "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data, RunConfig)


@pytest.mark.parametrize(
    ("method", "members"), [("3dvar", 1), ("enkf", 6), ("none", 1)], ids=["3dvar", "enkf", "none"]
)
def test_cycle_writes_the_layout(tmp_path, tiny_checkpoint, method, members):
    cfg = _config(
        tmp_path,
        tiny_checkpoint,
        method={"name": method},
        ensemble={"members": members},
        forecast={"from_hours": [12], "max_lead_hours": 12},
    )
    run_dir = run_cycle(cfg, progress=False)
    assert run_dir.name == f"{method}-20180210T00"
    stamps = ["20180210T06", "20180210T12", "20180210T18"]
    for sub in ("background", "analysis", "observations"):
        assert sorted(p.stem for p in (run_dir / sub).glob("*.nc")) == stamps
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["method"]["name"] == method and resolved["ensemble"]["members"] == members
    assert resolved["observations"]["qc"]["background_check"] == 5.0  # defaults written out
    if method == "3dvar":
        params = resolved["method"]["params"]
        assert (
            params["covariance"] == "ensemble"
            and params["b_scale"] == 1.5
            and params["localization_km"] == 1500
        )
    if method == "enkf":
        assert resolved["method"]["params"] == {
            "localization_km": 1500.0,
            "inflation": 1.0,
            "rtps": 0.1,
            "additive": 0.5,
            "channel_localization": "neighbourhood",
            "adaptive_inflation": False,
            "max_inflation": 3.0,
            "additive_covariance": "samples",
            "channel_localization_km": 1250.0,
        }
    status = yaml.safe_load((run_dir / "run.json").read_text())
    assert status["status"] == "complete" and status["windows_done"] == stamps
    assert status["truth"] and status["checkpoint"]["sha256"]

    analysis = xr.open_dataset(run_dir / "analysis" / "20180210T12.nc")
    assert analysis.sizes["realization"] == members and analysis.sizes["level"] == 3
    assert set(analysis.data_vars) >= {"geopotential", "temperature", "mean_sea_level_pressure"}
    assert analysis["geopotential"].attrs["units"] == "m**2 s**-2" and analysis.attrs["method"] == method
    obs = xr.open_dataset(run_dir / "observations" / "20180210T12.nc")
    assert {"value", "error_std", "background_departure", "analysis_departure", "qc_flag"} <= set(
        obs.data_vars
    )
    assert obs.sizes["obs"] > 100
    scores = xr.open_dataset(run_dir / "scores.nc")
    assert scores.sizes == {"time": 3, "channel": 11}
    a, b = scores["analysis_rmse"].values, scores["background_rmse"].values
    assert np.isfinite(a).all() and np.isfinite(b).all()
    used = obs["qc_flag"].values == 0
    oma = float(
        np.sqrt(np.mean(obs["analysis_departure"].values[used] ** 2 / obs["error_std"].values[used] ** 2))
    )
    omb = float(
        np.sqrt(np.mean(obs["background_departure"].values[used] ** 2 / obs["error_std"].values[used] ** 2))
    )
    # The 12 UTC analysis starts a forecast, written with WB2's prediction_timedelta and scored.
    assert sorted(p.stem for p in (run_dir / "forecasts").glob("*.nc")) == ["20180210T12"]
    forecast = xr.open_dataset(run_dir / "forecasts" / "20180210T12.nc")
    assert forecast["prediction_timedelta"].values.astype("timedelta64[h]").astype(int).tolist() == [6, 12]
    assert forecast.sizes["realization"] == 1 and forecast.sizes["time"] == 1  # ensembles: the mean
    fscores = xr.open_dataset(run_dir / "forecast_scores.nc")
    assert fscores["forecast_rmse"].shape == (1, 2, 11) and np.isfinite(fscores["forecast_rmse"]).all()
    assert (fscores["forecast_acc"] <= 1).all() and np.isfinite(fscores["forecast_crps"]).all() == (
        members > 1
    )
    # The 6-h forecast is the next window's background: the same emulator step from the same analysis.
    background = xr.open_dataset(run_dir / "background" / "20180210T18.nc")
    np.testing.assert_allclose(
        forecast["geopotential"].isel(prediction_timedelta=0, realization=0).values,
        background["geopotential"].mean("realization").values,
        rtol=1e-5,
    )
    if method == "none":
        np.testing.assert_allclose(a, b, rtol=1e-6)  # equal up to the float32 round trip on disk
        assert oma == pytest.approx(omb)
    else:
        assert oma < omb  # the analysis draws towards the observations
        assert np.mean(a / b) < 1.0  # and towards the truth


@pytest.mark.parametrize(
    ("checkpoint", "method", "members", "crash_at"),
    [
        ("tiny_checkpoint", "3dvar", 1, 3),
        ("tiny_history_checkpoint", "enkf", 4, 3),
        ("tiny_history_checkpoint", "3dvar", 1, 2),
    ],
    ids=["one-frame", "two-frame-enkf", "two-frame-after-first-window"],
)
def test_resume_equals_uninterrupted(tmp_path, request, monkeypatch, checkpoint, method, members, crash_at):
    """A two-frame emulator's previous state comes back from the analysis before the last one,
    or (after the first window) from the cold start."""
    tiny_checkpoint = request.getfixturevalue(checkpoint)
    sections = {
        "method": {"name": method},
        "ensemble": {"members": members},
        "forecast": {"previous": "members" if members > 1 else "mean"},
    }
    cfg = _config(tmp_path, tiny_checkpoint, run={"days": 1.0, "name": "whole"}, **sections)
    whole = run_cycle(cfg, progress=False)

    broken = _config(tmp_path, tiny_checkpoint, run={"days": 1.0, "name": "broken"}, **sections)
    write = driver.write_window
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt  # as if killed mid-window
        return write(*args, **kwargs)

    monkeypatch.setattr(driver, "write_window", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_cycle(broken, progress=False)
    monkeypatch.setattr(driver, "write_window", write)
    status = yaml.safe_load((tmp_path / "runs" / "broken" / "run.json").read_text())
    assert status["status"] == "interrupted" and len(status["windows_done"]) == crash_at - 1
    with pytest.raises(RunError, match="exists: pass --resume"):
        run_cycle(broken, progress=False)
    resumed = run_cycle(broken, resume=True, progress=False)
    stamps = sorted(p.stem for p in (whole / "analysis").glob("*.nc"))
    assert len(stamps) == 4
    for stamp in stamps[crash_at - 2 :]:
        a = xr.open_dataset(whole / "analysis" / f"{stamp}.nc")
        b = xr.open_dataset(resumed / "analysis" / f"{stamp}.nc")
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    xr.testing.assert_identical(
        xr.open_dataset(whole / "forecast_scores.nc"), xr.open_dataset(resumed / "forecast_scores.nc")
    )
    sa, sb = xr.open_dataset(whole / "scores.nc"), xr.open_dataset(resumed / "scores.nc")
    np.testing.assert_array_equal(sa["analysis_rmse"].values, sb["analysis_rmse"].values)


def test_errors_are_clear_and_keep_earlier_windows(tmp_path, tiny_checkpoint, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown analysis method 'optimal'; known: .*3dvar"):
        run_cycle(_config(tmp_path, tiny_checkpoint, method={"name": "optimal"}), progress=False)
    with pytest.raises(
        ConfigError, match=r"\['radius'\] are not parameters of 'enkf'; allowed: localization_km"
    ):
        run_cycle(
            _config(tmp_path, tiny_checkpoint, method={"name": "enkf", "params": {"radius": 3}}),
            progress=False,
        )
    with pytest.raises(ConfigError, match=r"unknown key 'run\.dayz'"):
        parse_config({"run": {"dayz": 3}}, RunConfig)
    with pytest.raises(FileNotFoundError, match="no such forecast checkpoint"):
        run_cycle(_config(tmp_path, tmp_path / "missing.pt"), progress=False)
    fewer = {**_config(tmp_path, tiny_checkpoint).model_dump(mode="json"), "channels": ["z500", "t850"]}
    with pytest.raises(RunError, match="trained on channels"):
        run_cycle(parse_config(fewer, RunConfig), progress=False)
    # Corrupt truth in the third window: a clear error, the first two windows stay complete.
    cfg = _config(tmp_path, tiny_checkpoint, run={"name": "nan"})
    truth_at = run_setup.Setup.truth_at

    def corrupt(self, time):
        if str(time) == "2018-02-10 18:00:00":
            self.truth[self.truth_times.get_indexer([time])[0], 3] = float("nan")
        return truth_at(self, time)

    monkeypatch.setattr(run_setup.Setup, "truth_at", corrupt)
    with pytest.raises(RunError, match="NaN or infinity in channels \\['t850'\\]"):
        run_cycle(cfg, progress=False)
    status = yaml.safe_load((tmp_path / "runs" / "nan" / "run.json").read_text())
    assert status["windows_done"] == ["20180210T06", "20180210T12"] and status["status"] == "interrupted"
    kept = xr.open_dataset(tmp_path / "runs" / "nan" / "analysis" / "20180210T12.nc")
    assert kept["temperature"].sel(level=[500, 850]).notnull().all()  # t250 is no channel: NaN fill


def test_cli_run_and_errors(tmp_path, tiny_checkpoint):
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path, tiny_checkpoint).model_dump(mode="json")))
    result = CliRunner().invoke(
        app, ["run", "--config", str(cfg_path), "--days", "0.25", "--method", "none", "--name", "cli"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "cli" / "analysis" / "20180210T06.nc").exists()
    bad = CliRunner().invoke(app, ["run", "--config", str(cfg_path), "--method", "kalman"])
    assert bad.exit_code == 2 and "unknown analysis method 'kalman'" in bad.output


def test_previous_frame_gives_every_member_the_mean_tendency():
    from types import SimpleNamespace

    before, now = torch.randn(5, 3, 4, 8), torch.randn(5, 3, 4, 8)
    setup = SimpleNamespace(config=SimpleNamespace(forecast=SimpleNamespace(previous="mean")))
    tendency = now - driver.previous_frame(setup, before, now)
    torch.testing.assert_close(tendency, (now.mean(0) - before.mean(0)).expand_as(now))
    setup.config.forecast.previous = "members"
    assert torch.equal(driver.previous_frame(setup, before, now), before)


def test_seed_protocol_backgrounds_are_forecasts_from_the_truth(tmp_path, tiny_history_checkpoint):
    """--protocol seed: every background is the 48-h forecast from the truth, whatever the
    analyses were; in a cycle the analysis starts the next background."""

    def run(method, protocol):
        cfg = _config(
            tmp_path,
            tiny_history_checkpoint,
            method={"name": method},
            run={"days": 0.5, "protocol": protocol, "name": f"{method}-{protocol}"},
            forecast={"from_hours": []},
        )
        return run_cycle(cfg, progress=False)

    def field(run_dir, kind, stamp):
        with xr.open_dataset(run_dir / kind / f"{stamp}.nc") as ds:
            return ds["geopotential"].values

    seed_var, seed_free = run("3dvar", "seed"), run("none", "seed")
    cycle_var, cycle_free = run("3dvar", "cycle"), run("none", "cycle")
    for stamp in ("20180210T06", "20180210T12"):  # the analyses differ, the backgrounds do not
        np.testing.assert_array_equal(
            field(seed_var, "background", stamp), field(seed_free, "background", stamp)
        )
        assert not np.allclose(field(seed_var, "analysis", stamp), field(seed_free, "analysis", stamp))
    # In a cycle 3D-Var's first analysis starts the next background.
    assert not np.allclose(
        field(cycle_var, "background", "20180210T12"), field(cycle_free, "background", "20180210T12")
    )
