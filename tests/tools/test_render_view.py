"""render_view: a file that is not GNT weights, or a bad option, is one line naming it,
before anything is written; nothing is ever unpickled."""

import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import gnt, gnt_move
from movenerf.tools import render_view
from movenerf.validation import UsageError


def _config(**options):
  c = gnt.get_config("tiny")
  c.render_view.update(options)
  return c


def _garbage(path):
  path.write_bytes(b"these are not the weights you are looking for\n" * 20)
  return path


def _object_npz(path):
  np.savez(path, **{"net_coarse/x": np.array([{"evil": 1}], dtype=object)})
  return path


def _no_net_npz(path):
  np.savez(path, **{"something/else": np.zeros(3, np.float32)})
  return path


def _zip_pth(path):
  import zipfile  # pylint: disable=import-outside-toplevel
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("readme.txt", "hello")
  return path


@pytest.mark.parametrize("name,make,reason", [
    ("garbage.npz", _garbage, "not an .npz archive"),
    ("objects.npz", _object_npz, "holds Python objects"),
    ("other.npz", _no_net_npz, "no 'net_coarse/*' arrays"),
    ("garbage.pth", _garbage, "not a PyTorch file"),
    ("archive.pth", _zip_pth, "not a PyTorch one"),
])
def test_not_weights_is_one_line_naming_the_path(tmp_path, name, make, reason):
  path = make(tmp_path / name)
  c = _config()
  c.checkpoint = str(path)
  out = tmp_path / "out"
  with pytest.raises(UsageError) as error:
    render_view.run(c, str(out))
  message = str(error.value)
  assert message.startswith(f"not a movenerf/official GNT weights file: {path} (")
  assert reason in message and "\n" not in message
  assert "allow_pickle" not in message and "pickle" not in message.replace(".pkl", "")
  assert not out.exists()


def test_arrays_that_are_not_gnt_are_named(tmp_path):
  path = tmp_path / "wrong.npz"
  np.savez(path, **{"net_coarse/other": np.zeros(3, np.float32)})
  c = _config()
  c.checkpoint = str(path)
  with pytest.raises(UsageError, match=f"^not a movenerf/official GNT weights file: {path} "):
    render_view.run(c, str(tmp_path / "out"))


@pytest.mark.parametrize("key,value,match", [
    ("kind", "indoor", r"render_view.kind='indoor': choose from 'object', 'forward'"),
    ("image_size", 0, r"render_view.image_size=0: must be >= 1"),
    ("target_view", 5, r"render_view.target_view=5: the scene has 5 views"),
])
def test_bad_options_are_named(tmp_path, key, value, match):
  with pytest.raises(UsageError, match=match):
    render_view.run(_config(**{key: value}), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_checkpoint_options_other_than_weights(tmp_path):
  c = _config()
  c.checkpoint = str(tmp_path / "missing.npz")
  with pytest.raises(UsageError, match="checkpoint=.*missing.npz'?: no such file"):
    render_view.run(c, str(tmp_path / "out"))
  (tmp_path / "w.bin").write_bytes(b"x")
  c.checkpoint = str(tmp_path / "w.bin")
  with pytest.raises(UsageError, match=r"want official GNT weights \(.pth\)"):
    render_view.run(c, str(tmp_path / "out"))


def test_readme_options_exist_in_gnt_configs():
  for module in (gnt, gnt_move):
    for variant in module.VARIANTS:
      c = module.get_config(variant)
      assert set(c.render_view) == {"kind", "scene_seed", "image_size", "target_view"}
      assert "chunk_size" in c.render and c.checkpoint == ""
      render_view.check_options(c)


def test_command_line_prints_one_line_and_exits_2(tmp_path):
  path = _garbage(tmp_path / "model.npz")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "movenerf.tools.render_view", "--config",
       "experiments/gnt.py:tiny", "--workdir", str(tmp_path / "out"),
       f"--config.checkpoint={path}"],
      capture_output=True, text=True, env=env, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("movenerf.tools.render_view")]
  assert lines == [f"movenerf.tools.render_view: error: not a movenerf/official GNT weights "
                   f"file: {path} (not an .npz archive)"], proc.stderr
  assert "allow_pickle" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
  assert not (tmp_path / "out").exists()
