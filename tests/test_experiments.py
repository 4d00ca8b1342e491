"""The experiment configs: each variant builds and locks, and states only what it changes.

The model and example sections are diffed against the library's dataclasses, so a value
restated in ``movenerf/configs/*.py`` (and left behind when a default changes) shows up
here. The configs load by name (``gnt_move:tiny``) and from the checkout's
``experiments/*.py`` files, which re-export them. No training and no model init: these
tests only build configs and parse flags.
"""

import dataclasses
import importlib
import pathlib
import re

from absl import flags
import ml_collections
import pytest

from movenerf import configs
from movenerf.configs import base, decoupled_nerf, gnt, gnt_move
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.data.pipeline import ExampleSpec
from movenerf.models.decoupled.model import DecoupledConfig
from movenerf.models.gnt.model import GNTConfig
from movenerf.moe.config import MoEConfig

# config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO = pathlib.Path(__file__).resolve().parents[1]
MODULES = {"gnt": gnt, "gnt_move": gnt_move, "decoupled_nerf": decoupled_nerf}
CASES = [(name, v) for name, module in MODULES.items() for v in module.VARIANTS]

TINY = {"width", "depth", "coarse_feat_dim", "fine_feat_dim", "num_samples", "dropout",
        "feature_width"}
# The keys of each section that a variant changes from the dataclass defaults.
GNT_MODEL = {"tiny": TINY, "reference": set(), "paper": {"num_importance"}, "fewshot": TINY,
             "real": TINY}
MOE = {"tiny": {"layers"}, "reference": set(), "paper": set(), "fewshot": {"layers"},
       "real": {"layers"}}
GNT_EXAMPLE = {"tiny": {"num_source_views", "rays_per_example"}, "reference": set(),
               "paper": set(), "fewshot": {"num_source_views", "rays_per_example"},
               "real": {"num_source_views", "rays_per_example", "source_size"}}
DECOUPLED_MODEL = {
    "tiny": {"name", "enc_width", "attn_heads", "head_dim", "width", "render_width"},
    "paper": {"name", "white_background"},
    "real": {"name", "white_background"},
}
DECOUPLED_EXAMPLE = {
    "tiny": {"pixel_mode", "num_source_views", "rays_per_example"},
    "paper": {"pixel_mode", "rays_per_example", "source_size"},
    "real": {"pixel_mode", "rays_per_example", "source_size"},
}


def _parse(*args: str) -> ml_collections.ConfigDict:
  """The config as ``python -m movenerf.train`` gets it from these command-line args."""
  argv = ["prog", *args]
  fv = flags.FlagValues()
  holder = configs.define_config_flag("config", flag_values=fv, lock_config=True,
                                      sys_argv=argv)
  fv(argv)
  return holder.value


def _config_arg(name: str, variant: str) -> str:
  return f"{REPO / 'experiments' / name}.py:{variant}"


@pytest.mark.parametrize("name,variant", CASES)
def test_builds_and_locks(name, variant):
  c = MODULES[name].get_config(variant)
  assert c.is_locked
  assert c.variant == variant
  with pytest.raises(AttributeError):
    c.no_such_key = 1
  with pytest.raises(AttributeError):
    c.model.no_such_key = 1


@pytest.mark.parametrize("name", MODULES)
def test_unknown_variant_is_an_error(name):
  with pytest.raises(ValueError, match="unknown variant"):
    MODULES[name].get_config("nope")


@pytest.mark.parametrize("variant", gnt.VARIANTS)
@pytest.mark.parametrize("name", ["gnt", "gnt_move"])
def test_gnt_sections_are_the_dataclass_defaults_but_the_variants_keys(name, variant):
  c = MODULES[name].get_config(variant)
  changed = base.changed_fields(c.model, GNTConfig)
  moe = changed.pop("moe", None)
  assert set(changed) == GNT_MODEL[variant]
  if name == "gnt":
    assert moe is None and c.model.moe is None
    assert set(base.changed_fields(c.data.example, ExampleSpec)) == GNT_EXAMPLE[variant]
  else:
    assert set(base.changed_fields(moe, MoEConfig)) == MOE[variant]
    assert c.model.moe.layers == tuple(range(1, c.model.depth, 2))
    assert (set(base.changed_fields(c.data.example, ExampleSpec))
            == GNT_EXAMPLE[variant] | {"pair_fraction"})
  # The library builds the same dataclass: defaults replaced by exactly those keys.
  built = GNTConfig.from_dict(c.model.to_dict())
  assert built == dataclasses.replace(GNTConfig(), **changed, moe=built.moe)
  if name == "gnt_move":
    assert built.moe == dataclasses.replace(MoEConfig(), layers=c.model.moe.layers)
  spec = ExampleSpec.from_config(c.data.example.to_dict())
  assert dataclasses.asdict(spec) == {**dataclasses.asdict(ExampleSpec()),
                                      **base.changed_fields(c.data.example, ExampleSpec)}


@pytest.mark.parametrize("variant", decoupled_nerf.VARIANTS)
def test_decoupled_sections_are_the_dataclass_defaults_but_the_variants_keys(variant):
  c = decoupled_nerf.get_config(variant)
  changed = base.changed_fields(c.model, DecoupledConfig)
  assert set(changed) == DECOUPLED_MODEL[variant]
  assert changed["name"] == "decoupled"
  assert set(base.changed_fields(c.data.example, ExampleSpec)) == DECOUPLED_EXAMPLE[variant]
  values = c.model.to_dict()
  values.pop("name")
  assert DecoupledConfig.from_dict(values) == DecoupledConfig(
      **{k: v for k, v in changed.items() if k != "name"})
  assert "render" not in c and "render_view" not in c and "checkpoint" not in c


def test_shared_sections_come_from_gnt():
  # gnt_move changes only the model's moe, two loss weights and the pair fraction.
  for variant in gnt.VARIANTS:
    dense, move = gnt.get_config(variant).to_dict(), gnt_move.get_config(variant).to_dict()
    for d in (dense, move):
      d["model"].pop("moe")
      d["loss"].pop("diversity_weight")
      d["loss"].pop("consistency_weight")
      d["data"]["example"].pop("pair_fraction")
    assert dense == move


def test_from_dataclass():
  c = base.from_dataclass(ExampleSpec, num_source_views=4)
  assert set(c) == {f.name for f in dataclasses.fields(ExampleSpec)}
  assert c.num_source_views == 4 and c.num_candidates is None and c.source_size is None
  c.num_candidates = 15  # None defaults are typed placeholders
  with pytest.raises(TypeError):
    c.num_candidates = "many"
  c.source_size = (32, 32)
  assert base.from_dataclass(MoEConfig).layers == MoEConfig.layers
  assert isinstance(base.from_dataclass(MoEConfig).layers, tuple)
  assert base.from_dataclass(GNTConfig).moe is None
  nested = base.from_dataclass(GNTConfig(moe=MoEConfig(num_experts=8)))
  assert nested.moe.num_experts == 8 and nested.moe.layers == (1, 3, 5, 7)
  with pytest.raises(ValueError, match="unknown GNTConfig field"):
    base.from_dataclass(GNTConfig, nope=1)


@pytest.mark.parametrize("name,variant", [("gnt_move", "tiny"), ("gnt", "paper"),
                                          ("decoupled_nerf", "tiny")])
def test_unknown_override_key_is_an_error(name, variant):
  for key in ("model.no_such_key", "nope", "train.num_stpes"):
    # config_flags looks the key up in the locked config when it parses the override.
    with pytest.raises(AttributeError, match=key.split(".")[-1]):
      _parse("--config", _config_arg(name, variant), f"--config.{key}=1")


def test_overrides_from_the_command_line():
  c = _parse("--config", _config_arg("gnt_move", "tiny"), "--config.model.num_importance=32",
             "--config.optim.lr_feature=0.01", "--config.model.moe.num_experts=8",
             "--config.data.example.num_candidates=6",
             "--config.data.example.source_size=(32, 32)", "--config.eval.at_end=false")
  assert c.model.num_importance == 32 and c.optim.lr_feature == 0.01
  assert c.model.moe.num_experts == 8 and c.eval.at_end is False
  assert c.data.example.num_candidates == 6 and c.data.example.source_size == (32, 32)
  assert GNTConfig.from_dict(c.model.to_dict()).moe.num_experts == 8
  with pytest.raises(flags.Error):  # the type of a key is kept
    _parse("--config", _config_arg("gnt_move", "tiny"), "--config.model.num_importance=x")
  d = _parse("--config", _config_arg("decoupled_nerf", "tiny"), "--config.eval.image_size=(16, 16)",
             "--config.model.width=32")
  assert d.eval.image_size == (16, 16) and d.model.width == 32


@pytest.mark.parametrize("name", MODULES)
def test_docstring_has_each_variants_command(name):
  doc = MODULES[name].__doc__
  for variant in MODULES[name].VARIANTS:
    assert f"--config experiments/{name}.py:{variant}" in doc
    assert "Expected:" in doc
  assert f"--config\n{name}:VARIANT" in doc or f"--config {name}:VARIANT" in doc


def test_packaged_names():
  assert configs.names() == sorted(MODULES)
  with pytest.raises(ValueError, match="unknown config 'nope'.*gnt_move"):
    configs.load("nope:tiny")
  with pytest.raises(ValueError, match="unknown variant"):
    configs.load("gnt:nope")
  with pytest.raises(FileNotFoundError):
    configs.load("no/such/file.py:tiny")


@pytest.mark.parametrize("name", MODULES)
def test_checkout_files_reexport_the_packaged_configs(name):
  checkout = importlib.import_module(f"experiments.{name}")
  assert checkout.get_config is MODULES[name].get_config
  assert checkout.VARIANTS == MODULES[name].VARIANTS
  for variant in MODULES[name].VARIANTS:
    by_name = configs.load(f"{name}:{variant}")
    by_file = configs.load(_config_arg(name, variant))
    assert by_name.is_locked and by_file.is_locked
    assert by_name.to_dict() == by_file.to_dict() == MODULES[name].get_config(variant).to_dict()


@pytest.mark.parametrize("spec", ["gnt_move:tiny", _config_arg("gnt_move", "tiny")])
def test_name_and_file_flags_take_the_same_overrides(spec):
  c = _parse("--config", spec, "--config.train.num_steps=20", "--config.model.moe.top_k=1")
  assert c.is_locked and c.train.num_steps == 20 and c.model.moe.top_k == 1
  assert c.to_dict() == _parse("--config=" + spec, "--config.train.num_steps=20",
                               "--config.model.moe.top_k=1").to_dict()
  with pytest.raises(AttributeError, match="num_stpes"):
    _parse("--config", spec, "--config.train.num_stpes=1")
  with pytest.raises(flags.Error):
    _parse("--config", spec, "--config.train.num_steps=x")


def test_flag_default_and_unknown_name():
  fv = flags.FlagValues()
  holder = configs.define_config_flag("config", "gnt:tiny", flag_values=fv, sys_argv=["p"])
  fv(["p"])
  assert holder.value.variant == "tiny" and holder.value.model.moe is None
  with pytest.raises(flags.Error, match="unknown config"):
    _parse("--config", "gnt_moe:tiny")


def test_main_job_result_agrees_with_the_readme():
  doc = gnt_move.__doc__
  assert "python -m movenerf.train --config experiments/gnt_move.py:tiny --workdir runs/demo" in doc
  psnr, ssim = re.search(r"PSNR (\d+\.\d+) / SSIM (\d\.\d+)", doc).groups()
  readme = (REPO / "README.md").read_text()
  assert psnr in readme and ssim in readme
  assert psnr in gnt.__doc__ and ssim in gnt.__doc__  # gnt.py:tiny points at the main job


def test_paper_and_real_variants_match_the_method():
  paper = decoupled_nerf.get_config("paper")
  assert paper.data.train.synthetic.scenes == "chair,drums,ficus,hotdog,lego,materials"
  assert paper.data.eval.synthetic.scenes == "mic,ship"
  assert tuple(paper.data.example.source_size) == (64, 64)
  assert paper.optim.name == "adamax" and paper.optim.lr_transformer == 0.002
  assert (paper.optim.b1, paper.optim.b2) == (0.9, 0.999)
  assert paper.data.global_batch == 4 and paper.optim.accumulate_steps == 8
  m = paper.model
  assert (m.num_freqs, m.attn_heads, m.head_dim, m.width) == (12, 32, 32, 256)
  real = decoupled_nerf.get_config("real")
  assert (real.data.train.lego.scenes, real.data.eval.mic.scenes) == ("lego", "mic")
  assert pathlib.Path(real.data.train.lego.path).name == "nerf_synthetic"


@pytest.mark.parametrize("name", ["gnt", "gnt_move"])
def test_real_variants_read_the_shared_pack(name, monkeypatch):
  """``real`` trains on the pack's fern, scan 24 and lego and evaluates on flower, scan 37
  and mic: every scene loads, and training examples hold 4 source views at 48x64."""
  if not (REPO.parent / "shared" / "data" / "real").exists():
    pytest.skip("the shared real pack is not beside the checkout")
  monkeypatch.chdir(REPO)  # the variant's paths are relative to a checkout
  c = MODULES[name].get_config("real")
  scenes = {}
  for group in ("train", "eval"):
    sources, _ = train_data.make_sources(c.data[group])
    scenes[group] = sorted(c.scene_id for src in sources.values()
                           for c in src.scenes(src.splits()[0]))
  assert scenes == {"train": ["dtu_scan24", "fern", "lego"],
                    "eval": ["dtu_scan37", "flower", "mic"]}
  sources, weights = train_data.make_sources(c.data.train)
  maker = pipeline.ExampleMaker(sources, weights,
                                ExampleSpec.from_config(c.data.example.to_dict()))
  datasets = set()
  for i in range(12):
    ex = maker(i)
    assert ex["src_images"].shape == (4, 48, 64, 3)
    datasets.add(int(ex["ids"][0]))
  assert datasets == {0, 1, 2}
