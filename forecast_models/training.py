"""Training the 6-hour emulator on a normalised time series (tensors only).

Two phases: single-step training over every (x_t, x_t+6h) pair of the training series
(one or several independent trajectories), then optional rollout fine-tuning that unrolls several steps and back-propagates through
all of them, for stability over long free runs. The loss is the area-weighted MSE in
units of each channel's 6-hour increment standard deviation. After every epoch the full
training state is saved next to the output, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cycler_da.core.parallel import ONE_RANK, Ranks
from forecast_models.emulator import Emulator

# Correlation of the previous frame's start perturbation with the current frame's (two-frame
# emulators): consecutive cycled analyses have correlated errors.
PERTURBATION_CORRELATION = 0.5


def correlated_perturbation(p: Tensor, fresh: Tensor, rho: float = PERTURBATION_CORRELATION) -> Tensor:
    """``ρ p + sqrt(1 − ρ²) p'``: the previous frame's perturbation, correlated ρ with the current
    frame's `p`, from an independent draw `fresh` of the same distribution."""
    return rho * p + math.sqrt(1 - rho**2) * fresh


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: Single-step epochs (each sees every training pair once).
        batch_size: Pairs per optimiser step.
        lr: Peak learning rate (AdamW; linear warm-up for 1/20 of the steps, then cosine).
        weight_decay: AdamW weight decay.
        rollout_steps: 6-hour steps unrolled in fine-tuning (0 or 1 disables it).
        rollout_epochs: Fine-tuning epochs.
        rollout_lr: Peak learning rate of fine-tuning.
        grad_clip: Gradient-norm clip.
        area_weight_mix: Loss weights are ``mix × area weight + (1 − mix)``: pure area
            weighting (1) leaves the polar rows almost untrained, which let long rollouts
            drift there; validation always uses pure area weights.
        mirror_probability: Chance that a training sample (start and targets) is replaced by
            its north–south mirror image, latitude reversed and v negated: a symmetry of
            the Held–Suarez world (no seasons, no land), which doubles its weather; not
            one of the real atmosphere's, so leave it 0 on reanalysis.
        perturbed_fraction: Share of training samples whose start is the truth plus an
            analysis-like perturbation (the sampler given to :func:`train`), the target
            still the true next state: teaches forecasting from cycled analyses, which lie
            off the states the emulator otherwise sees.
        perturbation_scale: Read by whoever builds the sampler: amplitudes uniform in
            [0, this] times a draw of its covariance.
        perturbation_correlation: Two-frame emulators: the previous frame of a perturbed
            sample is perturbed too, by ``ρ p + sqrt(1 − ρ²) p'`` with `p` the current frame's
            perturbation and `p'` an independent draw; consecutive cycled analyses have
            correlated errors, so their tendency is less noisy than either frame.
        seed: Seed of initialisation and batch order.
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012  (read by pydantic when used in YAML config)

    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    rollout_steps: int = 4
    rollout_epochs: int = 2
    rollout_lr: float = 2e-4
    grad_clip: float = 1.0
    area_weight_mix: float = 0.5
    mirror_probability: float = 0.0
    perturbed_fraction: float = 0.0
    perturbation_scale: float = 1.0
    perturbation_correlation: float = PERTURBATION_CORRELATION
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("mirror_probability", "perturbed_fraction", "perturbation_correlation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.perturbation_scale < 0:
            raise ValueError(f"perturbation_scale must be >= 0, got {self.perturbation_scale}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Mirror:
    """North–south reflection of normalised states: latitude reversed, meridional wind negated.

    Attributes:
        sign: (channel,) -1 for v components, else 1.
        offset: (channel,) keeps the reflection exact in normalised units: a v channel with
            mean μ and std σ maps x to −x − 2μ/σ.
    """

    sign: Tensor
    offset: Tensor

    @classmethod
    def of(cls, labels: Sequence[str], mean: np.ndarray, std: np.ndarray) -> Mirror:
        from cycler_da.core.channels import channel

        is_v = torch.tensor([channel(label).variable.name == "v_component_of_wind" for label in labels])
        ratio = torch.as_tensor(np.asarray(mean, float) / np.asarray(std, float), dtype=torch.float32)
        return cls(torch.where(is_v, -1.0, 1.0), torch.where(is_v, -2.0 * ratio, 0.0))

    def __call__(self, x: Tensor) -> Tensor:
        sign = self.sign.to(x)[:, None, None]
        return x.flip(-2) * sign + self.offset.to(x)[:, None, None]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0


def weighted_mse(pred: Tensor, target: Tensor, weights: Tensor, scale: Tensor) -> Tensor:
    """Area-weighted MSE of ``(pred - target) / scale``; weights (lat,) mean 1, scale (channel, 1, 1)."""
    err = (pred - target) / scale
    return (err.pow(2) * weights[:, None]).mean()


def weighted_rmse_per_channel(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """sqrt of the time/member-mean area-weighted MSE, per channel: ``(..., C, lat, lon)`` → (C,)."""
    mse = (pred - target).pow(2) * weights[:, None]
    dims = [d for d in range(mse.ndim) if d != mse.ndim - 3]
    return mse.mean(dim=dims).sqrt()


def _phases(config: TrainConfig) -> list[tuple[str, int, int, float]]:
    phases = [("single-step", config.epochs, 1, config.lr)]
    if config.rollout_steps > 1 and config.rollout_epochs > 0:
        phases.append(("rollout", config.rollout_epochs, config.rollout_steps, config.rollout_lr))
    return phases


def _lr_at(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 1e-2 * peak + 0.5 * (peak - 1e-2 * peak) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def validate(emulator: Emulator, series: Tensor, weights: Tensor, steps: int = 1, batch: int = 64) -> Tensor:
    """RMSE per channel (normalised units) of `steps`-step forecasts over a series."""
    emulator.eval()
    history = emulator.frames - 1
    starts = torch.arange(history, series.shape[0] - steps)
    total = torch.zeros(series.shape[1], device=series.device)
    for chunk in starts.split(batch):
        state, previous = series[chunk], series[chunk - history]
        for _ in range(steps):
            previous, state = state, emulator.step(state, previous)
        mse = (state - series[chunk + steps]).pow(2) * weights[:, None]
        total += mse.mean(dim=(2, 3)).sum(dim=0)
    return (total / len(starts)).sqrt()


def _starts(lengths: list[int], unroll: int, history: int = 0) -> Tensor:
    """Indices into the concatenated segments whose `history` previous and `unroll` next
    states lie in the same segment."""
    offsets = np.cumsum([0, *lengths[:-1]])
    return torch.cat(
        [torch.arange(o + history, o + n - unroll) for o, n in zip(offsets, lengths, strict=True)]
    )


def train(
    emulator: Emulator,
    train_series: Tensor | Sequence[Tensor],
    valid_series: Tensor,
    weights: Tensor,
    config: TrainConfig,
    state_path: Path | None = None,
    progress: bool = True,
    mirror: Mirror | None = None,
    perturb: Callable[[int, torch.Generator], Tensor] | None = None,
    ranks: Ranks = ONE_RANK,
) -> TrainResult:
    """Trains in place; under ``torchrun`` each of `ranks` computes its share of every batch
    (:mod:`cycler_da.core.parallel`).

    Args:
        emulator: The model to train (on the device of the series).
        train_series: Normalised, contiguous 6-hourly states ``(time, channel, lat, lon)``,
            or several such segments (independent trajectories); no pair spans two.
        valid_series: Held-out normalised series, same layout.
        weights: Area weights (lat,), mean 1.
        config: Optimisation settings.
        state_path: Where to keep the resumable training state; resumes if it exists.
        progress: Show progress bars.
        mirror: The reflection that ``config.mirror_probability`` applies.
        perturb: Draws `n` normalised start perturbations, for ``config.perturbed_fraction``.

    Returns:
        Per-epoch losses and validation RMSE, and the wall time.
    """
    segments = [train_series] if isinstance(train_series, Tensor) else list(train_series)
    if config.mirror_probability > 0 and mirror is None:
        raise ValueError("mirror_probability > 0 needs the mirror transform of the channels")
    if config.perturbed_fraction > 0 and perturb is None:
        raise ValueError("perturbed_fraction > 0 needs a sampler of start perturbations")
    series = segments[0] if len(segments) == 1 else torch.cat(segments)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(emulator.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scale = emulator.increment_std
    loss_weights = config.area_weight_mix * weights + (1 - config.area_weight_mix)
    result = TrainResult()
    done_epochs = 0
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved["config"] != config.as_dict():
            raise ValueError(f"{state_path} was made with other training settings; delete it to start afresh")
        emulator.network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        result.history, result.wall_seconds = saved["history"], saved["wall_seconds"]
        done_epochs = len(result.history)

    rollout = ranks.wrap(Rollout(emulator))
    epoch_index = 0
    for phase, epochs, unroll, peak in _phases(config):
        history = emulator.frames - 1
        starts = _starts([len(x) for x in segments], unroll, history)
        pairs = len(starts)
        batches = math.ceil(pairs / config.batch_size)
        for epoch in range(epochs):
            if epoch_index < done_epochs:
                epoch_index += 1
                continue
            began = time.perf_counter()
            emulator.train()
            order = starts[torch.randperm(pairs, generator=generator)]
            losses = []
            bar = tqdm(
                order.split(config.batch_size),
                total=batches,
                disable=not progress,
                leave=False,
                desc=f"{phase} epoch {epoch + 1}/{epochs}",
            )
            for i, idx in enumerate(bar):
                for group in optimiser.param_groups:
                    group["lr"] = _lr_at(epoch * batches + i, epochs * batches, peak)
                flip = None
                if config.mirror_probability > 0:
                    flip = (torch.rand(len(idx), generator=generator) < config.mirror_probability).to(
                        series.device
                    )
                idx = idx.to(series.device)
                state = _maybe_mirror(series[idx], flip, mirror)
                previous = _maybe_mirror(series[idx - history], flip, mirror)
                if config.perturbed_fraction > 0:
                    chosen = (torch.rand(len(idx), generator=generator) < config.perturbed_fraction).to(state)
                    p = perturb(len(idx), generator).to(state)
                    state = state + chosen[:, None, None, None] * p
                    if history:
                        fresh = perturb(len(idx), generator).to(state)
                        p = correlated_perturbation(p, fresh, config.perturbation_correlation)
                        previous = previous + chosen[:, None, None, None] * p
                targets = torch.stack(
                    [_maybe_mirror(series[idx + k], flip, mirror) for k in range(1, unroll + 1)]
                )
                part = ranks.share(len(idx))
                loss = rollout(state[part], previous[part], targets[:, part], loss_weights, scale)
                loss = ranks.weighted(loss, len(idx))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(emulator.parameters(), config.grad_clip)
                optimiser.step()
                losses.append(ranks.mean(float(loss.detach())))
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            valid = (
                validate(emulator, valid_series, weights)
                if ranks.main
                else torch.full((series.shape[1],), math.nan)
            )
            record = {
                "phase": phase,
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "valid_rmse_6h": [float(v) for v in valid],
                "valid_rmse_6h_mean": float(valid.mean()),
                "seconds": time.perf_counter() - began,
            }
            result.history.append(record)
            result.wall_seconds += record["seconds"]
            if progress:
                tqdm.write(
                    f"{phase} epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f}, "
                    f"valid 6-h RMSE (normalised, mean over channels) {record['valid_rmse_6h_mean']:.4f} "
                    f"[{record['seconds']:.0f} s]"
                )
            if state_path is not None and ranks.main:
                _save_state(state_path, emulator, optimiser, generator, config, result)
            epoch_index += 1
    return result


class Rollout(nn.Module):
    """The unrolled training loss of an emulator as one module (DistributedDataParallel wraps it)."""

    def __init__(self, emulator: Emulator):
        super().__init__()
        self.emulator = emulator

    def forward(
        self, state: Tensor, previous: Tensor, targets: Tensor, weights: Tensor, scale: Tensor
    ) -> Tensor:
        """Mean over the `targets` (unroll, batch, ...) of the weighted MSE of steps from `state`."""
        loss = 0.0
        for target in targets:
            previous, state = state, self.emulator.step(state, previous)
            loss = loss + weighted_mse(state, target, weights, scale) / len(targets)
        return loss


def _maybe_mirror(x: Tensor, flip: Tensor | None, mirror: Mirror | None) -> Tensor:
    if flip is None or not flip.any():
        return x
    return torch.where(flip[:, None, None, None], mirror(x), x)


def _save_state(path: Path, emulator, optimiser, generator, config: TrainConfig, result: TrainResult) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(
        {
            "network": emulator.network.state_dict(),
            "optimiser": optimiser.state_dict(),
            "generator": generator.get_state(),
            "config": config.as_dict(),
            "history": result.history,
            "wall_seconds": result.wall_seconds,
        },
        tmp,
    )
    os.replace(tmp, path)
