"""Small deterministic inputs for tests (the same ones that shape a model's parameters)."""

from movenerf.geometry.cameras import ring_cameras
from movenerf.models.examples import dummy_inputs

__all__ = ["dummy_inputs", "ring_cameras"]
