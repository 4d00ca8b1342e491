"""Tests of movenerf.training.slice_loop: the host loop over compiled slice programs gives
the gradient of the summed sliced loss (differentiated in one program here), the same
loss and metrics, and its programs other than ``prepare`` are the same for every number
of rays per step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from movenerf import sharding
from movenerf import train as train_main
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.training import slice_loop
from movenerf.training import state as train_state
from movenerf.training import step as train_step
from tests.helpers import small_config

SUB_CHUNK = 8


def _setup(move: bool, rays: int = 32):
  c = small_config(move)
  c.data.example.rays_per_example = rays
  model = train_main.build_model(c)
  params = train_main.initial_params(c, model)
  sources, weights = train_data.make_sources(c.data.train)
  maker = pipeline.ExampleMaker(sources, weights,
                                pipeline.ExampleSpec.from_config(c.data.example.to_dict()))
  return c, model, params, pipeline.train_dataset(maker, 2)[0]


def _summed_over_slices(objective, params, featmaps, xs, count):
  """(value, terms) of ``objective`` summed over the ``count`` slices of ``xs`` in slice
  order, in a loop (one copy of the slice's program to compile)."""
  x0 = jax.tree.map(lambda a: a[0], xs)
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                       jax.eval_shape(objective, params, featmaps, *x0))

  def add(total, x):
    return jax.tree.map(jnp.add, total, objective(params, featmaps, *x)), None

  assert jax.tree.leaves(xs)[0].shape[0] == count
  return jax.lax.scan(add, zeros, xs)[0]


def _summed_slices_step(family, tx, loss_cfg, sub_chunk):
  """The reference: one jitted program that differentiates the mean over the examples of
  their slices' summed loss shares, keyed as the train step keys them."""
  sliced = family.sliced

  def step(state, batch):
    num = batch["pixels"].shape[0]
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), num)

    def loss_fn(params):
      values, losses, metrics = [], [], []
      for i in range(num):
        ex = jax.tree.map(lambda a, i=i: a[i], batch)
        views, xs, scales = sliced.inputs(ex, keys[i], (16, 16), sub_chunk)
        featmaps = sliced.encode(params, views[1])
        objective = sliced.objective(views, loss_cfg, *scales)
        value, terms = _summed_over_slices(objective, params, featmaps, xs, scales[1])
        loss, m = sliced.loss(loss_cfg, terms, scales)
        values.append(value)
        losses.append(loss)
        metrics.append(m)
      mean = lambda *xs: sum(xs) / num
      return mean(*values), (mean(*losses), jax.tree.map(mean, *metrics))

    (_, (loss, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return train_state.apply_gradients(state, tx, loss, metrics, grads)

  return jax.jit(step)


def _one_step(c, model, params, batch, tx, host_loop: bool, compiled: bool = False):
  """(parameters, metrics) after one step from ``params``, as host arrays: by the host
  loop, or (``host_loop`` False) by the reference of ``_summed_slices_step``."""
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    state, shardings = train_state.create_state(params, tx, 0, mesh)
    if host_loop:
      fn = train_step.make_train_step(model, tx, c.loss, (16, 16), mesh, shardings,
                                      sub_chunk=SUB_CHUNK)
      assert isinstance(fn, slice_loop.SliceLoopStep)
    else:
      fn = _summed_slices_step(model, tx, c.loss, SUB_CHUNK)
    batch = pipeline.to_device_batch(batch, mesh)
    if compiled:
      fn = fn.lower(state, batch).compile()
    state, metrics = fn(state, batch)
    assert int(state.step) == 1 and int(state.skipped) == 0
    return jax.device_get((state.params, metrics))


@pytest.fixture
def groups_of_two(monkeypatch):
  """Two slices per call of the slice program, so that small steps take several calls."""
  monkeypatch.setattr(slice_loop, "MAX_GROUP", 2)


@pytest.mark.parametrize("count, group", [(1, 1), (4, 4), (16, 16), (64, 16), (12, 12),
                                          (20, 10), (17, 1)])
def test_slice_group_is_the_largest_divisor_up_to_the_maximum(count, group):
  assert slice_loop.MAX_GROUP == 16
  assert slice_loop.slice_group(count) == group


@pytest.mark.parametrize("move", [False, True], ids=["gnt", "move"])
def test_host_loop_step_equals_the_summed_slices_gradient(move, groups_of_two):
  # Two examples of 32 rays in slices of 8, two slices per call; GNT-MoVE with
  # consistency pairs. Plain SGD with a unit rate, so that the parameter change is the
  # gradient (Adam would blow the float32 rounding of near-zero gradients up to full
  # steps).
  c, model, params, batch = _setup(move)
  if move:
    assert np.any(batch["pairs"][..., 0] >= 0)
  tx = optax.sgd(1.0)
  jitted, jitted_metrics = _one_step(c, model, params, batch, tx, host_loop=False)
  looped, looped_metrics = _one_step(c, model, params, batch, tx, host_loop=True)
  grads = lambda new: jax.tree.leaves(jax.tree.map(np.subtract, jax.device_get(params), new))
  scale = max(float(np.max(np.abs(g))) for g in grads(jitted))
  assert scale > 0.1
  for a, b in zip(grads(jitted), grads(looped)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale)
  assert sorted(jitted_metrics) == sorted(looped_metrics)
  for k, v in jitted_metrics.items():
    np.testing.assert_allclose(looped_metrics[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
  if move:
    assert float(looped_metrics["consistency"]) > 0


def test_programs_do_not_depend_on_the_rays_per_step(groups_of_two):
  # What lets a persistent compilation cache serve a 2048-ray step from a 512-ray one:
  # 4 and 8 slices, in 2 and 4 calls of the same two-slice program.
  c, model, params, batch = _setup(True)
  _, _, _, longer = _setup(True, rays=64)
  tx = optax.adam(1e-3)
  mesh = sharding.make_mesh()
  texts = []
  with jax.set_mesh(mesh):
    state, shardings = train_state.create_state(params, tx, 0, mesh)
    fn = train_step.make_train_step(model, tx, c.loss, (16, 16), mesh, shardings,
                                    sub_chunk=SUB_CHUNK)
    for b in (batch, longer):
      lowered = fn.lower(state, pipeline.to_device_batch(b, mesh))
      texts.append({name: getattr(lowered, name).as_text()
                    for name in ("prepare", "encode", "slice", "encode_grad", "update")})
  assert texts[0]["prepare"] != texts[1]["prepare"]
  for name in ("encode", "slice", "encode_grad", "update"):
    assert texts[0][name] == texts[1][name], name


def test_compiled_programs_give_the_called_step():
  c, model, params, batch = _setup(False)
  tx = optax.adam(1e-3)
  called = _one_step(c, model, params, batch, tx, host_loop=True)
  compiled = _one_step(c, model, params, batch, tx, host_loop=True, compiled=True)
  jax.tree.map(np.testing.assert_array_equal, called, compiled)


def test_host_loop_needs_slices_of_a_sliceable_family():
  c, model, params, _ = _setup(False)
  tx = optax.adam(1e-3)
  mesh = sharding.make_mesh()
  state, shardings = train_state.create_state(params, tx, 0, mesh)
  with pytest.raises(ValueError, match="host loop over slices needs train.sub_chunk"):
    train_step.make_train_step(model, tx, c.loss, (16, 16), mesh, shardings, sub_chunk=0,
                               host_loop=True)
  # No slices on one CPU device: the jitted whole-example step.
  fn = train_step.make_train_step(model, tx, c.loss, (16, 16), mesh, shardings, sub_chunk=0)
  assert not isinstance(fn, slice_loop.SliceLoopStep)
  # A family without a sliced loss (Decoupling-NeRF) takes whole examples.
  decoupled = train_main.build_model(ml_collections.ConfigDict({"model": {"name": "decoupled"}}))
  with pytest.raises(ValueError, match="family decoupled"):
    train_step.make_train_step(decoupled, tx, c.loss, (16, 16), mesh, shardings,
                               sub_chunk=SUB_CHUNK, host_loop=True)
  del state
