"""TFDS dataset folder of the `spaces` format."""
