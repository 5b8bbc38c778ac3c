"""The diffusion prior on the grid itself (``space: state``): training, loading, sampling."""

from __future__ import annotations

import pytest
import torch

from cycler_da.core import MethodContext, build_method
from cycler_da.state import Grid
from score_da import checkpoint
from score_da.latent import StateSpace

LABELS = ("z500", "z850", "t500", "t850", "u250", "v250", "u500", "v500", "u850", "v850", "msl")


def test_state_prior_manifest_names_its_space_and_no_autoencoder(tiny_state_prior):
    manifest, _ = checkpoint.read(tiny_state_prior, "prior")
    denoiser, _, _ = checkpoint.load_prior(tiny_state_prior)
    assert manifest["space"] == "state" and manifest["vae_sha256"] is None
    assert manifest["latent"] == {
        "channels": len(LABELS),
        "shape": list(Grid.from_dict(manifest["grid"]).shape),
    }
    # the denoiser works on the full grid: its static features have one row per grid latitude
    assert denoiser.static.shape[-2] == len(manifest["grid"]["latitudes"])


@pytest.mark.parametrize("name", ["dps", "lo-sda", "align-da"])
def test_latent_methods_sample_the_state_with_a_state_prior(tiny_state_prior, prior_window, name):
    context, background, obs = prior_window(tiny_state_prior)
    # `vae` names a file that does not exist: a state prior never reads it
    method = build_method(name, context, prior=str(tiny_state_prior), vae="no-such-vae.pt", steps=4)
    assert isinstance(method.space, StateSpace) and method.residual is None
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert a.state.shape == background.shape and torch.isfinite(a.state).all()
    assert a.diagnostics["nfe"] >= 4


def test_lo_sda_with_a_state_prior_fits_the_observations(tiny_state_prior, prior_window):
    context, background, obs = prior_window(tiny_state_prior)
    method = build_method("lo-sda", context, prior=str(tiny_state_prior), steps=4)
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert a.diagnostics["chi2_per_obs"] <= 1.0  # fitted to χ²/m ≤ fit_target (0.7) by the polish
    _, draw = method.begin(background)
    assert draw.offset is None  # no autoencoder residual to keep


def test_state_prior_refuses_a_run_with_other_channels(tiny_state_prior, prior_window):
    from forecast_models.checkpoint import CheckpointError

    context, _, _ = prior_window(tiny_state_prior)
    fewer = MethodContext(LABELS[:3], context.latitudes, context.longitudes)
    with pytest.raises(CheckpointError, match="trained on channels"):
        build_method("dps", fewer, prior=str(tiny_state_prior))


def test_pairs_are_made_once_per_key_and_read_back_identical(data_dir):
    from cycler_da.train_score import cached_pairs
    from score_da.training import Pairs

    made = []

    def make():
        made.append(1)
        return Pairs(
            torch.randn(5, 2, 4, 8),
            torch.tensor([1, 2, 3]),
            torch.randn(3, 2, 4, 8),
            torch.tensor([6.0, 12.0, 6.0]),
        )

    first = cached_pairs({"period": "train", "seed": 0}, make)
    again = cached_pairs({"period": "train", "seed": 0}, make)
    other = cached_pairs({"period": "train", "seed": 1}, make)
    assert len(made) == 2
    for name in ("truth", "truth_index", "background", "lead_hours"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.background, other.background)
    assert sorted(p.name.startswith("pairs-") for p in (data_dir / "pairs").iterdir()) == [True, True]
