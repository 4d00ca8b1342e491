"""Tests of movenerf.models.gnt.render: rendering rays in chunks."""

import numpy as np

from movenerf.models.gnt.render import encode_sources, render_chunk, render_rays_chunked
from tests.models.gnt import helpers


def test_chunked_rendering_matches_one_batch():
  model, variables, rays, target, sources = helpers.setup()
  featmaps = encode_sources(model, variables, sources.images)
  whole = render_chunk(model, variables, rays, target, sources, featmaps, 2.0, 6.0)
  chunked = render_rays_chunked(model, variables, rays, target, sources, 2.0, 6.0, chunk_size=4)
  np.testing.assert_allclose(chunked["rgb_coarse"], whole.coarse.rgb, atol=1e-4)
  np.testing.assert_allclose(chunked["rgb"], whole.fine.rgb, atol=2e-4)
  np.testing.assert_allclose(chunked["depth_coarse"], whole.coarse.depth, atol=1e-4)
