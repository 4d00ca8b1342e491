"""A tiny Decoupling-NeRF experiment config, used by the family tests and by the short run
they share with the zero-shot tests (the ``decoupled_run`` fixture in tests/conftest.py);
the tiny model and the whole-image example the variant tests share."""

import jax.numpy as jnp
import numpy as np

from experiments import decoupled_nerf
from movenerf.data.procedural import make_scene

SIZE = 16
# DecoupledConfig fields of the tiny model the variant tests build.
TINY_MODEL = dict(num_freqs=4, enc_width=8, attn_heads=2, head_dim=8, width=16,
                  render_width=8, num_layers=3, white_background=True)


def whole_image_example(size: int) -> dict:
  """A whole-image training example: target view 4 of a generated scene, sources 0-3."""
  s = make_scene(0, "object", num_views=5, height=size, width=size)
  v, u = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  return dict(pixels=jnp.asarray(np.stack([u.ravel(), v.ravel()], -1), jnp.float32),
              rgb=jnp.asarray(s.images[4].reshape(-1, 3), jnp.float32) / 255.0,
              src_images=jnp.asarray(s.images[:4]),
              src_intrinsics=jnp.asarray(s.intrinsics[:4]), src_c2w=jnp.asarray(s.c2w[:4]),
              tgt_intrinsics=jnp.asarray(s.intrinsics[4]), tgt_c2w=jnp.asarray(s.c2w[4]),
              near=jnp.float32(s.near), far=jnp.float32(s.far))


def small_config(**train_overrides):
  """The tiny variant shrunk so that a run takes seconds."""
  c = decoupled_nerf.get_config("tiny")
  c.model.update(num_freqs=4, enc_width=8, attn_heads=2, head_dim=8, width=16,
                 render_width=8, num_layers=3)
  for group in ("train", "eval"):
    entry = c.data[group][sorted(c.data[group].keys())[0]]
    entry.options.update(num_scenes=2 if group == "train" else 1, num_views=9, height=SIZE,
                         width=SIZE)
  c.data.example.update(num_source_views=3, rays_per_example=SIZE * SIZE)
  c.data.global_batch = 2
  c.train.update(num_steps=6, log_every=1, image_every=3, checkpoint_every=3,
                 async_checkpoints=False)
  # 16x16 views: LPIPS-vgg's smallest; LPIPS-alex needs 31.
  c.eval.update(num_source_views=3, max_views_per_scene=1, video_frames=2, lpips="vgg")
  c.train.update(**train_overrides)
  return c
