"""A/B of forms of the view and ray attention, in one process.

A is the library (its ``ViewAttention``, ``RayAttention`` and rendering); B is a variant
defined here (``--variant``):

  bias_rows the biases inside the matmuls as a row of the weights against a column of
            ones (``ViewAttention.bias_rows=True``; the library does that in bfloat16
            only), so that the float32 view projection is [., 73] x [73, 72].
  concat_proj the view attention's projection in inference as one matmul of the
            concatenated [k | pos_h] [R, S, V, 72] by [72, 72], sliced into the values
            and the hidden pre-activations (the library's training form), instead of
            the library's one matmul per operand.
  samplemajor the ray attention's batched products on sample-major [R, S, heads,
            head_dim] operands (``rqhd,rkhd->rhqk``, ``rhqk,rkhd->rqhd``, the logits
            scaled after the product) instead of the library's head-major ones.
  noreduce  backward without the reduction over views: ``dlogits = w * dx * (scale *
            value - x)`` with the output ``x`` kept from the forward pass (``sum_v w *
            scale * value * dx = x * dx``), ``dvalue = w * scale * dx``.
  scaled    residuals ``w`` and ``ws = w * scale`` instead of ``w`` and the dropout
            multipliers: ``t = ws * value * dx``, ``dlogits = t - w * sum_v t``,
            ``dvalue = ws * dx``.
  mask_fma  the masked views' logits set by ``logits * mask + (1 - mask) * -1e9`` (the
            same values for a 0/1 mask) instead of a select.
  one_device (``--what infer``) the whole chunk on the first device, instead of its rays
            split over the process's devices (``render.ray_mesh``; on CPU one device per
            core, as ``bench`` makes them: ``sharding.cpu_device_per_core``).

Both programs are compiled in the same process and timed alternately (A, B, A, B, ...),
so that the host's drift and other jobs on it fall on both; wall and process CPU time.

  python benchmarks/ab_attention.py --variant scaled --what micro --rounds 15
  python benchmarks/ab_attention.py --variant scaled --what train --rounds 7
  python benchmarks/ab_attention.py --variant bias_rows --what infer --rounds 9
  python benchmarks/ab_attention.py --variant one_device --what infer --rounds 11

``micro``: one ``ViewAttention`` forward and backward on a 32-ray training slice (64
samples, 10 views, width 64, dropout 0.1), 10 calls per timed run; ``train``: the
reference GNT train step of ``movenerf.tools.bench.prepare_train`` (512 rays, float32);
``infer``: the reference 512-ray inference chunk of ``movenerf.tools.bench.prepare``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from movenerf import sharding
from movenerf.nn import dropout
from movenerf.models.gnt import ray_transformer as rt
from movenerf.models.gnt import render
from movenerf.models.gnt import view_transformer as vt
from movenerf.tools import bench


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


class _BiasRows(vt.ViewAttention):
  bias_rows: bool | None = True


class _ConcatProj(vt.ViewAttention):
  """The view attention with its training form of the projection in inference too: one
  matmul of the concatenated ``[k | pos_h]`` by ``[[Wk Wv, Wk A1], [P2, P2 A1]]``,
  sliced."""

  def project(self, dense, k, pos_h, wkv, wka, p2, pb2, a1, ab1, deterministic: bool):
    return super().project(dense, k, pos_h, wkv, wka, p2, pb2, a1, ab1, False)


class _SampleMajor(rt.RayAttention):

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    rays, samples, width = x.shape
    head_dim = width // self.num_heads
    split = lambda t: t.reshape(rays, samples, self.num_heads, head_dim)
    dense = lambda name: rt.Dense(width, use_bias=False, dtype=self.dtype, name=name)
    q, k, v = split(dense("q_fc")(x)), split(dense("k_fc")(x)), split(dense("v_fc")(x))
    scale = jnp.sqrt(jnp.float32(head_dim)).astype(q.dtype)
    logits = jnp.einsum("rqhd,rkhd->rhqk", q, k) / scale
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    attn_d = rt.Dropout(self.dropout)(attn.astype(v.dtype), deterministic=deterministic)
    out = jnp.einsum("rhqk,rkhd->rqhd", attn_d, v).reshape(rays, samples, width)
    out = rt.Dense(width, dtype=self.dtype, name="out_fc")(out)
    return rt.Dropout(self.dropout)(out, deterministic=deterministic), attn


def _mask_fma(logits, mask):
  return logits.astype(jnp.float32) * mask + (1.0 - mask) * vt._MASKED_LOGIT


def _on_first_device(chunk_size, replicated, rays=None, devices=None):
  return render.place_for_render(chunk_size, replicated, rays, jax.local_devices()[:1])


# Each variant replaces the named attribute of its module while tracing.
VARIANTS = {"bias_rows": (vt, "ViewAttention", _BiasRows),
            "concat_proj": (vt, "ViewAttention", _ConcatProj),
            "one_device": (bench, "place_for_render", _on_first_device),
            "mask_fma": (vt, "mask_logits", _mask_fma),
            "samplemajor": (rt, "RayAttention", _SampleMajor),
            "noreduce": (vt, "attend_views", _custom(_noreduce_fwd, _noreduce_bwd)),
            "scaled": (vt, "attend_views", _custom(_scaled_fwd, _scaled_bwd))}


@contextlib.contextmanager
def traced_with(variant):
  """Programs traced inside use ``variant``'s form (None: the library's).

  JAX's caches are cleared first: ``jit`` would otherwise serve the variant's program
  from the trace of the library's, whose arguments are equal.
  """
  jax.clear_caches()
  if variant is None:
    yield
    return
  module, name, form = variant
  saved = getattr(module, name)
  setattr(module, name, form)
  try:
    yield
  finally:
    setattr(module, name, saved)


def _both(variant, build):
  """``{"A": build(), "B": build()}``: ``build`` traced with the library's form, then
  with ``variant``'s; each returns a callable that runs its compiled program."""
  steps = {}
  for name, form in (("A", None), ("B", VARIANTS[variant])):
    with traced_with(form):
      steps[name] = build()
  return steps


def _print_difference(steps, what):
  a, b = steps["A"](), steps["B"]()
  host = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]  # A and B may differ in devices
  err = max(float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1.0))
            for x, y in zip(host(a), host(b)))
  print(f"A vs B, {what}: max |A - B| / max(max |A|, 1) = {err:.2e}")


def _micro(variant):
  r, s, v, d = 32, 64, 10, 64
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(r, s, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(r, s, v, d)), jnp.float32)
  rd = jnp.asarray(rng.normal(size=(r, s, v, 4)), jnp.float32)
  mask = jnp.asarray(rng.random((r, s, v, 1)) > 0.2, jnp.float32)
  ct = jnp.asarray(rng.normal(size=(r, s, d)), jnp.float32)
  params = vt.ViewAttention(0.1).init({"params": jax.random.PRNGKey(0)}, q, k, rd, mask)

  def loss(p, q, k):
    y = vt.ViewAttention(0.1).apply(p, q, k, rd, mask, deterministic=False,
                                    rngs={dropout.RNG_COLLECTION: jax.random.PRNGKey(1)})
    return jnp.sum(y * ct)

  def build():
    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(params, q, k).compile()
    return lambda: f(params, q, k)

  steps = _both(variant, build)
  _print_difference(steps, "loss and gradients")
  return steps, 10


def _train(variant):
  from movenerf.models.gnt.model import GNTConfig
  return _both(variant, lambda: bench.prepare_train(GNTConfig()).step), 1


def _infer(variant):
  from movenerf.models.gnt.model import GNTConfig
  steps = _both(variant, lambda: bench.prepare(GNTConfig()).step)
  _print_difference(steps, "rendered outputs")
  return steps, 1


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", default="scaled", choices=sorted(VARIANTS))
  parser.add_argument("--what", default="train", choices=["micro", "train", "infer"])
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.what == "micro" and VARIANTS[args.variant][0] is not vt:
    parser.error(f"--what micro times the view attention only, not --variant {args.variant}")
  if args.variant == "one_device" and args.what != "infer":
    parser.error("--variant one_device changes rendering only: give --what infer")
  sharding.cpu_device_per_core()
  steps, inner = {"micro": _micro, "train": _train, "infer": _infer}[args.what](args.variant)
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
