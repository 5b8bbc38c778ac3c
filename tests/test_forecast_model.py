"""The 6-hour emulator: padding on the sphere, the step contract, checkpoints, training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cycler_da.cli import app
from cycler_da.regrid import gaussian_grid
from forecast_models import training
from forecast_models.checkpoint import (
    CheckpointError,
    check_compatible,
    file_hash,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from forecast_models.emulator import ArchitectureConfig, Emulator, build_network
from forecast_models.training import Mirror, TrainConfig, train, validate
from forecast_models.unet import spherical_pad

GRID = gaussian_grid(8)  # 8 x 16
LABELS = ["z500", "t850", "msl"]


def _emulator(seed: int = 0, width: int = 8) -> Emulator:
    torch.manual_seed(seed)
    net = build_network(ArchitectureConfig(width=width, depth=2, blocks=1), LABELS, GRID.shape)
    return Emulator(net, GRID.latitudes, np.array([0.5, 0.4, 0.3]))


def _manifest(emulator: Emulator) -> dict:
    return {
        "architecture": ArchitectureConfig(width=8, depth=2, blocks=1).as_dict(),
        "channels": LABELS,
        "grid": GRID.as_dict(),
        "normalisation": {"mean": [5e4, 270.0, 1e5], "std": [3e3, 10.0, 1e3], "period": ["a", "b"]},
        "increment_std": [0.5, 0.4, 0.3],
    }


def test_spherical_pad_wraps_longitude_and_crosses_poles():
    lat, lon = 4, 8
    x = torch.arange(lat * lon, dtype=torch.float32).reshape(1, 1, lat, lon)
    p = spherical_pad(x, 1)
    assert p.shape == (1, 1, lat + 2, lon + 2)
    inner = p[..., 1:-1, :]
    assert torch.equal(inner[..., 0], x[..., -1]) and torch.equal(inner[..., -1], x[..., 0])
    # Beyond the first row: the same row seen across the pole, i.e. 180° away.
    assert torch.equal(p[0, 0, 0, 1:-1], torch.roll(x[0, 0, 0], lon // 2))
    assert torch.equal(p[0, 0, -1, 1:-1], torch.roll(x[0, 0, -1], lon // 2))


def test_pole_sign_flips_winds_only():
    x = torch.ones(1, 3, 4, 8)
    p = spherical_pad(x, 1, torch.tensor([1.0, -1.0, 1.0]))
    assert torch.equal(p[0, 1, 0], -torch.ones(10)) and torch.equal(p[0, 1, -1], -torch.ones(10))
    assert torch.equal(p[0, 0, 0], torch.ones(10)) and torch.equal(p[0, 1, 1:-1], torch.ones(4, 10))
    net = build_network(ArchitectureConfig(width=8), ["z500", "u500", "v850"], GRID.shape)
    assert net.stem.pole_sign.tolist() == [1.0, -1.0, -1.0, 1.0, 1.0]  # + sin/cos latitude


def test_untrained_emulator_is_persistence_and_shapes():
    em = _emulator()
    x = torch.randn(5, 3, *GRID.shape)
    assert torch.equal(em.step(x), x)
    torch.nn.init.normal_(em.network.head[-1].conv.weight, std=0.1)
    y = em.rollout(x, 3)
    assert y.shape == (3, 5, 3, *GRID.shape) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="must be \\(realization, 3 channels"):
        em.step(torch.zeros(3, *GRID.shape))


def _history_emulator(seed: int = 0) -> Emulator:
    torch.manual_seed(seed)
    net = build_network(ArchitectureConfig(width=8, depth=2, blocks=1, frames=2), LABELS, GRID.shape)
    return Emulator(net, GRID.latitudes, np.array([0.5, 0.4, 0.3]), frames=2)


def test_two_frame_emulator_takes_the_tendency():
    em = _history_emulator()
    assert em.takes_previous and em.network.stem.conv.weight.shape[1] == 2 * 3 + 2
    x, before = torch.randn(4, 3, *GRID.shape), torch.randn(4, 3, *GRID.shape)
    with pytest.raises(ValueError, match="takes two frames"):
        em.step(x)
    assert torch.equal(em.step(x, before), x)  # untrained: persistence
    torch.nn.init.normal_(em.network.head[-1].conv.weight, std=0.1)
    # The tendency reaches the output, and one previous state serves every member.
    assert not torch.allclose(em.step(x, before), em.step(x, x))
    torch.testing.assert_close(em.step(x, before[:1]), em.step(x, before[:1].expand_as(x)))
    # A rollout carries its own previous state forward.
    first = em.step(x, before)
    torch.testing.assert_close(em.rollout(x, 2, before)[1], em.step(first, x))
    with pytest.raises(ValueError, match="frames must be 1 or 2"):
        ArchitectureConfig(frames=3)


def test_widened_parent_forecasts_unchanged():
    """A one-frame U-Net's weights widened for the tendency give the parent's forecasts exactly."""
    from cycler_da.forecast import _widen_for_tendency

    parent = _emulator(seed=1)
    torch.nn.init.normal_(parent.network.head[-1].conv.weight, std=0.1)
    child = _history_emulator()
    child.network.load_state_dict(_widen_for_tendency(parent.network.state_dict(), len(LABELS)))
    assert child.network.stem.pole_sign.tolist() == parent.network.stem.pole_sign.tolist()[:3] * 2 + [
        1.0,
        1.0,
    ]
    x, before = torch.randn(2, 3, *GRID.shape), torch.randn(2, 3, *GRID.shape)
    torch.testing.assert_close(child.step(x, before), parent.step(x))
    with pytest.raises(ValueError, match=r"stem\.conv\.weight has"):
        _widen_for_tendency(child.network.state_dict(), len(LABELS))


def test_two_frame_training_feeds_the_previous_state_and_never_spans_segments():
    assert training._starts([5, 4], unroll=1, history=1).tolist() == [1, 2, 3, 6, 7]
    em = _history_emulator()
    segments = [torch.randn(6, 3, *GRID.shape), torch.randn(5, 3, *GRID.shape)]
    series = torch.cat(segments)
    calls = []
    step = em.step

    def recording_step(state, previous=None):
        calls.append((state.detach().clone(), previous.detach().clone()))
        return step(state, previous)

    em.step = recording_step
    config = TrainConfig(epochs=0, rollout_steps=2, rollout_epochs=1, batch_size=4)
    result = train(em, segments, segments[1], torch.ones(GRID.shape[0]), config, progress=False)
    assert np.isfinite(result.history[0]["train_loss"])
    training_calls = calls[: 2 * 2]  # 5 starts: 2 batches of 2-step rollouts, then validation
    for k in range(0, len(training_calls), 2):
        (state, previous), (_, second_previous) = training_calls[k], training_calls[k + 1]
        index = [int(((series - s).abs().amax(dim=(1, 2, 3)) == 0).nonzero()) for s in state]
        assert all(i not in (0, 6) for i in index)  # the first state of a segment has no previous one
        assert torch.equal(previous, series[[i - 1 for i in index]])
        assert torch.equal(second_previous, state)  # the rollout carries the previous state on
    assert len(calls) > 4


def test_members_are_independent_and_deterministic():
    em = _emulator()
    torch.nn.init.normal_(em.network.head[-1].conv.weight, std=0.1)
    x = torch.randn(4, 3, *GRID.shape)
    batched = em.step(x)
    single = torch.cat([em.step(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    other = _emulator()
    other.load_state_dict(em.state_dict())
    assert torch.equal(other.step(x), batched)


@pytest.mark.slow
def test_compiled_network_matches_eager():
    em = _emulator()
    torch.nn.init.normal_(em.network.head[-1].conv.weight, std=0.1)
    x = torch.randn(3, 3, *GRID.shape)
    with torch.inference_mode():
        eager = em.step(x)
        compiled = em.compile_network().step(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_differentiable_end_to_end():
    em = _emulator()
    torch.nn.init.normal_(em.network.head[-1].conv.weight, std=0.1)
    x = torch.randn(2, 3, *GRID.shape, requires_grad=True)
    em.rollout(x, 2).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_checkpoint_round_trip(tmp_path):
    em = _emulator()
    torch.nn.init.normal_(em.network.head[-1].conv.weight, std=0.1)
    path = save_checkpoint(tmp_path / "m.pt", em, _manifest(em))
    loaded, manifest = load_checkpoint(path)
    x = torch.randn(2, 3, *GRID.shape)
    # Loaded weights are channels-last (faster on CPU): the same step to round-off, usual layout out.
    assert next(loaded.network.parameters()).is_contiguous(memory_format=torch.channels_last)
    step = loaded.step(x)
    assert step.is_contiguous()
    torch.testing.assert_close(step, em.eval().step(x), rtol=1e-5, atol=1e-5)
    assert manifest["channels"] == LABELS and read_manifest(path)["increment_std"] == [0.5, 0.4, 0.3]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such forecast checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cycler forecast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown architecture 'transformer'; known: \\['sfno', 'unet'\\]"):
        build_network(ArchitectureConfig(name="transformer"), LABELS, GRID.shape)


def test_sfno_missing_names_the_install_command():
    pytest.importorskip("torch")
    try:
        import torch_harmonics  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install --no-deps torch-harmonics==0\.9\.3"):
            build_network(ArchitectureConfig(name="sfno"), LABELS, GRID.shape)
    else:
        net = build_network(ArchitectureConfig(name="sfno", width=16, blocks=2), LABELS, (32, 64))
        assert net(torch.zeros(1, 5, 32, 64)).shape == (1, 3, 32, 64)


def test_mismatch_says_which():
    manifest = _manifest(_emulator())
    mean, std = np.array([5e4, 270.0, 1e5]), np.array([3e3, 10.0, 1e3])
    check_compatible(manifest, LABELS, GRID.latitudes, GRID.longitudes, mean, std)
    with pytest.raises(CheckpointError, match="trained on channels \\['z500', 't850', 'msl'\\]"):
        check_compatible(manifest, ["z500", "t850"], GRID.latitudes, GRID.longitudes, mean, std)
    other = gaussian_grid(16)
    with pytest.raises(CheckpointError, match="8x16 grid, but the data is 16x32"):
        check_compatible(manifest, LABELS, other.latitudes, other.longitudes, mean, std)
    with pytest.raises(CheckpointError, match="other latitudes"):
        check_compatible(manifest, LABELS, GRID.latitudes + 1, GRID.longitudes, mean, std)
    with pytest.raises(CheckpointError, match=r"normalisation std differs .* \['t850'\]"):
        check_compatible(manifest, LABELS, GRID.latitudes, GRID.longitudes, mean, std * [1, 2, 1])


def _advection_series(steps: int = 160) -> torch.Tensor:
    """A field drifting one grid cell east per step, plus slow growth: learnable, not persistent."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, *GRID.shape, generator=g)
    base = torch.nn.functional.avg_pool2d(base[None], 3, 1, 1)[0] * 3
    return torch.stack([torch.roll(base, t, dims=-1) for t in range(steps)])


def _tiny_config(**kw) -> TrainConfig:
    return TrainConfig(
        **{"epochs": 4, "batch_size": 8, "lr": 3e-3, "rollout_steps": 2, "rollout_epochs": 1, **kw}
    )


def test_tiny_training_loss_falls():
    series = _advection_series()
    weights = torch.as_tensor(GRID.area_weights(), dtype=torch.float32)
    em = _emulator(width=16)
    before = validate(em, series[120:], weights).mean()
    result = train(em, series[:120], series[120:], weights, _tiny_config(), progress=False)
    after = validate(em, series[120:], weights).mean()
    losses = [h["train_loss"] for h in result.history]
    assert len(result.history) == 5 and result.history[-1]["phase"] == "rollout"
    assert losses[3] < 0.5 * losses[0]
    assert after < 0.5 * before  # beats persistence clearly


def test_mirror_reflects_latitude_and_negates_v_in_physical_units():
    labels = ["z500", "v850", "u500"]
    mean, std = np.array([5e4, 0.4, 10.0]), np.array([3e3, 5.0, 8.0])
    mirror = Mirror.of(labels, mean, std)
    physical = torch.randn(2, 3, *GRID.shape, dtype=torch.float64) * torch.tensor(std)[:, None, None]
    physical += torch.tensor(mean)[:, None, None]
    normalise = lambda x: (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]  # noqa: E731
    expected = physical.flip(-2) * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(mirror(normalise(physical).float()), normalise(expected).float())
    torch.testing.assert_close(mirror(mirror(normalise(physical).float())), normalise(physical).float())


def test_training_pairs_never_span_two_segments():
    assert training._starts([5, 4], 1).tolist() == [0, 1, 2, 3, 5, 6, 7]
    assert training._starts([5, 4], 2).tolist() == [0, 1, 2, 5, 6]
    # Two pieces of one drift with a gap between them, half the samples mirrored (the eastward
    # drift is mirror-symmetric): still learnable, so the loss falls.
    series = _advection_series(200)
    weights = torch.as_tensor(GRID.area_weights(), dtype=torch.float32)
    mirror = Mirror(torch.ones(3), torch.zeros(3))
    em = _emulator(width=16)
    config = _tiny_config(rollout_epochs=0, mirror_probability=0.5)
    result = train(
        em, [series[:70], series[100:170]], series[170:], weights, config, progress=False, mirror=mirror
    )
    assert (
        result.history[-1]["valid_rmse_6h_mean"]
        < 0.5 * validate(_emulator(width=16), series[170:], weights).mean()
    )
    with pytest.raises(ValueError, match="needs the mirror"):
        train(_emulator(), series[:40], series[40:], weights, config, progress=False)
    with pytest.raises(ValueError, match="mirror_probability must be in"):
        TrainConfig(mirror_probability=1.5)


def test_perturbed_starts_reach_the_loss_and_need_a_sampler():
    series = _advection_series(60)
    weights = torch.as_tensor(GRID.area_weights(), dtype=torch.float32)
    config = _tiny_config(epochs=1, rollout_epochs=0, lr=1e-12, perturbed_fraction=1.0)
    plain = train(
        _emulator(),
        series[:40],
        series[40:],
        weights,
        replace(config, perturbed_fraction=0.0),
        progress=False,
    )
    # A constant offset of 3 increment stds at every start: the untrained (persistence)
    # emulator's loss grows by about 3² per channel.
    offset = torch.tensor([1.5, 1.2, 0.9])[:, None, None]
    result = train(
        _emulator(),
        series[:40],
        series[40:],
        weights,
        config,
        progress=False,
        perturb=lambda n, g: offset.expand(n, 3, *GRID.shape),
    )
    assert result.history[0]["train_loss"] > plain.history[0]["train_loss"] + 8.0
    with pytest.raises(ValueError, match="needs a sampler"):
        train(_emulator(), series[:40], series[40:], weights, config, progress=False)
    with pytest.raises(ValueError, match="perturbed_fraction must be in"):
        TrainConfig(perturbed_fraction=-0.1)

    from cycler_da.config import ConfigError, ForecastTrainingConfig, parse_config

    with pytest.raises(ConfigError, match="perturbed_fraction needs init_from"):
        parse_config({"training": {"perturbed_fraction": 0.5}}, ForecastTrainingConfig)


def test_extra_seeds_must_be_new_trajectories():
    from cycler_da.config import ConfigError, ForecastTrainingConfig, parse_config
    from cycler_da.forecast import load_extra_training

    with pytest.raises(ConfigError, match="distinct non-negative"):
        parse_config({"data": {"extra_seeds": [1, 1]}}, ForecastTrainingConfig)
    with pytest.raises(ValueError, match="repeats the main trajectory's seed 0"):
        load_extra_training(ForecastTrainingConfig.model_validate({"data": {"extra_seeds": [0]}}))


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    series = _advection_series(60)
    weights = torch.as_tensor(GRID.area_weights(), dtype=torch.float32)
    config = _tiny_config(epochs=2, rollout_epochs=1)
    reference = _emulator()
    train(reference, series[:40], series[40:], weights, config, progress=False)

    state = tmp_path / "state"
    save = training._save_state
    calls = {"n": 0}

    def crash_after_first(*args, **kwargs):
        save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_state", crash_after_first)
    interrupted = _emulator()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, series[:40], series[40:], weights, config, state, progress=False)
    resumed = _emulator()
    result = train(resumed, series[:40], series[40:], weights, config, state, progress=False)
    assert len(result.history) == 3
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="other training settings"):
        train(_emulator(), series[:40], series[40:], weights, _tiny_config(epochs=3), state, progress=False)


def test_cli_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"epoch": 3}}))
    result = CliRunner().invoke(
        app, ["train", "forecast", "--config", str(bad), "--out", str(tmp_path / "m.pt")]
    )
    assert result.exit_code == 2
    assert "unknown key 'training.epoch'" in result.output and "epochs" in result.output


def test_cli_trains_on_the_nature_run(nature_cache, tmp_path):
    """A two-epoch run through the CLI on February 2018 writes a loadable checkpoint."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "nature": {"compiled": False},
                    "train": ["2018-02-01", "2018-02-20T18"],
                    "valid": ["2018-02-21", "2018-02-28T18"],
                },
                "model": {"width": 8, "depth": 2, "blocks": 1},
                "training": {"epochs": 2, "rollout_epochs": 0, "batch_size": 8},
            }
        )
    )
    out = tmp_path / "tiny.pt"
    result = CliRunner().invoke(
        app, ["train", "forecast", "--config", str(cfg), "--out", str(out), "--threads", "2"]
    )
    assert result.exit_code == 0, result.output
    emulator, manifest = load_checkpoint(out)
    assert manifest["channels"][0] == "z500" and len(manifest["channels"]) == 11
    assert len(manifest["grid"]["latitudes"]) == 32
    assert set(manifest["validation"]["rmse_6h"]) == set(manifest["channels"])
    assert manifest["training"]["command"].startswith("cycler train forecast")
    assert len(manifest["training"]["history"]) == 2
    # Trained two epochs only, yet already better than persistence at 6 h on average.
    ratio = np.mean(
        [
            manifest["validation"]["rmse_6h"][c] / manifest["validation"]["persistence_rmse_6h"][c]
            for c in manifest["channels"]
        ]
    )
    assert ratio < 1.0
    x = torch.zeros(2, 11, 32, 64)
    assert torch.isfinite(emulator.step(x)).all()

    # Fine-tuning: rollout only, from those weights, half the starts mirrored and half
    # perturbed by draws from the parent's B; the manifest names the parent.
    tuned = yaml.safe_load(cfg.read_text())
    tuned["init_from"] = str(out)
    tuned["training"].update(
        epochs=0,
        rollout_steps=2,
        rollout_epochs=1,
        rollout_lr=1e-4,
        mirror_probability=0.5,
        perturbed_fraction=0.5,
        perturbation_scale=2.0,
    )
    cfg.write_text(yaml.safe_dump(tuned))
    args = ["train", "forecast", "--config", str(cfg), "--threads", "2", "--out"]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "tuned.pt")])
    assert result.exit_code == 0, result.output
    _, child = load_checkpoint(tmp_path / "tuned.pt")
    assert child["training"]["init_from"]["sha256"] == file_hash(out)
    assert [h["phase"] for h in child["training"]["history"]] == ["rollout"]
    assert child["training"]["config"]["training"]["perturbed_fraction"] == 0.5
    assert np.isfinite(child["training"]["history"][0]["train_loss"])
    # A third stage from the second: its manifest keeps the whole chain back to the first.
    tuned.update(init_from=str(tmp_path / "tuned.pt"))
    tuned["training"].update(epochs=1, rollout_epochs=0)
    cfg.write_text(yaml.safe_dump(tuned))
    result = CliRunner().invoke(app, [*args, str(tmp_path / "third.pt")])
    assert result.exit_code == 0, result.output
    chain = read_manifest(tmp_path / "third.pt")["training"]["init_from"]
    assert chain["sha256"] == file_hash(tmp_path / "tuned.pt")
    assert chain["init_from"]["sha256"] == file_hash(out)
    assert chain["wall_seconds"] == child["training"]["wall_seconds"]
    tuned["model"]["width"] = 16
    cfg.write_text(yaml.safe_dump(tuned))
    result = CliRunner().invoke(app, [*args, str(tmp_path / "wider.pt")])
    assert result.exit_code != 0 and "init_from" in result.output and "architecture" in result.output


def test_shipped_weights_beat_persistence(nature_cache):
    """The default checkpoint loads, matches the default channels and grid, and forecasts well."""
    from cycler_da import nature
    from cycler_da.core.channels import DEFAULT_CHANNELS
    from cycler_da.normalization import NormStats
    from cycler_da.state import Grid, to_tensor
    from forecast_models.checkpoint import DEFAULT_CHECKPOINT

    emulator, manifest = load_checkpoint(DEFAULT_CHECKPOINT)
    assert manifest["channels"] == list(DEFAULT_CHANNELS)
    assert manifest["training"]["command"].startswith("cycler train forecast")
    assert DEFAULT_CHECKPOINT.stat().st_size < 10e6
    ds = nature.open_nature("2018-02-01", "2018-02-03", nature.NatureSpec(compiled=False), progress=False)
    assert Grid.from_dataset(ds).same_as(Grid.from_dict(manifest["grid"]))
    stats = NormStats.from_dict(manifest["normalisation"])
    x = stats.normalise(to_tensor(ds, manifest["channels"]))
    weights = torch.as_tensor(Grid.from_dataset(ds).area_weights(), dtype=torch.float32)
    assert emulator.takes_previous  # the default takes the 6-h tendency too
    with torch.inference_mode():
        forecast = emulator.step(x[1:-1], x[:-2])
    model = ((forecast - x[2:]) ** 2 * weights[:, None]).mean(dim=(0, 2, 3)).sqrt()
    persistence = ((x[1:-1] - x[2:]) ** 2 * weights[:, None]).mean(dim=(0, 2, 3)).sqrt()
    assert (model < 0.4 * persistence).all(), (model / persistence).tolist()
