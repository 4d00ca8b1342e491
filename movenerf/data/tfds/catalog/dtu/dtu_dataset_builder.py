"""TFDS entry point for DTU scans in the LLFF-style layout with masks.

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`dtu` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("dtu", **kwargs)
