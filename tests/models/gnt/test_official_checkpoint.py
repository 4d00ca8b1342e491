"""Importing official GNT checkpoints (.npz of torch arrays, .pth with torch)."""

import jax
import numpy as np
import pytest

from movenerf.models.gnt import official_checkpoint as oc
from movenerf import testing
from movenerf.models.gnt.model import GNTConfig, GNTModel


@pytest.fixture(scope="module")
def small_variables():
  config = GNTConfig(width=16, depth=2, coarse_feat_dim=8, fine_feat_dim=8, single_net=False,
                     num_samples=4)
  rays, target, sources = testing.dummy_inputs(2, 16, 16, 2)
  return config, jax.jit(GNTModel(config).init)(jax.random.PRNGKey(0), rays, target, sources,
                                                 2.0, 6.0)


def test_export_import_round_trip_and_inferred_config(small_variables, tmp_path):
  config, variables = small_variables
  arrays = oc.export_official_arrays(variables)
  assert arrays["net_coarse/rgbfeat_fc.0.weight"].shape == (16, 11)  # torch [out, in]
  assert arrays["feature_net/conv1.weight"].shape == (64, 3, 7, 7)
  assert "net_fine/view_crosstrans.1.attn.pos_fc.2.weight" in arrays
  np.savez(tmp_path / "ckpt.npz", **arrays)
  loaded_config, loaded = oc.load_official_checkpoint(str(tmp_path / "ckpt.npz"), num_samples=4)
  assert loaded_config == config
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)


def test_older_official_names_are_accepted(small_variables):
  config, variables = small_variables
  arrays = {k.replace("view_crosstrans", "view_trans").replace("view_selftrans", "ray_trans"): v
            for k, v in oc.export_official_arrays(variables).items()}
  converted = oc.convert(arrays, config)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)


def test_mismatch_names_the_problem(small_variables):
  config, variables = small_variables
  arrays = oc.export_official_arrays(variables)
  del arrays["net_coarse/rgb_fc.bias"]
  arrays["net_coarse/q_fcs.0.0.weight"] = arrays["net_coarse/q_fcs.0.0.weight"][:, :-1]
  with pytest.raises(oc.CheckpointError, match="rgb_fc/bias") as err:
    oc.convert(arrays, config)
  assert "q_fc_0/fc1/kernel" in str(err.value)


def test_missing_file_and_unknown_format(tmp_path):
  with pytest.raises(FileNotFoundError):
    oc.load_official_arrays(str(tmp_path / "nope.npz"))
  (tmp_path / "x.ckpt").write_text("")
  with pytest.raises(oc.CheckpointError, match="format"):
    oc.load_official_arrays(str(tmp_path / "x.ckpt"))


def test_pth_checkpoint(small_variables, tmp_path):
  torch = pytest.importorskip("torch")
  config, variables = small_variables
  arrays = oc.export_official_arrays(variables)
  blob = {"optimizer": {}, "scheduler": {}}
  for key, value in arrays.items():
    net, name = key.split("/", 1)
    blob.setdefault(net, {})[name] = torch.from_numpy(np.ascontiguousarray(value))
  torch.save(blob, tmp_path / "model.pth")
  loaded_config, loaded = oc.load_official_checkpoint(str(tmp_path / "model.pth"), num_samples=4)
  assert loaded_config == config
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
