"""The training program (movenerf.train): unknown keys, few-shot and upcycled starts, a
diverged run, a failed save, and what a resumed run must match.

A whole run (loss going down, its logs, SIGTERM, kill -9 and exact resumption) is tested
as a 2-process job in tests/test_distributed.py and on an object store in
tests/test_object_store.py; the train step's parts beside their modules in
tests/training/."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from movenerf import cli
from movenerf.data import pipeline
from movenerf.training import checkpoint, run_lock
from movenerf.data import sources as train_data
from movenerf import train as train_main
from movenerf.validation import UsageError
from tests.helpers import small_config, tensorboard_events


def _losses(workdir):
  """step -> loss from train_metrics.jsonl."""
  out = {}
  for line in Path(workdir, "train_metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    out[int(row["step"])] = row["loss"]
  return out


def test_unknown_keys_are_named():
  """Misspelt keys in sections the config leaves open (a misspelt --config.KEY is
  tests/test_cli.py's)."""
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




def test_a_diverged_run_stops_with_an_error_naming_the_last_applied_update(tmp_path):
  c = small_config(num_steps=12, checkpoint_every=2, max_skipped_steps=3)
  c.optim.update(lr_feature=1e8, lr_transformer=1e8)
  with pytest.raises(cli.RunError) as info:
    train_main.train(c, str(tmp_path))
  def strict(name):
    raise ValueError(f"{name} is not JSON")

  # Every line is strict JSON (non-finite values as null, never NaN / Infinity).
  rows = [json.loads(line, parse_constant=strict)
          for line in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  skipped = [r["skipped_updates"] for r in rows]
  last_applied = max(r["step"] for r, before in zip(rows, [0] + skipped) if
                     r["skipped_updates"] == before)
  stop = rows[-1]["step"]
  assert skipped[-1] == 3 and stop == last_applied + 3 < 12
  assert str(info.value).startswith(
      f"stopped at step {stop}: its last 3 updates were skipped (non-finite loss or "
      f"gradients, e.g. a learning rate too large); the last applied update was step "
      f"{last_applied}; checkpoint ")
  # No checkpoint of the stuck steps after the stop was written.
  assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
             if p.name.isdigit()) < stop


def test_resume_needs_the_stored_config_and_a_free_workdir(tmp_path):
  workdir, straight = str(tmp_path / "run"), str(tmp_path / "straight")
  train_main.train(small_config(num_steps=2, checkpoint_every=2), workdir)
  wide = small_config(num_steps=4)
  wide.model.width = 24
  wide.optim.lr_feature = 1e-3
  with pytest.raises(UsageError, match=r"holds checkpoints of a run with another config, "
                     r"so it cannot resume: model.width: 16 -> 24; optim.lr_feature: 0.003 "
                     r"-> 0.001 \(stored -> given\)"):
    train_main.train(wide, workdir)
  with run_lock.RunLock(workdir):
    with pytest.raises(UsageError, match=rf"^--workdir {workdir} is in use by another "
                       "training"):
      train_main.train(small_config(num_steps=4), workdir)
  # The data position does not depend on the worker processes: resuming with another
  # number of them gives the losses of the uninterrupted run.
  more = small_config(num_steps=4, checkpoint_every=2)
  more.data.num_workers = 1
  assert train_main.train(more, workdir)["step"] == 4
  train_main.train(small_config(num_steps=4, checkpoint_every=2), straight)
  resumed, uninterrupted = _losses(workdir), _losses(straight)
  assert sorted(resumed) == [1, 2, 3, 4]  # no step logged twice
  # TensorBoard drops what an earlier attempt logged after the restored step.
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  starts = [e.step for e in tensorboard_events(Path(workdir) / "tb")
            if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [2]
  np.testing.assert_allclose([resumed[s] for s in (3, 4)],
                             [uninterrupted[s] for s in (3, 4)], rtol=1e-6)


def test_a_failed_save_stops_the_run_at_once(tmp_path, monkeypatch):
  import errno  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  write = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access

  async def full_disk_from_step_4(self, x, directory):
    if "/4." in str(directory) or "/4/" in str(directory):
      raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await write(self, x, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk_from_step_4)
  # The reason is the full disk, or orbax's clean-up of the half-written folder failing
  # after it; either way the step, the error and the resume point are named.
  with pytest.raises(checkpoint.CheckpointError, match=r"saving checkpoint 4 to .*/4 "
                     r"failed: OSError: .*; the last good checkpoint is .*checkpoints/2$"):
    train_main.train(small_config(num_steps=12, checkpoint_every=2), str(tmp_path))
  # Stopped right after the failure, not at the end of the run; checkpoint 2 is the
  # newest whole one, the one a rerun resumes from (tests/training/test_checkpoint.py
  # restores it after such a failure).
  assert max(_losses(tmp_path)) <= 6
  assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
