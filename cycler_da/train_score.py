"""``cycler train vae`` and ``cycler train prior``: data, configuration, manifests, loading.

The xarray side of the score-based components: the nature run's training years become
normalised tensors, the tensor-level loops in :mod:`score_da.training` train on them, and
the checkpoints record how (command, configuration, data, scores, versions).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from cycler_da.config import ForecastDataConfig, Strict
from cycler_da.core.balance import Balance
from cycler_da.core.parallel import training_ranks
from cycler_da.paths import data_dir
from cycler_da.provenance import config_hash, interrupted_state, parent_provenance, training_provenance
from forecast_models.checkpoint import file_hash
from score_da import checkpoint
from score_da.checkpoint import load_latent_space
from score_da.latent import AutoencoderConfig, LatentSpace, StateSpace
from score_da.networks import Denoiser, coarsen_latitudes
from score_da.physics import ResidualSet
from score_da.schedule import VPSchedule
from score_da.training import (
    LEADS_HOURS,
    AutoencoderTraining,
    Pairs,
    PriorObjective,
    PriorTraining,
    forecast_pairs,
    reconstruction_rmse,
    train_autoencoder,
    train_prior,
)
from score_da.vre import PhyDAModel, VirtualReconstruction, column_observations

# Part of the pairs cache key: bump it when forecast_pairs changes what it makes.
PAIRS_VERSION = 1


@dataclass(frozen=True)
class DenoiserConfig:
    """Size of the denoiser and the noise schedule (``cycler train prior``: section ``model``)."""

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    width: int = 32
    depth: int = 2
    blocks: int = 1
    embedding: int = 64
    eta: float = 1e-3

    def as_dict(self) -> dict:
        return asdict(self)


class VaeTrainingConfig(Strict):
    """``cycler train vae``: data, model and optimisation."""

    data: ForecastDataConfig = ForecastDataConfig()
    model: AutoencoderConfig = AutoencoderConfig()
    training: AutoencoderTraining = AutoencoderTraining()


class PairsConfig(Strict):
    """The prior's (background, truth) pairs.

    leads_hours: background lead times, forecasts of the shipped (or given) emulator.
    perturbed: also start every forecast from truth + an analysis-like perturbation (a draw
        from the 24-h forecast-error covariance B, times an amplitude uniform in
        [0, perturbation_scale]), so the prior knows cycled backgrounds.
    start_stride: forecasts start every start_stride-th 6-hourly state of the series.
    """

    leads_hours: list[int] = Field(default_factory=lambda: list(LEADS_HOURS))
    perturbed: bool = True
    perturbation_scale: float = 1.0
    start_stride: int = Field(default=1, ge=1)


class PRDOConfig(Strict):
    """PhyDA's physically regularised objective: λ(t) mean(R(x̂0)²) added to the ε-loss
    (``space: state`` only; weight 0 switches it off).

    weight: λ0 (the paper's code: 0.1).
    schedule: "constant" λ0, or "signal" λ0 μ_t² (faded at high noise).
    terms: the residuals in R, each scaled by the truth's RMS over the training years.
    """

    weight: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "signal"] = "constant"
    terms: list[Literal["geostrophic", "hydrostatic", "thermal"]] = Field(
        default_factory=lambda: ["geostrophic", "hydrostatic", "thermal"], min_length=1
    )


class VREConfig(Strict):
    """PhyDA's virtual-reconstruction encoder, trained with the prior (``space: state`` only).

    enabled: condition the prior on the VRE's reconstruction as well as the background.
    width, depth, blocks: its spherical U-Net.
    weight: of its auxiliary area-weighted MSE against the truth.
    fractions: training observations cover a share of grid columns drawn log-uniformly in this range.
    error_std: their error, normalised units (the runs' default: 0.1).
    """

    enabled: bool = False
    width: int = 32
    depth: int = 3
    blocks: int = 1
    weight: float = Field(default=1.0, ge=0)
    fractions: tuple[float, float] = (0.005, 0.1)
    error_std: float = Field(default=0.1, ge=0)


class PriorTrainingConfig(Strict):
    """``cycler train prior``: data, the space it samples, the forecast model, model, optimisation.

    space: "latent" (the autoencoder `vae`'s standardised latents, 2x coarser than the grid) or
        "state" (the normalised state on the grid itself; `vae` is then unused).
    prdo, vre: PhyDA's physics penalty and virtual-reconstruction encoder (state space only).
    init_from: a prior (path or shipped name) to start from, of the same space, channels, grid
        and architecture; one without a VRE can start one with (the reconstruction's inputs
        start at zero and the VRE at the background, so training starts from the parent exactly).
    """

    data: ForecastDataConfig = ForecastDataConfig()
    space: Literal["latent", "state"] = "latent"
    vae: str = "default"
    forecast_checkpoint: str = "default"
    pairs: PairsConfig = PairsConfig()
    model: DenoiserConfig = DenoiserConfig()
    prdo: PRDOConfig = PRDOConfig()
    vre: VREConfig = VREConfig()
    init_from: str | None = None
    training: PriorTraining = PriorTraining()


def _series(data: ForecastDataConfig, device: str, progress: bool):
    from cycler_da.forecast import load_series

    train, valid, stats, grid = load_series(data, progress)
    weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32, device=device)
    return stats.normalise(train).to(device), stats.normalise(valid).to(device), stats, grid, weights


def train_vae(
    config: VaeTrainingConfig,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Trains the autoencoder on the truth's training years; writes `out`; returns its manifest."""
    state_path = interrupted_state(out, resume)
    ranks = training_ranks(device)
    progress = progress and ranks.main
    train, valid, stats, grid, weights = ranks.main_first(lambda: _series(config.data, device, progress))
    torch.manual_seed(config.training.seed)
    space = LatentSpace.build(config.model, config.data.channels, grid.latitudes).to(device)
    history = train_autoencoder(space, train, valid, weights, config.training, state_path, progress, ranks)
    rmse = reconstruction_rmse(space, valid, weights).cpu().numpy()
    manifest = {
        "kind": "vae",
        "architecture": config.model.as_dict(),
        "channels": list(config.data.channels),
        "grid": grid.as_dict(),
        "normalisation": stats.as_dict(),
        "latent": {
            "channels": config.model.latent_channels,
            "shape": [grid.shape[0] // 2, grid.shape[1] // 2],
        },
        "parameters": sum(p.numel() for p in space.parameters()),
        "training": {
            "config": config.model_dump(mode="json"),
            "history": history.records,
            **training_provenance(command, device, history.wall_seconds),
            "world_size": ranks.world,
        },
        "validation": {
            "period": list(config.data.valid),
            "reconstruction_rmse_normalised": dict(zip(config.data.channels, map(float, rmse), strict=True)),
            "reconstruction_rmse": dict(zip(config.data.channels, map(float, rmse * stats.std), strict=True)),
        },
    }
    if ranks.main:
        checkpoint.save(out, space.cpu(), manifest)
        state_path.unlink(missing_ok=True)
    return manifest


def train_prior_model(
    config: PriorTrainingConfig,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Makes the pairs, trains the conditional prior, writes `out`; returns its manifest."""
    from forecast_models.checkpoint import check_compatible, load_checkpoint, resolve_checkpoint

    state_path = interrupted_state(out, resume)
    if any(h <= 0 or h % 6 for h in config.pairs.leads_hours):
        raise ValueError(f"pairs.leads_hours must be positive multiples of 6; got {config.pairs.leads_hours}")
    if config.space == "latent" and (config.prdo.weight > 0 or config.vre.enabled):
        raise ValueError("prdo and vre work on the grid: they need space: state")
    ranks = training_ranks(device)
    progress = progress and ranks.main
    train, valid, stats, grid, _ = ranks.main_first(lambda: _series(config.data, device, progress))
    fc_path = resolve_checkpoint(config.forecast_checkpoint)
    emulator, fc_manifest = load_checkpoint(fc_path, device)
    labels = list(config.data.channels)
    built_on = [(f"forecast checkpoint {fc_path}", fc_manifest)]
    if config.space == "state":
        space, vae_path, latitudes = StateSpace(), None, grid.latitudes
        latent = {"channels": len(labels), "shape": list(grid.shape)}
    else:
        vae_path = checkpoint.resolve(config.vae, "vae")
        space, vae_manifest = load_latent_space(vae_path, device)
        built_on.append((f"vae {vae_path}", vae_manifest))
        latitudes, latent = coarsen_latitudes(grid.latitudes), vae_manifest["latent"]
    for name, manifest in built_on:
        check_compatible(manifest, labels, grid.latitudes, grid.longitudes, stats.mean, stats.std, name=name)
    perturb = None
    if config.pairs.perturbed:
        from cycler_da.perturbations import analysis_like_sampler

        perturb = ranks.main_first(
            lambda: analysis_like_sampler(
                config.data, stats, grid, emulator, fc_path, config.pairs.perturbation_scale
            )
        )
    key = {
        "data": config.data.model_dump(mode="json"),
        "pairs": config.pairs.model_dump(mode="json"),
        "seed": config.training.seed,
        "space": config.space,
        "vae_sha256": file_hash(vae_path) if vae_path is not None else None,
        "forecast_checkpoint_sha256": file_hash(fc_path),
        "version": PAIRS_VERSION,
    }
    leads, stride, seed = tuple(config.pairs.leads_hours), config.pairs.start_stride, config.training.seed
    pairs, valid_pairs = ranks.main_first(
        lambda: (
            cached_pairs(
                key | {"period": "train"},
                lambda: forecast_pairs(
                    emulator, space, train, leads, perturb, seed, stride=stride, progress=progress
                ),
            ),
            cached_pairs(
                key | {"period": "valid"},
                lambda: forecast_pairs(emulator, space, valid, leads, perturb, seed + 1, progress=progress),
            ),
        )
    )
    torch.manual_seed(config.training.seed)
    arch = config.model.as_dict() | ({"conditions": 2} if config.vre.enabled else {})
    denoiser, ema = (_prior_model(config, latent["channels"], latitudes, arch).to(device) for _ in range(2))
    parent = _initialise(denoiser, config, grid, stats) if config.init_from else None
    ema.load_state_dict(denoiser.state_dict())
    objective, physics = _objective(config, labels, grid, stats, train)
    history = train_prior(
        denoiser, ema, objective, pairs, valid_pairs, config.training, state_path, progress, ranks
    )
    phyda = {}
    if physics is not None:
        phyda["prdo"] = config.prdo.model_dump(mode="json") | {"truth_rms": physics.scales}
    if config.vre.enabled:
        phyda["vre"] = config.vre.model_dump(mode="json")
    manifest = {
        "kind": "prior",
        "architecture": arch,
        "channels": labels,
        "grid": grid.as_dict(),
        "normalisation": stats.as_dict(),
        "space": config.space,
        "latent": latent,
        "leads_hours": list(leads),
        "vae_sha256": file_hash(vae_path) if vae_path is not None else None,
        "forecast_checkpoint_sha256": file_hash(fc_path),
        **phyda,
        "parameters": sum(p.numel() for p in ema.parameters()),
        "pairs": {"train": len(pairs), "valid": len(valid_pairs)},
        "training": {
            "config": config.model_dump(mode="json"),
            "history": history.records,
            **training_provenance(command, device, history.wall_seconds),
            "world_size": ranks.world,
            **({"init_from": parent} if parent else {}),
        },
        "validation": {
            "period": list(config.data.valid),
            "eps_loss_ema": history.records[-1]["valid_loss_ema"],
        },
    }
    if ranks.main:
        checkpoint.save(out, ema.cpu(), manifest)
        state_path.unlink(missing_ok=True)
    return manifest


def cached_pairs(key: dict, make: Callable[[], Pairs]) -> Pairs:
    """The pairs named by `key`, made once and kept in the data directory (``pairs/``).

    Making them runs the emulator over the training years (minutes); a prior fine-tuned or
    ablated on the same pairs reads them back, bit-identical.
    """
    path = data_dir() / "pairs" / f"pairs-{config_hash(key)}.pt"
    if path.exists():
        return Pairs(**torch.load(path))
    pairs = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(vars(pairs), tmp)
    os.replace(tmp, path)
    return pairs


def _prior_model(config: PriorTrainingConfig, channels: int, latitudes, arch: dict):
    """The denoiser, or with a VRE the :class:`PhyDAModel` of both."""
    denoiser = Denoiser(channels, latitudes, **arch)
    if not config.vre.enabled:
        return denoiser
    v = config.vre
    vre = VirtualReconstruction(config.data.channels, latitudes, v.width, v.depth, v.blocks)
    return PhyDAModel(denoiser, vre)


def _objective(
    config: PriorTrainingConfig, labels, grid, stats, train
) -> tuple[PriorObjective, ResidualSet | None]:
    """The training loss: the ε-loss, with PRDO's residual set (scaled on `train`) and the VRE's
    observations when the config asks for them."""
    schedule = VPSchedule(config.model.eta)
    physics = None
    if config.prdo.weight > 0:
        balance = Balance(labels, grid.latitudes)
        physics = ResidualSet.fit(balance, stats.mean, stats.std, train, config.prdo.terms)
    observe = None
    if config.vre.enabled:
        v = config.vre

        def observe(truth, generator):
            return column_observations(truth, v.fractions, v.error_std, generator)

    weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32)
    return PriorObjective(
        schedule, physics, config.prdo.weight, config.prdo.schedule, observe, config.vre.weight, weights
    ), physics


def _initialise(model, config: PriorTrainingConfig, grid, stats) -> dict:
    """Loads `config.init_from`'s weights into `model` (widening the denoiser's input for a
    VRE's reconstruction where the parent has none); returns the parent's provenance."""
    from forecast_models.checkpoint import CheckpointError, check_compatible

    path = checkpoint.resolve(config.init_from, "prior")
    manifest, state_dict = checkpoint.read(path, "prior")
    arch = {k: v for k, v in manifest["architecture"].items() if k != "conditions"}
    if manifest.get("space", "latent") != config.space or arch != config.model.as_dict():
        raise CheckpointError(
            f"init_from: {path} is a {manifest.get('space', 'latent')}-space prior with architecture {arch}; "
            f"the config asks for a {config.space}-space one with {config.model.as_dict()}"
        )
    if "vre" in manifest and not config.vre.enabled:
        raise CheckpointError(f"init_from: {path} has a VRE; the config trains none (vre.enabled: false)")
    check_compatible(
        manifest,
        config.data.channels,
        grid.latitudes,
        grid.longitudes,
        stats.mean,
        stats.std,
        name=f"init_from {path}",
    )
    if config.vre.enabled and "vre" not in manifest:
        weight = state_dict["stem.conv.weight"]
        channels = len(config.data.channels)
        zeros = weight.new_zeros(weight.shape[0], channels, *weight.shape[2:])
        state_dict["stem.conv.weight"] = torch.cat(
            [weight[:, : 2 * channels], zeros, weight[:, 2 * channels :]], 1
        )
        model.denoiser.load_state_dict(state_dict)
    else:
        model.load_state_dict(state_dict)
    return parent_provenance(path, manifest)
