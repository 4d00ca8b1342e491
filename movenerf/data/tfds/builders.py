"""TFDS builders that turn multi-view datasets on disk into ``array_record`` files.

One builder per on-disk format (the readers in :mod:`movenerf.data.formats.record` and
:mod:`movenerf.data.formats.ibrnet` parse them) plus ``generated`` (the procedural scenes
of :mod:`movenerf.data.procedural`). Building and reading need no TensorFlow: images go
to TFDS as PNG bytes and the files are read with ``as_data_source()``.

Layout of a built dataset (``OUT/<format>/<config>/1.0.0/``):

* one TFDS split per *view* split ("train", "val", "test") that has views; a split no
  scene has (e.g. Blender without ``transforms_val.json``) is skipped with a warning;
* one example per view: ``scene_id``, ``view_index`` (index in the whole scene),
  ``image`` [H, W, 3] uint8 PNG, ``intrinsics`` [3, 3], ``c2w`` [4, 4] (OpenCV camera
  frame, see :mod:`movenerf.geometry.cameras`), ``near``, ``far``; ``mask`` [H, W, 1] for DTU and
  ``generated``, ``depth`` [H, W] float32 for ``generated``;
* examples in key order (shuffling disabled), so the views of a scene are consecutive;
* ``metadata.json``: the camera table of every scene per split (and where its views
  start), which :class:`movenerf.data.views.TfdsSource` uses to pick source views
  without decoding images.

Every scene is read and validated before anything is generated, so bad input fails
before TFDS starts writing; ``movenerf.data.tfds.build`` also builds into a temporary
folder and moves the result into place only on success.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from movenerf.data.formats import ibrnet as ibrnet_readers, record as readers
from movenerf.data import procedural, views

VERSION = "1.0.0"
# Records of a build are kept in memory between the validation pass and the writing pass
# while they fit in this many bytes; bigger datasets are read twice instead.
_KEEP_IN_MEMORY_BYTES = 2 << 30


@dataclasses.dataclass(frozen=True)
class Format:
  """How to find and read the scenes of one on-disk format.

  Attributes:
    name: format name (the builder's name).
    reader: ``(scene_dir, **options) -> SceneRecord``.
    marker: a file (glob pattern) whose presence marks a folder as a scene.
    description: one line for ``--help`` and the dataset info.
    scene_parent: subfolder of ``--src`` that holds the scenes when it exists (RealEstate10K
      keeps them in ``frames/``).
    has_masks: examples carry a ``mask`` feature.
    options: reader keyword arguments the builder accepts, with their defaults.
  """

  name: str
  reader: Callable[..., readers.SceneRecord]
  marker: str
  description: str
  has_masks: bool = False
  scene_parent: Optional[str] = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


FORMATS: dict[str, Format] = {
    f.name: f for f in [
        Format("nerf_synthetic", readers.read_nerf_synthetic, "transforms_*.json",
               "NeRF Blender scenes: transforms_{train,val,test}.json + RGBA PNGs",
               options={"white_background": True, "downsample": 1}),
        Format("llff", readers.read_llff, "poses_bounds.npy",
               "LLFF forward-facing captures: poses_bounds.npy + images_N/",
               options={"factor": 8, "llffhold": 8}),
        Format("dtu", readers.read_dtu, "poses_bounds.npy",
               "DTU scans, LLFF-style poses + images_N/ + mask_N/", has_masks=True,
               options={"factor": 8, "llffhold": 8}),
        # The IBRNet / GNT training collection (see movenerf.data.formats.ibrnet).
        Format("google_scanned_objects", ibrnet_readers.read_google_scanned_objects, "pose",
               "IBRNet's Google Scanned Objects renderings: rgb/ + pose/ + intrinsics/",
               options={"downsample": 1}),
        Format("ibrnet_collected", ibrnet_readers.read_ibrnet_collected, "poses_bounds.npy",
               "IBRNet-collected scenes (LLFF layout; factor 0 picks IBRNet's folder)",
               options={"factor": 0, "llffhold": 0}),
        Format("realestate10k", ibrnet_readers.read_realestate10k, "*.png",
               "RealEstate10K frames/<scene>/*.png + cameras/<scene>.txt",
               scene_parent="frames", options={"downsample": 1}),
        # Real Spaces rigs mix image heights (e.g. 467-489 px), so the build crops them to
        # the smallest size (the reader's default "error" would reject every real scene).
        Format("spaces", ibrnet_readers.read_spaces, "models.json",
               "Spaces (DeepView) rigs: models.json + cam_XX/ images",
               options={"downsample": 1, "mixed_sizes": "crop"}),
    ]
}
GENERATED = "generated"


def format_names() -> list[str]:
  return sorted(FORMATS) + [GENERATED]


def check_format(name: str) -> None:
  if name not in FORMATS and name != GENERATED:
    raise ValueError(f"unknown dataset format {name!r}; known formats: "
                     f"{', '.join(format_names())}")


def parse_options(fmt: str, options: Mapping[str, Any]) -> dict:
  """Validated reader options with defaults filled in; ValueError names unknown keys."""
  check_format(fmt)
  defaults = dict(GENERATED_OPTIONS if fmt == GENERATED else FORMATS[fmt].options)
  unknown = sorted(set(options) - set(defaults))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for format {fmt!r}; "
                     f"allowed: {sorted(defaults)}")
  out = dict(defaults)
  for k, v in options.items():
    out[k] = _coerce(k, v, defaults[k])
  return out


def _coerce(key: str, value, default):
  """Command-line strings -> the default's type (bool, int, float or str)."""
  if not isinstance(value, str) or isinstance(default, str):
    return value
  try:
    if isinstance(default, bool):
      if value.lower() in ("1", "true", "yes"):
        return True
      if value.lower() in ("0", "false", "no"):
        return False
      raise ValueError(value)
    return type(default)(value)
  except ValueError:
    raise ValueError(f"option {key}={value!r}: expected a {type(default).__name__}") from None


def config_name(options: Mapping[str, Any]) -> str:
  """A stable TFDS config name from the options, e.g. ``factor-8_llffhold-8``."""
  if not options:
    return "default"
  parts = [f"{k}-{_fmt(v)}" for k, v in sorted(options.items())]
  return re.sub(r"[^A-Za-z0-9_.\-]", "-", "_".join(parts))


def _fmt(v) -> str:
  return str(int(v)) if isinstance(v, bool) else str(v)


# ----------------------------------------------------------------------------- scenes


def find_scenes(fmt: Format, root: Path, names: Optional[Sequence[str]] = None) -> list[Path]:
  """Scene folders under ``root`` (``root`` itself if it is a scene), sorted by name.

  Raises:
    FileNotFoundError: ``root`` or a named scene does not exist.
    ValueError: no scene found (the empty scene list).
  """
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"source folder not found: {root}")

  def is_scene(d: Path) -> bool:
    return any(d.glob(fmt.marker))

  if fmt.scene_parent and (root / fmt.scene_parent).is_dir():
    root = root / fmt.scene_parent
  if names:
    dirs = [root / n for n in names]
    for d in dirs:
      if not d.is_dir():
        raise FileNotFoundError(f"scene folder not found: {d}")
  elif is_scene(root):
    dirs = [root]
  else:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and is_scene(d))
  if not dirs:
    raise ValueError(f"empty scene list: no {fmt.name} scenes under {root} "
                     f"(a scene is a folder containing {fmt.marker})")
  return dirs


GENERATED_OPTIONS = {"kind": "object", "num_scenes": 8, "first_seed": 0, "num_views": 20,
                     "height": 64, "width": 64, "holdout_every": 8}


def generated_record(seed: int, options: Mapping[str, Any]) -> readers.SceneRecord:
  """Procedural scene ``seed`` under the "generated" options.

  ``options["kind"]`` is "object", "forward" or "mixed" (alternating by seed, even seeds
  object-centric).
  """
  kind = options["kind"]
  if kind == "mixed":
    kind = procedural.KINDS[seed % len(procedural.KINDS)]
  return procedural.make_record(seed, kind, options["num_views"], options["height"],
                                options["width"], options["holdout_every"])


# ----------------------------------------------------------------------------- builder


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


class MultiViewBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds one format into per-view ``array_record`` examples (see the module docstring).

  Args:
    fmt: a name from :func:`format_names`.
    src: folder with the scenes (or one scene); defaults to the TFDS ``manual_dir``.
      Not used by "generated".
    scenes: optional scene folder names to include (default: every scene under ``src``).
    options: reader options (see ``FORMATS[fmt].options`` / ``GENERATED_OPTIONS``).
    **kwargs: ``tfds.core.GeneratorBasedBuilder`` arguments (``data_dir``,
      ``file_format`` defaults to "array_record").
  """

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "First release: per-view examples with cameras in metadata."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download the dataset in its original layout and pass its folder as `src` "
      "(or --src to `python -m movenerf.data.tfds.build`).")

  def __init__(self, fmt: str, src=None, scenes: Optional[Sequence[str]] = None,
               options: Optional[Mapping[str, Any]] = None, **kwargs):
    self.fmt = fmt
    self.reader_options = parse_options(fmt, options or {})
    self.name = fmt  # per instance: one builder class serves every format
    self._src = None if src is None else Path(src)
    self._scene_names = list(scenes) if scenes else None
    kwargs.setdefault("file_format", "array_record")
    config = tfds.core.BuilderConfig(name=config_name(self.reader_options),
                                     description=f"reader options {self.reader_options}")
    super().__init__(config=config, **kwargs)

  @property
  def has_masks(self) -> bool:
    return self.fmt == GENERATED or FORMATS[self.fmt].has_masks

  @property
  def has_depths(self) -> bool:
    return self.fmt == GENERATED

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "scene_id": tfds.features.Text(),
        "view_index": np.int32,
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
        "intrinsics": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
        "c2w": tfds.features.Tensor(shape=(4, 4), dtype=np.float32),
        "near": np.float32,
        "far": np.float32,
    }
    if self.has_masks:
      features["mask"] = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    if self.has_depths:
      features["depth"] = tfds.features.Tensor(shape=(None, None), dtype=np.float32,
                                               encoding="zlib")
    desc = ("Procedural multi-view scenes" if self.fmt == GENERATED
            else FORMATS[self.fmt].description)
    return tfds.core.DatasetInfo(
        builder=self,
        description=desc + "; one example per view, OpenCV camera-to-world poses.",
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)  # keeps each scene's views consecutive (see TfdsSource)

  # The two passes: validate and index every scene, then write.

  def _scene_sources(self, dl_manager) -> list:
    if self.fmt == GENERATED:
      o = self.reader_options
      return list(range(o["first_seed"], o["first_seed"] + o["num_scenes"]))
    src = self._src
    if src is None:
      src = Path(dl_manager.manual_dir) if dl_manager is not None else None
    if src is None:
      raise ValueError(f"{self.fmt}: no source folder given (src or manual_dir)")
    return find_scenes(FORMATS[self.fmt], src, self._scene_names)

  def _read(self, item) -> readers.SceneRecord:
    if self.fmt == GENERATED:
      return generated_record(item, self.reader_options)
    return FORMATS[self.fmt].reader(item, **self.reader_options)

  def _split_generators(self, dl_manager):
    items = self._scene_sources(dl_manager)
    if not items:
      raise ValueError(f"empty scene list: {self.fmt} options {self.reader_options} "
                       "select no scenes")
    tables: dict[str, list] = {s: [] for s in readers.SPLIT_NAMES}
    kept, kept_bytes, ids = {}, 0, {}
    for i, item in enumerate(items):
      rec = self._read(item)
      if rec.scene_id in ids:
        raise ValueError(f"scene id {rec.scene_id!r} of {item} repeats that of {ids[rec.scene_id]}")
      ids[rec.scene_id] = item
      unknown = sorted(set(np.unique(rec.split).tolist()) - set(readers.SPLIT_NAMES))
      if unknown:
        raise ValueError(f"{item}: unknown split names {unknown}")
      for split in readers.SPLIT_NAMES:
        if np.any(rec.split == split):
          tables[split].append(views.SceneCameras.from_record(rec, split))
      kept_bytes += rec.images.nbytes
      if kept_bytes <= _KEEP_IN_MEMORY_BYTES:
        kept[i] = rec
    if kept_bytes > _KEEP_IN_MEMORY_BYTES:
      kept = {}
    meta = {"name": self.fmt, "format": self.fmt, "options": self.reader_options,
            "scene_sources": [str(i) for i in items], "splits": {}}
    gens = {}
    for split, scenes in tables.items():
      if not scenes:
        logging.warning("%s: no scene has %s views; skipping the %s split", self.fmt, split,
                        split)
        continue
      start, entries = 0, []
      for cams in scenes:
        entries.append(dict(cams.to_json(), start=start))
        start += cams.num_views
      meta["splits"][split] = {"num_views": start, "scenes": entries}
      gens[split] = self._generate_examples(split=split, items=items, kept=kept)
    if not gens:
      raise ValueError("empty scene list: no views in any split")
    self.info.metadata.update(meta)
    return gens

  def _generate_examples(self, split: str, items: list, kept: dict):
    for scene_index, item in enumerate(items):
      rec = kept.get(scene_index)
      if rec is None:
        rec = self._read(item)
      for view in rec.split_indices(split):
        ex = {
            "scene_id": rec.scene_id,
            "view_index": int(view),
            "image": _png(rec.images[view]),
            "intrinsics": rec.intrinsics[view],
            "c2w": rec.c2w[view],
            "near": np.float32(rec.near[view]),
            "far": np.float32(rec.far[view]),
        }
        if self.has_masks:
          if rec.masks is None:
            raise ValueError(f"{item}: {self.fmt} scenes must have masks")
          ex["mask"] = _png((rec.masks[view] * 255).astype(np.uint8))
        if self.has_depths:
          ex["depth"] = rec.depths[view].astype(np.float32)
        # Zero-padded keys sort in generation order, the order the records are read back in.
        yield f"{scene_index:06d}_{int(view):06d}", ex
