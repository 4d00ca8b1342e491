r"""Decoupling-NeRF experiment configs (``model.name = "decoupled"``).

The model section is ``DecoupledConfig``'s defaults (``movenerf/models/decoupled/model.py``,
the paper's widths: PE with L = 12, 32 heads of 32, width 256, 8 RGBA layers) plus its
name; the shared sections (data, train, eval, checkpoints) come from
``gnt.py``'s variant of the same scale (tiny, or reference for paper and
real), with the loss and optimiser replaced. The model renders a whole target view at
once, so its examples are whole images (``data.example.pixel_mode = "image"``,
``rays_per_example = H * W``) and the loss is ``ssim_weight * (1 - SSIM) + mse_weight *
MSE + contrastive_weight * InfoNCE``, the last a feature-level contrastive term between
the source views (``movenerf/models/decoupled/loss.py``; off at weight 0, with
``contrastive_temperature`` and ``contrastive_points`` target pixels). With
``model.vq_codebook_size`` > 0 the encoder's features are vector-quantised (and the
renderer's input with ``model.vq_renderer_input``) and the VQ-VAE codebook and
commitment losses (beta ``loss.vq_commitment``) join, and with
``loss.vq_entropy_weight`` > 0 a codebook usage term (``vq_entropy_temperature``).
Everything else (train loop, checkpoints, resume, TensorBoard, eval, video) is shared
with GNT.

Variants (``--config experiments/decoupled_nerf.py:VARIANT`` in a checkout, ``--config
decoupled_nerf:VARIANT`` anywhere after ``pip install``; override keys with
``--config.key=value``; unknown keys are errors):

  tiny   Minutes on a CPU, on the same generated scenes, source-view count and zero-shot
         evaluation views as ``gnt.py:tiny``, with a narrower model (widths
         32-64, 8 heads of 16) than the paper's; 8,000 steps, chosen to take about as
         long as GNT's tiny 1,500:
           python -m movenerf.train --config experiments/decoupled_nerf.py:tiny --workdir runs/dc
         Expected: no figure measured on the current code yet. It is the
         Decoupling-NeRF side of the README's "Does it generalise?" comparison (copying
         the nearest source view gives 16.27 / 0.581 on these unseen scenes).
  paper  The reference setup: NeRF-synthetic objects resized to 64x64, train on chair,
         drums, ficus, hotdog, lego and materials, test zero-shot on mic and ship; Adamax,
         learning rate 0.002, betas (0.9, 0.999); batch 4 with gradients accumulated over
         8 batches per update; the default widths over a white background:
           python -m movenerf.train --config experiments/decoupled_nerf.py:paper \
               --workdir runs/dc_paper \
               --config.data.train.synthetic.path=~/data/nerf_synthetic \
               --config.data.eval.synthetic.path=~/data/nerf_synthetic
         (or a dataset built with ``python -m movenerf.data.tfds.build --format
         nerf_synthetic``, with ``format=tfds``). Expected: no measured figure yet.
  real   The paper's setup on the small real subsets beside the checkout
         (``../shared/data/real/nerf_synthetic``): train on lego, test zero-shot on mic,
         at 64x64, 200 updates:
           python -m movenerf.train --config experiments/decoupled_nerf.py:real \
               --workdir runs/dc_real
         Expected: no figure measured on the current code yet (it is the README's
         lego -> mic check; ``python -m movenerf.tools.zero_shot --out runs/zs_real
         Decoupling-NeRF=runs/dc_real`` compares it with the nearest source view).

Choices the method leaves open, made here: 10 source views (GNT's count) in ``paper``,
chosen nearest by camera position; per-pixel positions at unit z-depth along each ray
(``decoupled.pixel_points``); a renderer of 8 RGBA layers; 25,000 updates (200,000
batches) in ``paper``; pure SSIM loss (``mse_weight = 0``).
"""

import ml_collections

from movenerf.configs import base
from movenerf.configs import gnt
from movenerf.models.decoupled.model import DecoupledConfig

VARIANTS = ("tiny", "paper", "real")

_SYNTHETIC_TRAIN = "chair,drums,ficus,hotdog,lego,materials"
_SYNTHETIC_TEST = "mic,ship"


def _synthetic(path: str, scenes: str, downsample: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      format="nerf_synthetic", path=path, scenes=scenes, weight=1.0,
      options=dict(white_background=True, downsample=downsample)))


def get_config(variant: str = "tiny") -> ml_collections.ConfigDict:
  """Returns the locked config of a variant (tiny, paper or real).

  Raises:
    ValueError: an unknown variant.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose tiny, paper or real")
  # The shared sections (data, train, eval, checkpoints) come from the GNT config of the
  # same scale; the model, loss and optimiser are replaced.
  c = gnt.get_config("tiny" if variant == "tiny" else "reference")
  c.unlock()
  c.variant = variant
  for gnt_only in ("render_view", "render", "checkpoint"):
    del c[gnt_only]
  c.model = base.from_dataclass(DecoupledConfig)
  c.model.name = "decoupled"
  c.loss = ml_collections.ConfigDict(dict(
      ssim_weight=1.0, mse_weight=0.0, contrastive_weight=0.0, contrastive_temperature=0.1,
      contrastive_points=64, vq_commitment=0.25, vq_entropy_weight=0.0,
      vq_entropy_temperature=0.1))
  c.optim.update(name="adamax", lr_feature=2e-3, lr_transformer=2e-3, decay_steps=0)
  c.data.example.pixel_mode = "image"

  if variant == "tiny":
    c.model.update(enc_width=32, attn_heads=8, head_dim=16, width=64, render_width=32)
    c.data.example.update(num_source_views=4, rays_per_example=32 * 32)
    c.data.global_batch = 4
    # 8,000 steps: about the training time of GNT's tiny 1,500 on the same CPU.
    c.train.update(num_steps=8000, log_every=250, image_every=2000, checkpoint_every=1000)
  else:
    size = 64
    if variant == "paper":
      # downsample 8: 800x800 -> 100x100 on reading (then resized to 64x64), so that
      # six objects fit in memory.
      c.data.train = ml_collections.ConfigDict(
          {"synthetic": _synthetic("data/nerf_synthetic", _SYNTHETIC_TRAIN, 8)})
      c.data.eval = ml_collections.ConfigDict(
          {"synthetic": _synthetic("data/nerf_synthetic", _SYNTHETIC_TEST, 8)})
      c.data.num_workers = 4
      c.train.num_steps = 200_000
      c.eval.update(video_frames=120, video_fps=24)
    else:
      real = "../shared/data/real/nerf_synthetic"
      # The subsets are stored at 100x100.
      c.data.train = ml_collections.ConfigDict({"lego": _synthetic(real, "lego", 1)})
      c.data.eval = ml_collections.ConfigDict({"mic": _synthetic(real, "mic", 1)})
      c.train.update(num_steps=1600, log_every=50, image_every=400, checkpoint_every=400)
      c.eval.update(max_views_per_scene=4, video_frames=24)
    c.optim.accumulate_steps = 8
    c.model.white_background = True
    c.data.example.update(rays_per_example=size * size, source_size=(size, size))
    c.data.global_batch = 4
    c.eval.image_size = (size, size)
  c.lock()
  return c
