"""TFDS entry point for the procedural scenes that ship with movenerf.

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`generated` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("generated", **kwargs)
