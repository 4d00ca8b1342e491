"""The evaluation program (movenerf.eval): a run is evaluated with its own config."""

import pytest

from movenerf import eval as eval_main
from movenerf.validation import UsageError
from tests.helpers import small_config


def test_the_runs_own_config_with_the_command_lines_overrides():
  stored = small_config(move=True).to_dict()
  given = small_config()  # the flag's config (its default file), with the overrides
  given.eval.max_views_per_scene = 3
  given.data.eval.unseen.options.num_views = 12
  config = eval_main.run_config(given, False, stored, ["eval.max_views_per_scene",
                                                       "data.eval.unseen.options.num_views"],
                                "runs/x")
  assert config.model.moe.num_experts == 4  # the run's model, not the flag's dense one
  assert config.eval.max_views_per_scene == 3 and config.data.eval.unseen.options.num_views == 12
  assert config.eval.chunk_size == stored["eval"]["chunk_size"]
  with pytest.raises(AttributeError):
    config.newkey = 1  # locked
  # No stored config (official weights): the flag's.
  assert eval_main.run_config(given, False, None, [], "w.pth") is given


def test_an_explicit_config_must_describe_the_runs_model():
  stored = small_config(move=True).to_dict()
  same = small_config(move=True)
  same.eval.chunk_size = 7
  assert eval_main.run_config(same, True, stored, [], "runs/x") is same
  dense = small_config()
  dense.model.width = 24
  with pytest.raises(UsageError, match=r"^--config describes another model than the run "
                     r"runs/x: model.moe: \(a section\) -> None; model.width: 16 -> 24 \(run -> "
                     r"--config\); leave out --config"):
    eval_main.run_config(dense, True, stored, [], "runs/x")


def test_overrides_are_read_from_the_command_line():
  assert eval_main._overrides(["prog", "--workdir", "r", "--config.eval.chunk_size=8",
                               "--config.data.eval.x.path", "/d"]) == [
                                   "eval.chunk_size", "data.eval.x.path"]


def test_a_protocol_is_checked_before_anything_is_loaded(tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  run = lambda *flags: subprocess.run(
      [sys.executable, "-m", "movenerf.eval", "--workdir", str(tmp_path / "none"), *flags],
      capture_output=True, text=True, check=False)
  bad = run("--protocol", "bogus", "--protocol_data", str(tmp_path))
  assert bad.returncode == 2 and "--protocol: unknown protocol 'bogus'; known: dtu, llff" \
      in bad.stderr
  no_data = run("--protocol", "llff")
  assert no_data.returncode == 2 and "--protocol_data: give the folder" in no_data.stderr
  alone = run("--protocol_data", str(tmp_path))
  assert alone.returncode == 2 and "--protocol_data needs --protocol" in alone.stderr
