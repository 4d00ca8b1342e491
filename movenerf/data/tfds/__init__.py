"""TFDS: the multi-view builder, its per-format catalog and the build command."""
