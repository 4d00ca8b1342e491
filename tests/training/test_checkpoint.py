"""Checkpoints: a damaged newest checkpoint is moved aside and the previous one restored;
a failed background save stops training with a clear error."""

import errno
import os
import time

import grain
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from movenerf.training import checkpoint


def _iterator():
  return iter(grain.MapDataset.range(10).to_iter_dataset())


def _state(step):
  return {"w": jnp.full((4,), float(step)), "b": {"c": jnp.full((2, 3), 10.0 * step)}}


def _two_checkpoints(workdir):
  """Saves steps 1 and 2 (the iterator one element further each)."""
  ckpts = checkpoint.Checkpoints(str(workdir), keep=5)
  it = _iterator()
  for step in (1, 2):
    next(it)
    ckpts.save(step, _state(step), it, {"step": step})
  ckpts.close()
  return workdir / "checkpoints"


def _truncate_arrays(step_dir):
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()
           and p.parent.name == "d"]
  assert files
  for p in files:
    os.truncate(p, p.stat().st_size // 2)


DAMAGES = {
    "truncated array file": _truncate_arrays,
    "deleted _METADATA": lambda d: (d / "state" / "_METADATA").unlink(),
    "deleted iterator state": lambda d: (d / "data" / "process_0-of-1.json").unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_checkpoint_is_moved_aside(tmp_path, capsys, damage):
  root = _two_checkpoints(tmp_path)
  DAMAGES[damage](root / "2")
  assert (root / "2" / "commit_success.txt").exists()
  capsys.readouterr()

  ckpts = checkpoint.Checkpoints(str(tmp_path), keep=5)
  it = _iterator()
  state, config, step = ckpts.restore(_state(0), it)
  assert step == 1 and config == {"step": 1}
  np.testing.assert_array_equal(state["w"], np.full((4,), 1.0))
  np.testing.assert_array_equal(state["b"]["c"], np.full((2, 3), 10.0))
  assert next(it) == 1  # the position saved with step 1
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1, lines
  assert f"{root}/2 cannot be read" in lines[0] and "moved aside" in lines[0]
  aside = [p for p in root.iterdir() if p.name.startswith("2.damaged-")]
  assert len(aside) == 1 and (aside[0] / "commit_success.txt").exists()
  assert not (root / "2").exists()
  assert ckpts.manager.all_steps() == [1] and ckpts.latest_step() == 1
  # Training goes on: step 2 can be written again, and a new start restores it.
  next(it)
  ckpts.save(2, _state(2), it, {"step": 2})
  ckpts.close()
  again = checkpoint.Checkpoints(str(tmp_path), keep=5)
  assert again.restore(_state(0), _iterator())[2] == 2
  again.close()
  assert aside[0].exists()  # orbax's clean-up leaves the damaged folder alone


def test_no_readable_checkpoint_starts_afresh(tmp_path, capsys):
  root = _two_checkpoints(tmp_path)
  for step in ("1", "2"):
    (root / step / "state" / "_METADATA").unlink()
  capsys.readouterr()
  ckpts = checkpoint.Checkpoints(str(tmp_path), keep=5)
  assert ckpts.restore(_state(0), _iterator()) is None
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 3 and "training starts from step 0" in out[-1]
  assert sorted(p.name.split(".")[0] for p in root.iterdir()) == ["1", "2"]
  assert ckpts.latest_step() is None
  ckpts.close()


def test_other_shapes_are_a_config_error_not_damage(tmp_path):
  root = _two_checkpoints(tmp_path)
  ckpts = checkpoint.Checkpoints(str(tmp_path), keep=5)
  wrong = {"w": jnp.zeros((5,)), "b": {"c": jnp.zeros((2, 3))}}
  with pytest.raises(ValueError, match=r"checkpoints/2: w has shape \(4,\), the configured "
                     r"model \(5,\)"):
    ckpts.restore(wrong, _iterator())
  assert sorted(p.name for p in root.iterdir()) == ["1", "2"]
  ckpts.close()


def _failing_json_save(monkeypatch):
  """From now on the config item's background write fails as on a full disk."""
  async def full_disk(self, x, directory):
    raise OSError(errno.ENOSPC, "No space left on device", str(directory))
  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)


def test_failed_background_save_raises_at_check(tmp_path, monkeypatch):
  ckpts = checkpoint.Checkpoints(str(tmp_path), keep=5)
  it = _iterator()
  next(it)
  ckpts.save(1, _state(1), it, {"step": 1})
  ckpts.check()
  _failing_json_save(monkeypatch)
  next(it)
  assert ckpts.save(2, _state(2), it, {"step": 2})  # returns; the write fails later
  deadline = time.monotonic() + 60
  with pytest.raises(checkpoint.CheckpointError) as error:
    while time.monotonic() < deadline:
      ckpts.check()
      time.sleep(0.05)
  root = tmp_path / "checkpoints"
  assert str(error.value).startswith(f"saving checkpoint 2 to {root}/2 failed: OSError: ")
  assert "No space left on device" in str(error.value)
  assert str(error.value).endswith(f"; the last good checkpoint is {root}/1")
  ckpts.check()  # raised once
  monkeypatch.undo()
  ckpts.close()

  again = checkpoint.Checkpoints(str(tmp_path), keep=5)
  it = _iterator()
  state, _, step = again.restore(_state(0), it)
  assert step == 1 and next(it) == 1
  np.testing.assert_array_equal(state["w"], np.full((4,), 1.0))
  again.close()


def test_failed_background_save_raises_at_next_save(tmp_path, monkeypatch):
  ckpts = checkpoint.Checkpoints(str(tmp_path), keep=5)
  _failing_json_save(monkeypatch)
  it = _iterator()
  ckpts.save(1, _state(1), it, {"step": 1})
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"saving checkpoint 1 to .*checkpoints/1 failed: OSError: .*No "
                     r"space left on device.*; the last good checkpoint is none$"):
    ckpts.save(2, _state(2), it, {"step": 2})
  monkeypatch.undo()
  ckpts.close()
  assert checkpoint.Checkpoints(str(tmp_path), keep=5).latest_step() is None
