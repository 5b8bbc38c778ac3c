"""The statistics of the default setup ship with the package, named by what made them."""

from __future__ import annotations

import numpy as np

from cycler_da import nature
from cycler_da.run_config import RunConfig
from cycler_da.statistics_cache import SHIPPED, TrainingErrors, products, same
from forecast_models.checkpoint import DEFAULT_CHECKPOINT, file_hash


def _default_errors(**changes) -> TrainingErrors:
    config = RunConfig()
    spec = nature.NatureSpec(
        config.truth.nature.resolution, config.truth.nature.seed, config.truth.nature.compiled
    )
    fields = dict(
        training=None,
        labels=list(config.channels),
        period=config.truth.train_period,
        stats=None,
        emulator=None,
        checkpoint_hash=file_hash(DEFAULT_CHECKPOINT),
        source_key=spec.key,
    )
    return TrainingErrors(**(fields | changes))


def test_every_product_of_the_default_setup_ships(monkeypatch, tmp_path):
    monkeypatch.setenv("CYCLER_DATA_DIR", str(tmp_path))
    found = products(_default_errors())
    assert len(found) == 4 and all(path is not None and path.parent == SHIPPED for path in found.values()), (
        found
    )
    samples = next(path for name, path in found.items() if name.startswith("berror-samples"))
    errors = np.load(samples)["errors"]
    assert errors.shape == (240, 11, 32, 64) and errors.dtype == np.float32
    assert same("x.npy", errors, samples) and not same("x.npy", errors + 1e-7, samples)


def test_another_truth_or_model_does_not_take_them(monkeypatch, tmp_path):
    monkeypatch.setenv("CYCLER_DATA_DIR", str(tmp_path))
    for change in ({"source_key": "held-suarez-T21-seed1-x"}, {"period": ("2016-01-01", "2016-12-31T18")}):
        assert set(products(_default_errors(**change)).values()) == {None}, change
    # Another forecast model has its own B; the truth's normalisation and mean state stay.
    other_model = products(_default_errors(checkpoint_hash="0" * 64))
    assert {name.split("-")[0] for name, path in other_model.items() if path is None} == {"berror"}


def test_cycler_no_shipped_hides_them(monkeypatch, tmp_path):
    monkeypatch.setenv("CYCLER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CYCLER_NO_SHIPPED", "1")
    assert set(products(_default_errors()).values()) == {None}
