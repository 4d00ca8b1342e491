"""Input pipeline: training examples from view sources, batched with grain.

A training *example* is one target view's rays with that view's source views, the unit
that GNT / IBRNet train on. Example ``i`` is a pure function of ``(seed, i)``: the
dataset (by mixture weight), the scene, the target view, its source views (a random
subset of the nearest candidates) and the target pixels (some in nearby pairs for the
MoVE consistency loss) all come from ``np.random.default_rng([seed, i])``. So the
example stream needs no shuffle buffer, is the same for any number of worker processes,
and resumes exactly from the iterator state (which is just the next index).

Global step ``s`` consumes examples ``[s * B, (s + 1) * B)`` for a global batch of ``B``
examples; host ``h`` of ``P`` reads the ``h``-th contiguous block of ``B / P`` of them,
and :func:`to_device_batch` splits the host batch over the local devices along ``data``:
the global batch is the same, in the same order, for any number of hosts.

Example layout (``R`` rays, ``V`` source views of ``H x W``, ``Q`` pairs), NumPy:

====================  ===================  ==========================================
key                   shape / dtype        meaning
====================  ===================  ==========================================
``src_images``        [V, H, W, 3] uint8   source images
``src_intrinsics``    [V, 3, 3] float32    source intrinsics (for the H x W above)
``src_c2w``           [V, 4, 4] float32    source camera-to-world (OpenCV)
``tgt_intrinsics``    [3, 3] float32       target intrinsics
``tgt_c2w``           [4, 4] float32       target camera-to-world
``pixels``            [R, 2] int32         target pixels (u, v)
``rgb``               [R, 3] float32       target colours in [0, 1]
``pairs``             [Q, 2] int32         nearby-ray pairs (rows, none in two); (-1, -1) pads
``near``, ``far``     [] float32           depth range of the target and its sources
``ids``               [3] int32            (dataset, scene, target view id)
====================  ===================  ==========================================
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import threading
import time
from typing import Any, Mapping, Optional, Sequence

import grain
from absl import flags
import numpy as np

from movenerf import validation
from movenerf.data import images, samplers, views

# How the target pixels of an example are drawn (ExampleSpec.pixel_mode).
PIXEL_MODES = ("uniform", "center", "mask", "image")


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """What one training example holds and how it is drawn.

  Attributes:
    num_source_views: source views per target (10 in GNT).
    rays_per_example: target rays per example.
    selection: source-view ranking, "position" / "direction" / "combined"
      (``samplers.view_distances``).
    num_candidates: training pool of nearest views the sources are drawn from (None:
      ``ceil(1.5 * num_source_views)``, see ``samplers.select_source_views``).
    pixel_mode: "uniform", "center" (centre crop), "mask" (foreground only, when the
      source has masks) or "image" (every pixel in raster order, for image-level losses
      such as Decoupling-NeRF's SSIM; ``rays_per_example`` must equal H * W, and with
      ``source_size`` the target is resized to it as well).
    center_fraction: crop side fraction for "center".
    pair_fraction: share of the rays that come in nearby pairs (0 disables pairs).
    pair_max_distance: largest pixel distance within a pair.
    target_split, source_split: view splits the targets and their sources come from.
    source_size: optional (H, W) every source image is resized to (intrinsics scaled),
      so that scenes of different sizes batch together.
  """

  num_source_views: int = 10
  rays_per_example: int = 512
  selection: str = "position"
  num_candidates: Optional[int] = None
  pixel_mode: str = "uniform"
  center_fraction: float = 0.5
  pair_fraction: float = 0.0
  pair_max_distance: float = 2.0
  target_split: str = "train"
  source_split: str = "train"
  source_size: Optional[tuple[int, int]] = None

  def __post_init__(self):
    validation.integer("num_source_views", self.num_source_views, minimum=1)
    validation.integer("rays_per_example", self.rays_per_example, minimum=1)
    validation.one_of("selection", self.selection, samplers.METHODS)
    if self.num_candidates is not None:
      validation.integer("num_candidates", self.num_candidates,
                         minimum=self.num_source_views)
    validation.one_of("pixel_mode", self.pixel_mode, PIXEL_MODES)
    validation.number("center_fraction", self.center_fraction, above=0.0, maximum=1.0)
    validation.number("pair_fraction", self.pair_fraction, minimum=0.0, maximum=1.0)
    validation.number("pair_max_distance", self.pair_max_distance, above=0.0)
    if self.source_size is not None:
      if len(self.source_size) != 2:
        raise validation.UsageError(f"source_size={self.source_size!r}: give (H, W)")
      for n in self.source_size:
        validation.integer("source_size[]", n, minimum=1)

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> "ExampleSpec":
    """From a (ConfigDict) mapping; unknown keys are an error that names them."""
    names = {f.name for f in dataclasses.fields(cls)}
    d = dict(cfg)
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown example option(s) {unknown}; allowed: {sorted(names)}")
    if d.get("source_size") is not None:
      d["source_size"] = tuple(int(x) for x in d["source_size"])
    return cls(**d)


class ExampleMaker:
  """``index -> example`` (see the module docstring); picklable for grain workers.

  Args:
    sources: dataset name -> :class:`~movenerf.data.views.ViewSource`.
    weights: dataset name -> mixture weight (default: equal).
    spec: :class:`ExampleSpec`.
    seed: integer seed of the whole stream.
  Raises:
    ValueError: no usable scene in a dataset (too few source views), bad weights.
  """

  def __init__(self, sources: Mapping[str, views.ViewSource],
               weights: Optional[Mapping[str, float]] = None,
               spec: ExampleSpec = ExampleSpec(), seed: int = 0):
    if not sources:
      raise ValueError("empty dataset list: no view sources given")
    weights = dict(weights) if weights is not None else {k: 1.0 for k in sources}
    missing = sorted(set(weights) ^ set(sources))
    if missing:
      raise ValueError(f"weights and sources name different datasets: {missing}")
    probs = samplers.MixtureSampler(weights).probabilities  # validates the weights
    self.names = sorted(sources)
    self.probs = np.array([probs[n] for n in self.names], np.float64)
    self.sources = dict(sources)
    self.spec = spec
    self.seed = int(seed)
    self.scenes = {n: self._usable_scenes(n) for n in self.names}

  def _usable_scenes(self, name: str) -> list:
    src, spec = self.sources[name], self.spec
    if spec.target_split not in src.splits() or spec.source_split not in src.splits():
      raise ValueError(f"dataset {name!r} lacks split {spec.target_split!r} or "
                       f"{spec.source_split!r}; it has {list(src.splits())}")
    same = spec.target_split == spec.source_split
    usable = []
    for cams in src.scenes(spec.target_split):
      try:
        pool = src.scene(spec.source_split, cams.scene_id)
      except KeyError:
        continue
      if pool.num_views - (1 if same else 0) >= spec.num_source_views:
        usable.append(cams.scene_id)
        if spec.pixel_mode == "image":
          h, w = spec.source_size or (cams.height, cams.width)
          if h * w != spec.rays_per_example:
            raise ValueError(
                f"dataset {name!r} scene {cams.scene_id!r}: pixel_mode='image' needs "
                f"rays_per_example = H * W = {h}x{w} = {h * w}, got "
                f"{spec.rays_per_example} (or set source_size)")
    if not usable:
      raise ValueError(
          f"dataset {name!r}: no scene has {spec.num_source_views} source views in split "
          f"{spec.source_split!r} besides the target")
    return usable

  def __call__(self, index: int) -> dict:
    spec = self.spec
    rng = np.random.default_rng([self.seed, int(index)])
    d = int(rng.choice(len(self.names), p=self.probs))
    name = self.names[d]
    src = self.sources[name]
    scene_ids = self.scenes[name]
    s = int(rng.integers(len(scene_ids)))
    tgt_cams = src.scene(spec.target_split, scene_ids[s])
    pool = src.scene(spec.source_split, scene_ids[s])
    t = int(rng.integers(tgt_cams.num_views))
    exclude = None
    if spec.target_split == spec.source_split:
      exclude = [t]  # never give the model its own target as a source
    chosen = samplers.select_source_views(
        tgt_cams.c2w[t], pool.c2w, spec.num_source_views, method=spec.selection,
        exclude=exclude, rng=rng, num_candidates=spec.num_candidates)

    target = src.load(spec.target_split, scene_ids[s], [t])
    sources = src.load(spec.source_split, scene_ids[s], chosen)
    h, w = tgt_cams.height, tgt_cams.width
    tgt_image, tgt_k = target.images[0], tgt_cams.intrinsics[t]
    mask = None
    mode = spec.pixel_mode
    if mode == "mask":
      if target.masks is None:
        raise ValueError(f"pixel_mode='mask' but dataset {name!r} has no masks")
      mask, mode = target.masks[0], "uniform"
    if mode == "image":
      if spec.source_size is not None and tuple(spec.source_size) != (h, w):
        tgt_image = images.resize_image(tgt_image, spec.source_size)
        tgt_k = samplers.scale_intrinsics_for(tgt_k, (h, w), spec.source_size)
        h, w = spec.source_size
      flat, pairs = np.arange(h * w), np.zeros((0, 2), np.int32)
    else:
      flat, pairs = samplers.sample_pixels_with_pairs(
          h, w, spec.rays_per_example, rng, pair_fraction=spec.pair_fraction,
          max_distance=spec.pair_max_distance, mode=mode,
          center_fraction=spec.center_fraction, mask=mask)
    pixels = np.stack([flat % w, flat // w], axis=-1).astype(np.int32)
    rgb = tgt_image.reshape(-1, 3)[flat].astype(np.float32) / 255.0

    src_images = sources.images
    src_k = pool.intrinsics[chosen]
    if spec.source_size is not None and tuple(spec.source_size) != (pool.height, pool.width):
      src_images = np.stack([images.resize_image(im, spec.source_size) for im in src_images])
      src_k = samplers.scale_intrinsics_for(src_k, (pool.height, pool.width),
                                            spec.source_size)
    near, far = _depth_range(tgt_cams, t, pool, chosen)
    return {
        "src_images": src_images,
        "src_intrinsics": src_k.astype(np.float32),
        "src_c2w": pool.c2w[chosen],
        "tgt_intrinsics": np.asarray(tgt_k, np.float32),
        "tgt_c2w": tgt_cams.c2w[t],
        "pixels": pixels,
        "rgb": rgb,
        "pairs": pairs.astype(np.int32),
        "near": np.float32(near),
        "far": np.float32(far),
        "ids": np.array([d, s, tgt_cams.view_ids[t]], np.int32),
    }


def _depth_range(tgt: views.SceneCameras, t: int, pool: views.SceneCameras,
                 chosen: np.ndarray) -> tuple[float, float]:
  near = np.concatenate([tgt.near[t:t + 1], pool.near[chosen]])
  far = np.concatenate([tgt.far[t:t + 1], pool.far[chosen]])
  return samplers.depth_range(near, far, np.arange(near.size))


def process_share(global_batch: int, process_index: int, process_count: int) -> int:
  """Examples per step on this host; the global batch must split evenly."""
  if global_batch % process_count:
    raise ValueError(f"global batch of {global_batch} examples does not split over "
                     f"{process_count} hosts")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return global_batch // process_count


def train_dataset(maker: ExampleMaker, global_batch: int, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
  """Endless per-host batches: element ``s`` is this host's share of global step ``s``.

  Host ``h`` takes the ``h``-th of ``P`` contiguous blocks of examples ``[s * B, (s + 1) *
  B)``: in host order the blocks are the batch one host would read, so the global batch
  is the same for any ``P`` (order matters: the train step's per-example keys follow the
  positions in the global batch).
  """
  per_host = process_share(global_batch, process_index, process_count)
  ds = grain.MapDataset.range(sys.maxsize).map(maker).batch(per_host, drop_remainder=True)
  return ds[process_index::process_count] if process_count > 1 else ds


def _ensure_flags_parsed() -> None:
  """grain reads its absl flags while iterating; outside ``app.run`` (tests, notebooks,
  library use) nothing has parsed them, so mark them parsed with their defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _exit_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
  """grain worker start-up: the worker exits when ``parent``, the process that started
  it, is gone (even after ``kill -9``, which gives it no chance to stop its workers)."""
  del worker_index, worker_count

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class TrainStream:
  """The iterator of :func:`train_iterator`: this host's batches of steps ``s, s + 1, ...``.

  Its state is the next step's number, ``{"next_step": s}`` (JSON bytes, the form grain's
  orbax handler saves for a non-grain iterator), so a checkpoint resumes with any number
  of worker processes. The grain iterator (and its workers) starts at the first ``next``.
  """

  def __init__(self, dataset: grain.MapDataset, num_workers: int, buffer_size: int,
               next_step: int = 0):
    self._dataset, self._workers, self._buffer = dataset, num_workers, buffer_size
    self.next_step = int(next_step)
    self._it = None

  def _start(self):
    ds = self._dataset[self.next_step:].to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=self._buffer))
    if self._workers > 0:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._workers, per_worker_buffer_size=self._buffer),
          worker_init_fn=functools.partial(_exit_with_parent, os.getpid()))
    return iter(ds)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      self._it = self._start()
    batch = next(self._it)
    self.next_step += 1
    return batch

  def get_state(self) -> bytes:
    return json.dumps({"next_step": self.next_step}).encode()

  def set_state(self, state: bytes | str | Mapping) -> None:
    """Moves to a saved position (bytes / str of JSON, or the dict)."""
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    if not isinstance(state, Mapping) or "next_step" not in state:
      raise ValueError("the saved data position is not a movenerf stream position "
                       f"({{'next_step': N}}): {str(state)[:80]}")
    self.close()
    self.next_step = int(state["next_step"])

  def start_prefetch(self) -> None:
    """Part of the iterator protocol grain's checkpoint handler uses; starts nothing
    (the stream starts at the first ``next``)."""

  def close(self) -> None:
    """Stops the worker processes (if started)."""
    if self._it is not None:
      close = getattr(self._it, "close", None)
      if close is not None:
        close()
      self._it = None


def train_iterator(maker: ExampleMaker, global_batch: int, num_workers: int = 0,
                   process_index: int = 0, process_count: int = 1,
                   buffer_size: int = 2, state: Optional[Mapping] = None) -> TrainStream:
  """A :class:`TrainStream` over :func:`train_dataset`, optionally restored from ``state``.

  Args:
    num_workers: worker processes that build examples (0: in this process, with a
      prefetch thread); they exit with this process.
    buffer_size: batches each worker keeps ready.
    state: a previous ``iterator.get_state()`` (saved with the checkpoint) to resume
      from, with any ``num_workers``.
  """
  _ensure_flags_parsed()
  it = TrainStream(train_dataset(maker, global_batch, process_index, process_count),
                   num_workers, buffer_size)
  if state is not None:
    it.set_state(state)
  return it


def to_device_batch(batch: Mapping[str, np.ndarray], mesh, axis: str = "data"):
  """Host batch (leading axis: this host's examples) -> global jax.Arrays sharded on
  ``axis`` of ``mesh``; every device gets a contiguous run of examples."""
  import jax  # pylint: disable=g-import-not-at-top  (data code stays importable without JAX)
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  sharding = NamedSharding(mesh, PartitionSpec(axis))
  # The mesh rows along ``axis`` that hold this process's devices (their examples).
  rows = np.moveaxis(mesh.devices, mesh.axis_names.index(axis), 0).reshape(mesh.shape[axis], -1)
  me = jax.process_index()
  n = sum(any(d.process_index == me for d in row) for row in rows)
  for k, v in batch.items():
    if v.shape[0] % max(1, n):
      raise ValueError(f"batch[{k!r}] has {v.shape[0]} examples, not a multiple of the "
                       f"{n} rows of mesh axis {axis!r} on this process")
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


# ----------------------------------------------------------------------------- evaluation


def eval_examples(source: views.ViewSource, num_source_views: int = 10,
                  target_split: str = "test", source_split: str = "train",
                  selection: str = "position", scene_ids: Optional[Sequence[str]] = None,
                  max_views_per_scene: Optional[int] = None,
                  image_size: Optional[Sequence[int]] = None):
  """Every held-out view with its nearest source views, in a fixed order.

  Yields dicts like a training example but with the whole target: ``tgt_image``
  [H, W, 3] uint8 (plus ``tgt_mask`` / ``tgt_depth`` when the source has them), no
  ``pixels`` / ``rgb`` / ``pairs``, and ``scene_id`` / ``view_id``. Source views are the
  ``num_source_views`` closest by ``selection`` (no randomness). With ``image_size``
  (H, W), target and source images are resized to it (box filter; masks and depths
  nearest) and their intrinsics scaled, e.g. for models trained at a fixed size.
  """
  ids = scene_ids or [c.scene_id for c in source.scenes(target_split)]
  for sid in ids:
    tgt_cams = source.scene(target_split, sid)
    pool = source.scene(source_split, sid)
    count = tgt_cams.num_views
    if max_views_per_scene is not None:
      count = min(count, max_views_per_scene)
    for t in range(count):
      exclude = [t] if target_split == source_split else None
      chosen = samplers.select_source_views(tgt_cams.c2w[t], pool.c2w, num_source_views,
                                            method=selection, exclude=exclude)
      target = source.load(target_split, sid, [t])
      src = source.load(source_split, sid, chosen)
      near, far = _depth_range(tgt_cams, t, pool, chosen)
      ex = {
          "scene_id": sid,
          "view_id": int(tgt_cams.view_ids[t]),
          "src_images": src.images,
          "src_intrinsics": pool.intrinsics[chosen],
          "src_c2w": pool.c2w[chosen],
          "tgt_intrinsics": tgt_cams.intrinsics[t],
          "tgt_c2w": tgt_cams.c2w[t],
          "tgt_image": target.images[0],
          "near": np.float32(near),
          "far": np.float32(far),
      }
      if target.masks is not None:
        ex["tgt_mask"] = target.masks[0]
      if target.depths is not None:
        ex["tgt_depth"] = target.depths[0]
      if image_size is not None:
        ex = resize_example(ex, tuple(int(x) for x in image_size))
      yield ex


def resize_example(ex: dict, hw: tuple[int, int]) -> dict:
  """An evaluation example with every image resized to ``hw`` and intrinsics scaled."""
  th, tw = ex["tgt_image"].shape[:2]
  sh, sw = ex["src_images"].shape[1:3]
  ex = dict(ex)
  ex["tgt_image"] = images.resize_image(ex["tgt_image"], hw)
  ex["tgt_intrinsics"] = samplers.scale_intrinsics_for(ex["tgt_intrinsics"], (th, tw), hw)
  ex["src_images"] = np.stack([images.resize_image(im, hw) for im in ex["src_images"]])
  ex["src_intrinsics"] = samplers.scale_intrinsics_for(ex["src_intrinsics"], (sh, sw), hw)
  for key in ("tgt_mask", "tgt_depth"):
    if key in ex:
      ex[key] = images.resize_nearest(ex[key], hw)
  return ex

