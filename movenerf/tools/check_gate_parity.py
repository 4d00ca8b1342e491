"""Parity of the GNT-MoVE router and regularisers with ``move_gate_vectors.npz``.

Cases: the official initialisation (uniform probabilities), evaluation routing, the
diversity loss in training without and with (stored) noise, in the reference's exact
formulation, with gradients w.r.t. every router parameter and the input, and the
consistency loss in the reference's one-directional form with its 1e5 scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.moe import losses
from movenerf.moe.router import CosineRouter, route
from movenerf.tools.parity_report import Comparison, ParityReport

REFERENCE_CONSISTENCY_SCALE = 1e5
GATE_FINAL_KEYS = (
    "eval/probs", "eval/top_k_gates", "eval/top_k_indices", "train_no_noise/loss",
    "train_no_noise/grad_reduce_dim", "train_noisy/loss", "train_noisy/prob_in_top_k_ref",
    "train_noisy/grad_reduce_dim", "train_noisy/grad_x", "consistency/consistency_loss",
    "official_init_eval/probs")


def run_gate_parity(path: str, tolerance: float = 1e-4) -> ParityReport:
  """Compares every case of a gate vector file; losses by relative difference."""
  with np.load(path) as data:
    d = {k: np.asarray(data[k]) for k in data.files}
  rows: list[Comparison] = []

  def compare(key, value, relative=False, note=""):
    if key not in d:
      return
    ref = d[key].astype(np.float64)
    value = np.asarray(value, np.float64).reshape(ref.shape)
    diff = np.abs(value - ref)
    if relative:
      diff = diff / np.maximum(np.abs(ref), 1e-12)
    rows.append(Comparison(key, float(diff.max()), note))

  x = jnp.asarray(d["inputs/x"]).reshape(-1, d["inputs/x"].shape[-1])
  num_experts = d["params/w_gate"].shape[1]
  top_k = d["eval/top_k_indices"].shape[-1]
  router = CosineRouter(num_experts, top_k)

  if "official_init_eval/probs" in d:
    # The documented official init (reduce_dim = 0, temp = 1). The shared file's
    # official_init/reduce_dim and /temp hold the randomised params/* values instead
    # (saved by reference before being overwritten), so they are not used.
    stored = d.get("official_init/reduce_dim")
    note = ("documented init (zeros/ones); the file's official_init/* equal params/*"
            if stored is not None and np.any(stored != 0) else "")
    init = {"params": {"reduce_dim": jnp.zeros(d["params/reduce_dim"].shape),
                       "w_gate": jnp.asarray(d.get("official_init/w_gate", d["params/w_gate"])),
                       "temp": jnp.ones(d["params/temp"].shape)}}
    out = router.apply(init, x)
    compare("official_init_eval/probs", out.probs, note=note)
    compare("official_init_eval/top_k_gates", out.top_k_gates)

  params = {"params": {n: jnp.asarray(d[f"params/{n}"]) for n in ("reduce_dim", "w_gate", "temp")}}
  out = router.apply(params, x)
  compare("eval/clean_logits_ref", out.clean_logits)
  compare("eval/probs", out.probs)
  compare("eval/activation", out.probs)
  compare("eval/top_k_gates", out.top_k_gates)
  mismatched = float(np.mean(np.asarray(out.top_k_idx).reshape(d["eval/top_k_indices"].shape)
                             != d["eval/top_k_indices"]))
  rows.append(Comparison("eval/top_k_indices", mismatched, "fraction of indices that differ"))

  def loss_fn(p, tokens, noise, sigma):
    o = router.apply(p, tokens)  # clean logits (noise is injected from the file)
    o = route(o.clean_logits, o.clean_logits + sigma * noise, p["params"]["temp"][0], top_k,
              sigma)
    loss, aux = losses.diversity_loss(o, reference=True)
    return loss, (aux, o)

  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
  for case, noisy in (("train_no_noise", False), ("train_noisy", True)):
    if f"{case}/loss" not in d:
      continue
    noise = jnp.asarray(d[f"{case}/noise"] if noisy else np.zeros(out.probs.shape, np.float32))
    sigma = 1.0 / num_experts if noisy else 0.0  # the reference's noise_std = 1
    (loss, (aux, o)), (g_params, g_x) = grad_fn(params, x, noise, sigma)
    compare(f"{case}/loss", loss, relative=True, note="relative")
    compare(f"{case}/importance_ref", aux["importance"])
    compare(f"{case}/load_ref", aux["load"])
    compare(f"{case}/probs", o.probs)
    compare(f"{case}/top_k_gates", o.top_k_gates)
    if noisy:
      compare(f"{case}/prob_in_top_k_ref", losses.prob_in_top_k(o, reference=True))
    for name in ("reduce_dim", "temp", "w_gate"):
      compare(f"{case}/grad_{name}", g_params["params"][name])
    compare(f"{case}/grad_x", g_x)

  if "consistency/moe_logits" in d:
    pts = jnp.asarray(d["consistency/pts"])
    probs = jnp.asarray(d["consistency/moe_logits"])
    probs = probs.reshape((probs.shape[0],) + pts.shape[:2] + (probs.shape[-1],))
    pairs = losses.reference_pairs(d["consistency/close_inds"])
    loss, aux = losses.consistency_loss(probs, pts, pairs, symmetric=False)
    compare("consistency/consistency_loss", loss * REFERENCE_CONSISTENCY_SCALE, relative=True,
            note="relative; reference form x 1e5")
    compare("consistency/kl", aux["kl"])
    compare("consistency/weights", aux["weights"])
  return ParityReport(rows, tolerance, final_keys=GATE_FINAL_KEYS,
                      what="router outputs, losses and gradients")
