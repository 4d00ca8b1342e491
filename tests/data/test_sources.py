"""View sources from config entries; generated and reader-format sources import no TFDS."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from movenerf.data import procedural, sources


def test_generated_source_imports_no_tensorflow_datasets():
  code = textwrap.dedent("""
      import sys
      from movenerf.data import sources
      source = sources.make_source("gen", {"format": "generated", "options": {
          "num_scenes": 2, "num_views": 4, "height": 8, "width": 8}})
      assert source.splits() == ("train", "test"), source.splits()
      assert "tensorflow_datasets" not in sys.modules, "tensorflow_datasets was imported"
      assert "tensorflow" not in sys.modules, "tensorflow was imported"
  """)
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr


def test_generated_entry_matches_the_procedural_records():
  group = {"gen": {"format": "generated", "weight": 2.0, "options": {
      "num_scenes": 2, "first_seed": 3, "num_views": 5, "height": 8, "width": 12,
      "kind": "mixed"}}}
  by_name, weights = sources.make_sources(group)
  assert weights == {"gen": 2.0}
  source = by_name["gen"]
  want = [procedural.make_record(3, "forward", 5, 8, 12),
          procedural.make_record(4, "object", 5, 8, 12)]
  assert [c.scene_id for c in source.scenes("train")] == [r.scene_id for r in want]
  got = source.load("train", want[1].scene_id, [0])
  np.testing.assert_array_equal(got.images[0], want[1].images[want[1].split_indices("train")[0]])


def test_entry_errors():
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['paht'\]"):
    sources.make_source("d", {"format": "llff", "paht": "x"})
  with pytest.raises(ValueError, match="format 'llff' needs a path"):
    sources.make_source("d", {"format": "llff"})
  with pytest.raises(ValueError, match=r"empty scene list \(num_scenes=0\)"):
    sources.make_source("d", {"format": "generated", "options": {"num_scenes": 0}})
  with pytest.raises(ValueError, match="empty dataset list"):
    sources.make_sources({})
