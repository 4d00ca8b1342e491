r"""Trains GNT, GNT-MoVE or Decoupling-NeRF across scenes; resumes automatically;
evaluates at the end.

  python -m movenerf.train --config gnt_move:tiny --workdir runs/demo
  python -m movenerf.train --config experiments/decoupled_nerf.py:tiny --workdir runs/dc
  python -m movenerf.train --config gnt:tiny --workdir runs/llff \
      --train_data "llff:DIR[scenes=fern|trex]" --eval_data "llff:DIR[scenes=flower]"
  python -m movenerf.train --config gnt:paper --workdir gs://... \
      --config.data.train.generated.format=tfds --config.data.train.generated.path=DIR

Before anything is written or compiled, the config is checked (types, ranges, choices,
the batch against the devices), the datasets are read and the workdir is tried; a
problem is one line naming the key or path (exit status 2). A workdir is used by one
training at a time (a lock that dies with its process), and one with checkpoints
resumes only with the config that made them (the message names what differs).

The workdir receives ``checkpoints/`` (orbax: state, data-stream position, config; a
newest checkpoint that cannot be read is moved aside and the one before it restored),
``tb/`` (TensorBoard: losses, PSNR, learning rates, norms, MoE load, validation render,
depth and expert map, the config, the evaluation's scores), ``train_metrics.jsonl``
(one JSON record per logged step; after a resume it continues from the restored step)
and, when ``eval.at_end``, ``eval/`` (per-view PNGs and comparison sheets,
``metrics.json``, a video). Restarting with the same workdir resumes from the latest
checkpoint, including the position in the data stream; SIGTERM (a preemption) saves a
checkpoint before exiting. A checkpoint that cannot be saved stops the run at once, and
so do ``train.max_skipped_steps`` updates skipped in a row (a diverged run); both exit
with status 1 and name the checkpoint to resume from.

The workdir may be a URL (``gs://...``, ``s3://...``; see ``movenerf.storage``).

Multi-host (e.g. a Cloud TPU pod slice): set ``--config.train.distributed=true`` and run
the same command on every host (``gcloud compute tpus tpu-vm ssh NAME --worker=all
--command="python -m movenerf.train ..."``); each host reads its share of every batch
and saves its own data-stream position, checkpoints are written collectively to a shared
workdir (``gs://`` or a shared file system), the held-out views are split over the
hosts, and host 0 writes logs and evaluation results. ``train.coordinator_address`` /
``num_processes`` / ``process_id`` set the layout where JAX cannot detect it (as it does
on TPU VMs and SLURM). Several processes on one machine's CPU, e.g. to test this, with
the same losses as one process of 4 devices:

  python -m movenerf.tools.launch --processes 2 --devices-per-process 2 -- movenerf.train \
      --config gnt_move:tiny --workdir runs/mp --config.data.global_batch=4
"""
from __future__ import annotations

import json
import re
import signal
import time
from typing import Any, Optional

from absl import flags, logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from movenerf import cli, configs, sharding, storage, validation
from movenerf.data import pipeline
from movenerf.data import spec as data_spec
from movenerf.data import sources as train_data
from movenerf.evaluation import evaluate as evaluation
from movenerf.evaluation import tensorboard as tb_log
from movenerf.models import registry
from movenerf.models.family import ModelFamily
from movenerf.training import checkpoint, config_checks, optim, run_lock
from movenerf.training import state as train_state
from movenerf.training import step as train_step

# init_from files in another code base's format (anything else is a movenerf run).
WEIGHT_FILE_SUFFIXES = (".pth", ".npz", ".pt")

_CONFIG = _WORKDIR = None  # defined by _define_flags() when run as a program


def run() -> None:
  """The ``movenerf-train`` console script: defines the flags and runs ``main`` with
  one-line errors (exit status 2: usage, 1: run; ``--verbose``: with the traceback)."""
  cli.run(main, "movenerf.train", define=_define_flags,
          check=lambda: cli.config_check(_CONFIG)())


def _define_flags() -> None:
  """Flags exist only when this module is the program, so that importing it (tests, other
  tools) does not clash with other modules' --config / --workdir flags."""
  global _CONFIG, _WORKDIR
  _CONFIG = configs.define_config_flag("config", "gnt_move:tiny", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "run directory (resumes if it has "
                                 "checkpoints)", required=True)
  flags.DEFINE_string("train_data", None, "training datasets, replacing the config's "
                      "data.train: [NAME=]FORMAT[:PATH][[KEY=VALUE,...]] joined by '+' "
                      "(movenerf.data.spec)")
  flags.DEFINE_string("eval_data", None, "evaluation datasets, replacing the config's "
                      "data.eval (same form as --train_data)")


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


# jax.distributed.initialize waits this long for every process to join, then fails.
DISTRIBUTED_INIT_TIMEOUT_S = 300


def distributed_options(train_cfg) -> Optional[dict]:
  """The ``jax.distributed.initialize`` arguments of ``train.{coordinator_address,
  num_processes, process_id}``: only those that are set (none: JAX detects them, as on
  TPU VMs and SLURM); None when ``train.distributed`` is false.

  Raises:
    ValueError: a combination that cannot work, naming the config key.
  """
  address, count, rank = (train_cfg.coordinator_address, train_cfg.num_processes,
                          train_cfg.process_id)
  if not train_cfg.distributed:
    for key, value, unset in (("coordinator_address", address, ""),
                              ("num_processes", count, 0), ("process_id", rank, -1)):
      if value != unset:
        raise ValueError(f"train.{key}={value!r} is set but train.distributed is false "
                         "(set --config.train.distributed=true)")
    return None
  if count < 0:
    raise ValueError(f"train.num_processes={count}: give a count >= 1 (0: detected)")
  if rank < -1 or (count and rank >= count):
    raise ValueError(f"train.process_id={rank}: give a rank in [0, train.num_processes="
                     f"{count or '?'}) (-1: detected)")
  if (count or rank >= 0) and not address:
    raise ValueError("train.coordinator_address is empty but train.num_processes / "
                     "train.process_id are set: give HOST:PORT of process 0 as well")
  if address and not re.fullmatch(r".+:\d+", address):
    raise ValueError(f"train.coordinator_address={address!r} is not HOST:PORT")
  options: dict = {"initialization_timeout": DISTRIBUTED_INIT_TIMEOUT_S}
  if address:
    options["coordinator_address"] = address
  if count:
    options["num_processes"] = count
  if rank >= 0:
    options["process_id"] = rank
  return options


def initialize_distributed(train_cfg) -> None:
  """``jax.distributed.initialize`` with :func:`distributed_options` (when
  ``train.distributed``); must run before anything touches a device."""
  options = distributed_options(train_cfg)
  if options is None or jax.distributed.is_initialized():  # e.g. a second train() call
    return
  # Cross-process collectives on CPU need an implementation (older JAX default: none);
  # the setting only concerns the CPU backend and must precede initialisation.
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**options)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Everything of a run that can be checked before anything is written or compiled:
  the config against the devices, the model, the data and the workdir.

  Returns:
    ``family``, ``mesh``, ``spec``, ``maker`` and ``image_hw`` of the run.
  Raises:
    UsageError: the first thing that cannot work, named (key, value or path).
  """
  config_checks.check_run_config(config, jax.device_count(), jax.process_count())
  try:
    family = build_model(config)
  except ValueError as e:
    raise validation.prefixed("model", e) from None
  mesh = sharding.make_mesh(expert=config.train.mesh_expert)
  try:
    spec = pipeline.ExampleSpec.from_config(config.data.example.to_dict())
    sources, weights = train_data.make_sources(config.data.train)
    maker = pipeline.ExampleMaker(sources, weights, spec, seed=config.seed)
    image_hw = _source_hw(maker)
  except (ValueError, FileNotFoundError) as e:
    raise validation.UsageError(f"data.train: {e}") from None
  if config.eval.at_end and config.data.eval:
    try:
      evaluation.prepare_eval(config)
    except validation.UsageError:
      raise
    except (ValueError, FileNotFoundError) as e:
      raise validation.UsageError(f"data.eval: {e}") from None
  if storage.is_file(workdir):
    raise validation.UsageError(f"--workdir {workdir}: is a file, give a folder")
  try:
    storage.check_writable(workdir)
  except storage.StorageError as e:
    raise validation.UsageError(f"--workdir {e}") from None
  return dict(family=family, mesh=mesh, spec=spec, maker=maker, image_hw=image_hw)


def _check_resumable(config, workdir: str, ckpts: checkpoint.Checkpoints) -> None:
  """A workdir with checkpoints resumes only with the config that made them (up to
  ``config_checks.RESUME_FREE``); otherwise a UsageError names every difference."""
  stored_path = storage.join(workdir, "config.json")
  if ckpts.latest_step() is None or not storage.exists(stored_path):
    return
  stored = json.loads(storage.read_text(stored_path))
  changes = config_checks.config_changes(stored, config)
  if changes:
    raise validation.UsageError(
        f"--workdir {workdir} holds checkpoints of a run with another config, so it "
        f"cannot resume: {'; '.join(changes)} (stored -> given). Use another workdir, "
        f"or the stored values ({stored_path})")


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) training; returns the last logged metrics and, with
  ``eval.at_end``, the evaluation summary.

  Raises:
    UsageError: a config value, dataset or workdir that cannot work (before anything
      is written), another training holding the workdir, or checkpoints of another
      config in it.
    RunError: the run stopped early: its updates kept being skipped.
  """
  initialize_distributed(config.train)
  workdir = str(storage.path(workdir))
  run = prepare(config, workdir)
  lock = run_lock.RunLock(workdir) if jax.process_index() == 0 else None
  try:
    return _train(config, workdir, **run)
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir, family, mesh, spec, maker, image_hw) -> dict:
  is_chief = jax.process_index() == 0
  tx = optim.make_optimizer(config.optim)
  lr_fns = optim.learning_rate_fns(config.optim)

  ckpts = checkpoint.Checkpoints(workdir, config.train.keep_checkpoints,
                                 config.train.async_checkpoints)
  _check_resumable(config, workdir, ckpts)
  params = initial_params(config, family)
  state, shardings = train_state.create_state(params, tx, config.seed, mesh)
  del params
  share, shares = sharding.data_share(mesh)
  iterator = pipeline.train_iterator(
      maker, config.data.global_batch, num_workers=config.data.num_workers,
      process_index=share, process_count=shares)
  restored = ckpts.restore(state, iterator)
  if restored is not None:
    state, _, step0 = restored
    logging.info("resumed from checkpoint %d", step0)
    if is_chief:
      print(f"resuming from {ckpts.remote}/{step0}")
  step_fn = train_step.make_train_step(family, tx, config.loss, image_hw, mesh, shardings,
                                       sub_chunk=config.train.sub_chunk)

  num_steps = config.train.num_steps
  rays_per_step = config.data.global_batch * spec.rays_per_example
  start = int(jax.device_get(state.step))
  writer = log = None
  if is_chief:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    # purge_step: TensorBoard drops what an earlier attempt logged after the checkpoint.
    writer = SummaryWriter(storage.join(workdir, "tb"), purge_step=start or None)
    tb_log.log_config(writer, config, start)
    storage.write_json(storage.join(workdir, "config.json"),
                       config.to_dict(), indent=2, default=str)
    log = storage.JsonLines(storage.join(workdir, "train_metrics.jsonl"))
    log.truncate_after(start)  # a resumed run redoes the steps after its checkpoint
  preempt = _Preemption()
  t_start = t_last = time.perf_counter()
  last_logged: dict = {}
  validation = _validation_view(config) if is_chief and config.train.image_every else None

  def save(step, force=False):
    ckpts.save(step, state, iterator, config.to_dict(), force=force)

  step = start
  skips = _SkipWatch(int(jax.device_get(state.skipped)), start,
                     config.train.max_skipped_steps)
  diverged = False
  try:
    with jax.set_mesh(mesh):
      while step < num_steps:
        batch = pipeline.to_device_batch(next(iterator), mesh)
        state, metrics = step_fn(state, batch)
        # Awaiting each step keeps CPU collectives from overlapping (they can abort on
        # small hosts) and makes the timing honest; device work is still asynchronous
        # with respect to nothing but the next step, which needs this one's state anyway.
        metrics = jax.block_until_ready(metrics)
        step += 1
        diverged = skips.update(step, int(jax.device_get(state.skipped)))
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
            _write_scalars(writer, log, step, scalars)
        if config.train.image_every and step % config.train.image_every == 0 and config.data.eval:
          params = _host_params(state.params)  # every process: a collective with several
          if validation is not None:
            _log_validation(writer, family, params, validation, step, config)
        save_error = _save_error(ckpts)  # a failed background save stops every process
        sigterm, timeout, save_failed = _on_any_process(
            preempt.requested, config.train.max_minutes > 0 and
            time.perf_counter() - t_start > 60 * config.train.max_minutes,
            save_error is not None)
        if save_failed:
          raise save_error or cli.RunError(f"stopped at step {step}: saving a checkpoint "
                                           "failed on another process")
        stop = sigterm or timeout
        if diverged:
          break
        if step % config.train.checkpoint_every == 0 or step == num_steps or stop:
          save(step, force=stop or step == num_steps)
        if stop:
          if is_chief:
            print(f"stopping at step {step} ({'SIGTERM' if sigterm else 'time limit'});"
                  f" checkpoint saved, rerun the same command to resume")
          break
  except checkpoint.CheckpointError:
    # The failed save's other items may still be writing in the background: let them
    # end before the error leaves (a rerun in this process would meet them otherwise).
    try:
      ckpts.close()
    except Exception:  # pylint: disable=broad-except  (the error raised is the first one)
      pass
    iterator.close()
    raise
  ckpts.close()
  iterator.close()
  if writer is not None:
    writer.close()
  if diverged:
    raise cli.RunError(skips.message(step, ckpts.latest_step()))
  result = {"train": last_logged, "step": step}
  if config.eval.at_end and step >= num_steps:
    # Every process renders its share of the views on its own devices; the chief writes.
    summary = evaluation.run_eval(config, family, _host_params(state.params),
                                  storage.join(workdir, "eval"))
    if summary is not None:
      result["eval"] = summary
      # An event file of its own: reopening the closed writer would repeat its purge_step.
      with tb_log.open_writer(storage.join(workdir, "tb"), ".eval") as eval_writer:
        tb_log.log_eval(eval_writer, summary, step)
  return result


class _SkipWatch:
  """Counts updates skipped in a row (non-finite loss or gradients leave the state as it
  was); ``update`` is true once ``limit`` of them follow each other (0: never)."""

  def __init__(self, skipped: int, step: int, limit: int):
    self.skipped, self.last_applied, self.limit, self.in_a_row = skipped, step, limit, 0

  def update(self, step: int, skipped: int) -> bool:
    if skipped > self.skipped:
      self.in_a_row += skipped - self.skipped
    else:
      self.in_a_row, self.last_applied = 0, step
    self.skipped = skipped
    return bool(self.limit) and self.in_a_row >= self.limit

  def message(self, step: int, checkpoint_step: Optional[int]) -> str:
    kept = (f"checkpoint {checkpoint_step} is kept" if checkpoint_step is not None
            else "no checkpoint was saved")
    return (f"stopped at step {step}: its last {self.in_a_row} updates were skipped "
            f"(non-finite loss or gradients, e.g. a learning rate too large); the last "
            f"applied update was step {self.last_applied}; {kept} "
            f"(train.max_skipped_steps={self.limit})")


def _host_params(params: Any) -> Any:
  """The whole parameters as NumPy arrays on this host. With several processes every one
  must call it (MoVE experts split over hosts are gathered)."""
  if jax.process_count() == 1:
    return jax.device_get(params)
  return multihost_utils.process_allgather(params, tiled=True)


def _save_error(ckpts: checkpoint.Checkpoints) -> Optional[Exception]:
  """The error of this process's last background save, if it failed (else None)."""
  try:
    ckpts.check()
  except checkpoint.CheckpointError as e:
    return e
  return None


def _on_any_process(*flags_: bool) -> tuple[bool, ...]:
  """Each flag or-ed over the processes (the same answer everywhere), so that all stop at
  the same step: a SIGTERM or a clock reaches the hosts at different steps."""
  if jax.process_count() == 1:
    return tuple(bool(f) for f in flags_)
  every = multihost_utils.process_allgather(np.asarray(flags_, np.int32))
  return tuple(bool(f) for f in np.asarray(every).reshape(-1, len(flags_)).any(axis=0))


def _write_scalars(writer, log: storage.JsonLines, step: int, scalars: dict) -> None:
  for k, v in scalars.items():
    if k != "step":
      writer.add_scalar(k, v, step)
  writer.flush()
  log.append(scalars)


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
  tb_log.log_validation(writer, out, ex, step)


def main(argv):
  if len(argv) > 1:
    raise validation.UsageError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  if not flags.FLAGS["verbosity"].present:  # orbax / jax INFO lines would drown the progress
    logging.set_verbosity(logging.WARNING)
  config = data_spec.apply(_CONFIG.value, flags.FLAGS.train_data, flags.FLAGS.eval_data)
  workdir = _WORKDIR.value
  try:
    distributed_options(config.train)
  except ValueError as e:
    raise validation.UsageError(str(e)) from None
  result = train(config, workdir)
  if jax.process_index() == 0:
    storage.write_json(storage.join(workdir, "result.json"),
                       result, indent=2, default=float)
    if "eval" in result:
      print(f"done: renders, metrics and video in {storage.join(workdir, 'eval')}")


if __name__ == "__main__":
  run()
