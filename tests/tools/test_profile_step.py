"""The profile breakdown: op names -> model sources, on a real (tiny) traced train step."""

import jax

from movenerf.models.gnt.model import GNTConfig
from movenerf.tools import bench, profile_step


def test_source_key_folds_wrappers_and_layer_indices():
  name = ("jit(train_step)/transpose(jvp())/while/body/closed_call/checkpoint/"
          "GNTModel.render_rays/GNTModel._render_pass/net_coarse/view_trans_3/attn/mul")
  assert profile_step.source_key(name, 3) == "bwd net_coarse/view_trans_*/attn"
  assert profile_step.source_key(name, 9) == "bwd net_coarse/view_trans_*/attn/mul"
  fwd = "jit(train_step)/jvp()/GNTModel.render_rays/GNTModel._render_pass/net_coarse/q_fc_0/fc1"
  assert profile_step.source_key(fwd, 2) == "fwd net_coarse/q_fc_*"
  # A gradient taken per slice inside the loop names the function it differentiates.
  sliced = ("jit(train_step)/while/body/transpose(jvp(GNTModel.render_rays))/"
            "GNTModel._render_pass/net_coarse/ray_trans_0/attn/dot_general")
  assert profile_step.source_key(sliced, 3) == "bwd net_coarse/ray_trans_*/attn"


def test_traced_train_step_is_attributed(tmp_path):
  # The dense train step of tests/tools/test_bench.py's run: a persistent compilation
  # cache serves its programs.
  config = GNTConfig(depth=2, width=16, feature_width=8, num_samples=8)
  prepared = bench.prepare_train(config, num_views=2, size=16, rays=32, sub_chunk=16)
  sources = profile_step.op_sources(prepared.hlo_text())
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    prepared.time_once()
  events = profile_step.read_trace(str(tmp_path))
  b = profile_step.attribute(events, sources, depth=3)
  keys = {k: ms for k, ms, _ in b.by_source}
  # Both passes of both transformers show up; in this tiny model, loop-state copies
  # (no op_name) are a large share, but not most, of the op time (their share moves
  # with the host's load: 20-35% measured beside another pytest worker).
  for key in ("fwd net_coarse/view_trans_*/attn", "bwd net_coarse/view_trans_*/attn",
              "fwd net_coarse/ray_trans_*/attn", "bwd net_coarse/ray_trans_*/attn"):
    assert keys.get(key, 0) > 0, key
  unattributed = sum(ms for k, ms, _ in b.by_source if "no op_name" in k)
  assert unattributed < 0.5 * b.total_ms
  assert abs(sum(keys.values()) - b.total_ms) < 1e-6 * b.total_ms + 1e-9
  assert 0 < b.matmul_ms < b.total_ms
  table = profile_step.format_breakdown(b, prepared.times[-1])
  assert "bwd net_coarse/view_trans_*/attn" in table
  # The host loop's five programs, each with its own ops; the slices take the most.
  programs = {m: ms for m, ms, _ in b.by_program}
  assert set(programs) == {"jit__prepare", "jit__encode", "jit__slice", "jit__encode_grad",
                           "jit__lambda"}, programs
  assert max(programs, key=programs.get) == "jit__slice"
  assert abs(sum(programs.values()) - b.total_ms) < 1e-6 * b.total_ms + 1e-9
  assert "| jit__slice |" in table


def test_ops_of_the_same_name_in_two_programs_are_told_apart():
  hlo = ("HloModule jit_a, is_scheduled=true\n\nENTRY %main {\n"
         "  ROOT %fusion.1 = f32[8]{0} fusion(), "
         "metadata={op_name=\"jit(a)/net/view_trans_0/attn/mul\"}\n}\n\n"
         "HloModule jit_b, is_scheduled=true\n\nENTRY %main {\n"
         "  ROOT %fusion.1 = f32[4]{0} fusion(), "
         "metadata={op_name=\"jit(b)/net/ray_trans_2/ff/add\"}\n}\n")
  sources = profile_step.op_sources(hlo)
  assert sources == {("jit_a", "fusion.1"): ("f32[8]{0}", "jit(a)/net/view_trans_0/attn/mul"),
                     ("jit_b", "fusion.1"): ("f32[4]{0}", "jit(b)/net/ray_trans_2/ff/add")}
  event = lambda module, dur: {"name": "fusion.1", "dur": dur, "ph": "X",
                               "args": {"hlo_module": module, "hlo_op": "fusion.1"}}
  b = profile_step.attribute([event("jit_a", 30.0), event("jit_b", 1000.0),
                              event("jit_b", 1000.0), {"name": "fusion.1", "dur": 5.0}],
                             sources, depth=3)
  # The event without a module is ambiguous (two programs have a fusion.1): left out.
  assert b.by_source == [("fwd net/ray_trans_*/ff", 2.0, 2),
                         ("fwd net/view_trans_*/attn", 0.03, 1)]
  assert b.by_program == [("jit_b", 2.0, 2), ("jit_a", 0.03, 1)]
  assert [op for op, *_ in b.top_ops] == ["jit_b:fusion.1", "jit_a:fusion.1"]
