"""Synthetic models, so that built binaries can run with no download (they measure speed only)."""
