"""Training and loading the forecast model against datasets: the xarray side of the emulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cycler_da import nature
from cycler_da.config import ForecastDataConfig, ForecastTrainingConfig
from cycler_da.core.channels import TIME
from cycler_da.core.parallel import training_ranks
from cycler_da.normalization import compute_stats
from cycler_da.provenance import interrupted_state, parent_provenance, training_provenance
from cycler_da.state import Grid, to_tensor


def nature_spec(data: ForecastDataConfig, seed: int | None = None) -> nature.NatureSpec:
    n = data.nature
    return nature.NatureSpec(
        resolution=n.resolution, seed=n.seed if seed is None else seed, compiled=n.compiled
    )


def load_series(data: ForecastDataConfig, progress: bool = True):
    """The training and validation series (physical units), their grid and statistics.

    Returns:
        (train, valid, stats, grid): tensors ``(time, channel, lat, lon)`` and metadata.
    """
    ds = nature.open_nature(data.train[0], data.valid[1], nature_spec(data), progress=progress)
    labels = data.channels
    stats = compute_stats(ds, labels, *data.train)
    train = to_tensor(ds.sel({TIME: slice(*data.train)}), labels)
    valid = to_tensor(ds.sel({TIME: slice(*data.valid)}), labels)
    return train, valid, stats, Grid.from_dataset(ds)


def load_extra_training(config: ForecastTrainingConfig, progress: bool = True) -> list[torch.Tensor]:
    """The training years of each of `data.extra_seeds`' trajectories (physical units)."""
    data = config.data
    segments = []
    for seed in data.extra_seeds:
        if seed == data.nature.seed:
            raise ValueError(f"data.extra_seeds repeats the main trajectory's seed {seed}")
        ds = nature.open_nature(*data.train, nature_spec(data, seed), progress=progress)
        segments.append(to_tensor(ds, data.channels))
    return segments


def increment_std(series: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """Area-weighted std of the 6-hour increment per channel, of a normalised series."""
    increments = series[1:] - series[:-1]
    var = (increments.pow(2) * weights[:, None]).mean(dim=(0, 2, 3)) - (increments * weights[:, None]).mean(
        dim=(0, 2, 3)
    ).pow(2)
    return var.sqrt().double().numpy()


def train_forecast(
    config: ForecastTrainingConfig,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Trains the emulator, writes the checkpoint with its manifest, and returns the manifest."""
    from forecast_models.checkpoint import save_checkpoint
    from forecast_models.emulator import Emulator, build_network
    from forecast_models.training import Mirror, train, validate

    state_path = interrupted_state(out, resume)
    ranks = training_ranks(device)
    progress = progress and ranks.main
    train_phys, valid_phys, stats, grid = ranks.main_first(lambda: load_series(config.data, progress))
    extra = [
        stats.normalise(x).to(device) for x in ranks.main_first(lambda: load_extra_training(config, progress))
    ]
    train_series = stats.normalise(train_phys).to(device)
    valid_series = stats.normalise(valid_phys).to(device)
    weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32, device=device)
    inc_std = increment_std(train_series.cpu(), weights.cpu())

    torch.manual_seed(config.training.seed)
    arch = config.model
    network = build_network(arch, config.data.channels, grid.shape)
    emulator = Emulator(network, grid.latitudes, inc_std, arch.frames).to(device)
    parent = _initialise(emulator, config, grid, stats) if config.init_from else None
    mirror = Mirror.of(config.data.channels, stats.mean, stats.std)
    perturb = (
        ranks.main_first(lambda: _start_perturbations(config, emulator, grid, stats))
        if config.training.perturbed_fraction
        else None
    )
    result = train(
        emulator,
        [train_series, *extra],
        valid_series,
        weights,
        config.training,
        state_path,
        progress,
        mirror=mirror,
        perturb=perturb,
        ranks=ranks,
    )

    scores = {}
    for hours in (6, 24):
        rmse = validate(emulator, valid_series, weights, steps=hours // 6).cpu().numpy() * stats.std
        scores[f"rmse_{hours}h"] = dict(zip(config.data.channels, map(float, rmse), strict=True))
    persistence = np.sqrt(
        ((valid_series[1:] - valid_series[:-1]).pow(2) * weights[:, None]).mean(dim=(0, 2, 3)).cpu().numpy()
    )
    scores["persistence_rmse_6h"] = dict(
        zip(config.data.channels, map(float, persistence * stats.std), strict=True)
    )
    manifest = {
        "kind": "forecast-emulator",
        "step_hours": 6,
        "architecture": arch.as_dict(),
        "channels": list(config.data.channels),
        "grid": grid.as_dict(),
        "normalisation": stats.as_dict(),
        "increment_std": [float(v) for v in inc_std],
        "parameters": sum(p.numel() for p in network.parameters()),
        "training": {
            "config": config.model_dump(mode="json"),
            "data": {
                "source": "nature",
                "key": nature_spec(config.data).key,
                **nature_spec(config.data).as_dict(),
                "extra_keys": [nature_spec(config.data, s).key for s in config.data.extra_seeds],
            },
            "history": result.history,
            **({"init_from": parent} if parent else {}),
            **training_provenance(command, device, result.wall_seconds),
            "world_size": ranks.world,
        },
        "validation": {"period": list(config.data.valid), **scores},
    }
    if ranks.main:
        save_checkpoint(out, emulator.cpu(), manifest)
        state_path.unlink(missing_ok=True)
    return manifest


def _start_perturbations(config: ForecastTrainingConfig, emulator, grid: Grid, stats):
    """Analysis-like start perturbations from the B of the `init_from` checkpoint's forecast errors."""
    from cycler_da.perturbations import analysis_like_sampler
    from forecast_models.checkpoint import load_checkpoint

    device = next(emulator.parameters()).device
    parent, _ = load_checkpoint(config.init_from, device)
    return analysis_like_sampler(
        config.data, stats, grid, parent, Path(config.init_from), config.training.perturbation_scale
    )


def _widen_for_tendency(state_dict: dict, channels: int) -> dict:
    """A one-frame U-Net's weights for the two-frame network: the stem's new tendency inputs get
    zero weights, so training starts from the parent's forecasts exactly."""
    from forecast_models.emulator import STATIC_FEATURES

    out = dict(state_dict)
    weight = out["stem.conv.weight"]  # (width, channels + static, k, k)
    if weight.shape[1] != channels + STATIC_FEATURES:
        raise ValueError(
            f"stem.conv.weight has {weight.shape[1]} inputs, expected {channels + STATIC_FEATURES}"
        )
    zeros = weight.new_zeros(weight.shape[0], channels, *weight.shape[2:])
    out["stem.conv.weight"] = torch.cat([weight[:, :channels], zeros, weight[:, channels:]], dim=1)
    sign = out.get("stem.pole_sign")
    if sign is not None:
        out["stem.pole_sign"] = torch.cat([sign[:channels], sign[:channels], sign[channels:]])
    return out


def _initialise(emulator, config: ForecastTrainingConfig, grid: Grid, stats) -> dict:
    """Loads `config.init_from`'s weights into `emulator`; returns the parent's provenance."""
    from forecast_models.checkpoint import CheckpointError, architecture_of, check_compatible, read_payload

    path = Path(config.init_from)
    manifest, state_dict = read_payload(path)
    parent_arch = architecture_of(manifest)
    widened = parent_arch.frames == 1 and config.model.frames == 2 and config.model.name == "unet"
    if parent_arch.as_dict() | {"frames": config.model.frames} != config.model.as_dict() or (
        parent_arch.frames != config.model.frames and not widened
    ):
        raise CheckpointError(
            f"init_from: {path} has architecture {parent_arch.as_dict()}, the config asks for "
            f"{config.model.as_dict()}"
        )
    check_compatible(
        manifest,
        config.data.channels,
        grid.latitudes,
        grid.longitudes,
        stats.mean,
        stats.std,
        name=f"init_from {path}",
    )
    if widened:
        state_dict = _widen_for_tendency(state_dict, len(config.data.channels))
    emulator.network.load_state_dict(state_dict)
    return parent_provenance(path, manifest)
