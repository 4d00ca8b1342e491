"""TFDS entry point for the NeRF Blender scenes (nerf_synthetic).

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`nerf_synthetic` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("nerf_synthetic", **kwargs)
