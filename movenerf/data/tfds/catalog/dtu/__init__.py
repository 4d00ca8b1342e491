"""TFDS dataset folder of the `dtu` format."""
