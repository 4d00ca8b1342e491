"""TFDS dataset folder of the `llff` format."""
