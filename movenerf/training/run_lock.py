"""One training per workdir: an advisory lock that dies with the process holding it.

The lock is an ``flock`` on ``WORKDIR/.movenerf-lock`` (for a local workdir) or on a file
in the local cache named after the URL (for an object-store workdir, where it guards
the runs of this machine only). The kernel releases an ``flock`` when its process ends,
however it ends, so a killed run never leaves the workdir locked. The file records who
holds it (host, process id, start time) for the message of a run that is refused.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import pathlib
import socket

from movenerf import storage, validation

LOCK_NAME = ".movenerf-lock"


def lock_file(workdir: str) -> pathlib.Path:
  """The file whose ``flock`` guards ``workdir``."""
  if storage.is_remote(workdir):
    return storage.cache_dir(workdir, "locks") / LOCK_NAME
  return pathlib.Path(str(storage.path(workdir))) / LOCK_NAME


class RunLock:
  """Holds the lock of ``workdir`` until :meth:`release` (or the process's end).

  Raises:
    UsageError: another live process holds it; the message names that process.
  """

  def __init__(self, workdir: str):
    self.path = lock_file(workdir)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = self._holder()
      os.close(self._fd)
      self._fd = None
      raise validation.UsageError(
          f"--workdir {workdir} is in use by another training ({holder}); wait for it to "
          "finish or stop it, or choose another workdir") from None
    os.ftruncate(self._fd, 0)
    os.write(self._fd, json.dumps({
        "host": socket.gethostname(), "pid": os.getpid(),
        "started": datetime.datetime.now().isoformat(timespec="seconds")}).encode())

  def _holder(self) -> str:
    try:
      info = json.loads(pathlib.Path(self.path).read_text() or "{}")
      return f"process {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
      return "a process that has not recorded itself yet"

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "RunLock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()
