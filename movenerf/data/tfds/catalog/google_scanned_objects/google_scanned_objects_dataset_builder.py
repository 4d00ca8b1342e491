"""TFDS entry point for IBRNet's renderings of Google Scanned Objects.

Layout, options and the build command: `movenerf/data/tfds/README.md`.
"""

from movenerf.data.tfds import builders


class Builder(builders.MultiViewBuilder, skip_registration=True):
  """`google_scanned_objects` as per-view ``array_record`` examples."""

  def __init__(self, **kwargs):
    super().__init__("google_scanned_objects", **kwargs)
