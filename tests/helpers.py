"""A tiny GNT / GNT-MoVE experiment config shared by the train, training-engine and
evaluation tests (and the sharded train-step check they run in a subprocess), and a
reader of TensorBoard event files."""

import os
import pathlib
import struct

from experiments import gnt, gnt_move


def small_config(move: bool = False, **train_overrides):
  """The tiny variant shrunk further so a step compiles and runs in seconds."""
  c = (gnt_move if move else gnt).get_config("tiny")
  c.model.update(width=16, coarse_feat_dim=8, fine_feat_dim=8, num_samples=8, feature_width=8)
  for group in ("train", "eval"):
    entry = c.data[group][sorted(c.data[group].keys())[0]]
    entry.options.update(num_scenes=3 if group == "train" else 1, num_views=9, height=16,
                         width=16)
  c.data.example.update(num_source_views=3, rays_per_example=32)
  c.data.global_batch = 2
  c.optim.update(lr_feature=3e-3, lr_transformer=3e-3)
  c.train.update(num_steps=8, log_every=1, image_every=0, checkpoint_every=4,
                 async_checkpoints=True)
  # 16x16 views: LPIPS-vgg's smallest; LPIPS-alex needs 31.
  c.eval.update(at_end=False, num_source_views=3, max_views_per_scene=1, chunk_size=64,
                video_frames=0, lpips="vgg")
  c.train.update(**train_overrides)
  return c


def tensorboard_events(folder):
  """Every Event of the tensorboardX event files under ``folder`` (TFRecord framing:
  length, its CRC, the record, its CRC)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  events = []
  for name in sorted(os.listdir(folder)):
    data = (pathlib.Path(folder) / name).read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[pos + 12:pos + 12 + length])
      events.append(event)
      pos += 12 + length + 4
  return events
