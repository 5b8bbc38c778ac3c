"""Observation networks, error models, differentiable observation operators H, and QC."""
