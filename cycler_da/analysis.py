"""The analysis-method contract (DESIGN.md §5) and the registry of methods.

Methods see tensors only: a normalised background ``(realization, channel, latitude,
longitude)`` and the window's :class:`Observations`, whose differentiable operator gives
tangent-linear and adjoint products through autograd. Methods keep no state between
windows. They are built once from their parameters and found by name; outside packages add
methods through the ``cycler.analysis_methods`` entry-point group.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

ENTRY_POINT_GROUP = "cycler.analysis_methods"


@runtime_checkable
class ObservationOperator(Protocol):
    def __call__(self, state: Tensor) -> Tensor:
        """H(x): ``(realization, channel, lat, lon)`` → ``(realization, obs)``."""
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
        state: Analysis, ``(realization, channel, lat, lon)``; the realization count may
            differ from the background's when a sampler draws N members.
        diagnostics: Scalars for this window (iterations, cost, NFE, ...).
    """

    state: Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class AnalysisMethod(Protocol):
    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis: ...


@dataclass(frozen=True)
class MethodContext:
    """What a method may need at construction besides its own parameters.

    Attributes:
        channels: Channel labels of the state.
        latitudes: Grid latitudes in degrees, increasing.
        longitudes: Grid longitudes in degrees.
        background_error: Optional training-set statistics for B (see baselines.covariance).
        background_error_samples: Optional zero-argument callable returning training-set
            background-error samples, normalised, (sample, channel, lat, lon): made (or read from
            the cache) only when a method asks, e.g. for an ensemble B.
        device: Where tensors live.
        normalisation: The data's normalisation (cycler_da.normalization.NormStats), so methods
            with trained networks can refuse weights made for other data; None skips the check.
        members: The run's ensemble size, for defaults that differ between a deterministic
            run and an ensemble.
    """

    channels: tuple[str, ...]
    latitudes: Any
    longitudes: Any
    background_error: Any = None
    device: str = "cpu"
    normalisation: Any = None
    background_error_samples: Any = None
    members: int = 1

    def error_samples(self, what: str):
        """The training-set background-error samples, or a clear error naming `what` needs them."""
        if self.background_error_samples is None:
            raise ValueError(f"{what} needs background-error samples (context.background_error_samples)")
        return self.background_error_samples()


Builder = Callable[..., AnalysisMethod]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a method builder ``builder(context, **params)`` under `name`."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"analysis method {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def _load_builtins() -> None:
    import baselines.methods  # noqa: F401  (registers none, 3dvar, enkf)
    import score_da.methods  # noqa: F401  (registers dps, lo-sda)


def known_methods() -> list[str]:
    _load_builtins()
    names = set(_REGISTRY)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def method_defaults(name: str) -> dict[str, Any]:
    """The parameters a method's builder takes, with their defaults (for the resolved config)."""
    _load_builtins()
    builder = _REGISTRY.get(name)
    if builder is None:
        return {}
    parameters = list(inspect.signature(builder).parameters.values())[1:]  # after the context
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def build_method(name: str, context: MethodContext, **params: Any) -> AnalysisMethod:
    """Builds a registered method; an unknown name lists the known ones."""
    _load_builtins()
    if name not in _REGISTRY:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                _REGISTRY[name] = ep.load()
                break
        else:
            raise ValueError(f"unknown analysis method {name!r}; known: {', '.join(known_methods())}")
    try:
        return _REGISTRY[name](context, **params)
    except TypeError as err:
        raise ValueError(f"analysis method {name!r}: bad parameters: {err}") from err
