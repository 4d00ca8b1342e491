"""Training: loss goes down, kill -9 resume is exact, non-finite updates are skipped,
configs reject unknown keys, 8 devices == 1 device, eval writes what it promises."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gnt, gnt_move
from movenerf import sharding
from movenerf.data import pipeline
from movenerf.training import checkpoint, optim
from movenerf.data import sources as train_data
from movenerf.training import state as train_state
from movenerf.training import step as train_step
from movenerf import train as train_main

REPO = Path(__file__).resolve().parents[1]


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
  c.eval.update(at_end=False, num_source_views=3, max_views_per_scene=1, chunk_size=64,
                video_frames=0)
  c.train.update(**train_overrides)
  return c


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


def _one_device_setup(move=False, sub_chunk=0):
  c = small_config(move)
  model = train_main.build_model(c)
  mesh = sharding.make_mesh()
  tx = optim.make_optimizer(c.optim)
  params = train_main.initial_params(c, model)
  state, shardings = train_state.create_state(params, tx, 0, mesh)
  sources, weights = train_data.make_sources(c.data.train)
  maker = pipeline.ExampleMaker(sources, weights,
                                pipeline.ExampleSpec.from_config(c.data.example.to_dict()))
  batch = pipeline.train_dataset(maker, 2)[0]
  fn = train_step.make_train_step(model, tx, c.loss, (16, 16), mesh, shardings,
                                  sub_chunk=sub_chunk)
  return mesh, state, batch, fn


# sub_chunk 8: the host loop over slices (training.slice_loop) on this one CPU device.
@pytest.mark.parametrize("sub_chunk", [0, 8])
def test_non_finite_gradients_are_skipped(sub_chunk):
  mesh, state, batch, fn = _one_device_setup(sub_chunk=sub_chunk)
  before = jax.device_get(state.params)
  bad = dict(batch, rgb=np.full_like(batch["rgb"], np.nan))
  with jax.set_mesh(mesh):
    state, metrics = fn(state, pipeline.to_device_batch(bad, mesh))
    jax.block_until_ready(state)
    assert int(state.step) == 1 and int(state.skipped) == 1
    assert float(metrics["update_skipped"]) == 1.0
    after = jax.device_get(state.params)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    # A finite batch afterwards updates normally.
    state, metrics = fn(state, pipeline.to_device_batch(batch, mesh))
    assert int(state.step) == 2 and int(state.skipped) == 1
    assert np.isfinite(float(metrics["loss"]))
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), after,
                           jax.device_get(state.params))
    assert any(jax.tree.leaves(changed))


def test_learning_rate_groups_and_schedule():
  c = gnt.get_config("paper")
  fns = optim.learning_rate_fns(c.optim)
  assert float(fns["feature"](0)) == pytest.approx(1e-3)
  assert float(fns["transformer"](49_999)) == pytest.approx(5e-4)
  assert float(fns["transformer"](50_000)) == pytest.approx(2.5e-4)
  assert float(fns["feature"](120_000)) == pytest.approx(2.5e-4)
  labels = optim.param_groups({"feature_net": {"a": 1}, "net_coarse": {"b": 2}})
  assert labels == {"feature_net": {"a": "feature"}, "net_coarse": {"b": "transformer"}}
  assert c.data.global_batch * c.data.example.rays_per_example == 4096
  assert c.train.num_steps == 250_000


def test_eight_devices_match_one():
  """GNT on (8 data) and GNT-MoVE on (4 data x 2 expert) vs one device, 2 steps."""
  env = dict(os.environ, PYTHONPATH=str(REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, str(REPO / "tests" / "sharded_train_check.py")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "OK" in out.stdout


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


def test_accumulation_and_per_group_learning_rates():
  c = gnt.get_config("tiny")
  c.optim.update(lr_feature=2e-3, lr_transformer=1e-3, accumulate_steps=2)
  tx = optim.make_optimizer(c.optim)
  params = {"feature_net": {"w": jnp.ones(3)}, "net_coarse": {"w": jnp.ones(3)}}
  grads = {"feature_net": {"w": jnp.full(3, 0.5)}, "net_coarse": {"w": jnp.full(3, -0.5)}}
  opt = tx.init(params)
  updates, opt = tx.update(grads, opt, params)
  # First of two accumulated steps: no update yet.
  assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
  updates, opt = tx.update(grads, opt, params)
  # Adam's first update is lr * sign(g): each group moves by its own learning rate.
  np.testing.assert_allclose(updates["feature_net"]["w"], -2e-3, rtol=1e-4)
  np.testing.assert_allclose(updates["net_coarse"]["w"], 1e-3, rtol=1e-4)
  with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
    c.optim.name = "sgdd"
    optim.make_optimizer(c.optim)
