"""movenerf: generalizable novel view synthesis (GNT, GNT-MoVE) in JAX/Flax.

Axis letters used in every docstring of the package:
  R rays, S samples per ray, V source views, D features, H W image height/width,
  E experts, K top-k, C expert capacity, T tokens routed together.

Camera convention (the one used everywhere inside the library; converters live in
`movenerf.geometry.cameras`): OpenCV camera frame (x right, y down, z forward), 3x3 pinhole
intrinsics, 4x4 camera-to-world matrices, integer pixel coordinates addressing pixel
centres (no +0.5 offset), as in the official GNT/IBRNet code.
"""

__version__ = "0.1.0"
