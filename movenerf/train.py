r"""Trains GNT, GNT-MoVE or Decoupling-NeRF across scenes; resumes automatically;
evaluates at the end.

  python -m movenerf.train --config experiments/gnt_move.py:tiny --workdir runs/demo
  python -m movenerf.train --config experiments/decoupled_nerf.py:tiny --workdir runs/dc
  python -m movenerf.train --config experiments/gnt.py:paper --workdir gs://... \
      --config.data.train.generated.format=tfds --config.data.train.generated.path=DIR

The workdir receives ``checkpoints/`` (orbax: state, data-iterator state, config),
``tb/`` (TensorBoard: losses, PSNR, learning rates, norms, MoE load; validation render,
depth and expert map), ``train_metrics.jsonl`` and, when ``eval.at_end``, ``eval/``
(per-view PNGs, ``metrics.json``, a video). Restarting with the same workdir resumes
from the latest checkpoint, including the position in the data stream; SIGTERM (a
preemption) saves a checkpoint before exiting.

Multi-host (e.g. a Cloud TPU pod slice): set ``--config.train.distributed=true`` and run
the same command on every host (``gcloud compute tpus tpu-vm ssh NAME --worker=all
--command="python -m movenerf.train ..."``); each host reads its share of every batch,
only host 0 writes logs, and checkpoints are written collectively to a shared workdir.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Optional

from absl import app, flags, logging
import jax
import ml_collections
import numpy as np
from ml_collections import config_flags

from movenerf import sharding
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.evaluation import evaluate as evaluation
from movenerf.evaluation import visualize
from movenerf.image import metrics
from movenerf.models import registry
from movenerf.models.family import ModelFamily
from movenerf.training import checkpoint, optim
from movenerf.training import state as train_state
from movenerf.training import step as train_step

# init_from files in another code base's format (anything else is a movenerf run).
WEIGHT_FILE_SUFFIXES = (".pth", ".npz", ".pt")

_CONFIG = _WORKDIR = None  # defined by _define_flags() when run as a program


def _define_flags() -> None:
  """Flags exist only when this module is the program, so that importing it (tests, other
  tools) does not clash with other modules' --config / --workdir flags."""
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/gnt_move.py:tiny",
                                            "experiment config file:variant", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "run directory (resumes if it has "
                                 "checkpoints)", required=True)


def build_model(config) -> ModelFamily:
  """The model family of ``config.model`` (GNT / GNT-MoVE, or Decoupling-NeRF by ``name``)."""
  return registry.build(config.model)


def initial_params(config, family: ModelFamily) -> Any:
  """Random init, or ``config.init_from``: a movenerf run, or another code base's weights
  (official GNT ``.pth`` / ``.npz``); ``config.upcycle`` turns dense weights into MoVE
  experts."""
  params = family.init_params(jax.random.PRNGKey(config.seed))
  src = config.init_from
  if not src:
    return params
  if src.endswith(WEIGHT_FILE_SUFFIXES):
    loaded = family.import_params(src)
  else:
    loaded, _ = checkpoint.restore_params(src)
  if config.upcycle:
    return family.upcycle(loaded, params)
  if jax.tree.structure(loaded) != jax.tree.structure(params):
    raise ValueError(f"init_from={src}: its parameters do not match the configured model "
                     "(set upcycle=true to start MoVE from a dense model)")
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  bad = [f"{jax.tree_util.keystr(k)}: {np.shape(a)} vs {np.shape(b)}"
         for (k, b), a in zip(flat, jax.tree.leaves(loaded)) if np.shape(a) != np.shape(b)]
  if bad:
    raise ValueError(f"init_from={src}: parameter shapes do not match the configured model "
                     f"(checkpoint vs config): {bad[:5]}")
  return jax.tree.map(lambda a, b: np.asarray(a, dtype=np.asarray(b).dtype), loaded, params)


def _source_hw(maker: pipeline.ExampleMaker) -> tuple[int, int]:
  """The one source image size of the training data (the step is compiled for it)."""
  if maker.spec.source_size is not None:
    return tuple(maker.spec.source_size)
  sizes = {(c.height, c.width) for n in maker.names
           for c in maker.sources[n].scenes(maker.spec.source_split)}
  if len(sizes) != 1:
    raise ValueError(f"training scenes have several image sizes {sorted(sizes)}; set "
                     "data.example.source_size=(H, W) to resize the source views")
  return sizes.pop()


class _Preemption:
  """Turns SIGTERM into a flag the loop checks, so it saves before exiting."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside a test runner thread)
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def _scalars(metrics: dict) -> dict:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) training; returns the last logged metrics and, with
  ``eval.at_end``, the evaluation summary."""
  if config.train.distributed:
    jax.distributed.initialize()
  is_chief = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  family = build_model(config)
  mesh = sharding.make_mesh(expert=config.train.mesh_expert)
  spec = pipeline.ExampleSpec.from_config(config.data.example.to_dict())
  sources, weights = train_data.make_sources(config.data.train)
  maker = pipeline.ExampleMaker(sources, weights, spec, seed=config.seed)
  image_hw = _source_hw(maker)
  tx = optim.make_optimizer(config.optim)
  lr_fns = optim.learning_rate_fns(config.optim)

  params = initial_params(config, family)
  state, shardings = train_state.create_state(params, tx, config.seed, mesh)
  del params
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints,
                            config.train.async_checkpoints)
  data_state = None
  restored = checkpoint.restore(mngr, state)
  if restored is not None:
    state, data_state, _, step0 = restored
    logging.info("resumed from checkpoint %d", step0)
    if is_chief:
      print(f"resuming from {workdir}/checkpoints/{step0}")
  iterator = pipeline.train_iterator(
      maker, config.data.global_batch, num_workers=config.data.num_workers,
      process_index=jax.process_index(), process_count=jax.process_count(),
      state=data_state or None)
  step_fn = train_step.make_train_step(family, tx, config.loss, image_hw, mesh, shardings,
                                       sub_chunk=config.train.sub_chunk)

  writer = None
  if is_chief:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    writer = SummaryWriter(os.path.join(workdir, "tb"))
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config.to_dict(), f, indent=2, default=str)
  preempt = _Preemption()
  num_steps = config.train.num_steps
  rays_per_step = config.data.global_batch * spec.rays_per_example
  start = int(jax.device_get(state.step))
  t_start = t_last = time.perf_counter()
  last_logged: dict = {}
  validation = _validation_view(config) if is_chief and config.train.image_every else None

  def save(step, force=False):
    checkpoint.save(mngr, step, state, iterator.get_state(), config.to_dict(), force=force)

  step = start
  with jax.set_mesh(mesh):
    while step < num_steps:
      batch = pipeline.to_device_batch(next(iterator), mesh)
      state, metrics = step_fn(state, batch)
      # Awaiting each step keeps CPU collectives from overlapping (they can abort on
      # small hosts) and makes the timing honest; device work is still asynchronous
      # with respect to nothing but the next step, which needs this one's state anyway.
      metrics = jax.block_until_ready(metrics)
      step += 1
      if step % config.train.log_every == 0 or step == num_steps:
        now = time.perf_counter()
        scalars = _scalars(metrics)
        steps_done = step - start
        rate = config.train.log_every * rays_per_step / max(now - t_last, 1e-9)
        eta = (num_steps - step) * (now - t_start) / max(steps_done, 1)
        scalars.update(step=step, rays_per_s=rate, elapsed_s=now - t_start,
                       lr_feature=float(lr_fns["feature"](step)),
                       lr_transformer=float(lr_fns["transformer"](step)),
                       skipped_updates=int(jax.device_get(state.skipped)))
        last_logged = scalars
        t_last = now
        if is_chief:
          print(f"step {step}/{num_steps}  loss {scalars['loss']:.5f}  "
                f"psnr {scalars['psnr']:.2f}  {rate:,.0f} rays/s  ETA {eta / 60:.1f} min"
                + (f"  skipped {scalars['skipped_updates']}"
                   if scalars["skipped_updates"] else ""), flush=True)
          _write_scalars(writer, workdir, step, scalars)
      if validation is not None and step % config.train.image_every == 0:
        _log_validation(writer, family, state.params, validation, step, config)
      stop = preempt.requested or (config.train.max_minutes > 0 and
                                   time.perf_counter() - t_start > 60 * config.train.max_minutes)
      if step % config.train.checkpoint_every == 0 or step == num_steps or stop:
        save(step, force=stop or step == num_steps)
      if stop:
        if is_chief:
          print(f"stopping at step {step} ({'SIGTERM' if preempt.requested else 'time limit'});"
                f" checkpoint saved, rerun the same command to resume")
        break
  mngr.wait_until_finished()
  mngr.close()
  iterator.close()
  if writer is not None:
    writer.close()
  result = {"train": last_logged, "step": step}
  if config.eval.at_end and step >= num_steps:
    result["eval"] = evaluation.run_eval(config, family, jax.device_get(state.params),
                                         os.path.join(workdir, "eval"))
  return result


def _write_scalars(writer, workdir: str, step: int, scalars: dict) -> None:
  for k, v in scalars.items():
    if k != "step":
      writer.add_scalar(k, v, step)
  writer.flush()
  with open(os.path.join(workdir, "train_metrics.jsonl"), "a") as f:
    f.write(json.dumps(scalars) + "\n")


def _validation_view(config) -> Optional[dict]:
  """The first held-out view of the first evaluation dataset."""
  if not config.data.eval:
    return None
  name = sorted(config.data.eval.keys())[0]
  source = train_data.make_source(name, config.data.eval[name])
  return next(pipeline.eval_examples(source, config.eval.num_source_views,
                                     image_size=config.eval.get("image_size")), None)


def _log_validation(writer, family: ModelFamily, params, ex: dict, step: int,
                    config) -> None:
  out = evaluation.render_example(family, {"params": jax.device_get(params)}, ex,
                                  config.eval.chunk_size)
  gt = ex["tgt_image"].astype(np.float32) / 255.0
  panels = evaluation.panels(out, ex)
  writer.add_image("val/render_vs_gt", visualize.contact_sheet([out["rgb"], gt], columns=2),
                   step, dataformats="HWC")
  writer.add_image("val/depth", panels["depth"], step, dataformats="HWC")
  if "experts" in panels:
    writer.add_image("val/experts", panels["experts"], step, dataformats="HWC")
  writer.add_scalar("val/psnr", metrics.psnr(out["rgb"], gt), step)
  writer.flush()


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # orbax / jax INFO lines would drown the progress
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value
  result = train(config, workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=2, default=float)
    if "eval" in result:
      print(f"done: renders, metrics and video in {os.path.join(workdir, 'eval')}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
