"""Expert-parallel GNT-MoVE on 8 simulated CPU devices equals one device.

The check runs in a subprocess because the device count is fixed when JAX starts.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf import sharding

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_eight_device_mesh_equals_one_device():
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, str(REPO / "tests" / "sharded_move_check.py")],
                        capture_output=True, text=True, env=env, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert result["expert_shards"] == 4  # 4 experts, one per device along the expert axis
  assert result["rgb_diff"] <= 1e-5 * max(1.0, result["rgb_scale"])
  assert result["loss_diff"] <= 1e-5 and result["grad_diff"] <= 1e-4


def test_param_specs_put_only_experts_on_the_expert_axis():
  params = {"net": {"view_trans_1": {"moe": {"experts": {"fc1": {"kernel": jnp.zeros((4, 2, 3))}},
                                             "router": {"temp": jnp.ones((1, 4))}}},
                    "rgb_fc": {"kernel": jnp.zeros((2, 3))}}}
  specs = sharding.param_specs(params)
  assert specs["net"]["view_trans_1"]["moe"]["experts"]["fc1"]["kernel"] == jax.sharding.PartitionSpec("expert")
  assert specs["net"]["rgb_fc"]["kernel"] == jax.sharding.PartitionSpec()
  mesh = sharding.make_mesh()
  placed = sharding.shard_params(params, mesh)
  np.testing.assert_array_equal(placed["net"]["rgb_fc"]["kernel"], 0.0)
  with pytest.raises(ValueError, match="does not match"):
    sharding.make_mesh(data=3, expert=5)


_COUNT = ("import jax; from movenerf import sharding; "
          "print(sharding.cpu_device_per_core(), jax.device_count())")


@pytest.mark.parametrize("env, expected", [
    ({}, f"{len(os.sched_getaffinity(0))} {len(os.sched_getaffinity(0))}"),
    ({"JAX_NUM_CPU_DEVICES": "3"}, "None 3"),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=5"}, "None 5"),
])
def test_cpu_device_per_core_leaves_a_chosen_count_alone(env, expected):
  """One CPU device per usable core, unless the environment chose the count."""
  base = {k: v for k, v in os.environ.items()
          if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
  proc = subprocess.run([sys.executable, "-c", _COUNT], capture_output=True, text=True,
                        env={**base, **env, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == expected


def test_cpu_device_per_core_is_too_late_once_jax_runs():
  jax.devices()
  count = jax.device_count()
  assert sharding.cpu_device_per_core() is None
  assert jax.device_count() == count
