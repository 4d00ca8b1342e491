"""Random access to the views of many scenes, from memory or from a built TFDS dataset.

The input pipeline (``movenerf.data.pipeline``) picks a target view, its source views and
rays using only the cameras, then loads the few images it needs. A :class:`ViewSource`
serves exactly that: per split, the cameras of every scene (:class:`SceneCameras`, small,
held in memory) and, on request, the images of some views.

* :class:`RecordSource` wraps in-memory :class:`~movenerf.data.formats.record.SceneRecord` s
  (the generated dataset, or scenes read straight from disk).
* :class:`TfdsSource` reads a dataset written by ``python -m movenerf.data.tfds.build``
  (``array_record`` files, read through ``tfds`` data sources: no TensorFlow). The cameras
  come from the dataset's ``metadata.json``; only the requested images are decoded. The
  dataset may be on an object store (``s3://``, ``gs://``): array_record files are read
  from a local disk only, so it is mirrored into the cache (``movenerf.storage.cache_dir``)
  when images are first read.

Splits are *view* splits ("train", "val", "test"): a target from the "test" split of a
scene takes its source views from the "train" split of the same scene.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from movenerf import storage
from movenerf.data.formats import record

# The file a finished TFDS dataset folder has; a build writes (or uploads) it last.
DATASET_INFO = "dataset_info.json"


@dataclasses.dataclass(frozen=True, eq=False)
class SceneCameras:
  """Cameras of the views of one scene in one split (no images).

  Attributes:
    scene_id: scene name, unique within a source.
    height, width: image size in pixels (the same for every view of the scene).
    intrinsics: [N, 3, 3] float32.
    c2w: [N, 4, 4] float32 camera-to-world (OpenCV camera frame).
    near, far: [N] float32 per-view depth bounds.
    view_ids: [N] int64 index of each view in the whole scene (all splits).
  """

  scene_id: str
  height: int
  width: int
  intrinsics: np.ndarray
  c2w: np.ndarray
  near: np.ndarray
  far: np.ndarray
  view_ids: np.ndarray

  @property
  def num_views(self) -> int:
    return int(self.c2w.shape[0])

  def to_json(self) -> dict:
    """Plain lists (float32 values survive the float64 JSON round trip exactly)."""
    return {
        "scene_id": self.scene_id,
        "height": self.height,
        "width": self.width,
        "intrinsics": self.intrinsics.tolist(),
        "c2w": self.c2w.tolist(),
        "near": self.near.tolist(),
        "far": self.far.tolist(),
        "view_ids": self.view_ids.tolist(),
    }

  @classmethod
  def from_json(cls, d: Mapping) -> "SceneCameras":
    return cls(
        scene_id=str(d["scene_id"]),
        height=int(d["height"]),
        width=int(d["width"]),
        intrinsics=np.asarray(d["intrinsics"], np.float32).reshape(-1, 3, 3),
        c2w=np.asarray(d["c2w"], np.float32).reshape(-1, 4, 4),
        near=np.asarray(d["near"], np.float32).reshape(-1),
        far=np.asarray(d["far"], np.float32).reshape(-1),
        view_ids=np.asarray(d["view_ids"], np.int64).reshape(-1))

  @classmethod
  def from_record(cls, rec: record.SceneRecord, split: str) -> "SceneCameras":
    idx = rec.split_indices(split)
    return cls(rec.scene_id, rec.height, rec.width, rec.intrinsics[idx], rec.c2w[idx],
               rec.near[idx], rec.far[idx], idx.astype(np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Views:
  """Pixels of some views of one scene.

  Attributes:
    images: [M, H, W, 3] uint8.
    masks: [M, H, W] bool, or None when the source has no masks.
    depths: [M, H, W] float32 z-depths, or None when the source has no depths.
  """

  images: np.ndarray
  masks: Optional[np.ndarray] = None
  depths: Optional[np.ndarray] = None


class ViewSource(abc.ABC):
  """Cameras of all scenes per split, and images on demand (see the module docstring)."""

  name: str = "views"

  @abc.abstractmethod
  def splits(self) -> tuple[str, ...]:
    """The view splits that have at least one view."""

  @abc.abstractmethod
  def scenes(self, split: str) -> list[SceneCameras]:
    """Cameras of every scene that has views in ``split``, in a fixed order."""

  @abc.abstractmethod
  def load(self, split: str, scene_id: str, positions: Sequence[int]) -> Views:
    """Pixels of views ``positions`` (indices into ``scene(split, scene_id)``)."""

  def scene(self, split: str, scene_id: str) -> SceneCameras:
    """Cameras of ``scene_id`` in ``split``; KeyError names what exists."""
    table = self._scene_table(split)
    if scene_id not in table:
      raise KeyError(f"{self.name}: no scene {scene_id!r} in split {split!r}; "
                     f"scenes there: {sorted(table)[:10]}")
    return table[scene_id]

  def _scene_table(self, split: str) -> dict:
    cache = self.__dict__.setdefault("_tables", {})
    if split not in cache:
      if split not in self.splits():
        raise KeyError(f"{self.name}: no split {split!r}; splits: {list(self.splits())}")
      cache[split] = {s.scene_id: s for s in self.scenes(split)}
    return cache[split]


def _check_positions(cams: SceneCameras, positions: Sequence[int]) -> np.ndarray:
  pos = np.asarray(positions, np.int64).reshape(-1)
  if pos.size and (pos.min() < 0 or pos.max() >= cams.num_views):
    raise IndexError(f"view positions {pos.tolist()} out of range for scene "
                     f"{cams.scene_id!r} with {cams.num_views} views in this split")
  return pos


class RecordSource(ViewSource):
  """A :class:`ViewSource` over in-memory scene records.

  Args:
    records: scenes with distinct ``scene_id`` s.
    name: used in error messages.
  Raises:
    ValueError: no records, or repeated scene ids.
  """

  def __init__(self, records: Sequence[record.SceneRecord], name: str = "records"):
    if not records:
      raise ValueError(f"{name}: empty scene list")
    ids = [r.scene_id for r in records]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
      raise ValueError(f"{name}: repeated scene ids {dup}")
    self.name = name
    self._records = {r.scene_id: r for r in records}
    self._order = ids

  def splits(self) -> tuple[str, ...]:
    present = {str(s) for r in self._records.values() for s in np.unique(r.split)}
    return tuple(s for s in record.SPLIT_NAMES if s in present) + tuple(
        sorted(present - set(record.SPLIT_NAMES)))

  def scenes(self, split: str) -> list[SceneCameras]:
    out = []
    for sid in self._order:
      rec = self._records[sid]
      if np.any(rec.split == split):
        out.append(SceneCameras.from_record(rec, split))
    return out

  def load(self, split: str, scene_id: str, positions: Sequence[int]) -> Views:
    cams = self.scene(split, scene_id)
    idx = cams.view_ids[_check_positions(cams, positions)]
    rec = self._records[scene_id]
    return Views(rec.images[idx],
                 None if rec.masks is None else rec.masks[idx],
                 None if rec.depths is None else rec.depths[idx])


class TfdsSource(ViewSource):
  """A :class:`ViewSource` over a dataset built by ``movenerf.data.tfds.build``.

  The images are read through ``builder.as_data_source()`` (array_record, no TensorFlow).
  The source pickles without its open files, so grain worker processes reopen them.

  Args:
    path: the dataset version folder (``OUT/<name>/<config>/<version>``, the path the
      build command prints): a local folder, or a URL (``s3://...``, ``gs://...``) whose
      files are mirrored to a local cache when images are first read.
  Raises:
    FileNotFoundError: no built dataset at ``path``.
    ValueError: the dataset was not written by movenerf (no camera metadata).
  """

  def __init__(self, path):
    if storage.is_remote(path):
      path = os.fspath(path).rstrip("/")
      info = storage.join(path, DATASET_INFO)
      try:
        found = storage.is_file(info)
      except Exception as e:  # pylint: disable=broad-except  (fsspec raises many kinds)
        raise FileNotFoundError(f"cannot read the dataset at {path}: "
                                f"{type(e).__name__}: {e}") from None
      if not found:
        raise FileNotFoundError(
            f"no built dataset at {path} (expected {info}); build one with "
            "`python -m movenerf.data.tfds.build --out URL`")
      default_name = storage.path(path).parent.parent.name
    else:
      path = Path(path)
      if not (path / DATASET_INFO).is_file():
        raise FileNotFoundError(
            f"no built dataset at {path} (expected {path / DATASET_INFO}); build one "
            "with `python -m movenerf.data.tfds.build`")
      default_name = path.parent.parent.name
    self.path: Union[Path, str] = path
    meta = _read_metadata(path)
    self.name = str(meta.get("name", default_name))
    self.metadata = meta
    self._cams = {split: [SceneCameras.from_json(d) for d in entries["scenes"]]
                  for split, entries in meta["splits"].items()}
    self._start = {split: {d["scene_id"]: int(d["start"]) for d in entries["scenes"]}
                   for split, entries in meta["splits"].items()}
    self._sources = None
    # TensorFlow Datasets is imported now, in the constructing (main) thread, although
    # images are read later, often in grain's prefetch thread: while it imports, it swaps
    # the interpreter's import function for a lazy one (etils.epy.lazy_imports), and any
    # other thread importing then (orbax restoring a checkpoint) gets a placeholder module.
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_sources"] = None
    return state

  def local_path(self) -> Path:
    """The local folder TFDS reads: ``path``, or the cached mirror of a remote dataset."""
    if isinstance(self.path, Path):
      return self.path
    return mirror_dataset(self.path)

  def _data_sources(self):
    if self._sources is None:
      # TensorFlow Datasets is an optional heavy dependency (seconds to import) that only a
      # built dataset needs: it is imported here and in the constructor, never by
      # processes that use generated or reader-format sources.
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      self._sources = tfds.builder_from_directory(str(self.local_path())).as_data_source()
    return self._sources

  def splits(self) -> tuple[str, ...]:
    return tuple(s for s in self._cams if self._cams[s])

  def scenes(self, split: str) -> list[SceneCameras]:
    if split not in self._cams:
      raise KeyError(f"{self.name}: no split {split!r}; splits: {list(self._cams)}")
    return list(self._cams[split])

  def load(self, split: str, scene_id: str, positions: Sequence[int]) -> Views:
    cams = self.scene(split, scene_id)
    pos = _check_positions(cams, positions)
    source = self._data_sources()[split]
    start = self._start[split][scene_id]
    examples = [source[start + int(p)] for p in pos]
    for p, ex in zip(pos, examples):
      # Records are written in key order; a mismatch means the files were changed.
      got = (_as_str(ex["scene_id"]), int(ex["view_index"]))
      if got != (scene_id, int(cams.view_ids[p])):
        raise ValueError(f"{self.path}: record {start + int(p)} of split {split!r} is "
                         f"{got}, expected {(scene_id, int(cams.view_ids[p]))}")
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
    masks = depths = None
    if examples and "mask" in examples[0]:
      masks = np.stack([np.asarray(ex["mask"])[..., 0] > 0 for ex in examples])
    if examples and "depth" in examples[0]:
      depths = np.stack([np.asarray(ex["depth"], np.float32) for ex in examples])
    return Views(images, masks, depths)


def _as_str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def _read_metadata(path: Union[Path, str]) -> dict:
  meta_path = path / "metadata.json" if isinstance(path, Path) else storage.join(
      path, "metadata.json")
  if not storage.is_file(meta_path):
    raise ValueError(f"{path}: no metadata.json; not a dataset built by movenerf")
  meta = json.loads(storage.read_text(meta_path))
  if "splits" not in meta:
    raise ValueError(f"{meta_path}: no camera table ('splits'); not built by movenerf")
  return meta


def mirror_dataset(url: str) -> Path:
  """A complete local copy of the remote dataset folder ``url``, in the cache.

  A cached copy is reused while its ``dataset_info.json`` equals the remote one (a build
  uploads that file last, and ``--overwrite`` deletes it first). Otherwise the folder is
  downloaded into a temporary sibling and renamed into place, under a lock, so that
  concurrent processes (grain workers) download it once and never see a partial copy.

  Raises:
    FileNotFoundError: ``url`` holds no finished dataset.
    RuntimeError: the remote dataset changed while it was being downloaded.
  """
  import fcntl  # pylint: disable=import-outside-toplevel  (POSIX only)
  cache = storage.cache_dir(url, "datasets")
  cache.parent.mkdir(parents=True, exist_ok=True)
  with open(cache.parent / f".{cache.name}.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      want = storage.read_bytes(storage.join(url, DATASET_INFO))
    except FileNotFoundError:
      raise FileNotFoundError(f"no built dataset at {url} (its {DATASET_INFO} is gone)"
                              ) from None
    if _read_or_none(cache / DATASET_INFO) == want:
      return cache
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.download-", dir=cache.parent))
    try:
      storage.download_tree(url, tmp)
      if _read_or_none(tmp / DATASET_INFO) != want:
        raise RuntimeError(f"{url} changed while it was being downloaded; try again")
      if cache.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{cache.name}.old-", dir=cache.parent))
        os.replace(cache, old / "d")
        shutil.rmtree(old, ignore_errors=True)
      os.replace(tmp, cache)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return cache


def _read_or_none(p: Path) -> Optional[bytes]:
  try:
    return p.read_bytes()
  except FileNotFoundError:
    return None


def load_source(spec) -> ViewSource:
  """A :class:`ViewSource` from a built dataset folder, or records, or a source."""
  if isinstance(spec, ViewSource):
    return spec
  if isinstance(spec, (str, os.PathLike)):
    return TfdsSource(spec)
  return RecordSource(list(spec))
