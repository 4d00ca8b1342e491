"""TFDS entry point for the LLFF forward-facing captures (nerf_llff_data).

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`llff` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("llff", **kwargs)
