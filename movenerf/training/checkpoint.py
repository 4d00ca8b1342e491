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

A newest checkpoint that cannot be read (a truncated array file, a missing ``_METADATA``
or data position, anything orbax or grain fails on) is moved aside to
``<step>.damaged-<UTC time>`` with one printed line, and the newest readable one is
restored (one process, local or ``gs://``). A failed background save raises
:class:`CheckpointError` at the next :meth:`Checkpoints.check`, ``save`` or ``close``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any, Optional

from etils import epath
import grain.checkpoint as grain_checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp

from movenerf import storage

# Written into an uploaded checkpoint after all its files (mirrored object stores).
UPLOADED_MARKER = "_MOVENERF_UPLOADED"


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or a damaged one could not be moved aside."""


def _first_line(e: BaseException, limit: int = 300) -> str:
  """``Type: first line of the message``, without tensorstore's spec, at most ``limit``
  characters."""
  text = (str(e).strip().splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
  text = f"{type(e).__name__}: {text}".rstrip(": ")
  return text if len(text) <= limit else text[:limit - 3] + "..."


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
  """The checkpoints of the run in ``workdir``: save, restore the newest readable one,
  check that background saves succeeded, close.

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
    self._pending: Optional[int] = None  # the step of a save that may still be running
    self.manager = ocp.CheckpointManager(directory, options=_options(keep, async_save))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, iterator, config: dict, force: bool = False) -> bool:
    """Saves ``state``, ``iterator``'s position (per process; None: no data position)
    and ``config`` as checkpoint ``step`` (in the background where possible).

    Raises:
      CheckpointError: this save or the previous background one failed.
    """
    items = dict(state=ocp.args.StandardSave(state),
                 config=ocp.args.JsonSave(json.loads(json.dumps(config, default=str))))
    if iterator is not None:
      items["data"] = grain_checkpoint.CheckpointSave(iterator)
    self._raise_failed_save()  # the previous save's error names that step
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    if saved:
      self._pending = step
    if saved and self.mirrored:
      self._raise_failed_save()
      self._upload(step)
    return saved

  def check(self) -> None:
    """Raises the error of a finished background save, if it failed; returns at once
    while a save is still being written. The train loop calls it after each step.

    Raises:
      CheckpointError: ``saving checkpoint <step> to <path> failed: <reason>; the last
        good checkpoint is <k>``.
    """
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self._raise_failed_save()

  def _raise_failed_save(self) -> None:
    """Waits for the pending background save; raises CheckpointError if it failed."""
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e

  def _save_error(self, step: int, e: BaseException) -> CheckpointError:
    # The finished checkpoints on disk (reloading the manager here would clean up the
    # failed save's folder while its other items may still be writing).
    try:
      good = [int(p.name) for p in epath.Path(self.directory).iterdir()
              if p.name.isdigit() and int(p.name) != step]
    except OSError:
      good = []
    last = f"{self.remote}/{max(good)}" if good else "none"
    return CheckpointError(f"saving checkpoint {step} to {self.remote}/{step} failed: "
                           f"{_first_line(e)}; the last good checkpoint is {last}")

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
    """(state, config, step) of checkpoint ``step`` (default: the newest readable one),
    placed with the shardings of ``abstract_state``; ``iterator`` (None: no data
    position) is moved to the saved position. None when there is no checkpoint.

    Without ``step``, a checkpoint that cannot be read is moved aside to
    ``<step>.damaged-<UTC time>`` (one printed line names it and the reason) and the
    next older one is tried; when none is left, None (training starts afresh, with a
    printed line).

    Raises:
      ValueError: the checkpoint was written by another number of processes, or holds
        arrays of other shapes than ``abstract_state``.
      CheckpointError: a damaged checkpoint with several processes or on a mirrored
        object store (they are not moved aside automatically); with an explicit
        ``step``, that checkpoint is damaged.
    """
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        abstract_state)
    if step is not None:
      try:
        return self._restore_step(step, target, iterator)
      except _Damaged as e:
        raise CheckpointError(f"checkpoint {self.remote}/{step} cannot be read: "
                              f"{e}") from e.__cause__
    moved = []
    while (step := self.latest_step()) is not None:
      try:
        return self._restore_step(step, target, iterator)
      except _Damaged as e:
        moved.append(self._move_aside(step, str(e)))
    if moved:
      print(f"no readable checkpoint left under {self.remote} (damaged ones moved "
            f"aside: {', '.join(moved)}): training starts from step 0", flush=True)
    return None

  def _restore_step(self, step: int, target, iterator) -> tuple[Any, dict, int]:
    """Restores checkpoint ``step``; raises _Damaged when it cannot be read."""
    step_dir = self.directory / str(step)
    data_dir = step_dir / "data"
    mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if iterator is not None and data_dir.exists() and not (data_dir / mine).exists():
      names = [p.name for p in data_dir.iterdir()]
      written = sorted(n for n in names if n.startswith("process_"))
      if written or "metadata" in names:  # another process layout, not damage
        raise ValueError(f"checkpoint {self.remote}/{step} holds the data positions of "
                         f"{', '.join(written) or 'no process (an older movenerf)'}, not "
                         f"{mine}: resume with the process layout that wrote it")
      raise _Damaged(f"its data position data/{mine} is missing")
    if iterator is not None and not data_dir.exists():
      raise _Damaged("its data folder is missing")
    try:
      stored = ocp.StandardCheckpointHandler().metadata(step_dir / "state").tree
    except Exception as e:  # pylint: disable=broad-except
      raise _Damaged(f"its state metadata cannot be read ({_first_line(e)})") from e
    _check_shapes(stored, target, f"{self.remote}/{step}")
    items = dict(state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore())
    if iterator is not None:
      items["data"] = grain_checkpoint.CheckpointRestore(iterator)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise _Damaged(_first_line(e)) from e
    return out["state"], dict(out["config"] or {}), int(step)

  def _move_aside(self, step: int, reason: str) -> str:
    """Renames damaged checkpoint ``step`` so that orbax no longer lists it; returns
    the new name."""
    where = f"{self.remote}/{step}"
    if self.mirrored or jax.process_count() > 1:
      raise CheckpointError(
          f"checkpoint {where} cannot be read ({reason}); move it aside (rename it, "
          "e.g. to "
          f"{step}.damaged) and rerun, to resume from the previous one")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{step}.damaged-{stamp}"
    source = self.directory / str(step)
    try:
      source.rename(source.parent / name)
    except OSError as e:
      raise CheckpointError(f"checkpoint {where} cannot be read ({reason}) nor moved "
                            f"aside to {name} ({_first_line(e)})") from e
    self.manager.reload()
    print(f"checkpoint {where} cannot be read ({reason}): moved aside to "
          f"{self.remote}/{name}", flush=True)
    return name

  def close(self) -> None:
    """Waits for the last save to finish and releases the manager.

    Raises:
      CheckpointError: the last background save failed.
    """
    try:
      self._raise_failed_save()
    finally:
      self.manager.close()


class _Damaged(Exception):
  """A checkpoint that cannot be read; the message says why."""


def _leaf_shapes(tree) -> dict[str, tuple]:
  """Shapes of the leaves of a pytree, keyed ``a.b.c`` (orbax's array names)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    shape = getattr(leaf, "shape", None)
    if shape is not None:
      out[".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                   for k in path)] = tuple(shape)
  return out


def _check_shapes(stored, target, where: str) -> None:
  """Raises ValueError when an array stored in checkpoint ``where`` has another shape
  than the same array of ``target`` (another model configuration, not damage)."""
  have, want = _leaf_shapes(stored), _leaf_shapes(target)
  bad = sorted((k for k in have.keys() & want.keys() if have[k] != want[k]),
               key=lambda k: (not k.startswith("params."), k))  # a parameter first
  if bad:
    k = bad[0]
    raise ValueError(f"checkpoint {where}: {k} has shape {have[k]}, the configured model "
                     f"{want[k]} ({len(bad)} arrays differ): resume with the config that "
                     "wrote it, or use another workdir")


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
