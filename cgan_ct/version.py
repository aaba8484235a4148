"""The package version: one place, read by setup.py and written into manifests."""

__version__ = "0.1.0"
