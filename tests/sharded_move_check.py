"""Run in a subprocess with 8 simulated CPU devices (see test_sharding.py): renders a
small GNT-MoVE model on one device and on a 2 (data) x 4 (expert) mesh, prints JSON."""

import os

# Without LLVM's expensive passes the 8-device programs compile sooner; both sides of
# the comparison are compiled the same way.
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                           "--xla_backend_optimization_level=0 "
                           "--xla_llvm_disable_expensive_passes=true")

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from movenerf import sharding, testing  # noqa: E402
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables  # noqa: E402
from movenerf.moe.config import MoEConfig  # noqa: E402


def main():
  jax.config.update("jax_default_matmul_precision", "highest")
  config = GNTConfig(width=16, depth=2, coarse_feat_dim=8, num_samples=8,
                     moe=MoEConfig(layers=(1,), eval_capacity_factor=4.0))
  rays, target, sources = testing.dummy_inputs(4, 16, 16, num_rays=8, seed=2)
  model = GNTModel(config)
  variables = init_variables(model, jax.random.PRNGKey(0))

  def loss(v, r):
    out = model.apply(v, r, target, sources, 2.0, 6.0)
    return jnp.mean(out.coarse.rgb ** 2), out.coarse.rgb

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (ref_loss, ref_rgb), ref_grads = jax.block_until_ready(step(variables, rays))

  mesh = sharding.make_mesh(data=2, expert=4)
  with jax.set_mesh(mesh):
    params = sharding.shard_params(variables["params"], mesh)
    kernel = params["net_coarse"]["view_trans_1"]["moe"]["experts"]["fc1"]["kernel"]
    # Distinct expert slices held by devices (each replicated over the data axis).
    shards = len({str(s.index) for s in kernel.addressable_shards if s.data.shape[0] == 1})
    (loss_s, rgb_s), grads_s = jax.block_until_ready(
        step({"params": params}, sharding.shard_rays(rays, mesh)))
  grad_diff = max(float(jnp.max(jnp.abs(a - b)))
                  for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(grads_s)))
  print(json.dumps({"devices": jax.device_count(), "expert_shards": shards,
                    "rgb_diff": float(jnp.max(jnp.abs(rgb_s - ref_rgb))),
                    "loss_diff": float(abs(loss_s - ref_loss)), "grad_diff": grad_diff,
                    "rgb_scale": float(jnp.max(jnp.abs(ref_rgb)))}))


if __name__ == "__main__":
  main()
