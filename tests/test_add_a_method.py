"""The worked example of docs/add-a-method.md, executed: one file plus one entry-point line.

The example (docs/examples/cressman.py) is installed as an outside plugin would be, through a
distribution's ``entry_points.txt``, then found, validated, defaulted into the resolved config
and cycled by the driver like a built-in method.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cycler_da.config import ConfigError, parse_config
from cycler_da.core import MethodContext, Observations, build_method, known_methods
from cycler_da.driver import resolve, run_cycle
from cycler_da.regrid import gaussian_grid
from cycler_da.run_config import RunConfig
from observation_ops.operator import PointObservationOperator

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "cressman.py"
ENTRY_POINT_LINE = "cressman = cressman:METHOD"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """docs/examples/cressman.py installed as the package ``cycler-cressman``."""
    site = tmp_path / "site"
    (info := site / "cycler_cressman-0.1.dist-info").mkdir(parents=True)
    shutil.copy(EXAMPLE, site / "cressman.py")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cycler-cressman\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cycler.analysis_methods]\n{ENTRY_POINT_LINE}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("cressman", None)


def test_the_docs_show_the_example_and_its_entry_point_line():
    page = (Path(__file__).parents[1] / "docs" / "add-a-method.md").read_text()
    assert '--8<-- "docs/examples/cressman.py"' in page  # the page includes the file this test runs
    assert 'cressman = "cressman:METHOD"' in page  # the pyproject.toml form of ENTRY_POINT_LINE


def test_the_plugin_is_found_and_is_the_cressman_analysis(plugin):
    assert "cressman" in known_methods()
    grid = gaussian_grid(8)
    context = MethodContext(("z500", "t850"), grid.latitudes, grid.longitudes)
    method = build_method("cressman", context, radii_km=[5000.0])
    # One observation on a grid point: there the analysis takes the observed value; beyond the
    # radius nothing moves; in between the increment is the innovation (one observation's weights sum to w).
    i, j = 3, 5
    operator = PointObservationOperator(
        np.array([1]), grid.latitudes[[i]], grid.longitudes[[j]], grid.latitudes, grid.longitudes
    )
    background = torch.zeros(2, 2, *grid.shape, dtype=torch.float64)
    analysis = method.analyse(
        background,
        Observations(torch.tensor([1.5], dtype=torch.float64), torch.ones(1, dtype=torch.float64), operator),
    )
    state = analysis.state
    assert torch.allclose(state[:, 1, i, j], torch.tensor(1.5, dtype=torch.float64))
    assert torch.equal(state[:, 0], background[:, 0])  # the other channel is untouched
    from cycler_da.core.geometry import great_circle_km

    lat, lon = np.meshgrid(grid.latitudes, grid.longitudes, indexing="ij")
    far = great_circle_km(lat.ravel(), lon.ravel(), grid.latitudes[[i]], grid.longitudes[[j]])[:, 0] >= 5000
    assert far.any() and (~far).sum() > 1
    moved = state[0, 1].reshape(-1)
    assert torch.all(moved[torch.as_tensor(far)] == 0) and torch.allclose(
        moved[torch.as_tensor(~far)], torch.tensor(1.5, dtype=torch.float64)
    )
    assert analysis.diagnostics == {"passes": 1.0}


def test_the_plugin_is_validated_and_defaulted_like_a_built_in(plugin):
    with pytest.raises(
        ConfigError, match=r"method.params: \['radius'\] are not parameters of 'cressman'; allowed: radii_km"
    ):
        resolve(parse_config({"method": {"name": "cressman", "params": {"radius": 3}}}, RunConfig))
    with pytest.raises(ConfigError, match=r"radii_km must be positive"):
        resolve(parse_config({"method": {"name": "cressman", "params": {"radii_km": [500, -1]}}}, RunConfig))
    resolved = resolve(parse_config({"method": {"name": "cressman"}}, RunConfig))
    assert resolved.method.params == {"radii_km": (1500.0, 1000.0, 600.0)}


def test_the_plugin_cycles_through_the_driver(plugin, tmp_path, tiny_checkpoint):
    config = parse_config(
        {
            "run": {"start": "2018-02-10", "days": 0.5, "runs_dir": str(tmp_path / "runs")},
            "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
            "forecast": {"checkpoint": str(tiny_checkpoint), "from_hours": []},
            "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
            "method": {"name": "cressman", "params": {"radii_km": [1200]}},
        },
        RunConfig,
    )
    run_dir = run_cycle(config, progress=False)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["method"] == {"name": "cressman", "params": {"radii_km": [1200.0]}}
    assert sorted(p.stem for p in (run_dir / "analysis").glob("*.nc")) == ["20180210T06", "20180210T12"]
    import xarray as xr

    with xr.open_dataset(run_dir / "scores.nc") as scores:
        assert (scores["analysis_rmse"] < scores["background_rmse"]).mean() > 0.8
        assert float(scores["method_passes"][0]) == 1.0
