"""Paths that may be local or on an object store (``gs://``, ``s3://``), through
``etils.epath``.

Every file the library reads or writes goes through these helpers, so a workdir, a
dataset or a checkpoint can be a URL. Object stores need their filesystem package
(``pip install "movenerf[cloud]"``: ``gcsfs`` / ``s3fs``); an S3-compatible server is
chosen with ``AWS_ENDPOINT_URL``.

Writes are atomic: a local file is written under a temporary name in the same folder
and renamed; an object is uploaded in one request, which a reader sees whole or not at
all. Files are created readable by everyone (mode 0644, before the umask).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import uuid
from typing import Any, Iterable, Optional, Union

from etils import epath
import numpy as np

PathLike = Union[str, os.PathLike]

# Where remote data is mirrored for libraries that read local files only (array_record,
# orbax's array writer outside gs://): MOVENERF_CACHE, else ~/.cache/movenerf.
CACHE_ENV = "MOVENERF_CACHE"


class StorageError(OSError):
  """A path that cannot be read or written; the message names it."""


def is_remote(path: PathLike) -> bool:
  """Whether ``path`` is a URL of an object store (``scheme://``, not ``file://``)."""
  text = os.fspath(path)
  return "://" in text and not text.startswith("file://")


def path(p: PathLike) -> epath.Path:
  """``p`` as an ``epath.Path`` (a local path is made absolute)."""
  if isinstance(p, epath.Path) and is_remote(p):
    return p
  text = os.fspath(p)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def join(p: PathLike, *parts: str) -> str:
  """``p / part / ...`` as a string, for local paths and URLs alike."""
  return os.fspath(path(p).joinpath(*parts))


def exists(p: PathLike) -> bool:
  return path(p).exists()


def is_dir(p: PathLike) -> bool:
  return path(p).is_dir()


def is_file(p: PathLike) -> bool:
  return path(p).is_file()


def makedirs(p: PathLike) -> None:
  """Creates the local folder ``p`` and its parents; nothing on an object store, whose
  keys need no folders (and whose mkdir would create a missing bucket)."""
  if not is_remote(p):
    path(p).mkdir(parents=True, exist_ok=True)


def read_bytes(p: PathLike) -> bytes:
  try:
    return path(p).read_bytes()
  except FileNotFoundError:
    raise
  except OSError as e:
    raise StorageError(f"cannot read {p}: {e}") from e


def read_text(p: PathLike) -> str:
  return read_bytes(p).decode()


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes ``data`` to ``p`` atomically (see the module docstring)."""
  target = path(p)
  if is_remote(target):
    try:
      target.write_bytes(data)
    except OSError as e:
      raise StorageError(f"cannot write {p}: {e}") from e
    return
  local = pathlib.Path(os.fspath(target))
  local.parent.mkdir(parents=True, exist_ok=True)
  tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, local)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode())


def write_json(p: PathLike, obj: Any, **kwargs) -> None:
  """``obj`` as strict JSON (non-finite floats become null) written atomically."""
  write_text(p, json.dumps(finite(obj), allow_nan=False, **kwargs) + "\n")


def finite(obj: Any) -> Any:
  """``obj`` with NaN / inf floats (NumPy's too) replaced by None, so that it is valid
  JSON."""
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [finite(v) for v in obj]
  return obj


def copy_file(src: PathLike, dst: PathLike) -> None:
  """Copies one file between any two locations (atomically at ``dst``)."""
  write_bytes(dst, read_bytes(src))


def upload_tree(local: PathLike, remote: PathLike, last: Iterable[str] = ()) -> None:
  """Copies the files under the local folder ``local`` to ``remote``; the relative paths
  in ``last`` are copied after all others (a completion marker for readers)."""
  root = pathlib.Path(os.fspath(local))
  last = set(last)
  files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
  for rel in [f for f in files if f not in last] + [f for f in files if f in last]:
    copy_file(root / rel, join(remote, rel))


def download_tree(remote: PathLike, local: PathLike) -> None:
  """Copies every file under ``remote`` into the local folder ``local``."""
  for rel in list_files(remote):
    copy_file(join(remote, rel), pathlib.Path(os.fspath(local)) / rel)


def list_files(folder: PathLike) -> list[str]:
  """The relative paths of every file under ``folder`` (sorted)."""
  root = path(folder)
  found, stack = [], [(root, "")]
  while stack:
    current, prefix = stack.pop()
    for child in current.iterdir():
      rel = f"{prefix}{child.name}"
      if child.is_dir():
        stack.append((child, rel + "/"))
      else:
        found.append(rel)
  return sorted(found)


def remove_tree(p: PathLike) -> None:
  target = path(p)
  if target.exists():
    target.rmtree()


def cache_dir(url: PathLike, kind: str) -> pathlib.Path:
  """A local folder that mirrors the remote ``url`` (one per URL and ``kind``)."""
  base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                    "movenerf")
  digest = hashlib.sha256(os.fspath(url).rstrip("/").encode()).hexdigest()[:16]
  name = os.fspath(url).rstrip("/").rsplit("/", 1)[-1] or "root"
  return pathlib.Path(base) / kind / f"{name}-{digest}"


def process_alive(pid: int) -> bool:
  """Whether process ``pid`` of this host exists (another user's counts), e.g. the owner
  of a partly written folder."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def check_writable(folder: PathLike) -> None:
  """Creates ``folder`` and writes and deletes a probe file in it.

  Raises:
    StorageError: naming ``folder``, when it is a file, cannot be created (a missing
      bucket, a read-only disk) or refuses writes (denied credentials).
  """
  target = path(folder)
  if target.exists() and not target.is_dir():
    raise StorageError(f"{folder} is a file, not a folder")
  probe = target / f".movenerf-write-check-{uuid.uuid4().hex[:8]}"
  try:
    if not is_remote(target):  # on an object store mkdir would create a missing bucket
      target.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  (fsspec raises many kinds)
    raise StorageError(f"cannot write to {folder}: {_reason(e)}") from None


def check_readable(p: PathLike, what: str = "path") -> None:
  """Raises FileNotFoundError naming ``p`` unless it exists (a missing bucket or
  denied credentials are reported the same way, with the store's reason)."""
  try:
    ok = path(p).exists()
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(f"cannot read {what} {p}: {_reason(e)}") from None
  if not ok:
    raise FileNotFoundError(f"no {what} at {p}")


def _reason(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


class JsonLines:
  """An append-only log of JSON records at ``p``, valid after a crash at any moment.

  Locally each record is appended and flushed as one write; on an object store (which
  has no append) the whole log is rewritten in one upload. ``truncate_after(step)``
  drops records of steps that a resumed run will redo.
  """

  def __init__(self, p: PathLike):
    self._path = path(p)
    self._remote = is_remote(self._path)
    self._lines: Optional[list[str]] = None

  def _load(self) -> list[str]:
    if self._lines is None:
      text = self._path.read_text() if self._path.exists() else ""
      lines = text.split("\n")
      # A record cut short by a crash (no newline after it) is dropped.
      self._lines = [l for l in lines[:-1] if l] if lines else []
    return self._lines

  def truncate_after(self, step: int) -> None:
    """Keeps the records whose ``step`` is at most ``step`` (and rewrites the file)."""
    lines = self._load()
    kept = []
    for line in lines:
      try:
        if json.loads(line).get("step", 0) <= step:
          kept.append(line)
      except ValueError:
        pass
    if kept != lines or (self._path.exists() and not self._remote):
      self._lines = kept
      write_text(self._path, "".join(l + "\n" for l in kept))

  def append(self, record: dict) -> None:
    line = json.dumps(finite(record), allow_nan=False)
    if self._remote:
      lines = self._load()
      lines.append(line)
      write_text(self._path, "".join(l + "\n" for l in lines))
      return
    local = os.fspath(self._path)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, "a") as f:
      f.write(line + "\n")
      f.flush()

