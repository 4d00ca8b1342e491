r"""GNT experiment configs.

Variants (``--config experiments/gnt.py:VARIANT``; override any key with
``--config.key=value``; the config is locked, so a misspelt key is an error):

  tiny       Trains in minutes on a 2-core CPU on generated scenes: depth 2, width 32,
             a ResUNet of a quarter width, 4 source views of 32x32, 16 samples,
             2 examples x 128 rays per step.
             Zero-shot evaluation on generated scenes it never saw.
               python -m movenerf.train --config experiments/gnt.py:tiny --workdir runs/gnt_tiny
             Expected: the loss falls within the first 100 steps. Measured for GNT-MoVE
             (experiments/gnt_move.py:tiny, 1,500 steps, ~4 min on a quiet 2-core CPU):
             zero-shot PSNR 18.3 / SSIM 0.72 on the unseen scenes, against 16.3 / 0.58
             for copying the nearest source view and 12.4 / 0.26 after 20 steps.
  reference  The reference configuration of the parity vectors and the benchmark:
             depth 8, width 64, 10 source views of 64x64, 64 samples per ray, coarse only.
  paper      The published setup, for GPUs / TPU pods: depth 8, width 64, 10 source views,
             64 coarse + 64 fine samples with one shared network, 4096 rays per step
             across devices (8 examples x 512 rays), Adam 1e-3 (feature CNN) / 5e-4
             (transformers) halved every 50k steps, 250k steps. Meant for 8 GPUs or a
             TPU pod slice; expected: the GNT paper's zero-shot figures (not reproduced
             here: no accelerator was available). Point
             ``data.train`` at built datasets (``python -m movenerf.data.tfds.build``);
             the defaults use generated scenes so the config runs anywhere.
  fewshot    Fine-tunes a trained model (``--config.init_from=WORKDIR|ckpt.pth``) on one
             scene's source views and evaluates on its held-out views.

Render one view with the current (or official) weights:

  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/view
"""

import ml_collections


def _generated(first_seed, num_scenes, size, num_views, kind="object"):
  return ml_collections.ConfigDict(dict(
      format="generated", path="", scenes="", weight=1.0,
      options=dict(kind=kind, num_scenes=num_scenes, first_seed=first_seed,
                   num_views=num_views, height=size, width=size, holdout_every=8)))


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
  """Returns the locked config of a variant."""
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      width=64, depth=8, num_heads=4, ff_ratio=4, dropout=0.1, coarse_feat_dim=32,
      fine_feat_dim=32, single_net=True, num_samples=64, num_importance=0,
      inverse_depth=False, dtype="float32", feature_dtype="float32", feature_width=64,
      moe=None))  # GNT-MoVE fills this in (experiments/gnt_move.py)

  # Training scenes (seeds 0..) and held-out evaluation scenes (seeds 1000..): zero-shot.
  c.data = ml_collections.ConfigDict()
  c.data.train = ml_collections.ConfigDict({"generated": _generated(0, 32, 64, 20)})
  c.data.eval = ml_collections.ConfigDict({"unseen": _generated(1000, 2, 64, 20)})
  c.data.example = ml_collections.ConfigDict(dict(
      num_source_views=10, rays_per_example=512, selection="position", num_candidates=None,
      pixel_mode="uniform", center_fraction=0.5, pair_fraction=0.0, pair_max_distance=2.0,
      target_split="train", source_split="train", source_size=None))
  c.data.global_batch = 1          # examples (target views) per step, across all devices
  c.data.num_workers = 0           # grain worker processes (0: build examples in-process)

  c.optim = ml_collections.ConfigDict(dict(
      name="adam", lr_feature=1e-3, lr_transformer=5e-4, decay_steps=50_000, decay_rate=0.5,
      b1=0.9, b2=0.999, eps=1e-8, clip_norm=0.0, accumulate_steps=1))
  c.loss = ml_collections.ConfigDict(dict(
      coarse_weight=1.0, fine_weight=1.0, diversity_weight=0.0, consistency_weight=0.0,
      symmetric_consistency=True))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=250_000,
      log_every=100,          # progress line + TensorBoard scalars
      image_every=5_000,      # TensorBoard images of a validation view (0: off)
      checkpoint_every=5_000,
      keep_checkpoints=3,
      async_checkpoints=True,
      mesh_expert=1,          # size of the expert mesh axis (MoVE expert parallelism)
      distributed=False,      # jax.distributed.initialize() (multi-host, e.g. TPU pods)
      max_minutes=0.0,        # stop (with a checkpoint) after this long; 0: no limit
      sub_chunk=0,            # render each example's rays in slices of this many (0: all),
                              # each slice's backward pass right after its forward pass
      remat=False,            # slices: one backward pass that recomputes their activations
  ))
  c.init_from = ""            # run workdir or official .pth/.npz to start from
  c.upcycle = False           # MoVE from a dense checkpoint: copy the FFN into every expert

  c.eval = ml_collections.ConfigDict(dict(
      at_end=True,            # evaluate when training finishes (the main job does)
      num_source_views=10,
      max_views_per_scene=0,  # 0: every held-out view
      chunk_size=512,
      lpips_weights="",       # local LPIPS weights file; empty reports LPIPS as n/a
      video_frames=0,         # camera-path video of the first eval scene (0: none)
      video_fps=12,
  ))

  c.render_view = ml_collections.ConfigDict(dict(
      kind="object", scene_seed=1000, image_size=64, target_view=0))
  c.render = ml_collections.ConfigDict(dict(chunk_size=512))
  c.checkpoint = ""           # official GNT weights (.npz or .pth) for render_view

  if variant == "tiny":
    c.model.update(width=32, depth=2, coarse_feat_dim=16, fine_feat_dim=16, num_samples=16,
                   dropout=0.0, feature_width=16)
    c.data.train = ml_collections.ConfigDict({"generated": _generated(0, 16, 32, 16)})
    c.data.eval = ml_collections.ConfigDict({"unseen": _generated(1000, 2, 32, 16)})
    c.data.example.update(num_source_views=4, rays_per_example=128)
    c.data.global_batch = 2
    c.optim.update(decay_steps=0, lr_feature=2e-3, lr_transformer=1e-3)
    c.train.update(num_steps=1500, log_every=50, image_every=500, checkpoint_every=250,
                   max_minutes=0.0)
    c.eval.update(num_source_views=4, max_views_per_scene=2, chunk_size=256,
                  video_frames=24)
    c.render_view.image_size = 32
    c.render.chunk_size = 256
  elif variant == "paper":
    c.model.update(num_samples=64, num_importance=64, single_net=True)
    c.data.global_batch = 8       # x 512 rays = 4096 rays per step
    c.data.num_workers = 8
    c.eval.update(chunk_size=4096, video_frames=120, video_fps=24)
    c.render.chunk_size = 4096
  elif variant == "fewshot":
    c.model.update(width=32, depth=2, coarse_feat_dim=16, fine_feat_dim=16, num_samples=16,
                   dropout=0.0, feature_width=16)
    one = _generated(1000, 1, 32, 16)
    c.data.train = ml_collections.ConfigDict({"scene": one})
    c.data.eval = ml_collections.ConfigDict({"scene": one})
    c.data.example.update(num_source_views=4, rays_per_example=128)
    c.data.global_batch = 2
    c.optim.update(decay_steps=0, lr_feature=2e-4, lr_transformer=1e-4)
    c.train.update(num_steps=200, log_every=25, image_every=0, checkpoint_every=100)
    c.eval.update(num_source_views=4, chunk_size=256)
  elif variant != "reference":
    raise ValueError(f"unknown variant {variant!r}; choose tiny, reference, paper or fewshot")
  c.lock()
  return c
