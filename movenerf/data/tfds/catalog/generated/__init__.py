"""TFDS dataset folder of the `generated` format."""
