"""Training the autoencoder and the conditional diffusion prior (tensors only).

Both use AdamW with a linear warm-up and cosine decay, random longitude shifts as data
augmentation (the nature run's forcing is zonally symmetric, so a shifted state is as
likely as the original), and save a resumable training state as they go.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cycler_da.core.parallel import ONE_RANK, Ranks
from forecast_models.training import correlated_perturbation
from score_da.latent import LatentSpace, StateSpace
from score_da.networks import Denoiser
from score_da.physics import prdo_weight
from score_da.schedule import VPSchedule

LEADS_HOURS = (6, 12, 24, 48)


def lead_code(hours: Tensor | float) -> Tensor:
    """Background lead time → the prior's conditioning input: 6 h → 0, 48 h → 1 (log scale)."""
    return torch.log2(torch.as_tensor(hours, dtype=torch.float32) / 6.0) / 3.0


@dataclass(frozen=True)
class AutoencoderTraining:
    """Optimisation of ``cycler train vae`` (section ``training``).

    Attributes:
        epochs: Passes over the training states.
        batch_size: States per step.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        kl_weight: Weight of the KL term per latent element against the per-element MSE;
            small, so the latent keeps detail but stays smooth enough to optimise in.
        area_weight_mix: Loss weights ``mix × area weight + (1 − mix)`` (as the emulator).
        seed: Seed of initialisation, shifts and batch order.
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kl_weight: float = 1e-4
    area_weight_mix: float = 0.5
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PriorTraining:
    """Optimisation of ``cycler train prior`` (section ``training``).

    Attributes:
        steps: Optimiser steps.
        batch_size: Pairs per step.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        ema: Decay of the exponential moving average of the weights (the EMA is what ships).
        seed: Seed of initialisation, noise, shifts and batch order.
        log_every: Steps between progress records (and resumable saves).
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    steps: int = 8000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema: float = 0.999
    seed: int = 0
    log_every: int = 500

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """Progress records of a training and the wall time they add up to (resumed with it)."""

    records: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0

    def add(self, record: dict, line: str | None = None) -> None:
        """Appends `record` (its ``seconds`` count towards the wall time) and prints `line`, if any."""
        self.records.append(record)
        self.wall_seconds += record["seconds"]
        if line:
            tqdm.write(line)


def learning_rate(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.495 * (1 + math.cos(math.pi * progress)))


def random_shift(generator: torch.Generator, nlon: int, multiple: int = 2) -> int:
    """A longitude shift in grid cells, a multiple of `multiple` (the latent's coarsening)."""
    return multiple * int(torch.randint(nlon // multiple, (1,), generator=generator))


def area_weighted_mse(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    return ((pred - target).pow(2) * weights[:, None]).mean()


@torch.no_grad()
def reconstruction_rmse(space: LatentSpace, series: Tensor, weights: Tensor, batch: int = 64) -> Tensor:
    """Per-channel RMSE (normalised units) of decode(encode(x)) over a series."""
    space.eval()
    total = torch.zeros(series.shape[1], device=series.device)
    for chunk in series.split(batch):
        err = space.decode(space.encode(chunk)) - chunk
        total += (err.pow(2) * weights[:, None]).mean(dim=(2, 3)).sum(dim=0)
    return (total / series.shape[0]).sqrt()


def save_state(path: Path | None, **state) -> None:
    """Writes a resumable training state atomically (nothing when `path` is None)."""
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume_state(path: Path | None, config: dict) -> dict | None:
    """The saved training state at `path`, if any; refuses one made with other settings."""
    if path is None or not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["config"] != config:
        raise ValueError(f"{path} was made with other training settings; delete it to start afresh")
    return saved


class AutoencoderStep(nn.Module):
    """The autoencoder's losses on a batch as one module (DistributedDataParallel wraps it)."""

    def __init__(self, net: nn.Module, weights: Tensor):
        super().__init__()
        self.net, self.weights = net, weights

    def forward(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction MSE, KL) of states `x` with the reparameterisation `noise`."""
        mean, logvar = self.net.encode(x)
        z = mean + (0.5 * logvar).exp() * noise
        recon = area_weighted_mse(self.net.decode(z), x, self.weights)
        return recon, 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()


def train_autoencoder(
    space: LatentSpace,
    train_series: Tensor,
    valid_series: Tensor,
    weights: Tensor,
    config: AutoencoderTraining,
    state_path: Path | None = None,
    progress: bool = True,
    ranks: Ranks = ONE_RANK,
) -> History:
    """Trains the autoencoder in place, then fits the latent standardisation on `train_series`.

    An anomaly space is first fitted to `train_series`; its loss is then on the anomaly scale.
    Under ``torchrun`` each of `ranks` computes its share of every batch."""
    if space.anomalies:
        space.fit_anomalies(train_series)  # deterministic, so a resumed run refits the same
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = space.autoencoder
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_weights = config.area_weight_mix * weights + (1 - config.area_weight_mix)
    history = History()
    saved = resume_state(state_path, config.as_dict())
    if saved is not None:
        net.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        history = History(saved["records"], saved["wall_seconds"])
    batches = math.ceil(train_series.shape[0] / config.batch_size)
    step = ranks.wrap(AutoencoderStep(net, loss_weights))
    for epoch in range(len(history.records), config.epochs):
        began = time.perf_counter()
        net.train()
        losses = []
        order = torch.randperm(train_series.shape[0], generator=generator)
        bar = tqdm(
            order.split(config.batch_size),
            total=batches,
            disable=not progress,
            leave=False,
            desc=f"vae epoch {epoch + 1}/{config.epochs}",
        )
        for i, idx in enumerate(bar):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(epoch * batches + i, config.epochs * batches, config.lr)
            x = torch.roll(
                space.to_autoencoder(train_series[idx.to(train_series.device)]),
                random_shift(generator, train_series.shape[-1]),
                -1,
            )
            noise = torch.randn(net.latent_shape(x.shape), generator=generator).to(x)
            part = ranks.share(len(idx))
            recon, kl = (ranks.weighted(term, len(idx)) for term in step(x[part], noise[part]))
            loss = recon + config.kl_weight * kl
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            losses.append((ranks.mean(float(recon.detach())), ranks.mean(float(kl.detach()))))
            bar.set_postfix(mse=f"{np.mean([r for r, _ in losses[-50:]]):.5f}")
        valid = (
            reconstruction_rmse(space, valid_series, weights) if ranks.main else torch.full((1,), math.nan)
        )
        record = {
            "epoch": epoch + 1,
            "train_mse": float(np.mean([r for r, _ in losses])),
            "train_kl": float(np.mean([k for _, k in losses])),
            "valid_rmse": [float(v) for v in valid],
            "valid_rmse_mean": float(valid.mean()),
            "seconds": time.perf_counter() - began,
        }
        history.add(
            record,
            f"vae epoch {epoch + 1}/{config.epochs}: train MSE {record['train_mse']:.5f}, "
            f"valid reconstruction RMSE (normalised, mean over channels) "
            f"{record['valid_rmse_mean']:.4f} [{record['seconds']:.0f} s]"
            if progress
            else None,
        )
        save_state(
            state_path if ranks.main else None,
            network=net.state_dict(),
            optimiser=optimiser.state_dict(),
            generator=generator.get_state(),
            config=config.as_dict(),
            records=history.records,
            wall_seconds=history.wall_seconds,
        )
    space.fit_standardisation(train_series)
    return history


@dataclass
class Pairs:
    """Training pairs of the prior in standardised latent space.

    Attributes:
        truth: (time, latent, h, w) latents of the truth series.
        truth_index: (pair,) which truth latent each pair targets.
        background: (pair, latent, h, w) latents of the backgrounds.
        lead_hours: (pair,) lead time of each background.
    """

    truth: Tensor
    truth_index: Tensor
    background: Tensor
    lead_hours: Tensor

    def __len__(self) -> int:
        return self.truth_index.shape[0]


@torch.no_grad()
def forecast_pairs(
    emulator,
    space: LatentSpace | StateSpace,
    series: Tensor,
    leads: tuple[int, ...] = LEADS_HOURS,
    perturb: Callable[[int, torch.Generator], Tensor] | None = None,
    seed: int = 0,
    stride: int = 1,
    batch: int = 64,
    progress: bool = True,
) -> Pairs:
    """(background, truth) latent pairs from forecasts of a normalised series.

    Every start time gives one forecast per lead from the truth and, with `perturb` (which
    draws `n` analysis-like perturbations), one more from a perturbed truth, so the prior
    also learns the backgrounds a cycle produces.
    """
    generator = torch.Generator().manual_seed(seed)
    space.eval()
    steps = max(leads) // 6
    keep = {h // 6 for h in leads}
    history = emulator.frames - 1  # a two-frame emulator starts from two states
    truth = torch.cat([space.encode(c) for c in series.split(batch)])
    starts = torch.arange(history, series.shape[0] - steps, stride)
    kinds = [False, True] if perturb is not None else [False]
    index, backgrounds, lead_hours = [], [], []
    bar = tqdm(
        total=len(starts) * len(kinds), disable=not progress, desc="forecasts for prior pairs", leave=False
    )
    for perturbed in kinds:
        for chunk in starts.split(batch):
            state = series[chunk.to(series.device)]
            previous = series[chunk.to(series.device) - history]
            if perturbed:
                p = perturb(len(chunk), generator).to(state)
                state = state + p
                if history:
                    previous = previous + correlated_perturbation(p, perturb(len(chunk), generator).to(state))
            for k in range(1, steps + 1):
                previous, state = state, emulator.step(state, previous)
                if k in keep:
                    backgrounds.append(space.encode(state))
                    index.append(chunk + k)
                    lead_hours.append(torch.full((len(chunk),), 6.0 * k))
            bar.update(len(chunk))
    bar.close()
    return Pairs(truth, torch.cat(index), torch.cat(backgrounds), torch.cat(lead_hours))


@dataclass
class PriorObjective:
    """The prior's loss on a batch: the ε-MSE, plus PhyDA's terms when set.

    Attributes:
        schedule: The noise schedule.
        physics: PRDO's residual set R (:class:`score_da.physics.ResidualSet`), or None.
        physics_weight: λ0 of PRDO's λ(t).
        physics_schedule: "constant" or "signal" (λ0 μ_t², see :func:`score_da.physics.prdo_weight`).
        observe: Draws (values, mask) observations of a truth batch for the VRE, or None.
        vre_weight: Weight of the VRE's auxiliary MSE against the truth.
        weights: (lat,) area weights of that MSE.
    """

    schedule: VPSchedule
    physics: Callable[[Tensor], Tensor] | None = None
    physics_weight: float = 0.0
    physics_schedule: str = "constant"
    observe: Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]] | None = None
    vre_weight: float = 1.0
    weights: Tensor | None = None

    def draw(self, z: Tensor, generator: torch.Generator) -> Draws:
        """The randomness of a batch of truths `z`: VRE observations (when set), times, noise."""
        values = mask = None
        if self.observe is not None:
            values, mask = self.observe(z, generator)
        t = torch.rand(z.shape[0], generator=generator).to(z)
        eps = torch.randn(z.shape, generator=generator).to(z)
        return Draws(t, eps, values, mask)

    def loss(self, model, z: Tensor, z_b: Tensor, lead: Tensor, draws: Draws) -> dict[str, Tensor]:
        """{"eps", "total"} and "physics" (PRDO's mean λ(t) mean(R(x̂0)²)), "vre" (the auxiliary MSE)
        when set; `model` is a :class:`Denoiser`, or a :class:`score_da.vre.PhyDAModel` with `observe`."""
        terms = {}
        denoiser, condition = model, z_b
        if self.observe is not None:
            reconstruction = model.vre(draws.values, draws.mask, z_b)
            weights = torch.ones(z.shape[-2], device=z.device) if self.weights is None else self.weights.to(z)
            terms["vre"] = self.vre_weight * area_weighted_mse(reconstruction, z, weights)
            denoiser, condition = model.denoiser, torch.cat([z_b, reconstruction], dim=1)
        t, eps, s = draws.t, draws.eps, self.schedule
        z_t = s.mu(t)[:, None, None, None] * z + s.sigma(t)[:, None, None, None] * eps
        eps_hat = denoiser(z_t, t, condition, lead)
        terms["eps"] = (eps_hat - eps).pow(2).mean()
        if self.physics is not None:
            x0 = s.denoise(z_t, eps_hat, t[:, None, None, None])
            weight = prdo_weight(t, self.physics_weight, self.physics_schedule, s.mu(t))
            terms["physics"] = (weight * self.physics(x0)).mean()
        terms["total"] = sum(terms.values())
        return terms

    def __call__(
        self, model, z: Tensor, z_b: Tensor, lead: Tensor, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """:meth:`loss` of a batch with its randomness drawn from `generator`."""
        return self.loss(model, z, z_b, lead, self.draw(z, generator))


@dataclass
class Draws:
    """The random inputs of one batch of :class:`PriorObjective` (see :meth:`PriorObjective.draw`)."""

    t: Tensor
    eps: Tensor
    values: Tensor | None = None
    mask: Tensor | None = None

    def __getitem__(self, part: slice) -> Draws:
        return Draws(*(None if v is None else v[part] for v in (self.t, self.eps, self.values, self.mask)))


class ObjectiveStep(nn.Module):
    """A model and its objective as one module, so DistributedDataParallel wraps the whole loss."""

    def __init__(self, model: nn.Module, objective: PriorObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, z: Tensor, z_b: Tensor, lead: Tensor, draws: Draws) -> dict[str, Tensor]:
        return self.objective.loss(self.model, z, z_b, lead, draws)


@torch.no_grad()
def validation_loss(model, objective: PriorObjective, pairs: Pairs, seed: int = 1, batch: int = 128) -> float:
    """Mean ε-MSE over the pairs at fixed random times, noise and observations (comparable across calls)."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    total = 0.0
    for idx in torch.arange(len(pairs)).split(batch):
        z, z_b = pairs.truth[pairs.truth_index[idx]], pairs.background[idx]
        loss = objective(model, z, z_b, lead_code(pairs.lead_hours[idx]).to(z), generator)["eps"]
        total += float(loss) * len(idx)
    return total / len(pairs)


def train_prior(
    denoiser: Denoiser,
    ema: Denoiser,
    objective: PriorObjective,
    pairs: Pairs,
    valid: Pairs,
    config: PriorTraining,
    state_path: Path | None = None,
    progress: bool = True,
    ranks: Ranks = ONE_RANK,
) -> History:
    """Trains `denoiser` with `objective` (``PriorObjective(schedule)``: the ε-loss); `ema` follows
    its exponential moving average. With PhyDA's VRE both are :class:`score_da.vre.PhyDAModel`.
    Under ``torchrun`` each of `ranks` computes its share of every batch (:mod:`cycler_da.core.parallel`)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = History()
    done = 0
    saved = resume_state(state_path, config.as_dict())
    if saved is not None:
        denoiser.load_state_dict(saved["network"])
        ema.load_state_dict(saved["ema"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        history = History(saved["records"], saved["wall_seconds"])
        done = saved["step"]
    nlon = pairs.truth.shape[-1]
    step_module = ranks.wrap(ObjectiveStep(denoiser, objective))
    part = ranks.share(config.batch_size)
    bar = tqdm(total=config.steps, initial=done, disable=not progress, desc="prior", leave=False)
    began, losses = time.perf_counter(), []
    extras = {"physics": [], "vre": []}
    for step in range(done, config.steps):
        denoiser.train()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, config.steps, config.lr)
        idx = torch.randint(len(pairs), (config.batch_size,), generator=generator)
        shift = random_shift(generator, nlon, 1)
        z = torch.roll(pairs.truth[pairs.truth_index[idx]], shift, -1)
        z_b = torch.roll(pairs.background[idx], shift, -1)
        draws = objective.draw(z, generator)  # the whole batch's, on every rank
        lead = lead_code(pairs.lead_hours[idx]).to(z)
        terms = step_module(z[part], z_b[part], lead[part], draws[part])
        terms = {key: ranks.weighted(value, config.batch_size) for key, value in terms.items()}
        loss = terms["eps"]
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        for key, values in extras.items():
            if key in terms:
                values.append(ranks.mean(float(terms[key].detach())))
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), denoiser.parameters(), strict=True):
                p_ema.lerp_(p, 1 - config.ema)
        losses.append(ranks.mean(float(loss.detach())))
        bar.update(1)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            record = {
                "step": step + 1,
                "train_loss": float(np.mean(losses)),
                "valid_loss_ema": validation_loss(ema, objective, valid) if ranks.main else float("nan"),
                "seconds": time.perf_counter() - began,
            } | {f"train_{key}": float(np.mean(values)) for key, values in extras.items() if values}
            history.add(
                record,
                f"prior step {step + 1}/{config.steps}: train ε-loss {record['train_loss']:.4f}, "
                + "".join(
                    f"{key} {record[f'train_{key}']:.4f}, " for key in extras if f"train_{key}" in record
                )
                + f"valid ε-loss (EMA) {record['valid_loss_ema']:.4f} [{record['seconds']:.0f} s]"
                if progress
                else None,
            )
            save_state(
                state_path if ranks.main else None,
                network=denoiser.state_dict(),
                ema=ema.state_dict(),
                optimiser=optimiser.state_dict(),
                generator=generator.get_state(),
                config=config.as_dict(),
                records=history.records,
                wall_seconds=history.wall_seconds,
                step=step + 1,
            )
            began, losses = time.perf_counter(), []
            extras = {key: [] for key in extras}
    bar.close()
    return history
