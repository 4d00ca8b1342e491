"""TFDS dataset folder of the `google_scanned_objects` format."""
