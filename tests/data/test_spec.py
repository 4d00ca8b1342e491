"""Dataset lists from the command line (movenerf.data.spec, --train_data/--eval_data)."""

import pytest

from movenerf.configs import gnt
from movenerf.data import spec
from movenerf.data import sources as train_data
from movenerf.validation import UsageError
from tests.helpers import small_config


def test_entries_with_names_scenes_weights_and_options():
  parsed = spec.parse("llff:/d/llff[scenes=fern|trex,factor=4]+mine=dtu:/d/dtu[weight=2.5]"
                      "+generated[num_scenes=3,kind=forward]+tfds:gs://b/tfds/x/1.0.0")
  assert parsed == {
      "llff": {"format": "llff", "path": "/d/llff", "scenes": "fern,trex", "weight": 1.0,
               "options": {"factor": 4}},
      "mine": {"format": "dtu", "path": "/d/dtu", "scenes": "", "weight": 2.5, "options": {}},
      "generated": {"format": "generated", "path": "", "scenes": "", "weight": 1.0,
                    "options": {"num_scenes": 3, "kind": "forward"}},
      "tfds": {"format": "tfds", "path": "gs://b/tfds/x/1.0.0", "scenes": "", "weight": 1.0,
               "options": {}}}
  # A repeated format is told apart by its folder.
  assert list(spec.parse("llff:/a/x+llff:/b/y")) == ["llff", "llff_y"]


@pytest.mark.parametrize("text, message", [
    ("llf:/d", r"^--train_data 'llf:/d': format='llf': choose from 'tfds', "),
    ("llff", r"^--train_data 'llff': format 'llff' needs a path \(llff:PATH\)$"),
    ("llff:/d[factor]", r"^--train_data 'llff:/d\[factor\]': option 'factor' is not "),
    ("llff:/d[weight=0]", r"^--train_data 'llff:/d\[weight=0\]': weight=0: must be > 0$"),
    ("llff:/d+", r"^--train_data: cannot read ''"),
    ("a=llff:/d+a=dtu:/e", r"^--train_data: two datasets named 'a'"),
])
def test_bad_specs_name_the_entry(text, message):
  with pytest.raises(UsageError, match=message):
    spec.parse(text)


def test_apply_replaces_the_config_datasets_and_they_load():
  c = small_config()
  real = "../shared/data/real"
  out = spec.apply(c, train="generated[num_scenes=2,height=16,width=16,num_views=9]",
                   evaluate=f"blender=nerf_synthetic:{real}/nerf_synthetic[scenes=mic]")
  assert c.data.train.generated.options.num_scenes == 3  # the given config is unchanged
  assert list(out.data.train) == ["generated"] and list(out.data.eval) == ["blender"]
  sources, weights = train_data.make_sources(out.data.train)
  assert len(sources["generated"].scenes("train")) == 2 and weights == {"generated": 1.0}
  with pytest.raises(AttributeError):  # locked again
    out.data.newkey = 1
  assert spec.apply(gnt.get_config("tiny")) .data.train.generated.format == "generated"
