"""The dataset formats by name: how to find, configure and read the scenes of each.

:data:`FORMATS` maps an on-disk format name to its :class:`Format` (reader, the marker file
that makes a folder a scene, the reader options with their defaults); :data:`GENERATED`
names the procedural scenes of :mod:`movenerf.data.procedural`, whose options are
:data:`GENERATED_OPTIONS`. The TFDS builders (:mod:`movenerf.data.tfds.builders`), the
build command and the config sources (:mod:`movenerf.data.sources`) all look formats up
here; nothing here imports TensorFlow Datasets.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from movenerf.data.formats import ibrnet, llff, nerf_synthetic, record


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
  reader: Callable[..., record.SceneRecord]
  marker: str
  description: str
  has_masks: bool = False
  scene_parent: Optional[str] = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


FORMATS: dict[str, Format] = {
    f.name: f for f in [
        Format("nerf_synthetic", nerf_synthetic.read_nerf_synthetic, "transforms_*.json",
               "NeRF Blender scenes: transforms_{train,val,test}.json + RGBA PNGs",
               options={"white_background": True, "downsample": 1}),
        Format("llff", llff.read_llff, "poses_bounds.npy",
               "LLFF forward-facing captures: poses_bounds.npy + images_N/",
               options={"factor": 8, "llffhold": 8}),
        Format("dtu", llff.read_dtu, "poses_bounds.npy",
               "DTU scans, LLFF-style poses + images_N/ + mask_N/", has_masks=True,
               options={"factor": 8, "llffhold": 8}),
        # The IBRNet / GNT training collection (see movenerf.data.formats.ibrnet).
        Format("google_scanned_objects", ibrnet.read_google_scanned_objects, "pose",
               "IBRNet's Google Scanned Objects renderings: rgb/ + pose/ + intrinsics/",
               options={"downsample": 1}),
        Format("ibrnet_collected", ibrnet.read_ibrnet_collected, "poses_bounds.npy",
               "IBRNet-collected scenes (LLFF layout; factor 0 picks IBRNet's folder)",
               options={"factor": 0, "llffhold": 0}),
        Format("realestate10k", ibrnet.read_realestate10k, "*.png",
               "RealEstate10K frames/<scene>/*.png + cameras/<scene>.txt",
               scene_parent="frames", options={"downsample": 1}),
        # Real Spaces rigs mix image heights (e.g. 467-489 px), so the build crops them to
        # the smallest size (the reader's default "error" would reject every real scene).
        Format("spaces", ibrnet.read_spaces, "models.json",
               "Spaces (DeepView) rigs: models.json + cam_XX/ images",
               options={"downsample": 1, "mixed_sizes": "crop"}),
    ]
}
GENERATED = "generated"
GENERATED_OPTIONS = {"kind": "object", "num_scenes": 8, "first_seed": 0, "num_views": 20,
                     "height": 64, "width": 64, "holdout_every": 8}


def format_names() -> list[str]:
  """Every format name: the on-disk formats, sorted, then :data:`GENERATED`."""
  return sorted(FORMATS) + [GENERATED]


def check_format(name: str) -> None:
  """Raises ValueError, listing the known formats, unless ``name`` is one of them."""
  if name not in FORMATS and name != GENERATED:
    raise ValueError(f"unknown dataset format {name!r}; known formats: "
                     f"{', '.join(format_names())}")


def parse_options(fmt: str, options: Mapping[str, Any]) -> dict:
  """Validated reader options with defaults filled in.

  Args:
    fmt: a name from :func:`format_names`.
    options: option name -> value; strings (from the command line) are converted to the
      default's type.

  Returns:
    Every option of ``fmt``: the defaults, overridden by ``options``.

  Raises:
    ValueError: unknown format, an unknown option (named), a string that does not
      convert to the default's type, or an ``llffhold`` < 0.
  """
  check_format(fmt)
  defaults = dict(GENERATED_OPTIONS if fmt == GENERATED else FORMATS[fmt].options)
  unknown = sorted(set(options) - set(defaults))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for format {fmt!r}; "
                     f"allowed: {sorted(defaults)}")
  out = dict(defaults)
  for k, v in options.items():
    out[k] = _coerce(k, v, defaults[k])
  if "llffhold" in out:
    try:
      llff.check_llffhold(out["llffhold"])
    except (TypeError, ValueError) as e:
      raise ValueError(f"option {e}") from None
  return out


def no_test_split(fmt: str, options: Mapping[str, Any]) -> Optional[str]:
  """One line saying that ``options`` hold out no test views although ``fmt`` holds
  some out by default (``llffhold=0`` for llff or dtu); None otherwise."""
  if fmt in FORMATS and options.get("llffhold") == 0 and FORMATS[fmt].options.get(
      "llffhold", 0) > 0:
    return (f"{fmt}: option llffhold=0 holds out no test views (every view is a train "
            f"view; the default llffhold={FORMATS[fmt].options['llffhold']} makes every "
            f"{FORMATS[fmt].options['llffhold']}th view a test view)")
  return None


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


def find_scenes(fmt: Format, root: Path, names: Optional[Sequence[str]] = None) -> list[Path]:
  """Scene folders under ``root`` (``root`` itself if it is a scene), sorted by name.

  Args:
    fmt: the format; a folder is a scene when it holds a file matching ``fmt.marker``.
    root: folder of scenes, or one scene; its ``fmt.scene_parent`` subfolder, when it
      exists, is searched instead.
    names: scene folder names to take (default: every scene found).

  Returns:
    The scene folders.

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


def read_scene(format_name: str, scene_dir, **kwargs) -> record.SceneRecord:
  """Reads one scene with the reader of an on-disk format.

  Args:
    format_name: a key of :data:`FORMATS` (not :data:`GENERATED`: generated scenes have
      no folder; see :func:`movenerf.data.procedural.generated_record`).
    scene_dir: the scene folder.
    **kwargs: reader options; those not given take the reader's own defaults.

  Returns:
    The scene's record.

  Raises:
    ValueError: unknown format (the message lists the allowed ones), or bad input.
    FileNotFoundError: a missing file or folder.
  """
  fmt = FORMATS.get(format_name)
  if fmt is None:
    raise ValueError(f"unknown dataset format {format_name!r}; allowed formats: "
                     f"{sorted(FORMATS)}")
  return fmt.reader(scene_dir, **kwargs)
