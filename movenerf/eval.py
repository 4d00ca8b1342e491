r"""Evaluates a trained model zero-shot on the held-out scenes of a config.

  python -m movenerf.eval --config experiments/gnt_move.py:tiny --workdir runs/demo
  python -m movenerf.eval --config experiments/gnt.py:paper --checkpoint model_720000.pth \
      --out runs/official_eval

``--workdir`` takes the latest checkpoint of a training run; ``--checkpoint`` a run
folder or an official GNT ``.pth`` / ``.npz``; either may be a URL (``gs://``, ``s3://``).
Under ``movenerf.tools.launch`` (or with ``--config.train.distributed=true`` on every
host) the views are split over the processes and process 0 writes the results. Writes per-view PNGs (prediction, ground
truth, depth, expert map), ``metrics.json``, ``metrics.txt`` and (``eval.video_frames``)
a video to ``--out`` (default ``WORKDIR/eval``) and prints PSNR / SSIM / LPIPS per scene.
"""

from __future__ import annotations

from absl import app, flags, logging
import jax
import numpy as np
from ml_collections import config_flags

from movenerf.evaluation import evaluate as evaluation
from movenerf.models import registry
from movenerf.models.family import ModelFamily
from movenerf.models.gnt import official_checkpoint
from movenerf.models.gnt.family import GNTFamily
from movenerf.models.gnt.model import GNTModel
from movenerf import storage
from movenerf.train import WEIGHT_FILE_SUFFIXES, distributed_options, initialize_distributed
from movenerf.training import checkpoint

_CONFIG = _WORKDIR = _CHECKPOINT = _OUT = None  # defined by _define_flags() when run as a program


def _define_flags() -> None:
  """Flags exist only when this module is the program, so that importing it (tests, other
  tools) does not clash with other modules' --config / --workdir flags."""
  global _CONFIG, _WORKDIR, _CHECKPOINT, _OUT
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/gnt_move.py:tiny",
                                            "experiment config file:variant", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "training run to evaluate")
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "run folder or official .pth/.npz")
  _OUT = flags.DEFINE_string("out", None, "output folder (default WORKDIR/eval)")


def load_model(config, source: str) -> tuple[ModelFamily, dict]:
  """(model family, params) from a run folder or an official GNT checkpoint file (whose
  architecture is read from the file; the config gives the sampling)."""
  if source.endswith(WEIGHT_FILE_SUFFIXES):
    m = config.model
    model_cfg, variables = official_checkpoint.load_official_checkpoint(
        source, num_samples=m.num_samples, num_importance=m.num_importance,
        inverse_depth=m.inverse_depth)
    return GNTFamily(GNTModel(model_cfg)), variables["params"]
  params, _ = checkpoint.restore_params(source)
  return registry.build(config.model), jax.tree.map(np.asarray, params)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # orbax / jax INFO lines would drown the progress
    logging.set_verbosity(logging.WARNING)
  source = _CHECKPOINT.value or _WORKDIR.value
  if not source:
    raise app.UsageError("give --workdir (a training run) or --checkpoint")
  config = _CONFIG.value
  out = _OUT.value or storage.join(_WORKDIR.value or ".", "eval")
  try:
    distributed_options(config.train)
    storage.check_writable(out)
  except (ValueError, storage.StorageError) as e:  # one line, no traceback
    raise SystemExit(f"movenerf.eval: {e}") from None
  initialize_distributed(config.train)
  model, params = load_model(config, source)
  if evaluation.run_eval(config, model, params, out) is not None:
    print(f"wrote {storage.join(out, 'metrics.json')} and per-view images")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
