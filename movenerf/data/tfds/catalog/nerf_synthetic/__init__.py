"""TFDS dataset folder of the `nerf_synthetic` format."""
