"""The latent space of the score-based methods: a trained autoencoder plus latent standardisation.

The prior and the samplers work on standardised latents (zero mean, unit variance per
latent channel over the training states), as diffusion schedules assume unit-scale data.
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
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012

    latent_channels: int = 12
    width: int = 32
    blocks: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


class LatentSpace(nn.Module):
    """Encoder and decoder between normalised states and standardised latents.

    Args:
        autoencoder: The trained network.
        latent_mean, latent_std: Per-latent-channel statistics of encoded training states.
    """

    def __init__(
        self, autoencoder: Autoencoder, latent_mean: Tensor | None = None, latent_std: Tensor | None = None
    ):
        super().__init__()
        self.autoencoder = autoencoder
        c = autoencoder.latent_channels
        mean = torch.zeros(c) if latent_mean is None else torch.as_tensor(latent_mean, dtype=torch.float32)
        std = torch.ones(c) if latent_std is None else torch.as_tensor(latent_std, dtype=torch.float32)
        self.register_buffer("latent_mean", mean[:, None, None])
        self.register_buffer("latent_std", std[:, None, None])

    @classmethod
    def build(cls, config: AutoencoderConfig, labels, latitudes: np.ndarray) -> LatentSpace:
        net = Autoencoder(len(labels), latitudes, config.latent_channels, config.width, config.blocks,
                          pole_signs(labels))  # fmt: skip
        return cls(net)

    def encode(self, x: Tensor) -> Tensor:
        """Normalised state ``(batch, channel, lat, lon)`` → standardised posterior-mean latent."""
        mean, _ = self.autoencoder.encode(x)
        return (mean - self.latent_mean) / self.latent_std

    def decode(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z * self.latent_std + self.latent_mean)

    @torch.no_grad()
    def fit_standardisation(self, series: Tensor, batch: int = 64) -> None:
        """Sets the latent statistics from encoded states."""
        self.latent_mean.zero_()
        self.latent_std.fill_(1.0)
        z = torch.cat([self.autoencoder.encode(chunk)[0] for chunk in series.split(batch)])
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3))[:, None, None])
        self.latent_std.copy_(z.std(dim=(0, 2, 3))[:, None, None])
