"""The TFDS builder that turns multi-view datasets into ``array_record`` files.

:class:`MultiViewBuilder` serves every format of :mod:`movenerf.data.formats.registry`:
the on-disk formats (read by the readers of :mod:`movenerf.data.formats`) and
``generated`` (the procedural scenes of :mod:`movenerf.data.procedural`). The
TFDS-convention entry points, one per format, are
``movenerf/data/tfds/catalog/<format>/<format>_dataset_builder.py``; the build command is
:mod:`movenerf.data.tfds.build`. Building and reading need no TensorFlow: images go to
TFDS as PNG bytes and the files are read with ``as_data_source()``.

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

import io
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from movenerf.data import procedural, views
from movenerf.data.formats import record, registry

VERSION = "1.0.0"
# Records of a build are kept in memory between the validation pass and the writing pass
# while they fit in this many bytes; bigger datasets are read twice instead.
_KEEP_IN_MEMORY_BYTES = 2 << 30


# ----------------------------------------------------------------------------- builder


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


class MultiViewBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds one format into per-view ``array_record`` examples (see the module docstring).

  Args:
    fmt: a name from :func:`movenerf.data.formats.registry.format_names`.
    src: folder with the scenes (or one scene); defaults to the TFDS ``manual_dir``.
      Not used by "generated".
    scenes: optional scene folder names to include (default: every scene under ``src``).
    options: reader options (``registry.FORMATS[fmt].options`` /
      ``registry.GENERATED_OPTIONS`` list them with their defaults).
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
    self.reader_options = registry.parse_options(fmt, options or {})
    self.name = fmt  # per instance: one builder class serves every format
    self._src = None if src is None else Path(src)
    self._scene_names = list(scenes) if scenes else None
    kwargs.setdefault("file_format", "array_record")
    config = tfds.core.BuilderConfig(name=registry.config_name(self.reader_options),
                                     description=f"reader options {self.reader_options}")
    super().__init__(config=config, **kwargs)

  @property
  def has_masks(self) -> bool:
    return self.fmt == registry.GENERATED or registry.FORMATS[self.fmt].has_masks

  @property
  def has_depths(self) -> bool:
    return self.fmt == registry.GENERATED

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
    desc = ("Procedural multi-view scenes" if self.fmt == registry.GENERATED
            else registry.FORMATS[self.fmt].description)
    return tfds.core.DatasetInfo(
        builder=self,
        description=desc + "; one example per view, OpenCV camera-to-world poses.",
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)  # keeps each scene's views consecutive (see TfdsSource)

  # The two passes: validate and index every scene, then write.

  def _scene_sources(self, dl_manager) -> list:
    if self.fmt == registry.GENERATED:
      o = self.reader_options
      return list(range(o["first_seed"], o["first_seed"] + o["num_scenes"]))
    src = self._src
    if src is None:
      src = Path(dl_manager.manual_dir) if dl_manager is not None else None
    if src is None:
      raise ValueError(f"{self.fmt}: no source folder given (src or manual_dir)")
    return registry.find_scenes(registry.FORMATS[self.fmt], src, self._scene_names)

  def _read(self, item) -> record.SceneRecord:
    if self.fmt == registry.GENERATED:
      return procedural.generated_record(item, self.reader_options)
    return registry.FORMATS[self.fmt].reader(item, **self.reader_options)

  def _split_generators(self, dl_manager):
    items = self._scene_sources(dl_manager)
    if not items:
      raise ValueError(f"empty scene list: {self.fmt} options {self.reader_options} "
                       "select no scenes")
    no_test = registry.no_test_split(self.fmt, self.reader_options)
    if no_test:
      logging.warning(no_test)
    tables: dict[str, list] = {s: [] for s in record.SPLIT_NAMES}
    kept, kept_bytes, ids = {}, 0, {}
    for i, item in enumerate(items):
      rec = self._read(item)
      if rec.scene_id in ids:
        raise ValueError(f"scene id {rec.scene_id!r} of {item} repeats that of {ids[rec.scene_id]}")
      ids[rec.scene_id] = item
      unknown = sorted(set(np.unique(rec.split).tolist()) - set(record.SPLIT_NAMES))
      if unknown:
        raise ValueError(f"{item}: unknown split names {unknown}")
      for split in record.SPLIT_NAMES:
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
        if not (no_test and split == "test"):  # the llffhold line said so
          logging.warning("%s: no scene has %s views; skipping the %s split", self.fmt,
                          split, split)
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
