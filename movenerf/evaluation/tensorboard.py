"""TensorBoard output of a training run: validation images, evaluation scores, the config.

Every function takes a ``tensorboardX.SummaryWriter``. Images are written as uint8,
clipped to [0, 1] first: tensorboardX multiplies a float image by 255 only when its
maximum is at most 1, so one value above 1 would make the whole image nearly black.

Tags: ``val/render_vs_gt`` (prediction | ground truth, labelled), ``val/depth`` (with a
colour bar), ``val/experts`` (GNT-MoVE: top-1 expert maps with a legend), ``val/psnr``;
``eval/{psnr,ssim,lpips_alex,lpips_vgg}`` (means over every evaluated view) and
``eval/<dataset>/{psnr,ssim,lpips_alex,lpips_vgg}``; the text ``config``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from movenerf.evaluation import evaluate, visualize
from movenerf.image import metrics


def open_writer(logdir: str, filename_suffix: str = ""):
  """A tensorboardX ``SummaryWriter`` for ``logdir`` (a context manager that closes it).

  Event files are named by the second they are opened in; a ``filename_suffix`` keeps a
  second writer of the same second from replacing the first one's file.
  """
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter(logdir, filename_suffix=filename_suffix)


def add_image(writer, tag: str, image: np.ndarray, step: int) -> np.ndarray:
  """Writes [H, W, 3] ``image`` (float, clipped to [0, 1], or uint8) as uint8; returns
  the array written."""
  image = visualize.to_uint8(image)
  writer.add_image(tag, image, step, dataformats="HWC")
  return image


def log_validation(writer, out: dict, ex: dict, step: int) -> float:
  """Writes the validation images and PSNR of one rendered view; returns the PSNR.

  Args:
    writer: a tensorboardX ``SummaryWriter``.
    out: the rendering (``evaluate.render_example``): 'rgb' [H, W, 3], 'depth', and
      'experts' for GNT-MoVE.
    ex: the evaluation example (``pipeline.eval_examples``).
    step: the training step.
  """
  gt = ex["tgt_image"].astype(np.float32) / 255.0
  pred = np.asarray(out["rgb"], np.float32).reshape(gt.shape)
  add_image(writer, "val/render_vs_gt",
            visualize.hstack([visualize.panel(pred, "prediction"),
                              visualize.panel(gt, "ground truth")]), step)
  for kind, image in evaluate.panels(out, ex).items():
    add_image(writer, f"val/{kind}", image, step)
  psnr = float(metrics.psnr(pred, gt))
  writer.add_scalar("val/psnr", psnr, step)
  writer.flush()
  return psnr


def log_eval(writer, summary: dict, step: int) -> dict[str, float]:
  """Writes the evaluation means of ``summary`` (``evaluate.run_eval``) as scalars at
  ``step``: ``eval/<metric>`` over all views and ``eval/<dataset>/<metric>`` for psnr,
  ssim and every lpips_<net>. Scores that are not finite numbers are left out. Returns
  what was written, tag -> value."""
  groups = [("eval", summary.get("overall", {}))]
  groups += [(f"eval/{name}", means) for name, means in sorted(summary.get("datasets",
                                                                           {}).items())]
  written = {}
  for prefix, means in groups:
    for key in [k for k in means if k in ("psnr", "ssim") or k.startswith("lpips_")]:
      value = means.get(key)
      if isinstance(value, (int, float)) and not isinstance(value, bool) \
          and math.isfinite(value):
        writer.add_scalar(f"{prefix}/{key}", float(value), step)
        written[f"{prefix}/{key}"] = float(value)
  writer.flush()
  return written


def config_text(config: Any) -> str:
  """``config`` (a ConfigDict or a dict) as indented JSON in a Markdown code block."""
  data = config.to_dict() if hasattr(config, "to_dict") else config
  body = json.dumps(data, indent=2, sort_keys=True, default=str)
  return "\n".join("    " + line for line in body.splitlines())


def log_config(writer, config: Any, step: int = 0) -> None:
  """Writes the run's config as the TensorBoard text ``config`` (Text tab)."""
  writer.add_text("config", config_text(config), step)
  writer.flush()
