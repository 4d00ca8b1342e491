"""Orbax checkpoints of a run: train state, data-iterator state and the resolved config.

Checkpoints live in ``WORKDIR/checkpoints/<step>``. Orbax writes each into a temporary
folder and renames it when complete, so a run killed at any moment (even ``kill -9``
while saving) leaves only whole checkpoints; the next start restores the latest one.
Saving is asynchronous: the train loop continues while the arrays are written.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the newest ``keep`` checkpoints."""
  # cleanup_tmp_directories: a run killed while saving leaves a temporary folder; the
  # next start deletes it instead of tripping over it.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: Optional[dict],
         config: dict, force: bool = False) -> bool:
  """Starts saving ``state`` (+ data-iterator state and config) as checkpoint ``step``."""
  return mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state or {}),
      config=ocp.args.JsonSave(json.loads(json.dumps(config, default=str)))), force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, step: Optional[int] = None
            ) -> tuple[Any, dict, dict, int] | None:
  """(state, data state, config, step) of checkpoint ``step`` (default: the latest), placed
  with the shardings of ``abstract_state``; None when there is no checkpoint."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      abstract_state)
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
      config=ocp.args.JsonRestore()))
  return out["state"], dict(out["data"] or {}), dict(out["config"] or {}), int(step)


def restore_params(path: str) -> tuple[Any, dict]:
  """Parameters and config of the latest checkpoint under a run's workdir (or its
  ``checkpoints`` folder), for evaluation and fine-tuning."""
  root = path if os.path.basename(os.path.normpath(path)) == "checkpoints" else os.path.join(
      path, "checkpoints")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"no checkpoints folder at {root}")
  mngr = ocp.CheckpointManager(os.path.abspath(root))
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"no complete checkpoint under {root}")
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                  config=ocp.args.JsonRestore()))
  mngr.close()
  return out["state"]["params"], dict(out["config"] or {})
