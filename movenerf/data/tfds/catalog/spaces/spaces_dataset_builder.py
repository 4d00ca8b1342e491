"""TFDS entry point for the Spaces (DeepView) rigs.

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`spaces` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("spaces", **kwargs)
