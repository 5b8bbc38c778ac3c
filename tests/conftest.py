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


TRAIN = ("2018-02-01", "2018-02-20T18")


@pytest.fixture(scope="session")
def tiny_checkpoint(nature_cache, tmp_path_factory) -> Path:
    """A one-epoch emulator trained on February 2018 (its statistics define the period)."""
    from cycler_da.config import ForecastTrainingConfig, parse_config
    from cycler_da.forecast import train_forecast

    cfg = parse_config(
        {
            "data": {
                "nature": {"compiled": False},
                "train": list(TRAIN),
                "valid": ["2018-02-21", "2018-02-28T18"],
            },
            "model": {"width": 8, "depth": 2, "blocks": 1},
            "training": {"epochs": 1, "rollout_epochs": 0, "batch_size": 8},
        },
        ForecastTrainingConfig,
    )
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train_forecast(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_history_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """`tiny_checkpoint` widened to a two-frame emulator (it also takes the 6-h tendency),
    then one epoch with perturbed frames."""
    from cycler_da.config import ForecastTrainingConfig, parse_config
    from cycler_da.forecast import train_forecast

    cfg = parse_config(
        {
            "data": {
                "nature": {"compiled": False},
                "train": list(TRAIN),
                "valid": ["2018-02-21", "2018-02-28T18"],
            },
            "model": {"width": 8, "depth": 2, "blocks": 1, "frames": 2},
            "init_from": str(tiny_checkpoint),
            "training": {"epochs": 1, "rollout_epochs": 0, "batch_size": 8, "perturbed_fraction": 0.5},
        },
        ForecastTrainingConfig,
    )
    out = tmp_path_factory.mktemp("ckpt-history") / "tiny-history.pt"
    train_forecast(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_score_models(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """A one-epoch autoencoder and a 30-step prior on February 2018: (vae, prior) paths."""
    from cycler_da.config import parse_config
    from cycler_da.train_score import PriorTrainingConfig, VaeTrainingConfig, train_prior_model, train_vae

    data = {"nature": {"compiled": False}, "train": list(TRAIN), "valid": ["2018-02-21", "2018-02-28T18"]}
    root = tmp_path_factory.mktemp("score")
    vae_cfg = parse_config(
        {
            "data": data,
            "model": {"latent_channels": 4, "width": 8},
            "training": {"epochs": 1, "batch_size": 8},
        },
        VaeTrainingConfig,
    )
    vae = train_vae(vae_cfg, root / "vae.pt", progress=False) and root / "vae.pt"
    prior_cfg = parse_config(
        {
            "data": data,
            "vae": str(vae),
            "forecast_checkpoint": str(tiny_checkpoint),
            "pairs": {"leads_hours": [6, 12]},
            "model": {"width": 8, "depth": 1, "blocks": 1, "embedding": 16},
            "training": {"steps": 30, "batch_size": 8, "log_every": 15},
        },
        PriorTrainingConfig,
    )
    prior = train_prior_model(prior_cfg, root / "prior.pt", progress=False) and root / "prior.pt"
    return vae, prior


def _train_state_prior(forecast_checkpoint: Path, out: Path, steps: int = 30, **phyda) -> Path:
    """A small prior on the grid itself (``space: state``) trained on February 2018; `phyda`
    holds ``prdo`` and ``vre`` config sections."""
    from cycler_da.config import parse_config
    from cycler_da.train_score import PriorTrainingConfig, train_prior_model

    cfg = parse_config(
        {
            "data": {
                "nature": {"compiled": False},
                "train": list(TRAIN),
                "valid": ["2018-02-21", "2018-02-28T18"],
            },
            "space": "state",
            "forecast_checkpoint": str(forecast_checkpoint),
            "pairs": {"leads_hours": [6, 12], "perturbed": False},
            "model": {"width": 8, "depth": 1, "blocks": 1, "embedding": 16},
            **phyda,
            "training": {"steps": steps, "batch_size": 8, "log_every": steps // 2},
        },
        PriorTrainingConfig,
    )
    train_prior_model(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_state_prior(tiny_checkpoint, tmp_path_factory) -> Path:
    """A 30-step prior on the grid itself (``space: state``) on February 2018."""
    return _train_state_prior(tiny_checkpoint, tmp_path_factory.mktemp("state-prior") / "prior-state.pt")


@pytest.fixture(scope="session")
def tiny_phyda_priors(tiny_checkpoint, tiny_state_prior, tmp_path_factory) -> dict[tuple[bool, bool], Path]:
    """(prdo, vre) → a small state-space prior trained with that PhyDA setting (the three
    PhyDA ones fine-tuned from the plain one, as the shipped ones are)."""
    root = tmp_path_factory.mktemp("phyda")
    vre = {"enabled": True, "width": 8, "depth": 1, "fractions": [0.05, 0.2]}
    priors = {(False, False): tiny_state_prior}
    for prdo, with_vre in ((True, True), (True, False), (False, True)):
        sections = {"init_from": str(tiny_state_prior)} | ({"prdo": {"weight": 0.1}} if prdo else {})
        sections |= {"vre": vre} if with_vre else {}
        priors[(prdo, with_vre)] = _train_state_prior(
            tiny_checkpoint, root / f"prdo{int(prdo)}-vre{int(with_vre)}.pt", steps=10, **sections
        )
    return priors


BALANCE_LABELS = ("z500", "z850", "t500", "t850", "u500", "v500", "u850", "v850")


@pytest.fixture
def balanced_state():
    """(state, latitudes): an exactly hydrostatic state of BALANCE_LABELS whose winds are the
    analytic geostrophic winds of its geopotential (a zonal jet plus a wavenumber-3 wave),
    float64, (1, channel, lat, lon); its wind shear is the thermal wind of its temperature."""
    import math

    import numpy as np
    import torch

    from cycler_da.core.balance import EARTH_RADIUS_M, OMEGA, R_DRY
    from cycler_da.regrid import gaussian_grid

    nlat, nlon = 32, 64
    lat, lon = gaussian_grid(nlat).latitudes, np.arange(nlon) * 360.0 / nlon
    phi, lam = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    f = 2 * OMEGA * np.sin(phi)
    fields = {}
    for level, base, amp in ((500, 5.5e4, 2.0e3), (850, 1.4e4, 1.0e3)):
        z = base - amp * np.sin(phi) ** 2 + 0.3 * amp * np.cos(phi) ** 2 * np.sin(phi) * np.cos(3 * lam)
        dz_dphi = -2 * amp * np.sin(phi) * np.cos(phi) + 0.3 * amp * np.cos(3 * lam) * (
            np.cos(phi) ** 3 - 2 * np.cos(phi) * np.sin(phi) ** 2
        )
        dz_dlam = -0.9 * amp * np.cos(phi) ** 2 * np.sin(phi) * np.sin(3 * lam)
        fields[f"z{level}"] = z
        fields[f"u{level}"] = -dz_dphi / (f * EARTH_RADIUS_M)
        fields[f"v{level}"] = dz_dlam / (f * EARTH_RADIUS_M * np.cos(phi))
    fields["t850"] = 280.0 - 30 * np.sin(phi) ** 2
    fields["t500"] = 2 * (fields["z500"] - fields["z850"]) / (R_DRY * math.log(850 / 500)) - fields["t850"]
    state = torch.as_tensor(np.stack([fields[c] for c in BALANCE_LABELS]))[None]
    return state, lat


@pytest.fixture
def prior_window():
    """make(prior, members=1) → (MethodContext, background, Observations) on a prior's grid and
    channels: a random normalised truth, members of truth + 0.5 N(0, 1), and every channel observed
    in 10 % of the grid columns with σ_o = 0.1."""
    import numpy as np
    import torch

    from cycler_da.core import MethodContext, Observations
    from cycler_da.state import Grid
    from observation_ops.operator import PointObservationOperator
    from score_da import checkpoint

    def make(prior: Path, members: int = 1):
        manifest, _ = checkpoint.read(prior, "prior")
        grid, labels = Grid.from_dict(manifest["grid"]), manifest["channels"]
        rng = np.random.default_rng(0)
        nlat, nlon = grid.shape
        columns = rng.choice(nlat * nlon, nlat * nlon // 10, replace=False)
        channel = np.repeat(np.arange(len(labels)), len(columns))
        i, j = np.tile(columns // nlon, len(labels)), np.tile(columns % nlon, len(labels))
        op = PointObservationOperator(
            channel, grid.latitudes[i], grid.longitudes[j], grid.latitudes, grid.longitudes
        )
        g = torch.Generator().manual_seed(5)
        truth = torch.randn(1, len(labels), *grid.shape, generator=g)
        background = truth + 0.5 * torch.randn(members, len(labels), *grid.shape, generator=g)
        y = op(truth.double())[0] + 0.1 * torch.as_tensor(rng.standard_normal(len(channel)))
        context = MethodContext(labels, grid.latitudes, grid.longitudes)
        return context, background, Observations(y, torch.full_like(y, 0.1), op)

    return make
