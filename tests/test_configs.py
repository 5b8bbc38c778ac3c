"""The shipped run configs load, name registered methods and pass only parameters those accept."""

from pathlib import Path

import pytest

from cycler_da.config import load_config
from cycler_da.core import known_methods, method_spec
from cycler_da.run_config import RunConfig

CONFIGS = Path(__file__).parents[1] / "configs"
RUN_CONFIGS = ["3dvar.yaml", "enkf.yaml", "envar.yaml", "lo_sda_dense.yaml", "stations_and_swaths.yaml"]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_shipped_run_config_is_valid(name):
    config = load_config(CONFIGS / name, RunConfig)
    assert config.method.name in known_methods()
    method_spec(config.method.name).parameters(config.method.params)  # raises on a bad key or value


FORECAST_CONFIGS = sorted(p.name for p in CONFIGS.glob("forecast_*.yaml"))


@pytest.mark.parametrize("name", FORECAST_CONFIGS)
def test_shipped_forecast_training_config_is_valid(name):
    from cycler_da.config import ForecastTrainingConfig

    config = load_config(CONFIGS / name, ForecastTrainingConfig)
    assert config.model.frames == (2 if "history" in name else 1)


def test_default_forecast_weights_come_from_the_last_history_stage():
    from cycler_da.config import ForecastTrainingConfig
    from forecast_models.checkpoint import DEFAULT_CHECKPOINT, architecture_of, read_manifest

    manifest = read_manifest(DEFAULT_CHECKPOINT)
    config = load_config(CONFIGS / "forecast_unet_t21_history_polish.yaml", ForecastTrainingConfig)
    assert architecture_of(manifest) == config.model
    assert manifest["training"]["config"]["training"] == config.training.as_dict()
    assert manifest["training"]["init_from"]["init_from"]["path"].endswith("unet-T21.pt")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("vae_*.yaml")))
def test_shipped_vae_training_config_is_valid(name):
    from cycler_da.train_score import VaeTrainingConfig

    config = load_config(CONFIGS / name, VaeTrainingConfig)
    assert config.model.anomalies == ("anomaly" in name)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("prior_*.yaml")))
def test_shipped_prior_training_config_is_valid(name):
    from cycler_da.train_score import PriorTrainingConfig

    config = load_config(CONFIGS / name, PriorTrainingConfig)
    assert ("anomaly" in str(config.vae)) == ("anomaly" in name)
    assert config.space == ("state" if "state" in name else "latent")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("phyda_*.yaml")))
def test_shipped_phyda_training_configs_differ_from_each_other_in_one_setting(name):
    from cycler_da.train_score import PriorTrainingConfig

    config = load_config(CONFIGS / name, PriorTrainingConfig)
    parent = load_config(CONFIGS / "prior_t21_state.yaml", PriorTrainingConfig)
    assert config.space == "state" and config.init_from == "state-default"
    assert config.model == parent.model and config.pairs == parent.pairs and config.data == parent.data
    assert (config.prdo.weight > 0) == ("no_prdo" not in name)
    assert config.vre.enabled == ("no_vre" not in name)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("align*.yaml")))
def test_shipped_align_configs_are_valid(name):
    from cycler_da.train_align import AlignmentConfig, PreferenceDataConfig

    config = load_config(CONFIGS / name, PreferenceDataConfig if "data" in name else AlignmentConfig)
    if "data" not in name:
        assert config.pair_set == ("physics" if "physics" in name else "multi")
