"""Shared fixtures: the real ERA5 sample and an isolated data directory."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ERA5_GRIB = DATA / "era5-levels-members.grib"


@pytest.fixture(autouse=True)
def _quiet_cfgrib():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@pytest.fixture
def era5():
    """The real ERA5 EDA sample, opened through the GRIB reader and loaded."""
    from cycler_da.sources import open_dataset

    return open_dataset(ERA5_GRIB).load()


@pytest.fixture(scope="session")
def nature_cache(tmp_path_factory):
    """A data directory shared by the tests that need real nature-run months (made once)."""
    path = tmp_path_factory.mktemp("nature-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CYCLER_DATA_DIR", str(path))
        yield path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private, empty data directory."""
    path = tmp_path / "cycler-data"
    monkeypatch.setenv("CYCLER_DATA_DIR", str(path))
    return path
