"""The analysis contract: what the driver hands a method, and what a method hands back.

Methods see tensors only: a normalised background ``(realization, channel, latitude,
longitude)`` and the window's :class:`Observations`, whose differentiable operator gives
tangent-linear and adjoint products through autograd. Methods keep no state between
windows (or between calls): everything that crosses a window is the analysis the driver
carries and writes. A method is built once per run from a :class:`MethodContext` and its
parameters (see :mod:`cycler_da.core.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor


@runtime_checkable
class ObservationOperator(Protocol):
    """A differentiable H for one window's observations, and where each observation is.

    Attributes:
        channel: Channel index of each observation, shape (obs,).
        latitude: Latitude of each observation in degrees, shape (obs,).
        longitude: Longitude of each observation in degrees, [0, 360), shape (obs,).
    """

    channel: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray

    def __call__(self, state: Tensor) -> Tensor:
        """H(x): ``(realization, channel, latitude, longitude)`` → ``(realization, obs)``."""
        ...


@dataclass(frozen=True)
class Observations:
    """One window's observations, in normalised units, on the model's device.

    Attributes:
        values: Observed values y, shape (obs,).
        error_std: Observation-error standard deviations, shape (obs,).
        operator: H for exactly these observations.
    """

    values: Tensor
    error_std: Tensor
    operator: ObservationOperator

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.values.shape != self.error_std.shape:
            raise ValueError(
                f"values {tuple(self.values.shape)} and error_std {tuple(self.error_std.shape)} "
                "must be 1-D and of one length"
            )
        if not torch.isfinite(self.values).all():
            raise ValueError("observation values contain NaN or infinity: run QC before the analysis")
        if (self.error_std <= 0).any() or not torch.isfinite(self.error_std).all():
            raise ValueError("observation error standard deviations must be finite and positive")

    def __len__(self) -> int:
        return self.values.shape[0]


@dataclass(frozen=True)
class Analysis:
    """The result of one analysis.

    Attributes:
        state: Analysis, ``(realization, channel, latitude, longitude)``; the realization
            count may differ from the background's when a sampler draws N members.
        diagnostics: Scalars for this window (iterations, cost, NFE, ...).
    """

    state: Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class AnalysisMethod(Protocol):
    """Combines a background with one window's observations."""

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        """The analysis of `background` given `observations`; randomness only from `generator`."""
        ...


@dataclass(frozen=True)
class MethodContext:
    """What a method may need at construction besides its own parameters.

    Attributes:
        channels: Channel labels of the state.
        latitudes: Grid latitudes in degrees, increasing.
        longitudes: Grid longitudes in degrees.
        background_error: Training-set statistics for B
            (:class:`cycler_da.core.covariance.BackgroundErrorStats`), or None.
        background_error_samples: Zero-argument callable returning training-set
            background-error samples, normalised, (sample, channel, lat, lon): made (or read
            from the cache) only when a method asks, e.g. for an ensemble B; or None.
        device: Where tensors live.
        normalisation: The data's normalisation (an object with ``mean`` and ``std`` per
            channel), so methods with trained networks can refuse weights made for other
            data; None skips the check.
        members: The run's ensemble size, for defaults that differ between a deterministic
            run and an ensemble.
    """

    channels: tuple[str, ...]
    latitudes: Any
    longitudes: Any
    background_error: Any = None
    background_error_samples: Any = None
    device: str = "cpu"
    normalisation: Any = None
    members: int = 1

    def error_samples(self, what: str):
        """The training-set background-error samples, or a clear error naming `what` needs them."""
        if self.background_error_samples is None:
            raise ValueError(f"{what} needs background-error samples (context.background_error_samples)")
        return self.background_error_samples()
