"""The latent space of the score-based methods: a trained autoencoder plus latent standardisation.

The prior and the samplers work on standardised latents (zero mean, unit variance per
latent channel over the training states), as diffusion schedules assume unit-scale data.
With ``anomalies`` the autoencoder sees each state's departure from the training states'
zonal-time mean, each channel scaled to unit standard deviation: the globally normalised
z500, t500 and t850 vary mostly with latitude, so their weather (about 0.3 of unit std) would
weigh little in the reconstruction loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from forecast_models.emulator import pole_signs
from score_da.networks import Autoencoder


@dataclass(frozen=True)
class AutoencoderConfig:
    """Size of the autoencoder (``cycler train vae``: section ``model``).

    Attributes:
        latent_channels: Channels of the 2×-coarsened latent grid.
        width: Channels at full resolution.
        blocks: Residual blocks per resolution.
        anomalies: Encode departures from the training states' zonal-time mean, per channel
            scaled to unit standard deviation (see the module's docstring).
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    latent_channels: int = 12
    width: int = 32
    blocks: int = 1
    anomalies: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class LatentSpace(nn.Module):
    """Encoder and decoder between normalised states and standardised latents.

    Args:
        autoencoder: The trained network.
        latent_mean, latent_std: Per-latent-channel statistics of encoded training states.
        anomalies: The autoencoder works on anomalies (its statistics are buffers set by
            :meth:`fit_anomalies` and kept in the checkpoint).
    """

    identity = False

    def __init__(
        self,
        autoencoder: Autoencoder,
        latent_mean: Tensor | None = None,
        latent_std: Tensor | None = None,
        anomalies: bool = False,
    ):
        super().__init__()
        self.autoencoder = autoencoder
        c = autoencoder.latent_channels
        mean = torch.zeros(c) if latent_mean is None else torch.as_tensor(latent_mean, dtype=torch.float32)
        std = torch.ones(c) if latent_std is None else torch.as_tensor(latent_std, dtype=torch.float32)
        self.register_buffer("latent_mean", mean[:, None, None])
        self.register_buffer("latent_std", std[:, None, None])
        self.anomalies = anomalies
        if anomalies:  # absent otherwise, so checkpoints made before the option load unchanged
            channels, nlat = autoencoder.channels, autoencoder.static.shape[2]
            self.register_buffer("state_offset", torch.zeros(channels, nlat, 1))
            self.register_buffer("state_scale", torch.ones(channels, 1, 1))

    @classmethod
    def build(cls, config: AutoencoderConfig, labels, latitudes: np.ndarray) -> LatentSpace:
        net = Autoencoder(
            len(labels), latitudes, config.latent_channels, config.width, config.blocks, pole_signs(labels)
        )
        return cls(net, anomalies=config.anomalies)

    def to_autoencoder(self, x: Tensor) -> Tensor:
        """Normalised state → what the autoencoder encodes (its anomaly, or the state itself)."""
        return (x - self.state_offset) / self.state_scale if self.anomalies else x

    def from_autoencoder(self, y: Tensor) -> Tensor:
        """The inverse of :meth:`to_autoencoder`."""
        return y * self.state_scale + self.state_offset if self.anomalies else y

    def encode(self, x: Tensor) -> Tensor:
        """Normalised state ``(batch, channel, lat, lon)`` → standardised posterior-mean latent."""
        mean, _ = self.autoencoder.encode(self.to_autoencoder(x))
        return (mean - self.latent_mean) / self.latent_std

    def decode(self, z: Tensor) -> Tensor:
        return self.from_autoencoder(self.autoencoder.decode(z * self.latent_std + self.latent_mean))

    @torch.no_grad()
    def fit_anomalies(self, series: Tensor) -> None:
        """Sets the anomaly statistics from training states ``(time, channel, lat, lon)``."""
        if not self.anomalies:
            raise ValueError("this latent space encodes states, not anomalies")
        offset = series.mean(dim=(0, 3))[:, :, None]
        self.state_offset.copy_(offset)
        self.state_scale.copy_(
            (series - offset).pow(2).mean(dim=(0, 2, 3)).sqrt().clamp_min(1e-6)[:, None, None]
        )

    @torch.no_grad()
    def fit_standardisation(self, series: Tensor, batch: int = 64) -> None:
        """Sets the latent statistics from encoded states."""
        self.latent_mean.zero_()
        self.latent_std.fill_(1.0)
        z = torch.cat(
            [self.autoencoder.encode(self.to_autoencoder(chunk))[0] for chunk in series.split(batch)]
        )
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3))[:, None, None])
        self.latent_std.copy_(z.std(dim=(0, 2, 3))[:, None, None])


class StateSpace(nn.Module):
    """The normalised state itself as the space of a prior: encode and decode are the identity.

    A prior trained in this space (``cycler train prior --space state``) lets every latent
    method sample on the grid directly, without the autoencoder's reconstruction floor; the
    background's autoencoder residual and the B_r 3D-Var have nothing left to do there.
    """

    anomalies = False
    identity = True

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z
