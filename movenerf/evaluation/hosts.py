"""Per-view work spread over the processes of a multi-host job, collected by the chief.

With P processes, item ``i`` is computed by process ``i % P``; after each round of P
items the results travel to process 0 (the chief), which alone writes files. Every
process must run the whole loop: each round is a collective.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Iterable, Iterator

import jax
from jax.experimental import multihost_utils
import numpy as np


def is_chief() -> bool:
  return jax.process_index() == 0


def map_to_chief(fn: Callable[[Any], dict], items: Iterable) -> Iterator[tuple[int, dict]]:
  """Yields ``(i, fn(items[i]))`` in order on the chief, computed by process ``i % P``;
  yields nothing on the other processes (which still compute their share).

  ``fn`` returns a dict of NumPy arrays, numbers and strings.
  """
  count, me = jax.process_count(), jax.process_index()
  if count == 1:
    for i, item in enumerate(items):
      yield i, fn(item)
    return
  items = list(items)
  for base in range(0, len(items), count):
    mine = base + me
    payload = _encode(fn(items[mine])) if mine < len(items) else b""
    everyone = _allgather_bytes(payload)
    if me == 0:
      for p, blob in enumerate(everyone):
        if base + p < len(items):
          yield base + p, _decode(blob)


def barrier(name: str) -> None:
  """Waits until every process got here (e.g. until the chief finished writing)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _encode(result: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in result.items()})
  return buf.getvalue()


def _decode(blob: bytes) -> dict:
  with np.load(io.BytesIO(blob), allow_pickle=False) as z:
    return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}


def _allgather_bytes(payload: bytes) -> list[bytes]:
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(payload)], np.int64)))
  sizes = sizes.reshape(-1)
  padded = np.zeros(int(sizes.max()) or 1, np.uint8)
  padded[:len(payload)] = np.frombuffer(payload, np.uint8)
  every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [every[p, :int(n)].tobytes() for p, n in enumerate(sizes)]
