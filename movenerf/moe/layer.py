"""The MoVE feed-forward layer: router -> capacity dispatch -> experts -> combine,
averaged with a permanent expert that every token uses.

Axis letters: T tokens (= R rays x S samples), D features, E experts, K top-k, C capacity.

Auxiliary outputs are sown into the ``'moe'`` collection (apply with
``mutable=['moe']``): per layer and call, the router probabilities [T, E], the top-1
expert [T], the diversity loss (training only, as in the reference) and metrics. They
are outputs of one ``apply``, not state: ``init`` sows none (its variables are
``{'params': ...}``), and the layer's own ``apply`` drops a ``'moe'`` collection passed
in, so that each call's auxiliaries are that call's alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from movenerf.nn.dropout import Dropout
from movenerf.nn.layers import FeedForward
from movenerf.moe import losses
from movenerf.moe.config import MoEConfig
from movenerf.moe.dispatch import compute_capacity, make_dispatcher
from movenerf.moe.experts import FeedForwardExperts
from movenerf.moe.router import CosineRouter

MOE_COLLECTION = "moe"


class MoVEFeedForward(nn.Module):
  """Sparse mixture of view experts replacing a view-transformer FFN.

  RNG streams (``rngs=`` of ``apply``), needed only with ``deterministic=False``:

  - ``"router"``: the routing noise, when ``config.noise_std > 0``;
  - ``"dropout"``: the dropout of the experts, the MoE output and the permanent expert,
    when ``dropout > 0``.

  ``init`` needs only a key for ``"params"`` (a single PRNGKey will do).

  Used on its own (the ``'moe'`` collection holds the auxiliaries of exactly the call
  that returns it)::

    layer = MoVEFeedForward(MoEConfig(num_experts=4, top_k=2), dropout=0.1)
    variables = layer.init(jax.random.key(0), x)             # {'params': ...}
    y, aux = layer.apply(variables, x, deterministic=False, mutable=["moe"],
                         rngs={"router": jax.random.key(1), "dropout": jax.random.key(2)})
    loss = task_loss(y) + 0.01 * total_diversity_loss(aux["moe"])

  Inside a larger model the model's ``apply`` is used the same way, with its variables
  ``{'params': ...}`` only (``movenerf.models.gnt.model.init_variables``).

  Attributes:
    config: MoEConfig.
    dropout: dropout rate (experts, MoE output, permanent expert).
    dtype: compute dtype of the experts.
  """

  config: MoEConfig
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.nowrap
  def apply(self, variables, *args, **kwargs):
    """``flax.linen.Module.apply`` on ``variables`` less any ``'moe'`` collection (the
    auxiliaries of an earlier call), so that the returned one holds this call's only."""
    variables = {k: v for k, v in variables.items() if k != MOE_COLLECTION}
    return super().apply(variables, *args, **kwargs)

  @nn.compact
  def __call__(self, h: jnp.ndarray, gate_input: jnp.ndarray | None = None,
               deterministic: bool = True) -> jnp.ndarray:
    """Applies the layer.

    Args:
      h: [..., D] normalised FFN inputs (T tokens after flattening).
      gate_input: [..., D] what the router sees (default ``h``).
      deterministic: evaluation mode (no noise, no dropout, eval capacity factor).

    Returns:
      [..., D].
    """
    c = self.config
    width = h.shape[-1]
    tokens = h.reshape(-1, width)
    gate_tokens = tokens if gate_input is None else gate_input.reshape(-1, width)
    train = not deterministic
    route = CosineRouter(c.num_experts, c.top_k, c.noise_std, c.renormalize, c.reference_init,
                         name="router")(gate_tokens, train=train)
    factor = c.capacity_factor if train else c.eval_capacity_factor
    capacity = compute_capacity(tokens.shape[0], c.num_experts, c.top_k, factor)
    dispatcher = make_dispatcher(route.top_k_idx, route.top_k_gates.astype(self.dtype),
                                 c.num_experts, capacity, c.dispatch)
    experts = FeedForwardExperts(c.num_experts, c.expert_hidden_ratio * width, self.dropout,
                                 self.dtype, activation=c.expert_activation, name="experts")
    dispatched = _on_expert_axis(dispatcher.dispatch(tokens.astype(self.dtype)), c.expert_axis)
    out = dispatcher.combine(_on_expert_axis(experts(dispatched, deterministic), c.expert_axis))
    out = Dropout(self.dropout)(out, deterministic=deterministic).astype(jnp.float32)
    if c.permanent_expert:
      permanent = FeedForward(c.permanent_hidden_ratio * width, self.dropout, self.dtype,
                              name="permanent")(tokens, deterministic)
      out = 0.5 * (out + permanent.astype(jnp.float32))
    self._sow_aux(route, dispatcher, train)
    return out.reshape(h.shape)

  def _sow_aux(self, route, dispatcher, train: bool) -> None:
    if self.is_initializing():  # outputs, not state: init returns parameters only
      return
    metrics = dispatcher.metrics()
    if train:
      loss, balance = losses.diversity_loss(route, reference=self.config.reference_load)
    else:  # the reference returns no gating loss in evaluation
      loss, balance = jnp.zeros(()), {"importance": jnp.sum(losses.dense_gates(route), 0),
                                      "load": metrics["expert_load"].astype(jnp.float32)}
    entropy = -jnp.mean(jnp.sum(route.probs * jnp.log(route.probs + 1e-9), axis=-1))
    usage = jnp.mean(jax.nn.one_hot(route.top_k_idx[:, 0], route.num_experts), axis=0)
    sow = lambda name, value: self.sow(MOE_COLLECTION, name, value)
    sow("probs", route.probs)
    sow("top1", route.top_k_idx[:, 0])
    sow("diversity_loss", loss)
    sow("metrics", {"importance": balance["importance"], "load": balance["load"],
                    "dropped_fraction": metrics["dropped_fraction"], "router_entropy": entropy,
                    "top1_usage": usage, "capacity": jnp.asarray(metrics["capacity"])})


def _on_expert_axis(x: jnp.ndarray, axis: str | None) -> jnp.ndarray:
  """Constrains [E, C, D] to be sharded over ``axis`` when the ambient mesh has it."""
  mesh = jax.sharding.get_abstract_mesh()
  if axis is None or mesh.empty or axis not in mesh.axis_names:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(axis))


def moe_layers(collection: Any) -> list[tuple[str, dict]]:
  """The sown MoE entries of a ``'moe'`` collection, in layer order.

  Returns:
    [(path, {'probs': (call0, call1, ...), 'top1': ..., 'diversity_loss': ..., 'metrics':
    ...})] where the calls are the rendering passes that used the layer (coarse, fine).
  """
  found = []

  def walk(node, path):
    if not isinstance(node, Mapping):
      return
    if "probs" in node and "diversity_loss" in node:
      found.append(("/".join(path), node))
      return
    for key in node:
      walk(node[key], path + (key,))

  walk(collection, ())

  def order(item):  # view_trans_{i} numerically
    parts = [int(p.rsplit("_", 1)[1]) if p.startswith("view_trans_") else 0
             for p in item[0].split("/")]
    return (item[0].split("/")[0], parts)

  return sorted(found, key=order)


def total_diversity_loss(collection: Any) -> jnp.ndarray:
  """Sum over MoE layers and rendering passes of the diversity losses."""
  total = jnp.zeros(())
  for _, entry in moe_layers(collection):
    for loss in entry["diversity_loss"]:
      total = total + loss
  return total


def stacked_router_probs(collection: Any, num_rays: int, call: int = 0) -> jnp.ndarray:
  """[L, R, S, E] router probabilities of pass ``call`` (0 = coarse) for the consistency loss."""
  probs = [entry["probs"][call] for _, entry in moe_layers(collection)]
  stacked = jnp.stack(probs)
  return stacked.reshape(stacked.shape[0], num_rays, -1, stacked.shape[-1])
