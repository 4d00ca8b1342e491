"""TFDS entry point for RealEstate10K frames with their camera files.

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`realestate10k` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("realestate10k", **kwargs)
