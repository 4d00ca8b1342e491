"""The published zero-shot evaluation protocols, frozen as view indices.

A :class:`Protocol` says which scenes, which held-out (target) views, which source views,
at which resolution and with which background the published GNT / IBRNet numbers were
computed; each protocol's docstring cites the official file and function for every rule.
The rules are re-implemented here (:func:`holdout_targets`, :func:`nearest_views`) and
applied to the camera poses of a dataset by :func:`build_index`; the result is committed
as ``movenerf/evaluation/protocol_index/<name>.json`` (:func:`load_index`), written by

  python -m movenerf.tools.make_protocol_index --protocol NAME --data_root DIR

so that every user evaluates the same views. :func:`protocol_examples` turns an index and
the local data into evaluation examples (the dicts ``movenerf.data.pipeline.eval_examples``
yields), :func:`differences` lists every way the local data differs from the protocol and
:func:`run_protocol_eval` scores a model and the nearest-source-view baseline on them.

Data root layout (the folder names of the official downloads)::

  DIR/nerf_synthetic/<scene>/transforms_{train,test}.json, train/, test/
  DIR/nerf_llff_data/<scene>/poses_bounds.npy, images_4/ (or images_8/, ...)
  DIR/dtu/<scan>/ (``scan8`` or ``dtu_scan8``), poses_bounds.npy, images_N/, mask_N/
  DIR/shiny/<scene>/poses_bounds.npy, images_8/

View numbering in the index (the ids in ``targets`` / ``sources``):

* llff, shiny, dtu: the view's position among the scene's images sorted by file name
  (0-based), which is the row of ``poses_bounds.npy``, the ``view_id`` movenerf's
  ``llff`` / ``dtu`` readers give it, and the index into ``rgb_files`` of the official
  loaders.
* nerf_synthetic: the frame number in the image name, ``test/r_8`` -> target 8,
  ``train/r_5`` -> source 5 (targets are test frames, sources train frames). In the
  official ``transforms_<split>.json`` this number is the frame's position in the file.
  movenerf's ``nerf_synthetic`` reader numbers views over all splits read (train first),
  so its ``view_id`` differs; :func:`load_local_scene` maps between the two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as importlib_metadata
import json
import re
import resource
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from movenerf import storage
from movenerf.data import images as image_ops
from movenerf.data import pipeline
from movenerf.data.formats import record as record_lib
from movenerf.data.formats import registry
from movenerf.evaluation import evaluate, hosts, visualize
from movenerf.image import metrics as image_metrics
from movenerf.validation import UsageError

INDEX_DIR = Path(__file__).resolve().parent / "protocol_index"
# The per-view scores (the same names as the evaluation's rows).
METRICS = ("psnr", "ssim", "lpips_alex", "lpips_vgg")
LPIPS_NETS = ("alex", "vgg")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """One published evaluation protocol.

  Attributes:
    name: the protocol's name (``--protocol NAME``).
    format: the movenerf dataset format that reads its scenes
      (``movenerf.data.formats.registry.FORMATS``).
    dataset_dir: the folder under the data root that holds the scenes.
    scenes: the evaluated scenes, in the order of the published tables.
    view_counts: per scene, the views of the original dataset: ``{"all": N}`` (llff,
      dtu) or ``{"train": N, "test": M}`` (nerf_synthetic); empty when unknown.
    image_size: (H, W) of the images the official code scores (None: per scene, as
      stored in the official image folder).
    image_folder: the official image folder (``images_4``; "" for nerf_synthetic).
    downscale: the official downscale factor of the original captures.
    target_split: "test" (nerf_synthetic test frames) or "all" (every view of the scene).
    target_every: targets are every ``target_every``-th view of ``target_split``,
      starting with the first (0: every view not a source view).
    source_split: "train" or "all" (every view that is not a target).
    num_source_views: source views per target.
    source_rule: "dist" (nearest camera centres), "vector" (smallest angle between the
      camera centres seen from the origin) or "fixed" (``fixed_sources`` for every
      target).
    fixed_sources: the source view ids of a "fixed" rule, in order.
    background: how RGBA images are flattened ("white") or "none" (RGB captures).
    masks: whether the scores are masked ("none": the whole image is scored).
    near_far: the official depth range rule, in words.
    near_far_fixed: (near, far) used for every view, or None.
    near_far_scale: (a, b): near = a * min(bounds), far = b * max(bounds) over the
      scene's views, or None.
    lpips_net: the LPIPS network of the published figures ("alex" or "vgg").
    render_stride: the pixel stride the official GNT evaluation scores at (GNT's
      configs set ``render_stride = 2``: every 2nd row and column).
    official: the official code each rule comes from (file and function).
    world_frame: the frame the cameras are evaluated in: "stored" (as the dataset stores
      them) or "llff_recentred" (`llff_official_frame`: IBRNet's ``load_llff_data``
      with ``bd_factor=0.75, recenter=True``, which the near / far rule then uses).
  """

  name: str
  format: str
  dataset_dir: str
  scenes: tuple[str, ...]
  view_counts: Mapping[str, Mapping[str, int]]
  image_size: Optional[tuple[int, int]]
  image_folder: str
  downscale: int
  target_split: str
  target_every: int
  source_split: str
  num_source_views: int
  source_rule: str
  fixed_sources: tuple[int, ...]
  background: str
  masks: str
  near_far: str
  near_far_fixed: Optional[tuple[float, float]]
  near_far_scale: Optional[tuple[float, float]]
  lpips_net: str
  render_stride: int
  official: str
  world_frame: str = "stored"

  def settings(self) -> dict:
    """The protocol as plain JSON values."""
    out = dataclasses.asdict(self)
    out["scenes"] = list(self.scenes)
    out["view_counts"] = {k: dict(v) for k, v in self.view_counts.items()}
    for key in ("image_size", "fixed_sources", "near_far_fixed", "near_far_scale"):
      out[key] = None if out[key] is None else list(out[key])
    return out


@dataclasses.dataclass(frozen=True)
class LLFFProtocol(Protocol):
  """LLFF forward-facing scenes (IBRNet / GNT cross-scene evaluation).

  * Scenes: fern, flower, fortress, horns, leaves, orchids, room, trex (IBRNet
    ``eval/eval_llff_all.sh``; GNT ``configs/gnt_full.txt`` ``eval_scenes``).
  * Resolution: ``images_4`` (1008x756), IBRNet/GNT ``llff_test.py``
    ``LLFFTestDataset.__init__`` calls ``load_llff_data(scene_path, load_imgs=False,
    factor=4)``. GNT's ``eval.py`` ``log_view`` scores every 2nd pixel (``render_stride =
    2`` in ``configs/gnt_full.txt``); IBRNet's ``eval/eval.py`` scores every pixel.
  * Targets: ``i_test = np.arange(N)[::llffhold]`` with ``llffhold = 8`` (``config.py``
    default), views 0, 8, 16, ... of the sorted images.
  * Sources: the other views form the pool; ``get_nearest_pose_ids(render_pose,
    train_poses, num_source_views, tar_id=-1, angular_dist_method='dist')``
    (``data_utils.py``) keeps the ``min(10, len(pool) - 1)`` views with the nearest camera
    centres; ``num_source_views = 10`` (``config.py``). The official ``__getitem__`` then
    shuffles that set with an unseeded ``np.random.choice(..., replace=False)``; as the
    models pool over source views, the index stores the set, nearest first.
  * Background / masks: none (RGB captures, whole image scored).
  * Near / far: ``[0.9 * min(bds), 1.6 * max(bds)]`` over the scene (``__getitem__``).
  * LPIPS: VGG (IBRNet ``eval/eval.py``: ``lpips_tf.lpips(..., net='vgg')``; GNT
    ``utils.py`` ``lpips(img1, img2, net="vgg")``).
  """


LLFF = LLFFProtocol(
    name="llff",
    format="llff",
    dataset_dir="nerf_llff_data",
    scenes=("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex"),
    view_counts={"fern": {"all": 20}, "flower": {"all": 34}, "fortress": {"all": 42},
                 "horns": {"all": 62}, "leaves": {"all": 26}, "orchids": {"all": 25},
                 "room": {"all": 41}, "trex": {"all": 55}},
    image_size=(756, 1008),
    image_folder="images_4",
    downscale=4,
    target_split="all",
    target_every=8,
    source_split="all",
    num_source_views=10,
    source_rule="dist",
    fixed_sources=(),
    background="none",
    masks="none",
    near_far="0.9 * min(bounds), 1.6 * max(bounds) over all views of the scene",
    near_far_fixed=None,
    near_far_scale=(0.9, 1.6),
    lpips_net="vgg",
    render_stride=2,
    world_frame="llff_recentred",
    official=(
        "googleinterns/IBRNet ibrnet/data_loaders/llff_test.py LLFFTestDataset.__init__ "
        "(load_llff_data(factor=4); i_test = arange(N)[::llffhold], llffhold=8 from "
        "config.py; the train pool is every other view) and __getitem__ "
        "(get_nearest_pose_ids(..., num_source_views=10, tar_id=-1, "
        "angular_dist_method='dist'); depth_range [0.9 * min(bds), 1.6 * max(bds)]); "
        "the same in VITA-Group/GNT gnt/data_loaders/llff_test.py. Scenes: IBRNet "
        "eval/eval_llff_all.sh, GNT configs/gnt_full.txt eval_scenes. LPIPS: IBRNet "
        "eval/eval.py (lpips_tf net='vgg'), GNT utils.py lpips(net='vgg') called by "
        "eval.py log_view. render_stride=2: GNT configs/gnt_full.txt with eval.py "
        "log_view (gt_img[::render_stride, ::render_stride])."))

@dataclasses.dataclass(frozen=True)
class NerfSyntheticProtocol(Protocol):
  """NeRF synthetic (Blender) scenes (IBRNet's evaluation).

  * Scenes: chair, drums, ficus, hotdog, lego, materials, mic, ship (IBRNet
    ``eval/eval_nerf_synthetic_all.sh``; GNT ``configs/gnt_full.txt`` comment).
  * Resolution: the released 800x800 frames, no downscale.
  * Targets: IBRNet ``eval/eval.py`` builds the dataset with split ``'test'``;
    ``nerf_synthetic.py`` ``NerfSyntheticDataset.__init__`` keeps
    ``rgb_files[::self.testskip]`` with ``testskip = 8`` (``configs/eval_nerf_synthetic.txt``),
    test frames r_0, r_8, ..., r_192 (25 per scene). GNT's ``eval.py --run_val`` builds it
    with ``'validation'``, which ``NerfSyntheticDataset`` maps to ``transforms_val.json``
    (val frames [::8]): this protocol follows IBRNet's test split.
  * Sources: the 100 ``transforms_train.json`` frames; ``get_nearest_pose_ids(render_pose,
    train_poses, num_source_views, tar_id=-1, angular_dist_method='vector')``: the 10 with
    the smallest angle between the camera centres seen from the origin. The set is
    shuffled by an unseeded ``np.random.choice``; the index stores it nearest first.
  * Background: white, ``rgb[..., [-1]] * rgb[..., :3] + 1 - rgb[..., [-1]]`` for targets
    and sources (``__getitem__``); rendering itself uses ``white_bkgd = False``.
  * Near / far: 2, 6. LPIPS: VGG (``eval/eval.py``). IBRNet scores every pixel (GNT's
    ``configs/gnt_full.txt`` would score every 2nd, ``render_stride = 2``).
  """


NERF_SYNTHETIC = NerfSyntheticProtocol(
    name="nerf_synthetic",
    format="nerf_synthetic",
    dataset_dir="nerf_synthetic",
    scenes=("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship"),
    view_counts={s: {"train": 100, "test": 200} for s in (
        "chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship")},
    image_size=(800, 800),
    image_folder="",
    downscale=1,
    target_split="test",
    target_every=8,
    source_split="train",
    num_source_views=10,
    source_rule="vector",
    fixed_sources=(),
    background="white",
    masks="none",
    near_far="2, 6 for every view",
    near_far_fixed=(2.0, 6.0),
    near_far_scale=None,
    lpips_net="vgg",
    render_stride=1,
    official=(
        "googleinterns/IBRNet ibrnet/data_loaders/nerf_synthetic.py "
        "NerfSyntheticDataset.__init__ (transforms_test.json frames[::testskip], testskip=8 "
        "from configs/eval_nerf_synthetic.txt) and __getitem__ (sources from "
        "transforms_train.json: get_nearest_pose_ids(..., num_source_views=10, tar_id=-1, "
        "angular_dist_method='vector'); rgb * alpha + (1 - alpha); depth_range [2, 6]); "
        "eval/eval.py opens the 'test' split. Scenes: IBRNet "
        "eval/eval_nerf_synthetic_all.sh. LPIPS: eval/eval.py lpips_tf net='vgg'."))

_DTU_SCANS = ("scan8", "scan21", "scan30", "scan31", "scan34", "scan38", "scan40", "scan41",
              "scan45", "scan55", "scan63", "scan82", "scan103", "scan110", "scan114")
@dataclasses.dataclass(frozen=True)
class DTUProtocol(Protocol):
  """DTU, the 3-view generalisation split of pixelNeRF.

  Neither official GNT (``VITA-Group/GNT``) nor IBRNet (``googleinterns/IBRNet``) code
  evaluates on DTU, and GNT-MoVE's public repository (``VITA-Group/GNT-MOVE``) holds no
  evaluation code; the generalisable-NeRF DTU numbers this protocol reproduces follow
  pixelNeRF's split, which MVSNeRF and later work reuse.

  * Scenes: the 15 test scans 8, 21, 30, 31, 34, 38, 40, 41, 45, 55, 63, 82, 103, 110,
    114 (pixelNeRF's DTU test list in its ``rs_dtu_4`` release).
  * Resolution: 400x300 (``rs_dtu_4``, the 1600x1200 captures downscaled by 4).
  * Sources: fixed, views 22, 25, 28 for every target (``eval/eval.py``:
    ``source = sorted(map(int, args.source.split()))`` with ``-P '22 25 28'``).
  * Targets: every other view, 46 per scan (``eval/eval.py``:
    ``target_view_mask *= ~src_view_mask`` without ``--include_src``).
  * Masks: none, whole images scored (``eval/calc_metrics.py`` ``run_map``; RegNeRF's
    masked variant is a different protocol). LPIPS: VGG (``run_map``).
  * Near / far: pixelNeRF uses 0.1 / 5.0 in its normalised frame; movenerf's DTU reader
    keeps the ``poses_bounds.npy`` frame, so the scan's own bounds are used instead.
  """


DTU = DTUProtocol(
    name="dtu",
    format="dtu",
    dataset_dir="dtu",
    scenes=_DTU_SCANS,
    view_counts={s: {"all": 49} for s in _DTU_SCANS},
    image_size=(300, 400),
    image_folder="images_4",
    downscale=4,
    target_split="all",
    target_every=0,
    source_split="all",
    num_source_views=3,
    source_rule="fixed",
    fixed_sources=(22, 25, 28),
    background="none",
    masks="none",
    near_far="pixelNeRF's z_near 0.1, z_far 5.0 in its normalised DTU frame",
    near_far_fixed=None,
    near_far_scale=None,
    lpips_net="vgg",
    render_stride=1,
    official=(
        "sxyu/pixel-nerf eval/eval.py (source views from --source/-P, sorted; targets: "
        "every view not a source, target_view_mask *= ~src_view_mask; README command "
        "-P '22 25 28' on the DTU test split of rs_dtu_4, 400x300) and "
        "eval/calc_metrics.py run_map (lpips.LPIPS(net='vgg'), whole images). Neither "
        "VITA-Group/GNT nor googleinterns/IBRNet has a DTU evaluation."))

_SHINY_SCENES = ("cd", "crest", "food", "giants", "lab", "pasta", "seasoning", "tools")
@dataclasses.dataclass(frozen=True)
class ShinyProtocol(Protocol):
  """Shiny (NeX) scenes, GNT's evaluation.

  * Scenes: the 8 scenes of the Shiny dataset, cd, crest, food, giants, lab, pasta,
    seasoning, tools (GNT's paper; its code takes every folder of ``data/shiny/``).
  * Resolution: ``images_8``, intrinsics from the full-size hwf (or fx, fy, cx, cy) divided
    by 8 (GNT ``gnt/data_loaders/shiny.py`` ``ShinyDataset.__init__``).
  * Targets / sources / near-far: as LLFF: ``arange(N)[::llffhold]``, llffhold 8; the 10
    nearest other views by camera centre (``get_nearest_pose_ids(...,
    angular_dist_method='dist')``), ``[0.9 * min(bds), 1.6 * max(bds)]``.
  * LPIPS: VGG (``utils.py`` ``lpips``).
  """


# Shiny is read and chosen as LLFF is, from images_8 (the fields not named here are LLFF's).
SHINY = ShinyProtocol(**{
    **{f.name: getattr(LLFF, f.name) for f in dataclasses.fields(LLFF)},
    "name": "shiny",
    "dataset_dir": "shiny",
    "scenes": _SHINY_SCENES,
    "view_counts": {},
    "image_size": None,
    "image_folder": "images_8",
    "downscale": 8,
    "official": (
        "VITA-Group/GNT gnt/data_loaders/shiny.py ShinyDataset.__init__ "
        "(load_llff_data(factor=8); images from images_8 sorted; i_test = "
        "arange(N)[::llffhold], llffhold=8) and __getitem__ (get_nearest_pose_ids(..., "
        "num_source_views=10, tar_id=-1, angular_dist_method='dist'); depth_range "
        "[0.9 * min(bds), 1.6 * max(bds)]); LPIPS: utils.py lpips(net='vgg')."),
})

PROTOCOLS = {p.name: p for p in (LLFF, NERF_SYNTHETIC, DTU, SHINY)}
NAMES = tuple(sorted(PROTOCOLS))


def get(name: str) -> Protocol:
  """The protocol called ``name``; UsageError listing :data:`NAMES` otherwise."""
  if name not in PROTOCOLS:
    raise UsageError(f"--protocol: unknown protocol {name!r}; known: {', '.join(NAMES)}")
  return PROTOCOLS[name]


# ----------------------------------------------------------------------------- rules


def holdout_targets(num_views: int, every: int) -> list[int]:
  """Views 0, every, 2 * every, ... of ``num_views`` (LLFF's ``arange(N)[::llffhold]``,
  Blender's ``frames[::testskip]``)."""
  if every < 1:
    raise ValueError(f"target_every must be >= 1, got {every}")
  return list(range(0, int(num_views), int(every)))


def view_distances(target_center, pool_centers, rule: str) -> np.ndarray:
  """[N] distances of the pool's camera centres from the target's: "dist" Euclidean,
  "vector" the angle (radians) between the centres seen from the origin."""
  t = np.asarray(target_center, np.float64).reshape(3)
  p = np.asarray(pool_centers, np.float64).reshape(-1, 3)
  if rule == "dist":
    return np.linalg.norm(p - t[None], axis=1)
  if rule == "vector":
    tu = t / (np.linalg.norm(t) + 1e-6)
    pu = p / (np.linalg.norm(p, axis=1, keepdims=True) + 1e-6)
    return np.arccos(np.clip(pu @ tu, -1.0, 1.0))
  raise ValueError(f"unknown source rule {rule!r}; known: dist, vector, fixed")


def nearest_views(target_center, pool_centers, count: int, rule: str,
                  target_index: int = -1) -> list[int]:
  """Positions in the pool of the ``min(count, len(pool) - 1)`` nearest views, nearest
  first; ``target_index`` >= 0 is never chosen (the target itself in the pool). Ties go
  to the lower position."""
  d = view_distances(target_center, pool_centers, rule)
  n = d.shape[0]
  if target_index >= 0:
    d[target_index] = np.inf
  take = min(int(count), n - 1)
  return [int(i) for i in np.argsort(d, kind="stable")[:take]]


# ----------------------------------------------------------------------------- local data


_FRAME = re.compile(r"r_(\d+)$")


def scene_dir(protocol: Protocol, data_root, scene: str) -> Optional[Path]:
  """The folder of ``scene`` under ``data_root`` (or under ``data_root/dataset_dir``);
  DTU scans may be called ``scanN`` or ``dtu_scanN``. None when absent."""
  root = Path(data_root).expanduser()
  names = [scene] + ([f"dtu_{scene}"] if protocol.format == "dtu" else [])
  for base in (root / protocol.dataset_dir, root):
    for n in names:
      if (base / n).is_dir():
        return base / n
  return None


def _frame_ids(scene_path: Path, split: str) -> list[int]:
  """Frame numbers (``r_<k>``) of ``transforms_<split>.json`` in file order."""
  path = scene_path / f"transforms_{split}.json"
  if not path.is_file():
    return []
  frames = json.loads(path.read_text())["frames"]
  out = []
  for j, f in enumerate(frames):
    m = _FRAME.search(str(f.get("file_path", "")))
    if m is None:
      raise ValueError(f"{path}: frame {j} file_path {f.get('file_path')!r} is not r_<k>")
    out.append(int(m.group(1)))
  return out


def _blender_centers(scene_path: Path, split: str) -> np.ndarray:
  path = scene_path / f"transforms_{split}.json"
  frames = json.loads(path.read_text())["frames"]
  return np.array([np.asarray(f["transform_matrix"], np.float64)[:3, 3] for f in frames])


def _llff_centers(scene_path: Path) -> np.ndarray:
  pb = np.load(scene_path / "poses_bounds.npy", allow_pickle=False)
  return pb[:, :15].reshape(-1, 3, 5)[:, :, 3].astype(np.float64)


def _image_folders(scene_path: Path) -> list[str]:
  """``images`` / ``images_N`` folders of an LLFF-layout scene, largest images first."""
  found = [d.name for d in scene_path.iterdir() if d.is_dir() and re.fullmatch(
      r"images(_\d+)?", d.name)]
  return sorted(found, key=lambda n: int(n.split("_")[1]) if "_" in n else 1)


def _local_counts(protocol: Protocol, path: Path) -> dict[str, int]:
  if protocol.format == "nerf_synthetic":
    return {s: len(_frame_ids(path, s)) for s in ("train", "test")}
  return {"all": int(_llff_centers(path).shape[0])}


# ----------------------------------------------------------------------------- index


def _numbering(protocol: Protocol) -> str:
  if protocol.format == "nerf_synthetic":
    return ("target ids: frame number k of test/r_k; source ids: frame number k of "
            "train/r_k (the frame's position in the official transforms_<split>.json)")
  return ("view ids: position of the image among the scene's images sorted by file name "
          "(0-based) = row of poses_bounds.npy = movenerf's view_id")


def generate_command(protocol: Protocol) -> str:
  return (f"python -m movenerf.tools.make_protocol_index --protocol {protocol.name} "
          "--data_root DIR")


def _scene_entry(protocol: Protocol, path: Optional[Path], scene: str) -> Optional[dict]:
  """The index entry of one scene, or None when its cameras are not available."""
  expected = protocol.view_counts.get(scene)
  if protocol.source_rule == "fixed":
    n = expected["all"]
    src = sorted(protocol.fixed_sources)
    targets = [{"view": v, "sources": src} for v in range(n) if v not in src]
    return {"generated_from": "the protocol's fixed view ids (no camera poses needed)",
            "complete": True, "num_views": dict(expected),
            "image_size": list(protocol.image_size), "targets": targets}
  if path is None:
    return None
  counts = _local_counts(protocol, path)
  complete = expected is not None and counts == dict(expected)
  if protocol.format == "nerf_synthetic":
    test_ids, train_ids = _frame_ids(path, "test"), _frame_ids(path, "train")
    test_c, train_c = _blender_centers(path, "test"), _blender_centers(path, "train")
    # The official list is frames[::testskip] of the full file, where frame k is r_k.
    keep = [j for j, k in enumerate(test_ids) if k % protocol.target_every == 0]
    targets = [{"view": test_ids[j], "sources": [train_ids[i] for i in nearest_views(
        test_c[j], train_c, protocol.num_source_views, protocol.source_rule)]}
               for j in keep]
    what = (f"{protocol.dataset_dir}/{scene}: transforms_train.json ({counts['train']} "
            f"frames), transforms_test.json ({counts['test']} frames)")
  else:
    centers = _llff_centers(path)
    n = centers.shape[0]
    tgt = holdout_targets(n, protocol.target_every)
    pool = [v for v in range(n) if v not in tgt]
    targets = [{"view": t, "sources": [pool[i] for i in nearest_views(
        centers[t], centers[pool], protocol.num_source_views, protocol.source_rule)]}
               for t in tgt]
    what = f"{protocol.dataset_dir}/{scene}: poses_bounds.npy ({n} views)"
  if complete:
    what += ", the full original camera set"
  else:
    want = "unknown" if expected is None else ", ".join(f"{v} {k}" for k, v in
                                                        expected.items())
    what += (f", NOT the original camera set (original: {want}): targets and sources are "
             "the official rule applied to these cameras only")
  size = list(protocol.image_size) if protocol.image_size else _stored_size(protocol, path)
  return {"generated_from": what, "complete": complete, "num_views": counts,
          "image_size": size, "targets": targets}


def _stored_size(protocol: Protocol, path: Path) -> Optional[list[int]]:
  folder = path / protocol.image_folder
  if not folder.is_dir():
    return None
  h, w = record_lib.load_image(record_lib.list_images(folder)[0]).shape[:2]
  return [int(h), int(w)]


def _protocol(protocol) -> Protocol:
  return get(protocol) if isinstance(protocol, str) else protocol


def build_index(protocol, data_root, version: Optional[str] = None) -> dict:
  """The evaluation index of ``protocol`` (a Protocol or its name) from the camera poses
  under ``data_root``.

  Scenes whose cameras are not under ``data_root`` are listed in ``"missing"`` (a
  "fixed" rule needs no cameras). Each scene entry says what it was generated from and
  whether that was the full original camera set (``"complete"``). ``version`` (the
  movenerf version recorded) defaults to the installed distribution's.
  """
  if version is None:
    try:
      version = importlib_metadata.version("movenerf")
    except importlib_metadata.PackageNotFoundError:
      version = "unknown"
  protocol = _protocol(protocol)
  scenes, missing = {}, []
  for scene in protocol.scenes:
    entry = _scene_entry(protocol, scene_dir(protocol, data_root, scene), scene)
    if entry is None:
      missing.append(scene)
    else:
      scenes[scene] = entry
  return {
      "protocol": protocol.settings(),
      "numbering": _numbering(protocol),
      "generator": {"command": generate_command(protocol), "movenerf_version": version},
      "scenes": scenes,
      "missing": missing,
  }


def index_path(name: str) -> Path:
  return INDEX_DIR / f"{name}.json"


def dump_index(index: dict) -> str:
  """The committed text of an index (sorted keys, 1-space indent, final newline)."""
  return json.dumps(index, indent=1, sort_keys=True) + "\n"


def load_index(name: str, path=None) -> dict:
  """The committed index of protocol ``name`` (or the index file ``path``)."""
  get(name)
  p = Path(path) if path else index_path(name)
  if not p.is_file():
    raise UsageError(f"protocol index not found: {p} (write it with "
                     f"{generate_command(PROTOCOLS[name])})")
  return json.loads(p.read_text())


def index_sha256(name: str, path=None) -> str:
  p = Path(path) if path else index_path(name)
  return hashlib.sha256(p.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True, eq=False)
class LocalScene:
  """A protocol scene read from the local data.

  Attributes:
    record: the scene as movenerf's reader returns it.
    positions: (split, index id) -> position in ``record``; split is "test" / "train"
      for nerf_synthetic and "all" otherwise.
    path: the scene folder.
    image_folder: the image folder read ("" for nerf_synthetic).
  """

  record: record_lib.SceneRecord
  positions: Mapping[tuple[str, int], int]
  path: Path
  image_folder: str


def llff_official_frame(c2w: np.ndarray, near: np.ndarray, far: np.ndarray,
                        bd_factor: float = 0.75
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The world frame IBRNet and GNT evaluate LLFF-layout scenes in.

  ``googleinterns/IBRNet ibrnet/data_loaders/llff_data_utils.py`` ``load_llff_data``
  (defaults ``bd_factor=.75, recenter=True``; GNT's copy is the same) first scales the
  world by ``1 / (bd_factor * min(bounds))`` (camera positions and bounds), then moves it
  into the frame of the average camera (``recenter_poses`` / ``poses_avg``: mean centre,
  normalised sum of the backward axes, sum of the up axes, in OpenGL axes). A similarity
  transform: the nearest-view choices do not change, the model's inputs do.

  Args:
    c2w: [N, 4, 4] OpenCV camera-to-world matrices (movenerf's convention).
    near: [N] near bounds; far: [N] far bounds (the scene's ``poses_bounds.npy``).
    bd_factor: the official 0.75.

  Returns:
    (c2w, near, far) in the official frame.
  """
  c2w = np.asarray(c2w, np.float64).copy()
  scale = 1.0 / (float(np.min(near)) * bd_factor)
  c2w[:, :3, 3] *= scale
  unit = lambda v: v / np.linalg.norm(v)
  # OpenGL axes (right, up, back) are OpenCV's (x, -y, -z).
  back = unit(-c2w[:, :3, 2].sum(0))
  up = -c2w[:, :3, 1].sum(0)
  right = unit(np.cross(up, back))
  average = np.eye(4)
  average[:3, :3] = np.stack([right, unit(np.cross(back, right)), back], axis=1)
  average[:3, 3] = c2w[:, :3, 3].mean(0)
  c2w = np.linalg.inv(average) @ c2w
  return (c2w.astype(np.float32), (np.asarray(near) * scale).astype(np.float32),
          (np.asarray(far) * scale).astype(np.float32))


def load_local_scene(protocol: Protocol, data_root, scene: str) -> Optional[LocalScene]:
  """Reads one protocol scene from ``data_root`` with the protocol's background and the
  official image folder when present (else the largest present); None when absent."""
  path = scene_dir(protocol, data_root, scene)
  if path is None:
    return None
  if protocol.format == "nerf_synthetic":
    rec = registry.read_scene("nerf_synthetic", path, splits=("train", "test"),
                              white_background=protocol.background == "white")
    positions, offset = {}, 0
    for split in ("train", "test"):
      ids = _frame_ids(path, split)
      positions.update({(split, k): offset + j for j, k in enumerate(ids)})
      offset += len(ids)
    return LocalScene(rec, positions, path, "")
  folders = _image_folders(path)
  folder = protocol.image_folder if protocol.image_folder in folders else (
      folders[0] if folders else protocol.image_folder)
  factor = 1 if folder == "images" else int(folder.split("_")[1])
  rec = registry.read_scene(protocol.format, path, factor=factor, llffhold=0)
  if protocol.world_frame == "llff_recentred":
    c2w, near, far = llff_official_frame(rec.c2w, rec.near, rec.far)
    rec = dataclasses.replace(rec, c2w=c2w, near=near, far=far)
  return LocalScene(rec, {("all", v): v for v in range(rec.num_views)}, path, folder)


def _near_far(protocol: Protocol, rec: record_lib.SceneRecord) -> tuple[float, float]:
  if protocol.near_far_fixed is not None:
    return protocol.near_far_fixed
  a, b = protocol.near_far_scale or (1.0, 1.0)
  return a * float(np.min(rec.near)), b * float(np.max(rec.far))


def _local_position(local: LocalScene, split: str, view: int) -> Optional[int]:
  return local.positions.get((split, int(view)))


def absent_views(protocol: Protocol, index: dict, local: LocalScene, scene: str) -> int:
  """How many of the scene's index targets lack their target or a source locally."""
  return sum(1 for t in index["scenes"][scene]["targets"] if _example_positions(
      protocol, local, t) is None)


def _example_positions(protocol, local, target) -> Optional[tuple[int, list[int]]]:
  t = _local_position(local, protocol.target_split, target["view"])
  s = [_local_position(local, protocol.source_split, v) for v in target["sources"]]
  if t is None or any(p is None for p in s):
    return None
  return t, s


def protocol_examples(protocol: Protocol, index: dict,
                      sources_by_scene: Mapping[str, LocalScene],
                      image_size: Optional[Sequence[int]] = None) -> Iterator[dict]:
  """The index's evaluation examples, shaped as ``pipeline.eval_examples`` yields them.

  For every scene of the index present in ``sources_by_scene`` (scene -> LocalScene), in
  the protocol's scene order, and every target whose views are all local: ``scene_id``,
  ``view_id`` (the index's target id), the index's sources in its order, the protocol's
  near / far, ``tgt_mask`` when the scene has masks. With ``image_size`` (H, W) the
  images are resized to it and the intrinsics scaled.
  """
  for scene in protocol.scenes:
    entry = index["scenes"].get(scene)
    local = sources_by_scene.get(scene)
    if entry is None or local is None:
      continue
    rec = local.record
    near, far = _near_far(protocol, rec)
    for target in entry["targets"]:
      pos = _example_positions(protocol, local, target)
      if pos is None:
        continue
      t, s = pos
      ex = {
          "scene_id": scene,
          "view_id": int(target["view"]),
          "src_images": rec.images[s],
          "src_intrinsics": rec.intrinsics[s],
          "src_c2w": rec.c2w[s],
          "tgt_intrinsics": rec.intrinsics[t],
          "tgt_c2w": rec.c2w[t],
          "tgt_image": rec.images[t],
          "near": np.float32(near),
          "far": np.float32(far),
      }
      if rec.masks is not None:
        ex["tgt_mask"] = rec.masks[t]
      if image_size is not None:
        ex = pipeline.resize_example(ex, (int(image_size[0]), int(image_size[1])))
      yield ex


# ----------------------------------------------------------------------------- differences


def _fmt_size(hw) -> str:
  return f"{hw[1]}x{hw[0]}"


def differences(protocol, data_root, index: Optional[dict] = None,
                local: Optional[Mapping[str, Optional[LocalScene]]] = None,
                image_size: Optional[Sequence[int]] = None) -> list[str]:
  """One line per way the local data (and the index) differ from the protocol.

  ``protocol`` is a Protocol or its name; ``index`` defaults to the committed one,
  ``local`` (scene -> LocalScene or None) to the scenes read from ``data_root``;
  ``image_size`` is a resize the run applies.
  """
  protocol = _protocol(protocol)
  index = index if index is not None else load_index(protocol.name)
  if local is None:
    local = {s: load_local_scene(protocol, data_root, s) for s in protocol.scenes}
  lines = []
  absent = [s for s in protocol.scenes if local.get(s) is None]
  if absent:
    lines.append(f"missing locally ({len(absent)} of {len(protocol.scenes)} scenes): "
                 f"{', '.join(absent)}")
  if index.get("missing"):
    lines.append(f"not in the index (no cameras when it was generated): "
                 f"{', '.join(index['missing'])}")
  for scene in protocol.scenes:
    entry = index["scenes"].get(scene)
    if entry is not None and not entry.get("complete", False):
      lines.append(f"{scene}: index generated from {entry['generated_from']}")
  for scene in protocol.scenes:
    sc = local.get(scene)
    if sc is None:
      continue
    rec = sc.record
    counts = _local_counts(protocol, sc.path)
    want = protocol.view_counts.get(scene)
    if want is not None and counts != dict(want):
      lines.append(f"{scene}: local views {counts}, original {dict(want)}")
    if protocol.image_folder and sc.image_folder != protocol.image_folder:
      lines.append(f"{scene}: {sc.image_folder} ({_fmt_size((rec.height, rec.width))}) "
                   f"instead of {protocol.image_folder}"
                   + (f" ({_fmt_size(protocol.image_size)})" if protocol.image_size else ""))
    elif protocol.image_size and (rec.height, rec.width) != tuple(protocol.image_size):
      lines.append(f"{scene}: images {_fmt_size((rec.height, rec.width))} instead of "
                   f"{_fmt_size(protocol.image_size)}")
    if image_size is not None:
      lines.append(f"{scene}: resized to {_fmt_size(image_size)} for the model")
    if scene in index["scenes"]:
      n = absent_views(protocol, index, sc, scene)
      if n:
        lines.append(f"{scene}: {n} of {len(index['scenes'][scene]['targets'])} index "
                     "targets lack their target or a source view locally (not scored)")
  if protocol.format == "dtu":
    lines.append("near/far: the scans' poses_bounds.npy bounds, not pixelNeRF's 0.1 / 5.0 "
                 "in its normalised frame")
    root = Path(data_root).expanduser() / protocol.dataset_dir
    if root.is_dir():
      extra = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.replace(
          "dtu_", "") not in protocol.scenes)
      if extra:
        lines.append(f"local scans outside the protocol (not evaluated): {', '.join(extra)}")
  if protocol.render_stride != 1:
    lines.append(f"scored on every pixel; GNT's published eval scores every "
                 f"{protocol.render_stride}nd pixel (render_stride={protocol.render_stride})")
  return lines


# ----------------------------------------------------------------------------- evaluation


def lpips_functions(eval_cfg) -> dict:
  """{net: fn} of the LPIPS networks ``eval.lpips`` names (`evaluate.load_lpips`); the
  networks left out are reported as "n/a"."""
  return dict(evaluate.load_lpips(eval_cfg))


def check_lpips_size(lpips_fns: Mapping[str, Any], examples: Sequence[dict]) -> None:
  """UsageError when a view is smaller than an LPIPS network of ``lpips_fns`` takes."""
  by_scene: dict[str, list] = {}
  for ex in examples:
    by_scene.setdefault(ex["scene_id"], []).append(ex)
  for scene, views in by_scene.items():
    evaluate.check_lpips_size(lpips_fns, f"scene {scene}", views[:1])


def score(pred, gt, lpips_fns: Mapping[str, Any]) -> dict:
  """{"psnr", "ssim", "lpips_alex", "lpips_vgg"} of one image pair in [0, 1]."""
  pred = np.clip(np.asarray(pred, np.float32).reshape(np.shape(gt)), 0.0, 1.0)
  gt = np.clip(np.asarray(gt, np.float32), 0.0, 1.0)
  base = image_metrics.image_metrics(pred, gt, None)
  out = {"psnr": float(base["psnr"]), "ssim": float(base["ssim"])}
  for net in LPIPS_NETS:
    fn = lpips_fns.get(net)
    out[f"lpips_{net}"] = "n/a" if fn is None else float(np.asarray(fn(pred, gt)))
  return out


def nearest_view(ex: dict, rule: str = "dist") -> dict:
  """The nearest-source-view baseline: the source whose camera is nearest the target's by
  ``rule`` ("dist" or "vector"; "fixed" protocols use "dist"), unchanged (resized to the
  target's size if needed), as the prediction: 'rgb' [H, W, 3] in [0, 1]."""
  rule = "dist" if rule == "fixed" else rule
  centers = np.asarray(ex["src_c2w"], np.float64)[:, :3, 3]
  best = int(np.argsort(view_distances(np.asarray(ex["tgt_c2w"])[:3, 3], centers, rule),
                        kind="stable")[0])
  image = ex["src_images"][best]
  hw = ex["tgt_image"].shape[:2]
  if image.shape[:2] != hw:
    image = image_ops.resize_image(image, hw)
  return {"rgb": image.astype(np.float32) / 255.0}


def evaluate_protocol(protocol: Protocol, examples: Sequence[dict], out_dir: str,
                      predict: Callable[[dict], dict], lpips_fns: Mapping[str, Any],
                      nearest: Callable[[dict], dict], verbose: bool = True) -> list[dict]:
  """Scores ``predict`` and the nearest-source-view baseline ``nearest`` on every example;
  writes ``<scene>/<view>_pred.png`` / ``_gt.png`` / ``_nearest.png`` under ``out_dir``;
  returns per-view rows (``row["nearest_view"]`` holds the baseline's scores)."""

  def run(ex):
    gt = ex["tgt_image"].astype(np.float32) / 255.0
    start = time.perf_counter()
    out = predict(ex)
    out["rgb"] = np.asarray(out["rgb"])  # waits for the device
    seconds = time.perf_counter() - start
    base = nearest(ex)
    return {"scores": dict(score(out["rgb"], gt, lpips_fns), seconds=seconds),
            "nearest": score(base["rgb"], gt, lpips_fns),
            "pred": visualize.to_uint8(np.asarray(out["rgb"], np.float32).reshape(gt.shape)),
            "nearest_rgb": visualize.to_uint8(np.asarray(base["rgb"], np.float32))}

  rows = []
  start = time.perf_counter()
  for i, result in hosts.map_to_chief(run, list(examples)):
    ex = examples[i]
    stem = storage.join(out_dir, ex["scene_id"], f"{ex['view_id']:03d}")
    visualize.save_png(stem + "_pred.png", result["pred"])
    visualize.save_png(stem + "_gt.png", ex["tgt_image"])
    visualize.save_png(stem + "_nearest.png", result["nearest_rgb"])
    rows.append(dict(dataset=protocol.name, scene=ex["scene_id"], view=ex["view_id"],
                     **result["scores"], nearest_view=result["nearest"]))
    if verbose:
      h, w = ex["tgt_image"].shape[:2]
      eta = (len(examples) - i - 1) * (time.perf_counter() - start) / (i + 1)
      print(f"  protocol {protocol.name}: {i + 1}/{len(examples)} views  "
            f"{ex['scene_id']} {ex['view_id']:03d} ({w}x{h})  "
            f"psnr {result['scores']['psnr']:.2f}  {result['scores']['seconds']:.1f} s  "
            f"ETA {eta:.0f}s", flush=True)
  return rows


def _mean(values):
  vals = [v for v in values if isinstance(v, (int, float))]
  return float(np.mean(vals)) if vals and len(vals) == len(values) else "n/a"


def _means(rows: list[dict]) -> dict:
  out = {k: _mean([r[k] for r in rows]) for k in METRICS}
  out["nearest_view"] = {k: _mean([r["nearest_view"][k] for r in rows]) for k in METRICS}
  return out


def summarize(protocol: Protocol, rows: list[dict], missing: Sequence[str]) -> dict:
  """Per view, per scene (missing scenes as ``status: "missing"`` rows) and overall means,
  each with the nearest-source-view baseline's means under ``nearest_view``."""
  by_scene: dict[str, list] = {}
  for r in rows:
    by_scene.setdefault(r["scene"], []).append(r)
  scenes = []
  for s in protocol.scenes:
    if s in by_scene:
      scenes.append(dict(dataset=protocol.name, scene=s, status="ok",
                         num_views=len(by_scene[s]), **_means(by_scene[s])))
    elif s in missing:
      scenes.append(dict(dataset=protocol.name, scene=s, status="missing", num_views=0))
  overall = dict(num_views=len(rows), **(_means(rows) if rows else {}))
  if rows:
    overall["seconds_per_view"] = float(np.mean([r["seconds"] for r in rows]))
  return {"views": rows, "scenes": scenes, "datasets": {protocol.name: overall},
          "overall": overall}


def format_table(summary: dict) -> str:
  """The differences as a header, then one line per scene (``missing`` for absent ones)
  with the model's and the nearest view's scores."""
  fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
  p = summary["protocol"]
  lines = [f"# protocol {p['name']} (index {Path(p['index_file']).name}, sha256 "
           f"{p['index_sha256'][:12]}; published LPIPS: {p['lpips_net_published']})"]
  lines += [f"# differs: {d}" for d in p["differences"]]
  o = summary["overall"]
  if o.get("seconds_per_view") is not None:
    lines.append(f"# {o['seconds_per_view']:.2f} s per view (rendering), peak memory "
                 f"{summary.get('peak_memory_gib', float('nan')):.2f} GiB (process)")
  lines.append(f"{'scene':<16} {'views':>5} {'PSNR':>8} {'SSIM':>8} {'LPIPSvgg':>8} "
               f"{'LPIPSalex':>9} {'NV PSNR':>8} {'NV SSIM':>8}")
  for s in summary["scenes"]:
    if s["status"] == "missing":
      lines.append(f"{s['scene']:<16} {'missing':>5}")
      continue
    nv = s["nearest_view"]
    lines.append(f"{s['scene']:<16} {s['num_views']:>5} {fmt(s['psnr']):>8} "
                 f"{fmt(s['ssim']):>8} {fmt(s['lpips_vgg']):>8} {fmt(s['lpips_alex']):>9} "
                 f"{fmt(nv['psnr']):>8} {fmt(nv['ssim']):>8}")
  o = summary["overall"]
  if o["num_views"]:
    lines.append(f"{'mean':<16} {o['num_views']:>5} {fmt(o['psnr']):>8} {fmt(o['ssim']):>8} "
                 f"{fmt(o['lpips_vgg']):>8} {fmt(o['lpips_alex']):>9} "
                 f"{fmt(o['nearest_view']['psnr']):>8} {fmt(o['nearest_view']['ssim']):>8}")
  return "\n".join(lines)


def peak_memory_gib() -> float:
  """The process's peak resident memory so far (``ru_maxrss``), GiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def check_data_root(protocol: Protocol, data_root) -> None:
  """UsageError unless ``data_root`` (``--protocol_data``) is an existing folder."""
  if not data_root:
    raise UsageError("--protocol_data: give the folder that holds the protocol's datasets "
                     f"(DIR with DIR/{protocol.dataset_dir}/<scene>)")
  if not Path(data_root).expanduser().is_dir():
    raise UsageError(f"--protocol_data: folder not found: {data_root}")


def run_protocol_eval(protocol_name: str, data_root: str, out_dir: str,
                      predict: Callable[[dict], dict], lpips_fns: Mapping[str, Any],
                      nearest: Optional[Callable[[dict], dict]] = None, image_size=None,
                      index_file: Optional[str] = None, verbose: bool = True,
                      subdir: Optional[str] = None,
                      max_views_per_scene: int = 0) -> Optional[dict]:
  """Evaluates ``predict`` (example -> {"rgb"}) by a protocol on the local data.

  Writes ``out_dir/protocol_<name>/metrics.json`` (per view / per scene / overall, with
  the nearest-view baseline and a ``"protocol"`` entry: name, index_file, index_sha256,
  differences, missing_scenes, lpips_net_published) and ``metrics.txt`` (the table with
  the differences as its header), prints the table and returns the summary (None on
  processes other than the chief). ``nearest`` defaults to :func:`nearest_view` by the
  protocol's source rule; ``subdir`` puts the output in ``protocol_<name>/<subdir>/``.
  ``max_views_per_scene`` > 0 scores only each scene's first targets (a quick check,
  listed among the differences).
  """
  protocol = get(protocol_name)
  if nearest is None:
    nearest = lambda ex: nearest_view(ex, protocol.source_rule)
  check_data_root(protocol, data_root)
  index = load_index(protocol.name, index_file)
  local = {s: load_local_scene(protocol, data_root, s) for s in protocol.scenes}
  present = {s: v for s, v in local.items() if v is not None and s in index["scenes"]}
  missing = [s for s in protocol.scenes if s not in present]
  diffs = differences(protocol, data_root, index, local, image_size)
  folder = storage.join(out_dir, f"protocol_{protocol.name}")
  if subdir:
    folder = storage.join(folder, subdir)
  examples = list(protocol_examples(protocol, index, present, image_size))
  if max_views_per_scene > 0:
    kept: dict[str, int] = {}
    limited = []
    for ex in examples:
      kept[ex["scene_id"]] = kept.get(ex["scene_id"], 0) + 1
      if kept[ex["scene_id"]] <= max_views_per_scene:
        limited.append(ex)
    if len(limited) < len(examples):
      diffs.append(f"only the first {max_views_per_scene} target(s) of each scene are "
                   f"scored ({len(limited)} of {len(examples)}; eval.max_views_per_scene="
                   f"{max_views_per_scene})")
    examples = limited
  check_lpips_size(lpips_fns, examples)
  chief = hosts.is_chief()
  if chief:
    storage.makedirs(folder)
  rows = evaluate_protocol(protocol, examples, folder, predict, lpips_fns, nearest,
                           verbose and chief)
  summary = summarize(protocol, rows, missing)
  path = index_file or str(index_path(protocol.name))
  summary["protocol"] = {
      "name": protocol.name,
      "index_file": path,
      "index_sha256": index_sha256(protocol.name, index_file),
      "differences": diffs,
      "missing_scenes": missing,
      "lpips_net_published": protocol.lpips_net,
  }
  summary["lpips_nets"] = sorted(k for k, v in lpips_fns.items() if v is not None)
  summary["peak_memory_gib"] = peak_memory_gib()
  if chief:
    storage.write_json(storage.join(folder, "metrics.json"), summary, indent=2)
    table = format_table(summary)
    storage.write_text(storage.join(folder, "metrics.txt"), table + "\n")
    if verbose:
      print(table)
  hosts.barrier("protocol evaluation written")
  return summary if chief else None
