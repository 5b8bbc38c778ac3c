"""cycler: a cycling data-assimilation system for score-based and classical DA research."""

__version__ = "0.1.0"
