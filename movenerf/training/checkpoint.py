"""Orbax checkpoints of a run: train state, each process's data-iterator state and the
resolved config.

Checkpoints live in ``WORKDIR/checkpoints/<step>``; the workdir may be local, ``gs://``
or another object store (``s3://``):

- local and ``gs://``: orbax writes every process's shards directly. It writes each
  checkpoint into a temporary folder and renames (or, on GCS, commits) it when complete,
  so a run killed at any moment (even ``kill -9`` while saving) leaves only whole
  checkpoints; the next start restores the latest one. Saving is asynchronous.
- other object stores (orbax writes arrays only to local disks and GCS): orbax writes to
  a local mirror (``storage.cache_dir``), and each finished checkpoint is uploaded with a
  completion marker written last; only marked checkpoints are restored. One process only.

The data-iterator state is saved per process (``data/process_<i>-of-<n>.json``): each
host reads its own share of the stream.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Optional

from etils import epath
import grain.checkpoint as grain_checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp

from movenerf import storage

# Written into an uploaded checkpoint after all its files (mirrored object stores).
UPLOADED_MARKER = "_MOVENERF_UPLOADED"


def _mirrored(url: str) -> bool:
  """Whether orbax cannot write ``url`` itself (an object store other than GCS)."""
  return storage.is_remote(url) and not str(url).startswith("gs://")


def _options(keep: Optional[int], async_save: bool) -> ocp.CheckpointManagerOptions:
  # cleanup_tmp_directories: a run killed while saving leaves a temporary folder; the
  # next start deletes it instead of tripping over it.
  return ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                      enable_async_checkpointing=async_save,
                                      cleanup_tmp_directories=True)


def uploaded_steps(remote: str) -> list[int]:
  """The steps of the complete (marked) checkpoints under a mirrored ``remote`` folder."""
  root = storage.path(remote)
  if not root.exists():
    return []
  return sorted(int(d.name) for d in root.iterdir()
                if d.name.isdigit() and (d / UPLOADED_MARKER).exists())


class Checkpoints:
  """The checkpoints of the run in ``workdir``: save, restore the latest, close.

  Args:
    keep: the newest checkpoints kept (older ones are deleted).
    async_save: write in the background while training continues (local and GCS).
  Raises:
    ValueError: a mirrored object store with several processes.
  """

  def __init__(self, workdir: str, keep: int, async_save: bool = True):
    self.remote = storage.join(workdir, "checkpoints")
    self.mirrored = _mirrored(self.remote)
    if self.mirrored:
      if jax.process_count() > 1:
        raise ValueError(f"--workdir {workdir}: checkpoints on this object store are "
                         "written through a local copy by one process; with several "
                         "processes use a gs:// or shared-filesystem workdir")
      local = storage.cache_dir(self.remote, "checkpoints")
      # The store is the truth: the local copy starts as its newest complete checkpoint.
      shutil.rmtree(local, ignore_errors=True)
      local.mkdir(parents=True)
      steps = uploaded_steps(self.remote)
      if steps:
        storage.download_tree(storage.join(self.remote, str(steps[-1])),
                              local / str(steps[-1]))
        (local / str(steps[-1]) / UPLOADED_MARKER).unlink(missing_ok=True)
      directory, async_save = epath.Path(local), False
    else:
      directory = storage.path(self.remote)
    self.directory = directory
    self.manager = ocp.CheckpointManager(directory, options=_options(keep, async_save))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, iterator, config: dict, force: bool = False) -> bool:
    """Saves ``state``, ``iterator``'s position (per process; None: no data position)
    and ``config`` as checkpoint ``step`` (in the background where possible)."""
    items = dict(state=ocp.args.StandardSave(state),
                 config=ocp.args.JsonSave(json.loads(json.dumps(config, default=str))))
    if iterator is not None:
      items["data"] = grain_checkpoint.CheckpointSave(iterator)
    saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved and self.mirrored:
      self.manager.wait_until_finished()
      self._upload(step)
    return saved

  def _upload(self, step: int) -> None:
    storage.upload_tree(self.directory / str(step), storage.join(self.remote, str(step)))
    storage.write_bytes(storage.join(self.remote, str(step), UPLOADED_MARKER), b"")
    kept = {int(s) for s in self.manager.all_steps()}
    for old in uploaded_steps(self.remote):
      if old not in kept:
        # The marker goes first, so that a half-deleted checkpoint is never restored.
        storage.path(storage.join(self.remote, str(old), UPLOADED_MARKER)).unlink()
        storage.remove_tree(storage.join(self.remote, str(old)))

  def restore(self, abstract_state, iterator, step: Optional[int] = None
              ) -> tuple[Any, dict, int] | None:
    """(state, config, step) of checkpoint ``step`` (default: the latest), placed with the
    shardings of ``abstract_state``; ``iterator`` is moved to the saved position. None
    when there is no checkpoint.

    Raises:
      ValueError: the checkpoint was written by another number of processes.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        abstract_state)
    data_dir = self.directory / str(step) / "data"
    mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if data_dir.exists() and not (data_dir / mine).exists():
      written = sorted(p.name for p in data_dir.iterdir() if p.name.startswith("process_"))
      raise ValueError(f"checkpoint {self.remote}/{step} holds the data positions of "
                       f"{', '.join(written) or 'no process (an older movenerf)'}, not "
                       f"{mine}: resume with the process layout that wrote it")
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain_checkpoint.CheckpointRestore(iterator),
        config=ocp.args.JsonRestore()))
    return out["state"], dict(out["config"] or {}), int(step)

  def close(self) -> None:
    """Waits for the last save to finish and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(path: str) -> tuple[Any, dict]:
  """Parameters and config of the latest checkpoint under a run's workdir (or its
  ``checkpoints`` folder), local or on an object store, for evaluation and fine-tuning."""
  root = path if os.path.basename(os.path.normpath(str(path))) == "checkpoints" else (
      storage.join(path, "checkpoints"))
  storage.check_readable(root, "checkpoints folder")
  if _mirrored(root):
    steps = uploaded_steps(root)
    if not steps:
      raise FileNotFoundError(f"no complete checkpoint under {root}")
    local = tempfile.mkdtemp(prefix="movenerf-restore-")
    try:
      storage.download_tree(storage.join(root, str(steps[-1])),
                            os.path.join(local, str(steps[-1])))
      os.unlink(os.path.join(local, str(steps[-1]), UPLOADED_MARKER))
      return _restore_latest(local)
    finally:
      shutil.rmtree(local, ignore_errors=True)
  return _restore_latest(storage.path(root))


def _restore_latest(directory) -> tuple[Any, dict]:
  """Params (NumPy arrays, whatever devices or processes wrote them) and config of the
  latest checkpoint in ``directory``."""
  mngr = ocp.CheckpointManager(epath.Path(directory), item_handlers={
      "state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
      "data": grain_checkpoint.CheckpointHandler()})
  try:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint under {directory}")
    shapes = mngr.item_metadata(step)["state"]
    target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), shapes)
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))
  finally:
    mngr.close()
  return out["state"]["params"], dict(out["config"] or {})
