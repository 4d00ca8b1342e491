"""The training program (movenerf.train): loss goes down, kill -9 resume is exact,
configs reject unknown keys, few-shot and upcycled starts, SIGTERM stops with a checkpoint.

The train step's parts are tested beside their modules in tests/training/."""

import json
import os
import signal
import subprocess
import sys
import time
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


def test_short_run_lowers_the_loss(tmp_path):
  c = small_config(move=True, num_steps=40, checkpoint_every=40)
  result = train_main.train(c, str(tmp_path))
  losses = _losses(tmp_path)
  first = np.mean([losses[s] for s in range(1, 9)])
  last = np.mean([losses[s] for s in range(33, 41)])
  assert last < 0.8 * first, (first, last)
  assert result["train"]["skipped_updates"] == 0
  assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())
  assert (tmp_path / "checkpoints" / "40").is_dir()
  row = json.loads((tmp_path / "train_metrics.jsonl").read_text().splitlines()[-1])
  for key in ("loss", "psnr", "rays_per_s", "lr_feature", "grad_norm", "diversity",
              "consistency", "moe/layer0/load_0", "moe/layer0/dropped_fraction"):
    assert key in row


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


def test_kill_9_resume_reproduces_the_uninterrupted_loss(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  # Uninterrupted reference run.
  ref = tmp_path / "ref"
  subprocess.run(_train_cmd(ref), cwd=REPO, env=env, check=True, capture_output=True)
  # Same run, killed with SIGKILL as soon as checkpoint 4 starts to appear.
  run = tmp_path / "run"
  proc = subprocess.Popen(_train_cmd(run), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    ckpts = run / "checkpoints"
    if ckpts.is_dir() and any(p.name.startswith("4") for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = max(_losses(run))
  assert done < 8
  # Restart with the same command: resumes from the last whole checkpoint.
  out = subprocess.run(_train_cmd(run), cwd=REPO, env=env, check=True, capture_output=True,
                       text=True)
  assert "resuming from" in out.stdout
  want, got = _losses(ref), _losses(run)
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)],
                             rtol=1e-6)


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


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  run = tmp_path / "run"
  cmd = _train_cmd(run, extra=["--config.train.num_steps=100000",
                               "--config.train.checkpoint_every=100000"])
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and not (run / "train_metrics.jsonl").is_file():
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)  # a preemption notice
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0 and "stopping at step" in out and "SIGTERM" in out
  step = int(out.split("stopping at step ")[1].split()[0])
  assert (run / "checkpoints" / str(step)).is_dir()
