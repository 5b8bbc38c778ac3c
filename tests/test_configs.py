"""The shipped run configs load, name registered methods and pass only parameters those accept."""

from pathlib import Path

import pytest

from cycler_da.analysis import known_methods, method_defaults
from cycler_da.config import load_config
from cycler_da.run_config import RunConfig

CONFIGS = Path(__file__).parents[1] / "configs"
RUN_CONFIGS = ["3dvar.yaml", "enkf.yaml", "envar.yaml", "stations_and_swaths.yaml"]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_shipped_run_config_is_valid(name):
    config = load_config(CONFIGS / name, RunConfig)
    assert config.method.name in known_methods()
    assert set(config.method.params) <= set(method_defaults(config.method.name))
