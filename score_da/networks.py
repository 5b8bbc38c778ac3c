"""Networks of the score-based methods: the latent autoencoder and the conditional denoiser.

Both see the globe as the forecast U-Net does (circular in longitude, continued across the
poles, see :func:`forecast_models.unet.spherical_pad`). The autoencoder halves the grid
(32×64 → 16×32); the denoiser works on that latent grid and is conditioned on the
background's latent (channel concatenation), the diffusion time and the background's lead
time (FiLM: a learned scale and shift of every residual block's normalised activations).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from forecast_models.emulator import latitude_features
from forecast_models.unet import ResBlock, SphereConv
from score_da.schedule import VPSchedule


def coarsen_latitudes(latitudes: np.ndarray) -> np.ndarray:
    """Latitudes of the grid after 2× average pooling."""
    lat = np.asarray(latitudes, float)
    return 0.5 * (lat[0::2] + lat[1::2])


class Autoencoder(nn.Module):
    """A variational autoencoder from ``(batch, channel, lat, lon)`` to ``(batch, latent, lat/2, lon/2)``.

    Args:
        channels: State channels.
        latitudes: Grid latitudes in degrees (for the static features).
        latent_channels: Channels of the latent grid.
        width: Channels at full resolution (doubled on the latent grid).
        blocks: Residual blocks per resolution.
        pole_sign: (channels,) -1 for wind components (reversed across the poles), or None.
    """

    def __init__(
        self,
        channels: int,
        latitudes: np.ndarray,
        latent_channels: int = 12,
        width: int = 32,
        blocks: int = 1,
        pole_sign: Tensor | None = None,
    ):
        super().__init__()
        if len(latitudes) % 2:
            raise ValueError("the autoencoder halves the grid: it needs an even number of latitudes")
        self.channels, self.latent_channels = channels, latent_channels
        self.register_buffer("static", latitude_features(latitudes))
        self.register_buffer("latent_static", latitude_features(coarsen_latitudes(latitudes)))
        sign = None if pole_sign is None else torch.cat([pole_sign.float(), torch.ones(2)])
        wide = 2 * width
        self.encoder_stem = SphereConv(channels + 2, width, pole_sign=sign)
        self.encoder_fine = nn.Sequential(*[ResBlock(width, width) for _ in range(blocks)])
        self.encoder_coarse = nn.Sequential(
            *[ResBlock(width if b == 0 else wide, wide) for b in range(blocks)]
        )
        self.encoder_head = nn.Sequential(
            nn.GroupNorm(8, wide), nn.GELU(), SphereConv(wide, 2 * latent_channels)
        )
        self.decoder_stem = SphereConv(latent_channels + 2, wide)
        self.decoder_coarse = nn.Sequential(*[ResBlock(wide, wide) for _ in range(blocks)])
        self.decoder_fine = nn.Sequential(
            *[ResBlock(wide if b == 0 else width, width) for b in range(blocks)]
        )
        self.decoder_head = nn.Sequential(nn.GroupNorm(8, width), nn.GELU(), SphereConv(width, channels))

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The latent's shape for states of `shape` ``(batch, channel, lat, lon)``."""
        return shape[0], self.latent_channels, shape[-2] // 2, shape[-1] // 2

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log-variance, each ``(batch, latent, lat/2, lon/2)``."""
        static = self.static.to(x.dtype).expand(x.shape[0], -1, -1, x.shape[-1])
        h = self.encoder_fine(self.encoder_stem(torch.cat([x, static], dim=1)))
        h = self.encoder_coarse(F.avg_pool2d(h, 2))
        mean, logvar = self.encoder_head(h).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        static = self.latent_static.to(z.dtype).expand(z.shape[0], -1, -1, z.shape[-1])
        h = self.decoder_coarse(self.decoder_stem(torch.cat([z, static], dim=1)))
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.decoder_head(self.decoder_fine(h))


def sinusoidal(x: Tensor, dim: int, max_period: float = 1e4) -> Tensor:
    """(batch,) → (batch, dim) sine/cosine features of a scalar in about [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = 1e3 * x[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class FiLMBlock(nn.Module):
    """A residual block whose second normalisation is scaled and shifted by an embedding."""

    def __init__(self, in_channels: int, out_channels: int, embedding: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_channels), in_channels)
        self.conv1 = SphereConv(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.film = nn.Linear(embedding, 2 * out_channels)
        self.conv2 = SphereConv(out_channels, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.gelu(h))


class Denoiser(nn.Module):
    """ε_θ(z_t, t, z_b, lead): a FiLM-conditioned U-Net on the latent grid.

    Args:
        latent_channels: Channels of z.
        latitudes: Latitudes of the latent grid in degrees.
        width: Channels at the latent resolution, doubled per coarser level.
        depth: Coarser levels (the latent grid must divide by 2**depth).
        blocks: Blocks per level.
        embedding: Size of the time/lead embedding.
        eta: Noise floor of the VP schedule the denoiser is trained on.
        conditions: Conditioning fields of `latent_channels` each, concatenated: 1 (the
            background) or 2 (PhyDA's background and virtual reconstruction).

    The output is preconditioned as ``ε̂ = σ_t z_t + μ_t F(...)``: at high noise, where
    Tweedie's estimate divides by a tiny μ_t, the prediction tends to the exact σ_t z_t
    and the network's error reaches ẑ0 only times σ_t, not σ_t/μ_t.
    """

    def __init__(
        self,
        latent_channels: int,
        latitudes: np.ndarray,
        width: int = 64,
        depth: int = 2,
        blocks: int = 2,
        embedding: int = 128,
        eta: float = 1e-3,
        conditions: int = 1,
    ):
        super().__init__()
        self.latent_channels, self.depth, self.embedding = latent_channels, depth, embedding
        self.conditions = conditions
        self.schedule = VPSchedule(eta)
        self.register_buffer("static", latitude_features(latitudes))
        self.embed = nn.Sequential(
            nn.Linear(2 * embedding, embedding), nn.GELU(), nn.Linear(embedding, embedding)
        )
        widths = [width * 2**i for i in range(depth + 1)]
        self.stem = SphereConv((1 + conditions) * latent_channels + 2, width)
        self.encoder = nn.ModuleList(
            nn.ModuleList(
                FiLMBlock(widths[max(i - 1, 0)] if b == 0 else w, w, embedding) for b in range(blocks)
            )
            for i, w in enumerate(widths)
        )
        self.decoder = nn.ModuleList(
            nn.ModuleList(
                FiLMBlock(widths[i + 1] + widths[i] if b == 0 else widths[i], widths[i], embedding)
                for b in range(blocks)
            )
            for i in reversed(range(depth))
        )
        self.head = nn.Sequential(nn.GroupNorm(8, width), nn.GELU(), SphereConv(width, latent_channels))

    def forward(self, z_t: Tensor, t: Tensor, z_b: Tensor, lead: Tensor) -> Tensor:
        """Predicted noise; `z_b` holds the conditioning fields (``conditions`` × channels);
        t and lead (the lead code in [0, 1]) are (batch,) or scalars."""
        batch = z_t.shape[0]
        t = torch.as_tensor(t, dtype=z_t.dtype, device=z_t.device).expand(batch)
        lead = torch.as_tensor(lead, dtype=z_t.dtype, device=z_t.device).expand(batch)
        emb = self.embed(torch.cat([sinusoidal(t, self.embedding), sinusoidal(lead, self.embedding)], dim=1))
        static = self.static.to(z_t.dtype).expand(batch, -1, -1, z_t.shape[-1])
        h = self.stem(torch.cat([z_t, z_b, static], dim=1))
        skips = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for block in level:
                h = block(h, emb)
            skips.append(h)
        for level, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skip], dim=1)
            for block in level:
                h = block(h, emb)
        mu, sigma = (f(t)[:, None, None, None] for f in (self.schedule.mu, self.schedule.sigma))
        return sigma * z_t + mu * self.head(h)
