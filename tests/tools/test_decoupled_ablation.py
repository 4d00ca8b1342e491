"""benchmarks/decoupled_ablation.py: budgets, overrides, aggregation over seeds, resumption."""

import importlib.util
import json
import os
import pathlib
import sys

import pytest

from movenerf.configs import decoupled_nerf, gnt, gnt_move
from movenerf.data import spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("decoupled_ablation",
                                               ROOT / "benchmarks" / "decoupled_ablation.py")
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)

CONFIGS = {"decoupled_nerf": decoupled_nerf, "gnt": gnt, "gnt_move": gnt_move}


def test_budgets_are_the_configs_own_scaled_by_one_fraction():
  for setup, families in ablation.SETUPS.items():
    for name, (family, _) in ablation.MODELS.items():
      full = CONFIGS[family].get_config(families[family][0]).train.num_steps
      assert ablation.steps_for(setup, name, 1.0) == full, (setup, name)
      assert ablation.steps_for(setup, name, 0.125) == round(full / 8)
  assert ablation.steps_for("tiny", "DC-base", 1.0) == 8000
  assert ablation.steps_for("tiny", "GNT", 1.0) == 1500


def test_every_override_names_a_key_of_its_config_and_changes_it():
  for name, (family, overrides) in ablation.MODELS.items():
    c = CONFIGS[family].get_config("tiny")
    for override in overrides:
      key, value = override.split("=")
      section, field = key.split(".")
      assert field in c[section], (name, key)
      assert str(c[section][field]).lower() != value.lower(), (name, key)


def test_real_setup_evaluates_every_family_on_the_same_data_and_settings():
  # zero_shot compares runs only when these agree (zero_shot._eval_signature).
  dc = decoupled_nerf.get_config("real")
  args = dict(zip(ablation._GNT_REAL[1][::2], ablation._GNT_REAL[1][1::2]))
  tail = [a for a in ablation._GNT_REAL[1] if a.startswith("--config.")]
  flags = dict(a[len("--config."):].split("=", 1) for a in tail)
  for key in ("num_source_views", "max_views_per_scene", "image_size"):
    assert flags[f"eval.{key}"] == str(dc.eval[key]), key
  assert flags["data.example.source_size"] == str(dc.data.example.source_size)
  assert flags["data.example.num_source_views"] == str(dc.data.example.num_source_views)
  for flag, section in (("--train_data", dc.data.train), ("--eval_data", dc.data.eval)):
    parsed = spec.parse(args[flag], flag)
    assert {k: {kk: v[kk] for kk in ("format", "path", "scenes", "options")}
            for k, v in parsed.items()} == {
        k: {kk: v[kk] for kk in ("format", "path", "scenes", "options")}
        for k, v in section.to_dict().items()}


def _seed_result(shift):
  zs, probe = {}, {}
  for i, model in enumerate([ablation.NEAREST, "DC-base"]):
    zs[model] = {part: {"psnr": 10.0 + i + shift, "ssim": 0.5 + shift / 10,
                        "lpips_vgg": 0.2} for part in ("unseen", "seen")}
    probe[model] = {"swap_ratio": 0.5 + shift / 10, "rigid_ratio": 0.0,
                    "similarity_ratio": 0.1}
  return {"zs": zs, "probe": probe}


def test_table_is_the_mean_and_sample_spread_over_seeds():
  per_seed = {0: _seed_result(0.0), 1: _seed_result(2.0), 2: _seed_result(4.0)}
  table = ablation.aggregate(per_seed, ["DC-base"])
  assert table["DC-base"]["unseen PSNR"] == [11.0, 13.0, 15.0]
  text = ablation.markdown(table, {"DC-base": 1000}, [0, 1, 2])
  row = next(l for l in text.splitlines() if l.startswith("| DC-base"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[:3] == ["DC-base", "1000", "13.00 ± 2.00"]  # mean 13, sample std 2
  assert cells[3] == "0.700 ± 0.200"
  assert cells[-2] == "0.000 ± 0.000"
  one = ablation.markdown(ablation.aggregate({0: per_seed[0]}, ["DC-base"]), {}, [0])
  assert "| nearest source view |  | 10.00 | 0.500 |" in one


def test_finished_runs_and_evaluations_are_not_redone(tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f"ran {args}")
  monkeypatch.setattr(ablation.subprocess, "call", refuse)
  workdir = tmp_path / "tiny" / "seed0" / "DC-base"
  workdir.mkdir(parents=True)
  (workdir / "result.json").write_text("{}")
  assert ablation.train(str(tmp_path), "tiny", "DC-base", 0, 0.5) == str(workdir)
  for kind, name, content in (("zs", "zero_shot.json", {"a": 1}),
                              ("probe", "probe.json", {"models": {"a": 2}})):
    (tmp_path / "tiny" / "seed0" / kind).mkdir()
    (tmp_path / "tiny" / "seed0" / kind / name).write_text(json.dumps(content))
  runs = {"a": "runs/a", "b": "runs/b"}
  assert ablation.evaluate(str(tmp_path), "tiny", 0, {"a": "runs/a"}) == {
      "zs": {"a": 1}, "probe": {"a": 2}}
  # A model missing from an evaluation redoes it.
  with pytest.raises(AssertionError, match="zero_shot"):
    ablation.evaluate(str(tmp_path), "tiny", 0, runs)


@pytest.mark.parametrize("argv, message", [
    (["--models", "DC-base,DC-typo"], "--models: unknown DC-typo"),
    (["--setups", "tiny,huge"], "--setups: unknown huge"),
    (["--fraction", "2"], "--fraction: 2.0 is not in (0, 1]"),
])
def test_bad_arguments_stop_before_anything_is_written(tmp_path, monkeypatch, argv, message):
  out = tmp_path / "out"
  monkeypatch.setattr(sys, "argv", ["decoupled_ablation.py", "--out", str(out), *argv])
  with pytest.raises(SystemExit) as e:
    ablation.main()
  assert str(e.value).startswith(message)
  assert not os.path.exists(out)


def test_main_writes_each_setups_table(tmp_path, monkeypatch, capsys):
  trained = []
  monkeypatch.setattr(ablation, "train", lambda out, setup, model, seed, fraction: (
      trained.append((setup, model, seed, fraction)) or f"{out}/{setup}/seed{seed}/{model}"))
  shift = {0: 0.0, 1: 2.0}

  def evaluate(out, setup, seed, runs):
    result = _seed_result(shift[seed])
    for part in result["zs"].values():
      part["budget"] = {"updates": 125}
    return result
  monkeypatch.setattr(ablation, "evaluate", evaluate)
  (tmp_path / "tiny").mkdir()
  monkeypatch.setattr(sys, "argv", ["decoupled_ablation.py", "--out", str(tmp_path),
                                    "--seeds", "0,1", "--models", "DC-base",
                                    "--fraction", "0.5"])
  ablation.main()
  assert trained == [("tiny", "DC-base", 0, 0.5), ("tiny", "DC-base", 1, 0.5)]
  stored = json.loads((tmp_path / "tiny" / "ablation.json").read_text())
  assert stored["seeds"] == [0, 1] and stored["steps"] == {"DC-base": 4000}
  assert stored["table"]["DC-base"]["unseen PSNR"] == [11.0, 13.0]
  text = (tmp_path / "tiny" / "ablation.md").read_text()
  assert "| DC-base | 125 | 12.00 ± 1.41 |" in text
  assert "ETA" in capsys.readouterr().out
