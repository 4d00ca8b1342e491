"""Sinusoidal positional / view-direction encodings."""

from __future__ import annotations

import jax.numpy as jnp


def sinusoidal_encoding(x: jnp.ndarray, num_freqs: int = 10, include_input: bool = True,
                        max_freq_log2: float | None = None) -> jnp.ndarray:
  """NeRF-style encoding ``[x, sin(f0 x), cos(f0 x), sin(f1 x), cos(f1 x), ...]``.

  Frequencies are ``2 ** linspace(0, max_freq_log2, num_freqs)`` (default
  max_freq_log2 = num_freqs - 1, i.e. 1, 2, 4, ...), the order of the official GNT
  Embedder: for each frequency, sin then cos, each over all input channels.

  Args:
    x: [..., C].
  Returns:
    [..., C * (include_input + 2 * num_freqs)].
  """
  if max_freq_log2 is None:
    max_freq_log2 = num_freqs - 1
  freqs = 2.0 ** jnp.linspace(0.0, max_freq_log2, num_freqs, dtype=jnp.float32)
  scaled = x[..., None, :] * freqs[:, None]  # [..., F, C]
  pairs = jnp.stack([jnp.sin(scaled), jnp.cos(scaled)], axis=-2)  # [..., F, 2, C]
  parts = pairs.reshape(x.shape[:-1] + (-1,))
  if include_input:
    parts = jnp.concatenate([x, parts], axis=-1)
  return parts


def encoding_size(num_channels: int, num_freqs: int = 10, include_input: bool = True) -> int:
  """Output width of ``sinusoidal_encoding``."""
  return num_channels * (int(include_input) + 2 * num_freqs)
