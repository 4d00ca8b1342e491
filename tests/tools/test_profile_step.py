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
