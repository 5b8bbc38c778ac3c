"""The 6-hour emulator: the forecast-model contract (docs/architecture.md) around a network.

``step(state, previous)`` maps a normalised state ``(realization, channel, latitude, longitude)``
to the state 6 hours later, batched over members and differentiable end to end. The network
predicts the 6-hour increment in units of its climatological standard deviation, so every
channel's loss carries equal weight and an untrained network is persistence.

With ``frames=2`` the network also sees the 6-hour tendency ``state - previous`` (as GraphCast
takes two states): the 11-channel state holds 3 of the nature run's 8 levels, and the
tendency tells the network part of what the hidden levels are doing
(benchmarks/results-forecast_history_probe.txt). Such an emulator needs ``previous``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

STATIC_FEATURES = 2  # sin(latitude), cos(latitude)


@dataclass(frozen=True)
class ArchitectureConfig:
    """Which network and its size.

    Attributes:
        name: Registered architecture ("unet", or "sfno" with torch-harmonics installed).
        width: U-Net channels at full resolution / SFNO embedding dimension.
        depth: U-Net coarser levels.
        blocks: U-Net residual blocks per level / SFNO layers.
        pole_sign_flip: U-Net: reverse wind components continued across the poles.
        frames: Input states: 1 (the state) or 2 (also the 6-hour tendency from the state
            6 hours earlier).
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012  (read by pydantic when used in YAML config)

    name: str = "unet"
    width: int = 32
    depth: int = 2
    blocks: int = 2
    pole_sign_flip: bool = True
    frames: int = 1

    def __post_init__(self) -> None:
        if self.frames not in (1, 2):
            raise ValueError(f"frames must be 1 or 2, got {self.frames}")

    def as_dict(self) -> dict:
        return asdict(self)


def _is_wind(label: str) -> bool:
    from cycler_da.core.channels import channel

    return channel(label).variable.name in ("u_component_of_wind", "v_component_of_wind")


def pole_signs(labels: list[str] | tuple[str, ...]) -> Tensor:
    """(channel,): -1 for wind components, whose direction reverses across a pole, else 1."""
    return torch.tensor([-1.0 if _is_wind(label) else 1.0 for label in labels])


def latitude_features(latitudes: np.ndarray) -> Tensor:
    """(1, STATIC_FEATURES, lat, 1): sin and cos of latitude, the networks' static inputs."""
    lat = torch.as_tensor(np.radians(np.asarray(latitudes, float)), dtype=torch.float32)
    return torch.stack([torch.sin(lat), torch.cos(lat)])[None, :, :, None]


def _build_unet(config: ArchitectureConfig, labels: list[str], grid_shape: tuple[int, int]) -> nn.Module:
    from forecast_models.unet import SphereUNet

    sign = None
    if config.pole_sign_flip:
        sign = torch.cat([pole_signs(labels).repeat(config.frames), torch.ones(STATIC_FEATURES)])
    channels = len(labels)
    return SphereUNet(
        channels * config.frames + STATIC_FEATURES, channels, config.width, config.depth, config.blocks, sign
    )


def _build_sfno(config: ArchitectureConfig, labels: list[str], grid_shape: tuple[int, int]) -> nn.Module:
    channels = len(labels)
    try:
        from torch_harmonics.examples.models import SphericalFourierNeuralOperator
    except ImportError as err:
        raise ImportError(
            "the 'sfno' architecture needs torch-harmonics, which must be installed without its "
            "dependencies (they would replace torch with a CUDA build): "
            "pip install --no-deps torch-harmonics==0.9.3"
        ) from err
    return SphericalFourierNeuralOperator(
        img_size=grid_shape,
        grid="legendre-gauss",
        in_chans=channels * config.frames + STATIC_FEATURES,
        out_chans=channels,
        embed_dim=config.width,
        num_layers=config.blocks,
        scale_factor=2,
    )


ARCHITECTURES: dict[str, Callable[[ArchitectureConfig, list[str], tuple[int, int]], nn.Module]] = {
    "unet": _build_unet,
    "sfno": _build_sfno,
}


def build_network(config: ArchitectureConfig, labels: list[str], grid_shape: tuple[int, int]) -> nn.Module:
    """Builds a registered architecture for the channel `labels`; an unknown name lists the known ones."""
    if config.name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[config.name](config, list(labels), grid_shape)


class Emulator(nn.Module):
    """A residual 6-hour forecast step in normalised units.

    Args:
        network: Maps (batch, frames × channel + 2, lat, lon) to the normalised increment
            (batch, channel, lat, lon).
        latitudes: Grid latitudes in degrees, shape (lat,).
        increment_std: Standard deviation of the normalised 6-hour increment, shape (channel,).
        frames: 1, or 2 when the network also takes the 6-hour tendency.
    """

    def __init__(self, network: nn.Module, latitudes: np.ndarray, increment_std: np.ndarray, frames: int = 1):
        super().__init__()
        self.network = network
        self.frames = frames
        self.register_buffer("static", latitude_features(latitudes))
        self.register_buffer(
            "increment_std", torch.as_tensor(increment_std, dtype=torch.float32)[:, None, None]
        )

    @property
    def channels(self) -> int:
        return self.increment_std.shape[0]

    @property
    def takes_previous(self) -> bool:
        """Whether :meth:`step` needs the state 6 hours before."""
        return self.frames == 2

    def step(self, state: Tensor, previous: Tensor | None = None) -> Tensor:
        """One 6-hour step: ``(realization, channel, lat, lon)`` → same shape.

        `previous` is the state 6 hours before `state` (same shape, or one realization for
        all); a one-frame emulator ignores it, a two-frame one needs it.
        """
        if state.ndim != 4 or state.shape[1] != self.channels:
            raise ValueError(
                f"state must be (realization, {self.channels} channels, lat, lon), got {tuple(state.shape)}"
            )
        static = self.static.to(state.dtype).expand(state.shape[0], -1, -1, state.shape[-1])
        inputs = [state]
        if self.frames == 2:
            if previous is None:
                raise ValueError(
                    "this emulator takes two frames: pass the state 6 hours earlier as `previous`"
                )
            inputs.append(state - previous)
        increment = self.network(torch.cat([*inputs, static], dim=1))
        # A channels-last network returns channels-last increments; callers get the usual layout.
        return (state + self.increment_std.to(state.dtype) * increment).contiguous()

    forward = step

    def compile_network(self) -> Emulator:
        """Compiles the network with torch.compile (inductor) for inference: fewer, fused kernels.

        Compilation happens on the first step of each batch size (tens of seconds on CPU);
        the weights are shared with the eager module, so checkpoints are unaffected.
        """
        self.network = torch.compile(self.network, dynamic=False)
        return self

    def rollout(self, state: Tensor, steps: int, previous: Tensor | None = None) -> Tensor:
        """``steps`` successive 6-hour steps: returns ``(steps, realization, channel, lat, lon)``."""
        out = []
        for _ in range(steps):
            previous, state = state, self.step(state, previous)
            out.append(state)
        return torch.stack(out)
