"""Score-based data assimilation: VAE, latent diffusion prior, DPS, LO-SDA, Align-DA, PhyDA."""
