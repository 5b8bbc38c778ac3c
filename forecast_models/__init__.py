"""Forecast models: neural 6-hour emulators and the physical nature-run model."""
