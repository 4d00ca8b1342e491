"""Checks of a run's config before anything is created or compiled.

:func:`check_run_config` checks the sections the training loop reads (``data``, ``optim``,
``loss``, ``train``, ``eval``, ``init_from``) against the device and process counts; the
model section is checked by its family's config class (``registry.build``). Each failure
is a :class:`movenerf.validation.UsageError` whose message names the key, the value and
what is allowed.
"""

from __future__ import annotations

import json
from typing import Any

from movenerf import storage, validation
from movenerf.data import pipeline
from movenerf.training import optim

UsageError = validation.UsageError


def _get(section: Any, key: str, default: Any = None) -> Any:
  return section.get(key, default) if hasattr(section, "get") else default


def check_run_config(config: Any, device_count: int, process_count: int = 1) -> None:
  """Raises UsageError for the first value of ``config`` that cannot work.

  Args:
    config: the run's ConfigDict.
    device_count: devices of the run (all processes).
    process_count: processes of the run.
  """
  v = validation
  v.integer("seed", config.seed, minimum=0)
  data, train = config.data, config.train

  # train
  v.integer("train.num_steps", train.num_steps, minimum=1)
  v.integer("train.log_every", train.log_every, minimum=1)
  v.integer("train.image_every", train.image_every, minimum=0)
  v.integer("train.checkpoint_every", train.checkpoint_every, minimum=1)
  v.integer("train.keep_checkpoints", train.keep_checkpoints, minimum=1)
  v.number("train.max_minutes", train.max_minutes, minimum=0.0)
  v.integer("train.sub_chunk", train.sub_chunk, minimum=0)
  v.integer("train.max_skipped_steps", train.max_skipped_steps, minimum=0)
  expert = v.integer("train.mesh_expert", train.mesh_expert, minimum=1)
  if device_count % expert:
    raise UsageError(f"train.mesh_expert={expert}: must divide the {device_count} devices")
  moe = _get(config.model, "moe")
  if moe is not None and expert > 1 and _get(moe, "num_experts", 0) % expert:
    raise UsageError(f"model.moe.num_experts={moe.num_experts} is not divisible by "
                     f"train.mesh_expert={expert}")

  # data
  rows = device_count // expert
  batch = v.integer("data.global_batch", data.global_batch, minimum=1)
  if batch % rows:
    raise UsageError(f"data.global_batch={batch}: must be a multiple of the {rows} data-"
                     f"parallel devices ({device_count} devices / train.mesh_expert="
                     f"{expert}); e.g. {rows * max(1, -(-batch // rows))}")
  if process_count > 1 and batch % process_count:
    raise UsageError(f"data.global_batch={batch}: must be a multiple of the "
                     f"{process_count} processes")
  v.integer("data.num_workers", data.num_workers, minimum=0)
  if not data.train:
    raise UsageError("data.train is empty: name at least one training dataset")
  try:
    pipeline.ExampleSpec.from_config(data.example.to_dict())
  except ValueError as e:
    raise v.prefixed("data.example", e) from None

  # optim
  o = config.optim
  v.one_of("optim.name", o.name, optim.OPTIMIZERS)
  for key in ("lr_feature", "lr_transformer"):
    v.number(f"optim.{key}", o[key], minimum=0.0)
  v.integer("optim.decay_steps", o.decay_steps, minimum=0)
  v.number("optim.decay_rate", o.decay_rate, above=0.0)
  v.number("optim.b1", o.b1, minimum=0.0, below=1.0)
  v.number("optim.b2", o.b2, minimum=0.0, below=1.0)
  v.number("optim.eps", o.eps, minimum=0.0)
  v.number("optim.clip_norm", o.clip_norm, minimum=0.0)
  v.integer("optim.accumulate_steps", o.accumulate_steps, minimum=1)

  # loss: term weights, softmax temperatures, counts of sample points, commitment costs
  for key, value in config.loss.items():
    if key.endswith("_weight"):
      v.number(f"loss.{key}", value, minimum=0.0)
    elif key.endswith("_temperature"):
      v.number(f"loss.{key}", value, above=0.0)
    elif key.endswith("_points"):
      v.integer(f"loss.{key}", value, minimum=2)
    elif key.endswith("_commitment"):
      v.number(f"loss.{key}", value, minimum=0.0)

  check_eval_config(config)
  if config.init_from and not storage.exists(config.init_from):
    raise UsageError(f"init_from={config.init_from!r}: no such run folder or weights file")


def check_eval_config(config: Any) -> None:
  """Raises UsageError for the first value of ``config.eval`` (and the evaluation
  datasets) that cannot work."""
  v, ev = validation, config.eval
  v.integer("eval.num_source_views", ev.num_source_views, minimum=1)
  v.integer("eval.max_views_per_scene", ev.max_views_per_scene, minimum=0)
  v.integer("eval.chunk_size", ev.chunk_size, minimum=1)
  v.integer("eval.video_frames", ev.video_frames, minimum=0)
  v.integer("eval.video_fps", ev.video_fps, minimum=1)
  size = _get(ev, "image_size")
  if size is not None:
    if len(size) != 2:
      raise UsageError(f"eval.image_size={tuple(size)!r}: give (H, W)")
    for n in size:
      v.integer("eval.image_size[]", n, minimum=1)
  nets = _get(ev, "lpips", "alex,vgg")
  if not isinstance(nets, str):
    raise UsageError(f"eval.lpips={nets!r}: give network names joined by ',', e.g. "
                     "'alex,vgg', or '' for none")
  names = [n.strip() for n in nets.split(",") if n.strip()]
  for name in names:
    v.one_of("eval.lpips[]", name, ("alex", "vgg"))
  if len(set(names)) != len(names):
    raise UsageError(f"eval.lpips={nets!r}: a network is named twice")


# Keys a resumed run may change: how long and how often it logs, saves and evaluates,
# the data loader's processes and the device / process layout. Everything else (model,
# data, example, optimiser, loss, seed) decides the results and must match the run.
RESUME_FREE = ("variant", "init_from", "upcycle", "data.num_workers", "train.num_steps",
               "train.log_every", "train.image_every", "train.checkpoint_every",
               "train.keep_checkpoints", "train.async_checkpoints", "train.max_minutes",
               "train.max_skipped_steps", "train.mesh_expert", "train.sub_chunk",
               "train.distributed", "train.coordinator_address", "train.num_processes",
               "train.process_id", "eval", "render", "render_view", "checkpoint")


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
  """(key, a's value, b's value) where two JSON-like trees differ; a section on one side
  and a value (or nothing) on the other is one difference."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in sorted(set(a) | set(b)):
      out += _differences(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}{key}.")
    return out
  return [] if a == b else [(prefix.rstrip("."), a, b)]


class _Absent:
  def __repr__(self) -> str:
    return "(absent)"


_ABSENT = _Absent()


def _shown(value: Any) -> str:
  return "(a section)" if isinstance(value, dict) else repr(value)


def _plain(config: Any) -> dict:
  """A config as the JSON of ``config.json`` reads back (tuples as lists)."""
  values = config.to_dict() if hasattr(config, "to_dict") else config
  return json.loads(json.dumps(values, default=str))


def config_changes(stored: Any, current: Any,
                   free: tuple[str, ...] = RESUME_FREE) -> list[str]:
  """``'key: stored -> current'`` for each key whose value differs between two configs,
  leaving out the keys under ``free`` and the keys the stored config lacks that are off
  in the current one (None, False, "" or 0), or that set a term whose weight
  (``NAME_weight`` beside ``NAME_...``) is such a key, or an option whose switches in
  another section, named with the same first word (``model.vq_codebook_size`` for
  ``loss.vq_commitment``), are all such keys: options added to the code since the run
  started, whose off value is the behaviour the run had."""

  def is_free(key):
    return any(key == f or key.startswith(f + ".") for f in free)

  def is_off(b):
    return (b is None or b is False or b == ""
            or (isinstance(b, (int, float)) and not isinstance(b, bool) and b == 0))

  differences = _differences(_plain(stored), _plain(current))
  new = {k for k, a, _ in differences if a is _ABSENT}
  new_and_off = {k for k, a, b in differences if a is _ABSENT and is_off(b)}

  def option(key):
    section, _, name = key.rpartition(".")
    return section, name.split("_", 1)[0]

  def of_an_off_term(key, a):
    section, _, name = key.rpartition(".")
    stem = name.rsplit("_", 1)[0]
    weight = f"{section}.{stem}_weight" if section else f"{stem}_weight"
    if a is not _ABSENT or "_" not in name:
      return False
    # Switches in another section with the same first word (model.vq_codebook_size
    # beside loss.vq_commitment): new, and every new one off.
    section, word = option(key)
    switches = {k for k in new if "_" in k.rpartition(".")[2] and option(k)[1] == word
                and option(k)[0] != section}
    return weight in new_and_off or (bool(switches) and switches <= new_and_off)

  return [f"{k}: {_shown(a)} -> {_shown(b)}" for k, a, b in differences
          if not is_free(k) and k not in new_and_off and not of_an_off_term(k, a)]
