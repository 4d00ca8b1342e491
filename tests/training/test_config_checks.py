"""Config values are checked before a run creates anything (movenerf.training.config_checks
and the model and example dataclasses), and a resumed run's config is compared with the
stored one."""

import pytest

from movenerf import train as train_main
from movenerf.training import config_checks
from movenerf.validation import UsageError
from tests.helpers import small_config


@pytest.mark.parametrize("key, value, message", [
    ("data.example.rays_per_example", 0, r"data.example.rays_per_example=0: must be >= 1"),
    ("data.example.selection", "nearestt",
     r"data.example.selection='nearestt': choose from 'position', 'direction', 'combined'"),
    ("data.example.pair_fraction", 1.5, r"data.example.pair_fraction=1.5: must be <= 1"),
    ("train.log_every", 0, r"train.log_every=0: must be >= 1"),
    ("train.checkpoint_every", -1, r"train.checkpoint_every=-1: must be >= 1"),
    ("train.max_skipped_steps", -1, r"train.max_skipped_steps=-1: must be >= 0"),
    ("optim.name", "sgd", r"optim.name='sgd': choose from 'adam', 'adamax'"),
    ("optim.b2", 1.0, r"optim.b2=1.0: must be < 1"),
    ("loss.fine_weight", -0.5, r"loss.fine_weight=-0.5: must be >= 0"),
    ("eval.chunk_size", 0, r"eval.chunk_size=0: must be >= 1"),
    ("data.global_batch", 0, r"data.global_batch=0: must be >= 1"),
    ("eval.lpips", "alex,squeeze", r"eval.lpips\[\]='squeeze': choose from 'alex', 'vgg'"),
    ("eval.lpips", "vgg,vgg", r"eval.lpips='vgg,vgg': a network is named twice"),
    ("init_from", "/nowhere/run", r"init_from='/nowhere/run': no such run folder"),
])
def test_run_sections(key, value, message):
  c = small_config(move=True)
  section, name = key.rsplit(".", 1) if "." in key else ("", key)
  target = c
  for part in filter(None, section.split(".")):
    target = target[part]
  target[name] = value
  with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
    config_checks.check_run_config(c, device_count=1)


def test_device_layout():
  c = small_config(move=True)  # global batch 2, 4 experts
  config_checks.check_run_config(c, device_count=2)
  with pytest.raises(UsageError, match=r"^data.global_batch=2: must be a multiple of the 4 "
                     r"data-parallel devices \(4 devices / train.mesh_expert=1\); e.g. 4$"):
    config_checks.check_run_config(c, device_count=4)
  c.train.mesh_expert = 2
  config_checks.check_run_config(c, device_count=4)
  with pytest.raises(UsageError, match=r"^train.mesh_expert=2: must divide the 3 devices"):
    config_checks.check_run_config(c, device_count=3)
  c.train.mesh_expert, c.model.moe.num_experts = 4, 6
  c.data.global_batch = 1
  with pytest.raises(UsageError, match=r"^model.moe.num_experts=6 is not divisible by "
                     "train.mesh_expert=4"):
    config_checks.check_run_config(c, device_count=4)


@pytest.mark.parametrize("key, value, message", [
    ("dtype", "float16", r"model.dtype='float16': choose from 'float32', 'bfloat16'"),
    ("num_samples", -4, r"model.num_samples=-4: must be >= 1"),
    ("num_importance", -1, r"model.num_importance=-1: must be >= 0"),
    ("dropout", 1.0, r"model.dropout=1.0: must be < 1"),
    ("width", 18, r"model.width=18 is not divisible by num_heads=4"),
])
def test_model_section_is_checked_by_the_family(tmp_path, key, value, message):
  c = small_config(move=True)
  c.model[key] = value
  with pytest.raises(UsageError, match="^" + message):
    train_main.prepare(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key, value, message", [
    ("top_k", 5, r"model.moe.top_k=5: must be <= 4"),
    ("dispatch", "scatter", r"model.moe.dispatch='scatter': choose from 'dense', 'sorted', "
     "'auto'"),
    ("layers", (1, 3), r"model.moe.layers=\(1, 3\): blocks \[3\] are not in \[0, depth=2\)"),
])
def test_moe_section(tmp_path, key, value, message):
  c = small_config(move=True)
  c.model.moe[key] = value
  with pytest.raises(UsageError, match="^" + message):
    train_main.prepare(c, str(tmp_path / "run"))


def test_config_changes_name_what_decides_the_results():
  stored = small_config(move=True)
  now = small_config(move=True)
  assert config_checks.config_changes(stored, now) == []
  now.data.num_workers = 2      # how examples are made, not which
  now.train.num_steps = 100     # training longer is what resuming is for
  now.eval.chunk_size = 7
  assert config_checks.config_changes(stored, now) == []
  now.model.width = 24
  now.optim.lr_feature = 1.0
  assert config_checks.config_changes(stored.to_dict(), now) == [
      "model.width: 16 -> 24", "optim.lr_feature: 0.003 -> 1.0"]


def test_config_changes_pass_new_options_that_are_off():
  # A run stored before an option existed resumes while the option is off.
  stored = small_config().to_dict()
  now = small_config().to_dict()
  for off in (None, False, ""):
    now["model"]["new_option"] = off
    assert config_checks.config_changes(stored, now) == []
  now["model"]["new_option"] = "rigid"
  assert config_checks.config_changes(stored, now) == ["model.new_option: (absent) -> 'rigid'"]
  # Removing an option the run had is a change.
  assert config_checks.config_changes(now, stored) == [
      "model.new_option: 'rigid' -> (absent)"]


def test_config_changes_pass_new_terms_whose_weight_is_zero():
  # A new loss term at weight 0 passes with its settings; on, every key is named.
  stored = small_config().to_dict()
  now = small_config().to_dict()
  now["loss"].update(new_weight=0.0, new_temperature=0.1, new_steps=0)
  assert config_checks.config_changes(stored, now) == []
  now["loss"]["new_weight"] = 0.5
  assert config_checks.config_changes(stored, now) == [
      "loss.new_temperature: (absent) -> 0.1", "loss.new_weight: (absent) -> 0.5"]
  # A setting without its weight is a change.
  del now["loss"]["new_weight"]
  assert config_checks.config_changes(stored, now) == [
      "loss.new_temperature: (absent) -> 0.1"]


def test_config_changes_pass_the_settings_of_an_off_switch_in_another_section():
  # model.new_size off passes loss.new_beta with it; on, both are named.
  stored = small_config().to_dict()
  now = small_config().to_dict()
  now["model"]["new_size"] = 0
  now["loss"]["new_beta"] = 0.25
  assert config_checks.config_changes(stored, now) == []
  now["model"]["new_size"] = 8
  assert config_checks.config_changes(stored, now) == [
      "loss.new_beta: (absent) -> 0.25", "model.new_size: (absent) -> 8"]
  # Another first word is not the switch's.
  now["model"]["new_size"] = 0
  now["loss"]["other_beta"] = 0.5
  assert config_checks.config_changes(stored, now) == ["loss.other_beta: (absent) -> 0.5"]
