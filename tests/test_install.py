"""What ``pip install`` gives: a wheel with the configs, py.typed and the console scripts,
whose core dependencies leave out the extras; and a core that imports without them."""

import configparser
import importlib
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPTS = {
    "movenerf-train": "movenerf.cli:train",
    "movenerf-eval": "movenerf.cli:evaluate",
    "movenerf-build-dataset": "movenerf.cli:build_dataset",
    "movenerf-zero-shot": "movenerf.cli:zero_shot",
    "movenerf-bench": "movenerf.cli:bench",
    "movenerf-launch": "movenerf.cli:launch",
    "movenerf-render-view": "movenerf.cli:render_view",
    "movenerf-image-metrics": "movenerf.cli:image_metrics",
    "movenerf-results-table": "movenerf.cli:results_table",
    "movenerf-process-images": "movenerf.cli:process_images",
    "movenerf-render-path": "movenerf.cli:render_path",
    "movenerf-check-cameras": "movenerf.cli:check_cameras",
}
# Installed by the extras only (data, training, video).
OPTIONAL = ("tensorflow_datasets", "grain", "orbax", "tensorboardX", "imageio",
            "imageio_ffmpeg", "pycolmap")
# The core: importable with none of OPTIONAL.
CORE_MODULES = ("movenerf", "movenerf.moe", "movenerf.moe.layer", "movenerf.models.gnt.model",
                "movenerf.models.decoupled.model", "movenerf.models.registry",
                "movenerf.configs")

_BLOCKED_IMPORT = """
import importlib, sys
BLOCKED = {blocked!r}
class Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError("not installed: " + name)
    return None
sys.meta_path.insert(0, Blocker())
for name in {modules!r}:
  importlib.import_module(name)
import movenerf
for name in ("GNTModel", "MoVEFeedForward", "MoEConfig", "load_config"):
  getattr(movenerf, name)
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_core_imports_without_the_extras():
  code = _BLOCKED_IMPORT.format(blocked=OPTIONAL, modules=CORE_MODULES)
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=REPO, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  # Built from a copy, so that the build leaves nothing in the checkout.
  src = tmp_path_factory.mktemp("src")
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(REPO / name, src / name)
  shutil.copytree(REPO / "movenerf", src / "movenerf",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  out = tmp_path_factory.mktemp("wheel")
  done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                         "--no-build-isolation", "-q", ".", "-w", str(out)],
                        capture_output=True, text=True, cwd=src, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  (path,) = out.glob("movenerf-*.whl")
  with zipfile.ZipFile(path) as z:
    yield z


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
  (member,) = [n for n in wheel.namelist() if n.endswith(".dist-info/" + name)]
  return wheel.read(member).decode()


def test_wheel_has_the_configs_and_py_typed(wheel):
  names = set(wheel.namelist())
  for config in ("__init__", "base", "gnt", "gnt_move", "decoupled_nerf"):
    assert f"movenerf/configs/{config}.py" in names
  assert "movenerf/py.typed" in names
  for protocol in ("llff", "nerf_synthetic", "dtu", "shiny"):
    assert f"movenerf/evaluation/protocol_index/{protocol}.json" in names
  assert not any(n.startswith(("experiments/", "tests/")) for n in names)


def test_wheel_console_scripts(wheel):
  entry_points = configparser.ConfigParser()
  entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
  assert dict(entry_points["console_scripts"]) == SCRIPTS
  for target in SCRIPTS.values():
    module, attr = target.split(":")
    assert callable(getattr(importlib.import_module(module), attr)), target


def test_wheel_core_requirements_leave_out_the_extras(wheel):
  lines = [l.split(":", 1)[1].strip() for l in _dist_info(wheel, "METADATA").splitlines()
           if l.startswith("Requires-Dist:")]
  core = {l.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
          for l in lines if "extra ==" not in l}
  assert core == {"jax", "jaxlib", "flax", "optax", "chex", "numpy", "pillow",
                  "ml-collections"}
  extras = {l.split("extra ==")[1].strip().strip("'\"") for l in lines if "extra ==" in l}
  assert {"data", "training", "video", "cloud", "torch", "sfm", "all"} <= extras


def test_a_program_without_its_extra_names_the_extra_to_install():
  code = _BLOCKED_IMPORT.split("for name in")[0].format(blocked=("grain",)) + (
      "from movenerf import cli\ncli.train()\n")
  done = subprocess.run([sys.executable, "-c", code, "--workdir", "x"], capture_output=True,
                        text=True, cwd=REPO, timeout=600)
  assert done.returncode == 1
  assert done.stderr.strip() == ("movenerf.train: needs grain, which is not installed: pip "
                                 "install 'movenerf[training]'")
