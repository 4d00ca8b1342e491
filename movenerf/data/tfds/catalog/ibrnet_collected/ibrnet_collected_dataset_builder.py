"""TFDS entry point for the IBRNet-collected scenes (LLFF layout).

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`ibrnet_collected` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("ibrnet_collected", **kwargs)
