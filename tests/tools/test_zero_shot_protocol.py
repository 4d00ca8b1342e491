"""The zero-shot comparison on a published protocol's frozen views
(movenerf.tools.zero_shot --protocol)."""

import json

import jax
import pytest

from movenerf import sharding
from movenerf import train as train_main
from movenerf.evaluation import protocols
from movenerf.tools import zero_shot
from movenerf.training import checkpoint, optim
from movenerf.training import state as train_state
from tests.conftest import SHARED
from tests.helpers import small_config

REAL = SHARED / "data" / "real"


def _save_run(path, c):
  model = train_main.build_model(c)
  params = jax.device_get(train_main.initial_params(c, model))
  state, _ = train_state.create_state(params, optim.make_optimizer(c.optim), 0,
                                      sharding.make_mesh())
  ckpts = checkpoint.Checkpoints(str(path), keep=1)
  ckpts.save(0, state, None, c.to_dict(), force=True)
  ckpts.close()


@pytest.mark.skipif(not REAL.is_dir(), reason=f"shared real data not at {REAL}")
def test_zero_shot_on_a_protocol_writes_each_run_and_the_nearest_view(tmp_path, monkeypatch):
  c = small_config()
  c.eval.lpips = ""
  c.eval.image_size = (16, 16)
  _save_run(tmp_path / "run", c)
  load_index = protocols.load_index

  def first_target_only(name, path=None):  # one view per scene keeps the test short
    index = load_index(name, path)
    for entry in index["scenes"].values():
      entry["targets"] = entry["targets"][:1]
    return index

  monkeypatch.setattr(protocols, "load_index", first_target_only)
  out = tmp_path / "out"
  result = zero_shot.compare_protocol([("GNT", str(tmp_path / "run"))], str(out), "llff",
                                      str(REAL), verbose=False)
  folder = out / "protocol_llff"
  metrics = json.loads((folder / "GNT" / "metrics.json").read_text())
  assert [(r["scene"], r["view"]) for r in metrics["views"]] == [("fern", 0), ("flower", 0)]
  assert all("nearest_view" in r for r in metrics["views"])
  table = (folder / "zero_shot.md").read_text()
  assert "| GNT | 2 |" in table and "| nearest source view | 2 |" in table
  assert "- differs: fern: images_8 (504x378) instead of images_4 (1008x756)" in table
  assert "missing: fortress, horns, leaves, orchids, room, trex" in table
  saved = json.loads((folder / "zero_shot.json").read_text())
  assert saved["protocol"]["name"] == "llff" and saved == json.loads(json.dumps(result))
  with pytest.raises(Exception, match="--protocol_data: folder not found"):
    zero_shot.compare_protocol([("GNT", str(tmp_path / "run"))], str(out), "llff",
                               str(tmp_path / "nowhere"), verbose=False)
