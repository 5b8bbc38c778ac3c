"""Diffusion-DPO: aligning the conditional prior with preference pairs (Wallace et al. 2024).

For a pair (winner z_w, loser z_l) of one background z_b, one diffusion time t and one noise ε
are drawn and shared by both; with m = mean‖ε − ε_θ(z_t, t, z_b)‖² of the model being tuned
and r the same of its frozen reference copy,

    loss = −log σ(−½ β [(m_w − m_l) − (r_w − r_l)]),

so the tuned model lowers its denoising error on winners relative to losers, measured against
where the reference stands (β sets how far it may move). At the reference the loss is log 2
and its gradient β/4 ∇(m_w − m_l): zero only for a pair whose winner is its loser.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from score_da.networks import Denoiser
from score_da.schedule import VPSchedule
from score_da.training import History, lead_code, random_shift, resume_state, save_state


@dataclass(frozen=True)
class PreferencePairs:
    """Latent preference pairs, each (pair, latent, lat, lon) but `lead_hours` (pair,)."""

    winner: Tensor
    loser: Tensor
    background: Tensor
    lead_hours: Tensor

    def __len__(self) -> int:
        return self.winner.shape[0]

    def take(self, index: Tensor) -> PreferencePairs:
        return PreferencePairs(
            self.winner[index], self.loser[index], self.background[index], self.lead_hours[index]
        )


@dataclass(frozen=True)
class AlignmentTraining:
    """Optimisation of ``cycler train align`` (section ``training``).

    Attributes:
        beta: β of the DPO loss (per-element mean ε-losses, so it carries across grid sizes).
        steps: Optimiser steps.
        batch_size: Pairs per step.
        lr: Learning rate (constant).
        weight_decay: AdamW weight decay.
        seed: Seed of times, noise, shifts and batch order.
        log_every: Steps between progress records, validation and resumable saves.
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    beta: float = 8000.0
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 50

    def as_dict(self) -> dict:
        return asdict(self)


def _eps_losses(model: Denoiser, schedule: VPSchedule, pairs: PreferencePairs, t: Tensor, eps: Tensor):
    """Per-pair mean ε-losses of winner and loser, with the same t and ε."""
    mu, sigma = schedule.mu(t)[:, None, None, None], schedule.sigma(t)[:, None, None, None]
    lead = lead_code(pairs.lead_hours).to(eps)
    z = torch.cat([pairs.winner, pairs.loser])
    z_t = mu.repeat(2, 1, 1, 1) * z + sigma.repeat(2, 1, 1, 1) * eps.repeat(2, 1, 1, 1)
    predicted = model(z_t, t.repeat(2), pairs.background.repeat(2, 1, 1, 1), lead.repeat(2))
    losses = (predicted - eps.repeat(2, 1, 1, 1)).square().flatten(1).mean(1)
    return losses.chunk(2)


def dpo_loss(
    model: Denoiser,
    reference: Denoiser,
    schedule: VPSchedule,
    pairs: PreferencePairs,
    beta: float,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, float]]:
    """The Diffusion-DPO loss of a batch of pairs, and its diagnostics (implicit accuracy: the
    share of pairs the tuned model prefers the right way; drift: its ε-loss minus the reference's)."""
    n = len(pairs)
    t = torch.rand(n, generator=generator).to(pairs.winner)
    eps = torch.randn(pairs.winner.shape, generator=generator).to(pairs.winner)
    m_w, m_l = _eps_losses(model, schedule, pairs, t, eps)
    with torch.no_grad():
        r_w, r_l = _eps_losses(reference, schedule, pairs, t, eps)
    inside = -0.5 * beta * ((m_w - m_l) - (r_w - r_l))
    loss = -torch.nn.functional.logsigmoid(inside).mean()
    drift = 0.5 * ((m_w - r_w) + (m_l - r_l)).mean()
    return loss, {"accuracy": float((inside.detach() > 0).float().mean()), "drift": float(drift.detach())}


@torch.no_grad()
def validate(
    model: Denoiser,
    reference: Denoiser,
    schedule: VPSchedule,
    pairs: PreferencePairs,
    beta: float,
    seed: int = 1,
) -> dict[str, float]:
    """Loss, implicit accuracy and drift on held-out pairs (fixed t and ε)."""
    generator = torch.Generator().manual_seed(seed)
    totals, count = {"loss": 0.0, "accuracy": 0.0, "drift": 0.0}, 0
    for index in torch.arange(len(pairs)).split(64):
        loss, stats = dpo_loss(model, reference, schedule, pairs.take(index), beta, generator)
        weight = len(index)
        totals["loss"] += float(loss) * weight
        totals["accuracy"] += stats["accuracy"] * weight
        totals["drift"] += stats["drift"] * weight
        count += weight
    return {key: value / max(count, 1) for key, value in totals.items()}


def align_prior(
    model: Denoiser,
    reference: Denoiser,
    schedule: VPSchedule,
    pairs: PreferencePairs,
    valid: PreferencePairs,
    config: AlignmentTraining,
    state_path: Path | None = None,
    progress: bool = True,
) -> History:
    """Fine-tunes `model` (a copy of `reference`) on `pairs` with the DPO loss; resumable."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    for p in reference.parameters():
        p.requires_grad_(False)
    reference.eval()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history, done = History(), 0
    saved = resume_state(state_path, config.as_dict())
    if saved is not None:
        model.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        history, done = History(saved["records"], saved["wall_seconds"]), saved["step"]
    nlon = pairs.winner.shape[-1]
    bar = tqdm(total=config.steps, initial=done, disable=not progress, desc="align", leave=False)
    began, seen = time.perf_counter(), []
    for step in range(done, config.steps):
        model.eval()  # no dropout or batch statistics: the reference's forward, exactly
        index = torch.randint(len(pairs), (config.batch_size,), generator=generator)
        shift = random_shift(generator, nlon, 1)
        batch = pairs.take(index)
        batch = PreferencePairs(
            *(torch.roll(x, shift, -1) for x in (batch.winner, batch.loser, batch.background)),
            batch.lead_hours,
        )
        loss, stats = dpo_loss(model, reference, schedule, batch, config.beta, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        seen.append((float(loss.detach()), stats["accuracy"], stats["drift"]))
        bar.update(1)
        bar.set_postfix(loss=f"{seen[-1][0]:.3f}", accuracy=f"{stats['accuracy']:.2f}")
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            train = np.mean(seen, axis=0)
            held_out = validate(model, reference, schedule, valid, config.beta)
            record = {
                "step": step + 1,
                "train_loss": float(train[0]),
                "train_accuracy": float(train[1]),
                "train_drift": float(train[2]),
                **{f"valid_{key}": value for key, value in held_out.items()},
                "seconds": time.perf_counter() - began,
            }
            history.add(
                record,
                f"align step {step + 1}/{config.steps}: loss {record['train_loss']:.4f}, implicit accuracy "
                f"{record['train_accuracy']:.2f} (valid {held_out['accuracy']:.2f}), ε-MSE drift "
                f"{record['train_drift']:+.2e} [{record['seconds']:.0f} s]"
                if progress
                else None,
            )
            save_state(
                state_path,
                network=model.state_dict(),
                optimiser=optimiser.state_dict(),
                generator=generator.get_state(),
                config=config.as_dict(),
                records=history.records,
                wall_seconds=history.wall_seconds,
                step=step + 1,
            )
            began, seen = time.perf_counter(), []
    bar.close()
    return history
