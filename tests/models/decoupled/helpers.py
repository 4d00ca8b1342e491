"""A tiny Decoupling-NeRF experiment config, used by the family tests and by the short run
they share with the zero-shot tests (the ``decoupled_run`` fixture in tests/conftest.py)."""

from experiments import decoupled_nerf

SIZE = 16


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
