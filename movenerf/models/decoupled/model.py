"""Decoupling-NeRF: a scene-encoding block and a renderer block shared across scenes.

A NeRF MLP couples the scene and the renderer in one set of weights. Here they are split:

1. ``SceneEncoder``: each source photo -> a feature map at 1/8 resolution (the scene).
2. ``RebuildViewAttention``: the target view rebuilds its own scene encoding by attending,
   with queries from the target's pixel positional encoding ("view PE"), over every
   source token, whose keys are the sources' pixel positional encodings ("scene PE") and
   whose values are the source features.
3. ``LayeredRenderer``: the rebuilt encoding -> D RGBA depth layers at full resolution,
   composited front to back (``composite_layers``). This block holds no scene content,
   so it is shared across scenes.

Positions per pixel (``pixel_points``) are the world point at unit z-depth along the
pixel's ray, so one encoding carries both where the camera is and where it looks. With
``relative_encoding`` the encodings are instead of rays relative to each source camera
(``plucker``, ``rays_in_camera``), which no rigid transform of the rig changes, and with
``normalise_scale`` in units of the rig's size (``rig_size``), which no similarity changes.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from movenerf import validation
from movenerf.geometry import rig
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.rays import pixel_rays

# pose_augmentation -> the largest scale of the random similarity (1: rigid).
POSE_AUGMENTATIONS = {"": None, "rigid": 1.0, "similarity": 2.0}

# Three stride-2 stages: the encoder, the attention grid and the renderer's up-sampling.
DOWNSAMPLE = 8


def positional_encoding(p: jnp.ndarray, num_freqs: int = 12) -> jnp.ndarray:
  """Sinusoidal encoding ``concat(sin(2^k pi p), cos(2^k pi p))``, k = 0 .. L - 1.

  Ordering: all sines, then all cosines; within each half the terms are grouped by
  frequency (k ascending), each group holding the C input channels in order. So for
  C = 3, output channel ``s * 3L + 3k + c`` is ``sin`` (s = 0) or ``cos`` (s = 1) of
  ``2^k * pi * p[..., c]``. No identity term is included.

  Note: in float32 the top frequencies (2^11 pi for L = 12) alias for coordinates far
  from the origin; that is part of the method, but keep scenes roughly unit-scaled.

  Args:
    p: [..., C] points (C = 3 for positions).
    num_freqs: L, the number of octaves.

  Returns:
    [..., C * 2 * L].
  """
  freqs = (2.0 ** jnp.arange(num_freqs, dtype=jnp.float32)) * jnp.pi  # [L]
  scaled = p[..., None, :] * freqs[:, None]  # [..., L, C]
  scaled = scaled.reshape(p.shape[:-1] + (-1,))  # frequency-major: k * C + c
  return jnp.concatenate([jnp.sin(scaled), jnp.cos(scaled)], axis=-1)


def grid_rays(camera: Cameras, stride: int = 1) -> tuple[jnp.ndarray, jnp.ndarray]:
  """World rays (origins, directions, each [H / s, W / s, 3]) through the pixel grid.

  Directions follow `movenerf.geometry.rays` (camera-frame z = 1). With ``stride`` s > 1
  the grid is that of the image down-sampled by s, each ray through the centre of its
  s x s pixel block, pixel ``(s j + (s - 1) / 2, s i + (s - 1) / 2)`` in the
  integer-centre convention. Sampling at the block centre (rather than average-pooling
  the encoding) keeps the high frequencies of the positional encoding from averaging
  away.

  Args:
    camera: a single camera (batch shape ()).
    stride: s, which must divide H and W.
  """
  if camera.height % stride or camera.width % stride:
    raise ValueError(f"stride {stride} must divide the image size "
                     f"{camera.height}x{camera.width}")
  h, w = camera.height // stride, camera.width // stride
  offset = (stride - 1) / 2.0
  v, u = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) * stride + offset,
                      jnp.arange(w, dtype=jnp.float32) * stride + offset, indexing="ij")
  rays = pixel_rays(camera, jnp.stack([u.reshape(-1), v.reshape(-1)], axis=-1))
  return rays.origins.reshape(h, w, 3), rays.directions.reshape(h, w, 3)


def pixel_points(camera: Cameras, depth: float = 1.0, stride: int = 1) -> jnp.ndarray:
  """World points at z-depth ``depth`` along pixel rays: ``origin + depth * direction``.

  The rays are :func:`grid_rays` (camera-frame z = 1), so ``depth`` is the z-depth in
  this camera.

  Args:
    camera: a single camera (batch shape ()).
    depth: z-depth of the points.
    stride: s, which must divide H and W (see :func:`grid_rays`).

  Returns:
    [H / s, W / s, 3] world coordinates.
  """
  origins, directions = grid_rays(camera, stride)
  return origins + depth * directions


def plucker(origins: jnp.ndarray, directions: jnp.ndarray) -> jnp.ndarray:
  """Plücker coordinates ``(d, o x d)`` of rays, ``d`` the unit direction: [..., 6].

  The moment ``o x d`` is the same for every origin along the ray; its length is the
  ray's distance from the frame's origin.
  """
  d = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
  return jnp.concatenate([d, jnp.cross(origins, d)], axis=-1)


def rig_size(src_cameras: Cameras, tgt_camera: Cameras,
             valid: jnp.ndarray | None = None) -> jnp.ndarray:
  """:func:`movenerf.geometry.rig.rig_size` of the source cameras where ``valid`` [V] is
  True and the target camera (a length that scales with the rig and does not change
  under a rigid transform); 1 where their centres coincide."""
  c2w = jnp.concatenate([src_cameras.c2w[:, :3], tgt_camera.c2w[None, :3]])
  if valid is not None:
    valid = jnp.concatenate([valid, jnp.ones((1,), bool)])
  size = rig.rig_size(c2w, valid)
  return jnp.where(size > 1e-9, size, 1.0)


def rays_in_camera(camera: Cameras, origins: jnp.ndarray, directions: jnp.ndarray
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """World rays [..., 3] expressed in a camera's frame: ``R^T (o - c)``, ``R^T d`` for
  ``camera.c2w = [R | c]`` (a single camera)."""
  rot, centre = camera.c2w[:3, :3], camera.c2w[:3, 3]
  return (origins - centre) @ rot, directions @ rot


class SceneEncoder(nn.Module):
  """Source images -> feature maps at 1/8 resolution (three stride-2 stages).

  Attributes:
    width: channels of every stage (and of the output, C).
  """

  width: int = 64

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    """Encode each view independently.

    Args:
      images: [V, H, W, 3] in [0, 1]; H, W divisible by 8.

    Returns:
      [V, H / 8, W / 8, C] features.
    """
    x = images * 2.0 - 1.0  # centre the input so ReLU units start half active
    for stage in range(3):
      x = nn.relu(nn.Conv(self.width, (3, 3), strides=(2, 2), name=f"down{stage}")(x))
      x = nn.relu(nn.Conv(self.width, (3, 3), name=f"conv{stage}")(x))
    return nn.Conv(self.width, (1, 1), name="out")(x)


def vector_quantise(z: jnp.ndarray, codebook: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Replace every vector of ``z`` by its nearest codeword (van den Oord et al. 2017).

  The nearest codeword is the one of least squared Euclidean distance, computed as
  ``|z|^2 - 2 z.e + |e|^2``; exact ties go to the lowest codeword index (``argmin``).
  The output is ``z + sg(e - z)``: the value of the codeword ``e``, with the gradient
  passed straight through to ``z``. The losses are means over all elements (the
  squared norm divided by C, averaged over the vectors):

    codebook   = mean((sg(z) - e)^2)   trains the codebook only;
    commitment = mean((z - sg(e))^2)   trains the encoder only (weighted by beta).

  Args:
    z: [..., C] vectors.
    codebook: [K, C] codewords.

  Returns:
    dict with 'quantised' [..., C], 'indices' [...] (int32), 'distances' [..., K] (the
    squared distances to every codeword), 'codebook' [] and 'commitment' [] (the two
    losses) and 'perplexity' [], ``exp`` of the entropy of the codewords' frequencies
    over the vectors of ``z`` (1: one codeword used, K: all used equally).
  """
  flat = z.reshape(-1, z.shape[-1])
  dist = (jnp.sum(flat ** 2, -1, keepdims=True) - 2.0 * flat @ codebook.T
          + jnp.sum(codebook ** 2, -1))
  indices = jnp.argmin(dist, axis=-1)
  e = codebook[indices].reshape(z.shape)
  sg = jax.lax.stop_gradient
  freq = jnp.mean(jax.nn.one_hot(indices, codebook.shape[0], dtype=z.dtype), axis=0)
  return {"quantised": z + sg(e - z), "indices": indices.reshape(z.shape[:-1]),
          "distances": dist.reshape(z.shape[:-1] + codebook.shape[:1]),
          "codebook": jnp.mean((sg(z) - e) ** 2),
          "commitment": jnp.mean((z - sg(e)) ** 2),
          "perplexity": jnp.exp(entropy(freq))}


def entropy(p: jnp.ndarray) -> jnp.ndarray:
  """``-sum p log p`` over the last axis (natural logarithm; 0 log 0 = 0, with a finite
  gradient there)."""
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def unit_vectors(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """``x / |x|`` along the last axis (zero vectors stay zero)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _identity(key, shape, dtype=jnp.float32):
  del key
  return jnp.eye(shape[0], shape[1], dtype=dtype)


class VectorQuantiser(nn.Module):
  """A learned codebook [K, C] (``codebook``, initialised normal with standard deviation
  ``init_scale``) applied with :func:`vector_quantise`.

  Attributes:
    num_codes: K.
    init_scale: standard deviation of the initial codewords (0.1: about that of the
      scene encoder's output channels at its initialisation).
    normalise: quantise the unit vectors of the inputs with the unit codewords
      (:func:`unit_vectors`); the losses are then between unit vectors.
    linear: the codewords are ``sg(codebook) @ projection``: the initial random codebook,
      held fixed, times one learned [C, C] matrix (``projection``, initialised to the
      identity), as in Zhu et al. 2024's SimVQ. The codebook loss then trains the
      projection, which moves every codeword at once, so codewords that no vector picks
      still follow the features instead of being left behind.
  """

  num_codes: int
  init_scale: float = 0.1
  normalise: bool = False
  linear: bool = False

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> dict[str, jnp.ndarray]:
    codebook = self.param("codebook", nn.initializers.normal(self.init_scale),
                          (self.num_codes, z.shape[-1]), jnp.float32)
    if self.linear:
      projection = self.param("projection", _identity, (z.shape[-1], z.shape[-1]),
                              jnp.float32)
      codebook = jax.lax.stop_gradient(codebook) @ projection
    if self.normalise:
      return vector_quantise(unit_vectors(z), unit_vectors(codebook))
    return vector_quantise(z, codebook)


class RebuildViewAttention(nn.Module):
  """Multi-head attention from the target's pixel grid onto all source tokens.

  Queries come from the target view PE, keys from the source views' PE and values from
  the source features. The output is only the out-projection of the attention-weighted
  values: the query PE is *not* added back (no residual), so the rebuilt encoding holds
  no view information beyond what attention retrieves from the sources.

  Attributes:
    num_heads: attention heads.
    head_dim: channels per head.
    width: output channels.
  """

  num_heads: int = 32
  head_dim: int = 32
  width: int = 256

  @nn.compact
  def __call__(self, query_pe: jnp.ndarray, key_pe: jnp.ndarray, values: jnp.ndarray,
               mask: jnp.ndarray | None = None, return_weights: bool = False):
    """Rebuild the target's scene encoding.

    Args:
      query_pe: [h, w, P] target view PE, or [V, h, w, P]: one query per source view,
        matched only against that view's keys (encodings relative to each source).
      key_pe: [V, h', w', P] source views' PE (flattened to N = V h' w' tokens).
      values: [V, h', w', C] source features.
      mask: optional boolean, broadcastable to [V, h', w'] (e.g. [V, 1, 1] per view);
        False tokens get exactly zero weight. If every token is masked, all weights are
        zero and the output is the out-projection bias.
      return_weights: also return the attention weights.

    Returns:
      [h, w, width] rebuilt encoding, and with ``return_weights`` the weights
      [num_heads, h * w, N] (rows sum to 1 over the unmasked tokens).
    """
    per_view = query_pe.ndim == 4
    h, w = query_pe.shape[-3:-1]
    num_views = key_pe.shape[0]
    dense = lambda name: nn.DenseGeneral((self.num_heads, self.head_dim), name=name)
    v = dense("value")(values.reshape(-1, values.shape[-1]))  # [N, H, D]
    if per_view:
      q = dense("query")(query_pe.reshape(num_views, h * w, -1))  # [V, Q, H, D]
      k = dense("key")(key_pe.reshape(num_views, -1, key_pe.shape[-1]))  # [V, N/V, H, D]
      logits = jnp.einsum("vqhd,vnhd->hqvn", q, k).reshape(self.num_heads, h * w, -1)
    else:
      q = dense("query")(query_pe.reshape(h * w, -1))  # [Q, H, D]
      k = dense("key")(key_pe.reshape(-1, key_pe.shape[-1]))  # [N, H, D]
      logits = jnp.einsum("qhd,nhd->hqn", q, k)
    logits = logits / math.sqrt(self.head_dim)
    if mask is not None:
      keep = jnp.broadcast_to(mask, values.shape[:-1]).reshape(1, 1, -1)
      logits = jnp.where(keep, logits, jnp.finfo(logits.dtype).min)
      # Multiplying by the mask as well makes a fully masked row zero, not uniform.
      weights = jax.nn.softmax(logits, axis=-1) * keep
    else:
      weights = jax.nn.softmax(logits, axis=-1)
    mixed = jnp.einsum("hqn,nhd->qhd", weights, v)
    out = nn.DenseGeneral(self.width, axis=(-2, -1), name="out")(mixed).reshape(h, w, -1)
    return (out, weights) if return_weights else out


class LayeredRenderer(nn.Module):
  """Rebuilt encoding [h, w, F] -> D RGBA layers [D, 8h, 8w, 4].

  Convs at h x w, then three (nearest resize x2 -> 3x3 conv) stages, then a 3x3 conv to
  D * 4 channels. Resize + conv avoids the checkerboard of transposed convolutions.

  Attributes:
    num_layers: D.
    width: channels of the convs.
  """

  num_layers: int = 8
  width: int = 64

  @nn.compact
  def __call__(self, encoding: jnp.ndarray) -> jnp.ndarray:
    """Decode the layers.

    Args:
      encoding: [h, w, F].

    Returns:
      [D, 8h, 8w, 4]: rgb (sigmoid) in channels 0-2, alpha (sigmoid) in channel 3.
    """
    x = nn.relu(nn.Conv(self.width, (3, 3), name="conv_in")(encoding))
    for stage in range(3):
      hh, ww = x.shape[:2]
      x = jax.image.resize(x, (2 * hh, 2 * ww, x.shape[-1]), "nearest")
      x = nn.relu(nn.Conv(self.width, (3, 3), name=f"up{stage}")(x))
    x = nn.Conv(self.num_layers * 4, (3, 3), name="conv_out")(x)
    x = x.reshape(x.shape[:2] + (self.num_layers, 4)).transpose(2, 0, 1, 3)
    return jax.nn.sigmoid(x)


def composite_layers(rgba: jnp.ndarray, background=None):
  """Front-to-back alpha compositing, layer 0 nearest the camera.

  ``w_i = a_i * prod_{j<i} (1 - a_j)``, ``rgb = sum_i w_i c_i + (1 - sum_i w_i) * bg``.

  Args:
    rgba: [D, H, W, 4], colour in channels 0-2, alpha in channel 3.
    background: None (black, 0), a scalar, [3] or [H, W, 3].

  Returns:
    rgb [H, W, 3], acc [H, W] (= sum_i w_i), weights [D, H, W].
  """
  colour, alpha = rgba[..., :3], rgba[..., 3]
  # Exclusive cumulative product: the transmittance reaching layer i.
  trans = jnp.cumprod(jnp.concatenate([jnp.ones_like(alpha[:1]), 1.0 - alpha[:-1]]), axis=0)
  weights = alpha * trans
  acc = weights.sum(axis=0)
  rgb = jnp.einsum("dhw,dhwc->hwc", weights, colour)
  if background is not None:
    rgb = rgb + (1.0 - acc)[..., None] * jnp.asarray(background, rgb.dtype)
  return rgb, acc, weights


@dataclasses.dataclass(frozen=True)
class DecoupledConfig:
  """Decoupling-NeRF settings.

  Attributes:
    num_freqs: L of the positional encodings (PE width 6L).
    enc_width: channels of the scene encoder.
    attn_heads: attention heads.
    head_dim: channels per head.
    width: channels of the rebuilt encoding.
    render_width: channels of the renderer's convs.
    num_layers: D, RGBA depth layers.
    white_background: composite over white (1) instead of black (0).
    pose_augmentation: in training, move every example's whole camera rig (sources and
      target together) by one random transform (:func:`movenerf.geometry.rig.
      random_rig_transform`): "" none, "rigid" (rotation and translation), "similarity"
      (also a scale log-uniform in [1 / 2, 2], near / far with it). The relative
      geometry, the images and the target are unchanged, so a model cannot tie an image
      to an absolute pose.
    relative_encoding: encode rays relative to each source camera instead of world
      points: the query of a target pixel for source view v is the positional encoding
      of the Plücker coordinates (:func:`plucker`) of the target pixel's ray expressed
      in v's camera frame (:func:`rays_in_camera`), matched only against v's keys, the
      encoding of v's own pixel rays in its frame. Nothing depends on where the rig is,
      so the render is invariant to a rigid transform of all cameras (not to a scale:
      the moments scale with it). PE width 12L instead of 6L.
    normalise_scale: with ``relative_encoding``, express the ray origins in units of
      the rig's size (:func:`rig_size`: the mean distance of the source and target
      camera centres from their centroid) before taking the moments, so the render is
      also invariant to a uniform scaling of all cameras (a similarity transform).
    vq_codebook_size: K > 0 puts a vector-quantised bottleneck (a VQ-VAE's, van den
      Oord et al. 2017) on the scene encoder's output: every feature vector is replaced
      by the nearest of K learned codewords of ``enc_width`` channels
      (:class:`VectorQuantiser`, initialised normal with standard deviation 0.1) before
      rebuild-view attention, the encoder trained through the straight-through
      estimator. The renderer's input is quantised too with ``vq_renderer_input``.
      The codebook and commitment losses are the loss's (``loss.vq_commitment``). 0:
      off, no codebook.
    vq_normalise: with ``vq_codebook_size``, scale the feature vectors and the codewords
      to unit length before the search (the nearest codeword is then the one of
      greatest cosine similarity, as in Yu et al. 2022's ViT-VQGAN, against codewords
      of large norm taking every vector), so the quantised values are unit vectors.
    vq_linear: with ``vq_codebook_size``, codewords that are a fixed random codebook
      times one learned matrix (:class:`VectorQuantiser`'s ``linear``, SimVQ), against
      the codebook collapse of learning each codeword on its own.
    vq_renderer_input: with ``vq_codebook_size``, quantise the rebuilt encoding too, the
      renderer's input, with a second codebook of K codewords of ``width`` channels
      (``vq_renderer``, with the same ``vq_normalise`` and ``vq_linear``), so that the
      renderer draws only from a finite vocabulary, as a VQ-VAE's decoder does. The
      codebook and commitment losses are the sums over both quantisers.
  """

  num_freqs: int = 12
  enc_width: int = 64
  attn_heads: int = 32
  head_dim: int = 32
  width: int = 256
  render_width: int = 64
  num_layers: int = 8
  white_background: bool = False
  pose_augmentation: str = ""
  relative_encoding: bool = False
  normalise_scale: bool = False
  vq_codebook_size: int = 0
  vq_normalise: bool = False
  vq_linear: bool = False
  vq_renderer_input: bool = False

  def __post_init__(self):
    for key in ("num_freqs", "enc_width", "attn_heads", "head_dim", "width",
                "render_width", "num_layers"):
      validation.integer(key, getattr(self, key), minimum=1)
    validation.integer("vq_codebook_size", self.vq_codebook_size, minimum=0)
    for key in ("vq_normalise", "vq_linear", "vq_renderer_input"):
      if getattr(self, key) and not self.vq_codebook_size:
        raise ValueError(f"{key}=True needs vq_codebook_size > 0 (there is no codebook)")
    if self.normalise_scale and not self.relative_encoding:
      raise ValueError("normalise_scale=True needs relative_encoding=True (the world-point "
                       "encoding has no rig to normalise)")
    if self.pose_augmentation not in POSE_AUGMENTATIONS:
      raise ValueError(f"pose_augmentation={self.pose_augmentation!r}: choose from "
                       f"{', '.join(repr(k) for k in POSE_AUGMENTATIONS)}")

  @classmethod
  def from_dict(cls, values: dict) -> "DecoupledConfig":
    """From a plain dict (e.g. ``config.model.to_dict()`` without ``name``); unknown
    keys are errors that name them."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown decoupled model config keys: {unknown}; "
                       f"allowed: {sorted(known)}")
    return cls(**values)


class DecoupledNeRF(nn.Module):
  """Source photos + cameras -> a rendered target view."""

  config: DecoupledConfig = DecoupledConfig()

  @nn.compact
  def __call__(self, src_images: jnp.ndarray, src_cameras: Cameras, tgt_camera: Cameras,
               src_mask: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Render the target view.

    Args:
      src_images: [V, H, W, 3] in [0, 1].
      src_cameras: V cameras (batch shape (V,)) of size H x W.
      tgt_camera: one camera (batch shape ()) of size H x W.
      src_mask: optional boolean [V] (e.g. padded or invalid views: False) or
        [V, H / 8, W / 8] per token.

    Returns:
      dict with rgb [H, W, 3], layers [D, H, W, 4], weights [D, H, W], acc [H, W] and
      features [V, H / 8, W / 8, C], the scene encoder's maps of the sources (before
      quantisation); with ``vq_codebook_size`` also vq_indices [V, H / 8, W / 8],
      vq_distances [V, H / 8, W / 8, K] and the scalars vq_codebook, vq_commitment and
      vq_perplexity (:func:`vector_quantise`); with ``vq_renderer_input`` also
      vq_renderer_indices [H / 8, W / 8] and vq_renderer_perplexity, vq_codebook and
      vq_commitment then summing both quantisers' losses.
    """
    cfg = self.config
    num_views, height, width = src_images.shape[:3]
    if height % DOWNSAMPLE or width % DOWNSAMPLE:
      raise ValueError(f"image height and width must be divisible by {DOWNSAMPLE}, "
                       f"got {height}x{width}")
    if src_cameras.batch_shape != (num_views,):
      raise ValueError(f"src_cameras batch {src_cameras.batch_shape} != ({num_views},)")
    for name, cam in (("src_cameras", src_cameras), ("tgt_camera", tgt_camera)):
      if (cam.height, cam.width) != (height, width):
        raise ValueError(f"{name} size {cam.height}x{cam.width} != images {height}x{width}")
    if tgt_camera.batch_shape != ():
      raise ValueError(f"tgt_camera must be a single camera, got {tgt_camera.batch_shape}")

    if cfg.relative_encoding:
      tgt_rays = grid_rays(tgt_camera, DOWNSAMPLE)

      unit = 1.0
      if cfg.normalise_scale:
        valid = None if src_mask is None else (
            src_mask if src_mask.ndim == 1 else jnp.any(src_mask, axis=(1, 2)))
        unit = rig_size(src_cameras, tgt_camera, valid)

      def relative_pe(cam, rays):
        origins, directions = rays_in_camera(cam, *rays)
        return positional_encoding(plucker(origins / unit, directions), cfg.num_freqs)

      own = lambda cam: relative_pe(cam, grid_rays(cam, DOWNSAMPLE))
      src_pe = jax.vmap(own)(src_cameras)  # [V, h, w, 12L]
      tgt_pe = jax.vmap(lambda cam: relative_pe(cam, tgt_rays))(src_cameras)  # [V, h, w, 12L]
    else:
      def grid_pe(cam):
        return positional_encoding(pixel_points(cam, stride=DOWNSAMPLE), cfg.num_freqs)

      src_pe = jax.vmap(grid_pe)(src_cameras)  # [V, h, w, 6L]
      tgt_pe = grid_pe(tgt_camera)  # [h, w, 6L]
    features = SceneEncoder(cfg.enc_width, name="scene_encoder")(src_images)
    quantiser = functools.partial(VectorQuantiser, cfg.vq_codebook_size,
                                  normalise=cfg.vq_normalise, linear=cfg.vq_linear)
    values, vq = features, {}
    if cfg.vq_codebook_size:
      q = quantiser(name="vq")(features)
      values = q["quantised"]
      vq = {f"vq_{k}": q[k] for k in ("indices", "distances", "codebook", "commitment",
                                      "perplexity")}
    if src_mask is not None and src_mask.ndim == 1:
      src_mask = src_mask[:, None, None]
    rebuilt = RebuildViewAttention(cfg.attn_heads, cfg.head_dim, cfg.width,
                                   name="attention")(tgt_pe, src_pe, values, src_mask)
    if cfg.vq_renderer_input:
      q = quantiser(name="vq_renderer")(rebuilt)
      rebuilt = q["quantised"]
      vq.update(vq_codebook=vq["vq_codebook"] + q["codebook"],
                vq_commitment=vq["vq_commitment"] + q["commitment"],
                vq_renderer_indices=q["indices"], vq_renderer_perplexity=q["perplexity"])
    layers = LayeredRenderer(cfg.num_layers, cfg.render_width, name="renderer")(rebuilt)
    rgb, acc, weights = composite_layers(layers, 1.0 if cfg.white_background else 0.0)
    return {"rgb": rgb, "layers": layers, "weights": weights, "acc": acc,
            "features": features, **vq}


def layer_depth(weights: jnp.ndarray, near, far) -> jnp.ndarray:
  """Nominal depth map from compositing weights: the weighted mean of layer positions.

  The layers carry no metric depth (the renderer only orders them front to back), so
  layer ``i`` of D is placed at ``near + (i + 0.5) / D * (far - near)`` for display;
  pixels that composite to nothing get ``far``.

  Args:
    weights: [D, H, W] compositing weights (``composite_layers``).
    near, far: the depth range the layers are spread over.

  Returns:
    [H, W] depth.
  """
  num = weights.shape[0]
  planes = near + (jnp.arange(num, dtype=weights.dtype) + 0.5) / num * (far - near)
  acc = weights.sum(axis=0)
  mean = jnp.einsum("dhw,d->hw", weights, planes) / jnp.maximum(acc, 1e-6)
  return jnp.where(acc > 1e-6, mean, far)


@functools.partial(jax.jit, static_argnums=0)
def _render(model: "DecoupledNeRF", variables, src_images, src_cameras, tgt_camera, near,
            far):
  out = model.apply(variables, src_images, src_cameras, tgt_camera)
  return {"rgb": out["rgb"], "depth": layer_depth(out["weights"], near, far),
          "acc": out["acc"]}


def render_view(model: "DecoupledNeRF", variables, src_images: jnp.ndarray,
                src_cameras: Cameras, tgt_camera: Cameras, near: float, far: float
                ) -> dict:
  """Renders one target view (compiled once per model and image size).

  Args:
    src_images: [V, H, W, 3] in [0, 1].
    src_cameras, tgt_camera: as for :class:`DecoupledNeRF`.
    near, far: range of the nominal depth map (``layer_depth``).

  Returns:
    NumPy 'rgb' [H, W, 3], 'depth' [H, W], 'acc' [H, W].
  """
  out = _render(model, variables, jnp.asarray(src_images, jnp.float32), src_cameras,
                tgt_camera, jnp.float32(near), jnp.float32(far))
  return {k: np.asarray(v) for k, v in out.items()}
