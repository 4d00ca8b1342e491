"""Upcycling: a GNT-MoVE parameter tree initialised from a dense GNT tree.

Every parameter the two models share is copied; in each MoE block, the permanent
expert and every routed expert start as copies of the dense block's FFN (``ff``), and
the router keeps its fresh initialisation. With ``renormalize`` gates, ReLU experts,
ample capacity and dropout off, the upcycled model reproduces the dense model exactly,
whatever the routing (each token's experts are all the same FFN). The reference's
GELU experts then differ from the dense ReLU FFN by design.
"""

from __future__ import annotations

from typing import Any

import flax.traverse_util
import jax.numpy as jnp


class UpcycleError(ValueError):
  """The dense tree cannot fill the MoVE tree (names the offending parameters)."""


def upcycle(dense_params: Any, moe_params_template: Any) -> Any:
  """Fills ``moe_params_template`` (a fresh MoVE ``params`` tree) from ``dense_params``.

  Args:
    dense_params: the ``params`` of a dense ``GNTModel`` (e.g. an imported official
      checkpoint).
    moe_params_template: the ``params`` of a freshly initialised MoVE ``GNTModel`` with
      the same architecture otherwise.

  Returns:
    The MoVE ``params`` tree.
  """
  dense = flax.traverse_util.flatten_dict(dense_params)
  template = flax.traverse_util.flatten_dict(moe_params_template)
  out, problems = {}, []
  for key, fresh in template.items():
    source = _source_key(key)
    if source is None:  # router: keep its initialisation
      out[key] = fresh
      continue
    if source not in dense:
      problems.append(f"{'/'.join(key)} (needs {'/'.join(source)})")
      continue
    value = jnp.asarray(dense[source])
    if "experts" in key:  # stacked [E, ...] copies of the dense FFN
      value = jnp.broadcast_to(value, fresh.shape) if value.shape == fresh.shape[1:] else value
    if value.shape != fresh.shape:
      problems.append(f"{'/'.join(key)}: dense {value.shape} vs MoVE {fresh.shape}")
      continue
    out[key] = value.astype(fresh.dtype)
  if problems:
    raise UpcycleError("cannot upcycle (the expert hidden width must equal the dense FFN's):\n  "
                       + "\n  ".join(problems[:10]))
  return flax.traverse_util.unflatten_dict(out)


def _source_key(key: tuple[str, ...]) -> tuple[str, ...] | None:
  """Dense parameter a MoVE parameter is copied from (None: keep the fresh value)."""
  if "moe" not in key:
    return key
  i = key.index("moe")
  part = key[i + 1]
  if part == "router":
    return None
  if part in ("permanent", "experts"):
    return key[:i] + ("ff",) + key[i + 2:]
  return key
