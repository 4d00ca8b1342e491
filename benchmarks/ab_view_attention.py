"""A/B of the view attention's softmax-sum (``attend_views``) forms, in one process.

A is the library's ``attend_views``; B is a variant defined here (``--variant``):

  noreduce  backward without the reduction over views: ``dlogits = w * dx * (scale *
            value - x)`` with the output ``x`` kept from the forward pass (``sum_v w *
            scale * value * dx = x * dx``), ``dvalue = w * scale * dx``.
  scaled    residuals ``w`` and ``ws = w * scale`` instead of ``w`` and the dropout
            multipliers: ``t = ws * value * dx``, ``dlogits = t - w * sum_v t``,
            ``dvalue = ws * dx``.

Both programs are compiled in the same process and timed alternately (A, B, A, B, ...),
so that the host's drift and other jobs on it fall on both; wall and process CPU time.

  python benchmarks/ab_view_attention.py --variant scaled --what micro --rounds 15
  python benchmarks/ab_view_attention.py --variant scaled --what train --rounds 7

``micro``: one ``ViewAttention`` forward and backward on a 32-ray training slice (64
samples, 10 views, width 64, dropout 0.1), 10 calls per timed run; ``train``: the
reference GNT train step of ``movenerf.tools.bench.prepare_train`` (512 rays, float32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.models.gnt import view_transformer as vt


def _noreduce_fwd(logits, value, scale):
  weights = vt._view_softmax(logits)
  x = jnp.sum(weights * scale * value, axis=-2)
  return x, (weights, value, scale, x)


def _noreduce_bwd(res, dx):
  weights, value, scale, x = res
  wdx = weights * dx[..., None, :]
  dlogits = wdx * (scale * value - x[..., None, :])
  return dlogits, (wdx * scale).astype(value.dtype), None


def _scaled_fwd(logits, value, scale):
  weights = vt._view_softmax(logits)
  scaled = weights * scale
  return jnp.sum(scaled * value, axis=-2), (weights, scaled, value)


def _scaled_bwd(res, dx):
  weights, scaled, value = res
  dx = dx[..., None, :]
  t = scaled * value * dx
  dlogits = t - weights * jnp.sum(t, axis=-2, keepdims=True)
  return dlogits, (scaled * dx).astype(value.dtype), None


def _custom(fwd, bwd):
  f = jax.custom_vjp(lambda logits, value, scale: fwd(logits, value, scale)[0])
  f.defvjp(fwd, bwd)
  return f


VARIANTS = {"noreduce": _custom(_noreduce_fwd, _noreduce_bwd),
            "scaled": _custom(_scaled_fwd, _scaled_bwd)}


@contextlib.contextmanager
def traced_with(attend_views):
  """Programs traced inside use ``attend_views`` (None: the library's)."""
  saved = vt.attend_views
  if attend_views is not None:
    vt.attend_views = attend_views
  try:
    yield
  finally:
    vt.attend_views = saved


def _micro(variant):
  from movenerf.nn import dropout
  r, s, v, d = 32, 64, 10, 64
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(r, s, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(r, s, v, d)), jnp.float32)
  rd = jnp.asarray(rng.normal(size=(r, s, v, 4)), jnp.float32)
  mask = jnp.asarray(rng.random((r, s, v, 1)) > 0.2, jnp.float32)
  ct = jnp.asarray(rng.normal(size=(r, s, d)), jnp.float32)
  mod = vt.ViewAttention(0.1)
  params = mod.init({"params": jax.random.PRNGKey(0)}, q, k, rd, mask)

  def loss(p, q, k):
    y = mod.apply(p, q, k, rd, mask, deterministic=False,
                  rngs={dropout.RNG_COLLECTION: jax.random.PRNGKey(1)})
    return jnp.sum(y * ct)

  steps = {}
  for name, form in (("A", None), ("B", VARIANTS[variant])):
    with traced_with(form):
      f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(params, q, k).compile()
    steps[name] = (lambda f=f: f(params, q, k))
  a, b = steps["A"](), steps["B"]()
  err = max(float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(x)), 1.0))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print(f"A vs B, loss and gradients: max |A - B| / max(max |A|, 1) = {err:.2e}")
  return steps, 10


def _train(variant):
  from movenerf.models.gnt.model import GNTConfig
  from movenerf.tools import bench
  steps = {}
  for name, form in (("A", None), ("B", VARIANTS[variant])):
    with traced_with(form):
      p = bench.prepare_train(GNTConfig())
    steps[name] = p.step
  return steps, 1


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", default="scaled", choices=sorted(VARIANTS))
  parser.add_argument("--what", default="train", choices=["micro", "train"])
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  steps, inner = (_micro if args.what == "micro" else _train)(args.variant)
  for f in steps.values():  # untimed
    jax.block_until_ready(f())
  wall = {"A": [], "B": []}
  cpu = {"A": [], "B": []}  # process CPU time (all threads): less sensitive to other jobs
  for _ in range(args.rounds):
    for name in "AB":
      begin, begin_cpu = time.perf_counter(), time.process_time()
      for _ in range(inner):
        jax.block_until_ready(steps[name]())
      wall[name].append((time.perf_counter() - begin) / inner)
      cpu[name].append((time.process_time() - begin_cpu) / inner)
  out = {"variant": args.variant, "what": args.what, "rounds": args.rounds}
  for clock, times in (("wall", wall), ("cpu", cpu)):
    for n, t in times.items():
      out[f"{n}_{clock}_s"] = t
      print(f"{n} {clock}: median {statistics.median(t) * 1e3:.1f} ms "
            f"(min {min(t) * 1e3:.1f}, max {max(t) * 1e3:.1f}; {len(t)} rounds)")
    ratios = [a / b for a, b in zip(times["A"], times["B"])]
    out[f"ratio_{clock}"] = ratios
    print(f"A/B {clock} per round: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
