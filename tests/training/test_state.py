"""Tests of movenerf.training.state: an update whose gradients are not all finite is
skipped (parameters kept, ``skipped`` counted), through both forms of the train step."""

import jax
import numpy as np
import pytest

from movenerf import sharding
from movenerf import train as train_main
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.training import optim
from movenerf.training import state as train_state
from movenerf.training import step as train_step
from tests.helpers import small_config


def _one_device_setup(move=False, sub_chunk=0):
  c = small_config(move)
  model = train_main.build_model(c)
  mesh = sharding.make_mesh()
  tx = optim.make_optimizer(c.optim)
  params = train_main.initial_params(c, model)
  state, shardings = train_state.create_state(params, tx, 0, mesh)
  sources, weights = train_data.make_sources(c.data.train)
  maker = pipeline.ExampleMaker(sources, weights,
                                pipeline.ExampleSpec.from_config(c.data.example.to_dict()))
  batch = pipeline.train_dataset(maker, 2)[0]
  fn = train_step.make_train_step(model, tx, c.loss, (16, 16), mesh, shardings,
                                  sub_chunk=sub_chunk)
  return mesh, state, batch, fn


# sub_chunk 8: the host loop over slices (training.slice_loop) on this one CPU device.
@pytest.mark.parametrize("sub_chunk", [0, 8])
def test_non_finite_gradients_are_skipped(sub_chunk):
  mesh, state, batch, fn = _one_device_setup(sub_chunk=sub_chunk)
  before = jax.device_get(state.params)
  bad = dict(batch, rgb=np.full_like(batch["rgb"], np.nan))
  with jax.set_mesh(mesh):
    state, metrics = fn(state, pipeline.to_device_batch(bad, mesh))
    jax.block_until_ready(state)
    assert int(state.step) == 1 and int(state.skipped) == 1
    assert float(metrics["update_skipped"]) == 1.0
    after = jax.device_get(state.params)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    # A finite batch afterwards updates normally.
    state, metrics = fn(state, pipeline.to_device_batch(batch, mesh))
    assert int(state.step) == 2 and int(state.skipped) == 1
    assert np.isfinite(float(metrics["loss"]))
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), after,
                           jax.device_get(state.params))
    assert any(jax.tree.leaves(changed))
