"""The training program (movenerf.train): configs reject unknown keys, few-shot and
upcycled starts.

A whole run (loss going down, its logs, SIGTERM, kill -9 and exact resumption) is tested
as a 2-process job in tests/test_distributed.py and on an object store in
tests/test_object_store.py; the train step's parts beside their modules in
tests/training/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from movenerf.data import pipeline
from movenerf.training import checkpoint
from movenerf.data import sources as train_data
from movenerf import train as train_main
from tests.helpers import small_config

REPO = Path(__file__).resolve().parents[1]


def _losses(workdir):
  """step -> loss from train_metrics.jsonl (a resumed run re-logs steps: keep the last)."""
  out = {}
  for line in Path(workdir, "train_metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    out[int(row["step"])] = row["loss"]
  return out


def _train_cmd(workdir, move=True, extra=()):
  cfg = "experiments/gnt_move.py:tiny" if move else "experiments/gnt.py:tiny"
  c = small_config(move)
  flat = []
  for group, keys in (("model", ("width", "coarse_feat_dim", "fine_feat_dim", "num_samples",
                                 "feature_width")),
                      ("optim", ("lr_feature", "lr_transformer"))):
    flat += [f"--config.{group}.{k}={c[group][k]}" for k in keys]
  for g, name in (("train", "generated"), ("eval", "unseen")):
    for k in ("num_scenes", "num_views", "height", "width"):
      flat.append(f"--config.data.{g}.{name}.options.{k}={c.data[g][name].options[k]}")
  flat += [f"--config.data.example.{k}={c.data.example[k]}"
           for k in ("num_source_views", "rays_per_example")]
  flat += ["--config.data.global_batch=2", "--config.train.log_every=1",
           "--config.train.image_every=0", "--config.eval.at_end=false",
           "--config.train.checkpoint_every=2", "--config.train.num_steps=8"]
  return [sys.executable, "-m", "movenerf.train", "--config", cfg, "--workdir",
          str(workdir)] + flat + list(extra)


def test_unknown_config_key_is_a_clear_error(tmp_path):
  cmd = [sys.executable, "-m", "movenerf.train", "--config", "experiments/gnt.py:tiny",
         "--workdir", str(tmp_path), "--config.model.widht=3"]
  out = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                       capture_output=True, text=True)
  assert out.returncode != 0
  assert "widht" in out.stderr and "width" in out.stderr  # names the key, suggests the fix
  assert not (tmp_path / "checkpoints").exists()
  c = small_config()
  with pytest.raises(ValueError, match=r"unknown example option\(s\) \['rays'\]"):
    pipeline.ExampleSpec.from_config(dict(c.data.example.to_dict(), rays=3))
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['weigth'\]"):
    train_data.make_source("x", {"format": "generated", "weigth": 1.0})
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_scene'\]"):
    train_data.make_source("x", {"format": "generated", "options": {"num_scene": 1}})


def test_fewshot_from_a_run_and_upcycled_move(tmp_path):
  base = tmp_path / "base"
  train_main.train(small_config(num_steps=2, checkpoint_every=2), str(base))
  # Fine-tune the dense run (few-shot: its own config, one scene's views).
  c = small_config(num_steps=3, checkpoint_every=3)
  c.init_from = str(base)
  ft = train_main.train(c, str(tmp_path / "ft"))
  assert ft["step"] == 3 and np.isfinite(ft["train"]["loss"])
  dense, _ = checkpoint.restore_params(str(base))
  tuned, _ = checkpoint.restore_params(str(tmp_path / "ft"))
  assert not np.array_equal(np.asarray(tuned["net_coarse"]["rgb_fc"]["kernel"]),
                            np.asarray(dense["net_coarse"]["rgb_fc"]["kernel"]))
  # GNT-MoVE started from the dense run: shared weights copied, every expert = dense FFN.
  m = small_config(move=True)
  m.init_from = str(base)
  m.upcycle = True
  model = train_main.build_model(m)
  params = train_main.initial_params(m, model)
  jax.tree.map(np.testing.assert_array_equal, params["feature_net"], dense["feature_net"])
  experts = params["net_coarse"]["view_trans_1"]["moe"]["experts"]["fc1"]["kernel"]
  ffn = dense["net_coarse"]["view_trans_1"]["ff"]["fc1"]["kernel"]
  for e in range(experts.shape[0]):
    np.testing.assert_array_equal(experts[e], ffn)
  with pytest.raises(ValueError, match="do not match the configured model"):
    m.upcycle = False
    train_main.initial_params(m, model)
  # Same structure, other sizes: named, not silently loaded.
  wide = small_config(num_steps=1)
  wide.model.width = 24
  wide.init_from = str(base)
  with pytest.raises(ValueError, match=r"shapes do not match the configured model"):
    train_main.initial_params(wide, train_main.build_model(wide))


