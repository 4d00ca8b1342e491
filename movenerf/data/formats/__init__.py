"""Readers of the on-disk multi-view formats, and the registry of formats by name."""
