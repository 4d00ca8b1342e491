"""The API reference builds from the docstrings with pdoc (the README's command).

Documented: the package's public names and the core modules (models, MoE, configs,
geometry, layers, image metrics); the data and training modules are left out to keep
this fast.
"""

import pathlib
import subprocess
import sys

import pytest

# The modules of the API reference (README "Use as a library").
API_MODULES = ("movenerf", "movenerf.configs", "movenerf.moe", "movenerf.models",
               "movenerf.geometry", "movenerf.nn", "movenerf.image")


@pytest.fixture(scope="module")
def api_docs(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("api")
  done = subprocess.run([sys.executable, "-m", "pdoc", "-d", "google", "-o", str(out),
                         *API_MODULES], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  return out


def test_public_names_are_documented(api_docs):
  import movenerf  # pylint: disable=import-outside-toplevel

  top = (api_docs / "movenerf.html").read_text()
  for name in movenerf.__all__:
    assert name in top, name
  moe = (api_docs / "movenerf" / "moe.html").read_text()
  for name in ("MoVEFeedForward", "total_diversity_loss", "MoEConfig", "CosineRouter"):
    assert name in moe, name
  assert "&quot;router&quot;" in moe or '"router"' in moe  # the RNG streams are documented
  configs = (api_docs / "movenerf" / "configs.html").read_text()
  assert "define_config_flag" in configs and "gnt_move:tiny" in configs


def test_every_module_has_a_page(api_docs):
  for module in API_MODULES:
    assert (api_docs / (module.replace(".", "/") + ".html")).is_file(), module
  assert (api_docs / "movenerf" / "models" / "gnt" / "model.html").is_file()
