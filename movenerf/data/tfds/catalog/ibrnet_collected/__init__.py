"""TFDS dataset folder of the `ibrnet_collected` format."""
