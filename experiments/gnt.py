r"""GNT experiment configs.

Variants (``--config experiments/gnt.py:VARIANT``):
  tiny       CPU-sized: depth 2, width 32, 4 source views of 32x32, 16 samples.
  reference  The reference configuration of the parity vectors and the benchmark:
             depth 8, width 64, 10 source views of 64x64, 64 samples per ray, coarse only.
  paper      The published setup: depth 8, width 64, 10 source views, 64 coarse + 64
             fine samples with one shared network (single_net), 4096 rays per step.

Render a view of a generated scene with a randomly initialised model (the training job
arrives with the training issue; pass --checkpoint for official weights):

  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/demo

Hardware: tiny renders 32x32 in seconds on a 2-core CPU; reference renders 64x64 in
~10-30 s there; paper is meant for a GPU/TPU.
"""

import ml_collections


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
  """Returns the locked config of a variant."""
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      width=64, depth=8, num_heads=4, ff_ratio=4, dropout=0.1, coarse_feat_dim=32,
      fine_feat_dim=32, single_net=True, num_samples=64, num_importance=0,
      inverse_depth=False, dtype="float32", feature_dtype="float32",
      moe=None))  # GNT-MoVE fills this in (experiments/gnt_move.py)

  c.data = ml_collections.ConfigDict(dict(
      kind="object",       # generated scene: "object" (360 deg) or "forward" (LLFF-like)
      scene_seed=0,
      num_source_views=10,
      image_size=64,
      target_view=0,       # index of the held-out view rendered as the target
  ))
  c.render = ml_collections.ConfigDict(dict(chunk_size=512))
  c.checkpoint = ""        # official GNT weights (.npz or .pth) to render with

  if variant == "tiny":
    c.model.update(width=32, depth=2, coarse_feat_dim=16, fine_feat_dim=16, num_samples=16)
    c.data.update(num_source_views=4, image_size=32)
    c.render.chunk_size = 256
  elif variant == "paper":
    c.model.update(num_samples=64, num_importance=64, single_net=True)
    c.render.chunk_size = 4096
  elif variant != "reference":
    raise ValueError(f"unknown variant {variant!r}; choose tiny, reference or paper")
  c.lock()
  return c
