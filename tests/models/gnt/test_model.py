"""Tests of movenerf.models.gnt.model: invariances and behaviour of GNTModel (small, random),
GNT-MoVE (experts in the view transformer) and stage-by-stage parity with the official
PyTorch GNT through the reference vectors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from movenerf import testing
from movenerf.geometry.epipolar import EpipolarSamples
from movenerf.geometry.rays import Rays
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.models.gnt.network import GNTNet
from movenerf.tools import check_parity
from tests.models.gnt import helpers, move_helpers


def _render(model, variables, rays, target, sources, **kw):
  """Eager forward pass (each op dispatched on its own)."""
  return model.apply(variables, rays, target, sources, 2.0, 6.0, **kw)


def test_source_view_permutation_does_not_change_colour():
  model, variables, rays, target, sources = helpers.setup()
  out = helpers.render(model, variables, rays, target, sources)
  perm = jnp.array([2, 0, 3, 1])
  permuted = sources.replace(images=sources.images[perm], cameras=sources.cameras[perm])
  out_p = helpers.render(model, variables, rays, target, permuted)
  # Fine depths come from the coarse weights; ulp-level changes there are amplified
  # by the 2^9-frequency position encoding, hence the looser fine tolerance.
  np.testing.assert_allclose(out_p.coarse.rgb, out.coarse.rgb, atol=2e-6)
  np.testing.assert_allclose(out_p.fine.rgb, out.fine.rgb, atol=1e-4)
  np.testing.assert_allclose(out_p.coarse.weights, out.coarse.weights, atol=1e-6)
  assert float(jnp.std(out.fine.rgb)) > 1e-3  # the check is not vacuous


def test_jit_and_eager_agree():
  model, variables, rays, target, sources = helpers.setup()
  eager = _render(model, variables, rays, target, sources)
  jitted = helpers.render(model, variables, rays, target, sources)
  # XLA fuses (and re-associates) differently under jit: float32-rounding level only.
  np.testing.assert_allclose(jitted.coarse.rgb, eager.coarse.rgb, atol=1e-4)
  np.testing.assert_allclose(jitted.fine.rgb, eager.fine.rgb, atol=2e-4)
  np.testing.assert_allclose(jitted.fine.depth, eager.fine.depth, atol=1e-4)


def test_point_seen_by_no_view_gives_finite_output():
  net = GNTNet(width=16, depth=2)
  r, s, v = 2, 5, 3
  samples = EpipolarSamples(jnp.ones((r, s, v, 11)), jnp.ones((r, s, v, 4)),
                            jnp.zeros((r, s, v, 1)))
  points, dirs = jnp.ones((r, s, 3)), jnp.ones((r, 3))
  params = jax.jit(net.init)(jax.random.PRNGKey(0), samples, points, dirs)
  rgb, weights = jax.jit(net.apply)(params, samples, points, dirs)
  assert bool(jnp.all(jnp.isfinite(rgb))) and bool(jnp.all(jnp.isfinite(weights)))
  # End to end: rays pointing away from every source camera.
  model, variables, rays, target, sources = helpers.setup()
  away = Rays(rays.origins, -rays.directions)
  out = helpers.render(model, variables, away, target, sources)
  assert bool(jnp.all(jnp.isfinite(out.fine.rgb))) and bool(jnp.all(jnp.isfinite(out.fine.depth)))


def test_bfloat16_runs_and_stays_close_to_float32():
  model, variables, rays, target, sources = helpers.setup()
  ref = helpers.render(model, variables, rays, target, sources)
  bf16 = GNTModel(dataclasses.replace(helpers.SMALL, dtype="bfloat16"))
  out = helpers.render(bf16, variables, rays, target, sources)
  assert out.coarse.rgb.dtype == jnp.float32
  # bfloat16 keeps ~3 significant digits; through 2 x 2 transformer blocks the
  # colours stay within a percent of their range (residual stream is float32).
  scale = float(jnp.max(jnp.abs(ref.coarse.rgb)))
  assert float(jnp.max(jnp.abs(out.coarse.rgb - ref.coarse.rgb))) < 0.05 * scale
  assert float(jnp.mean(jnp.abs(out.coarse.rgb - ref.coarse.rgb))) < 0.01 * scale
  assert float(jnp.max(jnp.abs(out.coarse.rgb - ref.coarse.rgb))) > 0  # it did run in bf16


def test_dropout_and_stratification_only_in_training():
  model, variables, rays, target, sources = helpers.setup()
  a = helpers.render(model, variables, rays, target, sources)
  b = helpers.render(model, variables, rays, target, sources)
  np.testing.assert_array_equal(a.fine.rgb, b.fine.rgb)
  rngs = lambda seed: {"dropout": jax.random.PRNGKey(seed), "sample": jax.random.PRNGKey(seed)}
  t1 = helpers.render(model, variables, rays, target, sources, train=True, rngs=rngs(1))
  t2 = helpers.render(model, variables, rays, target, sources, train=True, rngs=rngs(2))
  assert float(jnp.max(jnp.abs(t1.fine.rgb - t2.fine.rgb))) > 1e-4
  assert float(jnp.max(jnp.abs(t1.coarse.depths - a.coarse.depths))) > 1e-3
  # Stratified depths stay inside the depth range and ascending.
  assert bool(jnp.all(jnp.diff(t1.fine.depths, axis=-1) >= 0))
  assert float(t1.coarse.depths.min()) >= 2.0 and float(t1.coarse.depths.max()) <= 6.0


def test_deterministic_sampling_in_training():
  """``deterministic_sampling`` (the official ``det``): training samples the depths of
  evaluation; with dropout off, a training forward is then the evaluation one."""
  model, variables, rays, target, sources = helpers.setup()
  a = helpers.render(model, variables, rays, target, sources)
  det = GNTModel(dataclasses.replace(helpers.SMALL, dropout=0.0, deterministic_sampling=True))
  t = helpers.render(det, variables, rays, target, sources, train=True,
                     rngs={"dropout": jax.random.PRNGKey(1), "sample": jax.random.PRNGKey(1)})
  np.testing.assert_array_equal(t.coarse.depths, a.coarse.depths)
  # The training form of the view attention rounds the coarse weights differently, which
  # moves importance samples by an ulp.
  np.testing.assert_allclose(t.fine.depths, a.fine.depths, atol=1e-5)
  np.testing.assert_allclose(t.fine.rgb, a.fine.rgb, atol=1e-4)


def test_gradients_are_finite():
  model, variables, rays, target, sources = helpers.setup()

  def loss(v):
    out = _render(model, v, rays, target, sources, train=True,
                  rngs={"dropout": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)})
    return jnp.mean(out.fine.rgb ** 2) + jnp.mean(out.coarse.rgb ** 2)

  grads = jax.jit(jax.grad(loss))(variables)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0
  assert float(jnp.linalg.norm(grads["params"]["feature_net"]["conv1"]["conv"]["kernel"])) > 0


def test_wrong_width_heads_raise():
  with pytest.raises(ValueError, match="divisible"):
    model = GNTModel(GNTConfig(width=18, depth=1, num_samples=4))
    rays, target, sources = testing.dummy_inputs(2, 16, 16, 2)
    # Traced only: the check is made while the init program is built.
    jax.eval_shape(model.init, jax.random.PRNGKey(0), rays, target, sources, 2.0, 6.0)


def test_initial_parameters_do_not_depend_on_the_compute_dtype():
  config = GNTConfig(depth=1, width=16, num_heads=2, feature_width=8, num_samples=8)
  bf16 = dataclasses.replace(config, dtype="bfloat16", feature_dtype="bfloat16")
  a, b = (init_variables(GNTModel(c), jax.random.PRNGKey(1)) for c in (config, bf16))
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype == jnp.float32
    np.testing.assert_array_equal(x, y)


def test_initial_parameters_are_independent_draws():
  """init_variables draws through a hashed key (no threefry loops to compile): the
  parameters are a function of the key, each kernel has the spread of the threefry
  draw of its initialiser, and kernels of sibling layers and neighbouring columns are
  uncorrelated."""
  model = GNTModel(dataclasses.replace(helpers.SMALL, width=32, depth=2))
  params = init_variables(model, jax.random.PRNGKey(0))["params"]
  again = init_variables(model, jax.random.PRNGKey(0))["params"]
  other = init_variables(model, jax.random.PRNGKey(1))["params"]
  rays, target, sources = testing.dummy_inputs(2, 32, 32, 4)
  threefry = jax.jit(lambda k: model.init(k, rays, target, sources, 2.0, 6.0))(
      jax.random.PRNGKey(0))["params"]
  flat, ref, others = _by_path(params), _by_path(threefry), _by_path(other)
  assert flat.keys() == ref.keys() == others.keys()
  jax.tree.map(np.testing.assert_array_equal, params, again)
  kernels = {k: v for k, v in flat.items() if k.endswith("['kernel']") and v.size >= 512}
  assert len(kernels) >= 10
  for name, w in kernels.items():
    assert not np.array_equal(w, others[name]), name
    # The spread matches the initialiser's (each std estimate is off by ~1/sqrt(2n)).
    assert abs(w.std() / ref[name].std() - 1) < 6 / np.sqrt(w.size), name
    cols = w.reshape(-1, w.shape[-1])
    corr = np.corrcoef(cols[:, :-1].ravel(), cols[:, 1:].ravel())[0, 1]
    assert abs(corr) < 6 / np.sqrt(cols[:, 1:].size), name
  by_shape = {}
  for name, w in kernels.items():
    by_shape.setdefault(w.shape, []).append(w.ravel())
  pairs = [(a, b) for ws in by_shape.values() for a, b in zip(ws, ws[1:])]
  assert len(pairs) >= 5
  for a, b in pairs:
    assert abs(np.corrcoef(a, b)[0, 1]) < 6 / np.sqrt(a.size)


def _by_path(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


# ----------------------------------------------------------------------------- GNT-MoVE


def test_moe_params_sit_in_odd_view_blocks_only():
  model, v = move_helpers.move()
  net = v["params"]["net_coarse"]
  assert "moe" in net["view_trans_1"] and "ff" not in net["view_trans_1"]
  assert "ff" in net["view_trans_0"] and "moe" not in net["view_trans_0"]
  assert net["view_trans_3"]["moe"]["experts"]["fc1"]["kernel"].shape == (4, 16, 64)
  assert "moe" not in net["ray_trans_1"]


def test_source_view_permutation_and_jit_with_moe():
  _, _, rays, target, sources = move_helpers.dense()
  model, v = move_helpers.move()
  out = move_helpers.apply(model, v, rays, target, sources)
  perm = jnp.array([3, 1, 0, 2])
  permuted = sources.replace(images=sources.images[perm], cameras=sources.cameras[perm])
  np.testing.assert_allclose(move_helpers.apply(model, v, rays, target, permuted).coarse.rgb,
                             out.coarse.rgb, atol=1e-5)
  eager = model.apply(v, rays, target, sources, 2.0, 6.0)
  np.testing.assert_allclose(eager.coarse.rgb, out.coarse.rgb, atol=1e-4)


# ---------------------------------------------------------- parity with the official GNT

# Stage tolerances: float32 re-association differences only.
STAGES = {
    "inter/featmaps_coarse": 1e-4, "inter/pts": 1e-5, "inter/mask": 0.0,
    "inter/ray_diff_sub": 1e-5, "inter/rgb_feat_sub": 1e-4,
    # Relative error; points near a camera plane divide by a tiny depth.
    "inter/pixel_locations_sub": 1e-4, "debug/rgbfeat_fc_out": 1e-4,
    "debug/final_layernorm_out": 1e-4, "outputs/rgb": 1e-4,
}
C2F_STAGES = {
    "outputs/weights": 1e-6, "outputs/depth": 1e-5, "inter/pdf_samples": 1e-4,
    "inter/z_vals_fine": 1e-4, "inter/mask_fine": 0.0, "inter/rgb_feat_fine_sub": 1e-4,
    "outputs_fine/rgb": 1e-4, "outputs_fine/weights": 1e-5, "outputs_fine/depth": 1e-4,
    "debug/ray_attn_heads_last": 1e-6, "pdf_stress/pdf_samples": 1e-3,
    "pdf_stress/z_vals_fine": 1e-3,
}


@pytest.fixture(scope="module")
def report(reference_dir):
  return check_parity.run_parity(str(reference_dir / "gnt_ref_vectors.npz"))


@pytest.fixture(scope="module")
def report_c2f(reference_dir):
  return check_parity.run_parity(str(reference_dir / "gnt_ref_vectors_c.npz"))


def test_reference_stages(report):
  assert report.passed, report.format()
  for key, tol in STAGES.items():
    assert report.diff(key) <= tol, f"{key}: {report.diff(key)}"
  for i in range(8):  # every per-layer activation of the debug ray
    for name in ("q_after_view_trans", "q_after_ray_trans"):
      assert report.diff(f"debug/{name}_{i}") <= 1e-4


def test_reference_coarse_to_fine_stages(report_c2f):
  assert report_c2f.passed, report_c2f.format()
  assert report_c2f.colour_keys == ["outputs/rgb", "outputs_fine/rgb"]
  for key, tol in {**STAGES, **C2F_STAGES}.items():
    assert report_c2f.diff(key) <= tol, f"{key}: {report_c2f.diff(key)}"
