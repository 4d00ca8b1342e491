"""TFDS dataset folder of the `realestate10k` format."""
