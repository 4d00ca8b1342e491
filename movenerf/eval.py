r"""Evaluates a trained model zero-shot on the held-out scenes of a config.

  python -m movenerf.eval --workdir runs/demo
  python -m movenerf.eval --workdir runs/demo --config.eval.max_views_per_scene=0
  python -m movenerf.eval --config gnt:paper --checkpoint model_720000.pth \
      --out runs/official_eval

  python -m movenerf.eval --workdir runs/demo --protocol llff --protocol_data ~/data

``--workdir`` takes the latest checkpoint of a training run; ``--checkpoint`` a run
folder or an official GNT ``.pth`` / ``.npz``; either may be a URL (``gs://``, ``s3://``).
A run is evaluated with its own config (saved with its checkpoints), with the command
line's ``--config.KEY=VALUE`` overrides; an explicit ``--config`` must describe the
run's model (a difference is an error naming each parameter). Official weights take
``--config`` (default ``gnt_move:tiny``) for the sampling and the data.

Under ``movenerf.tools.launch`` (or with ``--config.train.distributed=true`` on every
host) the views are split over the processes and process 0 writes the results. Writes
per-view PNGs (prediction, ground truth, depth, expert map, a labelled comparison sheet),
``metrics.json``, ``metrics.txt`` and (``eval.video_frames``) a video to ``--out``
(default ``WORKDIR/eval``) and prints PSNR / SSIM / LPIPS per scene. Each chunk of rays
is split over the process's devices; on CPU the program makes one device per core
(unless ``JAX_NUM_CPU_DEVICES`` or ``XLA_FLAGS`` sets the count).

``--protocol NAME`` (``movenerf.evaluation.protocols.NAMES``: dtu, llff,
nerf_synthetic, shiny) evaluates instead the views of a published protocol's committed
index, read from ``--protocol_data`` (a folder holding ``nerf_llff_data/``,
``nerf_synthetic/``, ``dtu/``, ``shiny/``), and scores the nearest source view on the
same views; it writes ``OUT/protocol_NAME/metrics.json`` and ``metrics.txt`` and prints
how the local data differs from the protocol above the table, with scenes missing
locally as ``missing`` rows.
"""
from __future__ import annotations

import sys
from typing import Optional

from absl import flags, logging
import jax
import ml_collections
import numpy as np

from movenerf import cli, configs, sharding, validation
from movenerf.data import spec as data_spec
from movenerf.evaluation import evaluate as evaluation
from movenerf.evaluation import protocols
from movenerf.models import registry
from movenerf.models.family import ModelFamily
from movenerf.models.gnt import official_checkpoint
from movenerf.models.gnt.family import GNTFamily
from movenerf.models.gnt.model import GNTModel
from movenerf import storage
from movenerf.train import WEIGHT_FILE_SUFFIXES, distributed_options, initialize_distributed
from movenerf.training import checkpoint, config_checks

# Defined by _define_flags() when run as a program.
_CONFIG = _WORKDIR = _CHECKPOINT = _OUT = _PROTOCOL = _PROTOCOL_DATA = _PROTOCOL_VIEWS = None


def run() -> None:
  """The ``movenerf-eval`` console script: defines the flags and runs ``main`` with
  one-line errors (exit status 2: usage, 1: run; ``--verbose``: with the traceback)."""
  cli.run(main, "movenerf.eval", define=_define_flags,
          check=lambda: cli.config_check(_CONFIG)())


def _define_flags() -> None:
  """Flags exist only when this module is the program, so that importing it (tests, other
  tools) does not clash with other modules' --config / --workdir flags."""
  global _CONFIG, _WORKDIR, _CHECKPOINT, _OUT, _PROTOCOL, _PROTOCOL_DATA, _PROTOCOL_VIEWS
  _CONFIG = configs.define_config_flag("config", "gnt_move:tiny", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "training run to evaluate")
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "run folder or official .pth/.npz")
  _OUT = flags.DEFINE_string("out", None, "output folder (default WORKDIR/eval)")
  flags.DEFINE_string("eval_data", None, "evaluation datasets, replacing the config's "
                      "data.eval: [NAME=]FORMAT[:PATH][[KEY=VALUE,...]] joined by '+' "
                      "(movenerf.data.spec)")
  _PROTOCOL = flags.DEFINE_string("protocol", None, "evaluate a published protocol's frozen "
                                  f"views instead: {', '.join(protocols.NAMES)}")
  _PROTOCOL_DATA = flags.DEFINE_string("protocol_data", None, "with --protocol: the folder "
                                       "holding nerf_llff_data/, nerf_synthetic/, dtu/, "
                                       "shiny/")
  _PROTOCOL_VIEWS = flags.DEFINE_integer(
      "protocol_max_views", 0, "with --protocol: score only the first N targets of each "
      "scene, a quick check named in the table's header (0: every target)")


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


def _overrides(argv: list[str], flag: str = "config") -> list[str]:
  """The keys the command line sets with ``--config.KEY=VALUE`` (or ``--config.KEY
  VALUE``)."""
  prefix = f"--{flag}."
  return [a[len(prefix):].split("=", 1)[0] for a in argv if a.startswith(prefix)]


def run_config(given: ml_collections.ConfigDict, given_explicitly: bool,
               stored: Optional[dict], overrides: list[str], source: str
               ) -> ml_collections.ConfigDict:
  """The config an evaluation of ``source`` uses.

  The run's own (``stored``, saved with its checkpoints) by default, with the command
  line's ``--config.KEY=VALUE`` overrides (their values parsed by ``given``); ``given``
  when the source has none (official weights) or when ``--config`` is given explicitly,
  in which case its model section must be the run's.

  Raises:
    UsageError: ``--config`` describes another model than the run's (the message names
      every parameter that differs).
  """
  if stored is None:
    return given
  if given_explicitly:
    changes = config_checks.config_changes(stored.get("model", {}), given.model, free=())
    if changes:
      raise validation.UsageError(
          f"--config describes another model than the run {source}: "
          f"{'; '.join('model.' + c for c in changes)} (run -> --config); leave out "
          "--config to evaluate with the run's own config")
    return given
  config = ml_collections.ConfigDict(stored)
  for key in overrides:
    value = given
    for part in key.split("."):
      value = value[part]
    parent = config
    *path, last = key.split(".")
    for part in path:
      parent = parent[part]
    parent[last] = value
  config.lock()
  return config


def main(argv):
  if len(argv) > 1:
    raise validation.UsageError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  if not flags.FLAGS["verbosity"].present:  # orbax / jax INFO lines would drown the progress
    logging.set_verbosity(logging.WARNING)
  sharding.cpu_device_per_core()  # renders split their rays over the devices
  source = _CHECKPOINT.value or _WORKDIR.value
  if not source:
    raise validation.UsageError("give --workdir (a training run) or --checkpoint")
  protocol = _PROTOCOL.value
  if protocol:
    protocols.check_data_root(protocols.get(protocol), _PROTOCOL_DATA.value)
  elif _PROTOCOL_DATA.value:
    raise validation.UsageError("--protocol_data needs --protocol")
  stored = None
  if not source.endswith(WEIGHT_FILE_SUFFIXES):
    try:
      params, stored = checkpoint.restore_params(source)
    except FileNotFoundError as e:
      raise validation.UsageError(str(e)) from None
  config = run_config(_CONFIG.value, flags.FLAGS["config"].present, stored or None,
                      _overrides(sys.argv), source)
  config = data_spec.apply(config, evaluate=flags.FLAGS.eval_data)
  config_checks.check_eval_config(config)
  out = _OUT.value or storage.join(_WORKDIR.value or ".", "eval")
  try:
    distributed_options(config.train)
    storage.check_writable(out)
  except (ValueError, storage.StorageError) as e:
    raise validation.UsageError(str(e)) from None
  initialize_distributed(config.train)
  if stored is None:
    model, params = load_model(config, source)
  else:
    try:
      model = registry.build(config.model)
    except ValueError as e:
      raise validation.prefixed("model", e) from None
    params = jax.tree.map(np.asarray, params)
  if protocol:
    if run_protocol(config, model, params, protocol, _PROTOCOL_DATA.value, out,
                    max_views_per_scene=_PROTOCOL_VIEWS.value) is not None:
      print(f"wrote {storage.join(out, 'protocol_' + protocol, 'metrics.json')} and "
            "per-view images")
    return
  if evaluation.run_eval(config, model, params, out) is not None:
    print(f"wrote {storage.join(out, 'metrics.json')} and per-view images")


def run_protocol(config, model: ModelFamily, params, protocol: str, data_root: str,
                 out: str, verbose: bool = True, max_views_per_scene: int = 0):
  """Evaluates ``params`` and the nearest source view on a protocol's frozen views
  (``movenerf.evaluation.protocols.run_protocol_eval``) with the config's chunk size,
  LPIPS networks (``eval.lpips``) and ``eval.image_size``; ``max_views_per_scene`` > 0
  scores only each scene's first targets (named in the table's header); returns the
  summary (None off the chief)."""
  variables = {"params": params}
  chunk = config.eval.chunk_size
  predict = lambda ex: evaluation.render_example(model, variables, ex, chunk)
  return protocols.run_protocol_eval(
      protocol, data_root, out, predict, protocols.lpips_functions(config.eval),
      image_size=config.eval.get("image_size"), verbose=verbose,
      max_views_per_scene=max_views_per_scene)


if __name__ == "__main__":
  run()
