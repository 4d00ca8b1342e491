"""Images for people: colour maps, labels, colour bars, legends and comparison sheets.

Conventions of every image this module makes:

* Images are float [H, W, 3] in [0, 1] on a white background (``to_uint8`` converts,
  ``save_png`` writes).
* Depth is coloured with one perceptually ordered map (``_ANCHORS``: dark purple at
  ``lo`` (near) -> blue -> cyan -> green -> yellow -> red -> dark red at ``hi`` (far)).
  Depth outside [lo, hi] takes the end colours. Pixels with no surface (NaN or inf
  depth) are mid grey, ``NO_SURFACE``, a colour the map never takes.
* The depth scale of a scene is ``depth_range`` of its near / far bounds, in scene units;
  evaluation PNGs and videos of a scene use the same scale.
* Small images are magnified by a whole factor with nearest neighbour (``upscale``), so
  that pixels stay sharp squares; text is PIL's default bitmap font, magnified the same
  way (``TEXT_SCALE``).
"""

from __future__ import annotations

import functools
import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from movenerf import storage
from movenerf.moe import expert_map

# Anchor colours of a perceptually ordered map (dark purple -> blue -> cyan -> green ->
# yellow -> red -> dark red), evenly spaced over [lo, hi].
_ANCHORS = np.array([[0.19, 0.07, 0.23], [0.16, 0.47, 0.93], [0.1, 0.85, 0.75],
                     [0.65, 0.98, 0.24], [0.98, 0.73, 0.22], [0.85, 0.22, 0.05],
                     [0.48, 0.02, 0.01]], np.float32)

# The colour of "no surface": depth that is NaN or +-inf (e.g. pixels without true depth).
NO_SURFACE = np.array([0.5, 0.5, 0.5], np.float32)

# Images of people-facing panels are magnified to at least this many pixels in height.
MIN_HEIGHT = 256
# Magnification of the 11-pixel bitmap font.
TEXT_SCALE = 2
# White space between panels and around sheets, in pixels.
GAP = 8
# The light grey frame around each image of a panel (it shows where a white image
# ends), FRAME pixels wide.
FRAME = 2
FRAME_COLOUR = np.array([0.8, 0.8, 0.8], np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[H, W, C] float in [0, 1] (clipped) -> uint8; uint8 input is returned unchanged."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _ramp(t: np.ndarray) -> np.ndarray:
  """Positions t in [0, 1] -> colours of the map (t = 0: first anchor, 1: last)."""
  t = np.clip(np.asarray(t, np.float32), 0.0, 1.0) * (len(_ANCHORS) - 1)
  i = np.minimum(t.astype(np.int32), len(_ANCHORS) - 2)
  f = (t - i)[..., None]
  return (_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f).astype(np.float32)


def colorize(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
  """[H, W] scalars -> [H, W, 3] float colours of the map over [lo, hi].

  ``lo`` / ``hi`` default to the finite minimum / maximum. NaN and inf values get
  ``NO_SURFACE``.
  """
  values = np.asarray(values, np.float32)
  finite = np.isfinite(values)
  if lo is None:
    lo = float(values[finite].min()) if finite.any() else 0.0
  if hi is None:
    hi = float(values[finite].max()) if finite.any() else 1.0
  t = (np.where(finite, values, lo) - lo) / max(float(hi) - float(lo), 1e-12)
  return np.where(finite[..., None], _ramp(t), NO_SURFACE).astype(np.float32)


def depth_range(near, far) -> tuple[float, float]:
  """The depth colour scale (lo, hi) of a scene, in scene units: the smallest finite
  ``near`` and the largest finite ``far`` (scalars or per-camera arrays).

  Evaluation colours every depth PNG and the video of a scene with this scale, so that
  a colour means the same depth in all of them. Without finite bounds the scale is
  (0, 1); a flat one (lo == hi) is widened by 0.5 on each side.
  """
  n = np.asarray(near, np.float64).reshape(-1)
  f = np.asarray(far, np.float64).reshape(-1)
  n, f = n[np.isfinite(n)], f[np.isfinite(f)]
  if n.size == 0 or f.size == 0:
    return 0.0, 1.0
  lo, hi = float(n.min()), float(f.max())
  if not hi > lo:
    lo, hi = min(lo, hi) - 0.5, max(lo, hi) + 0.5
  return lo, hi


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a PNG atomically to a local path or a URL (never half-written); local files
  get mode 0666 less the umask (0644 with the usual umask 022), as ``storage`` writes."""
  image = to_uint8(image)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  storage.write_bytes(path, buf.getvalue())


def contact_sheet(images: list[np.ndarray], columns: int = 5, pad: int = 2) -> np.ndarray:
  """Tiles same-size [H, W, 3] images into one image (white padding)."""
  h, w = images[0].shape[:2]
  rows = -(-len(images) // columns)
  sheet = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), np.float32)
  for n, img in enumerate(images):
    r, c = divmod(n, columns)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    sheet[y:y + h, x:x + w] = np.asarray(img, np.float32)[..., :3]
  return sheet


# ----------------------------------------------------------------------------- layout


def _float_rgb(image) -> np.ndarray:
  """uint8 or float [H, W, 3] -> float32 [H, W, 3] in [0, 1] (clipped)."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  return np.clip(image.astype(np.float32), 0.0, 1.0)[..., :3]


def magnify(image: np.ndarray, factor: int) -> np.ndarray:
  """Each pixel as a ``factor`` x ``factor`` square (nearest neighbour)."""
  factor = int(factor)
  if factor <= 1:
    return image
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def upscale(image: np.ndarray, min_height: int = MIN_HEIGHT) -> np.ndarray:
  """Float [H, W, 3] magnified by the smallest whole factor that makes it at least
  ``min_height`` pixels tall (nearest neighbour; unchanged when already tall enough)."""
  image = _float_rgb(image)
  return magnify(image, -(-int(min_height) // max(image.shape[0], 1)))


def _place(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """``image`` centred horizontally at the top of a white ``height`` x ``width`` canvas."""
  h, w = image.shape[:2]
  canvas = np.ones((height, width, 3), np.float32)
  x = (width - w) // 2
  canvas[:h, x:x + w] = image
  return canvas


def hstack(images: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
  """Images side by side, top-aligned, ``gap`` white pixels apart."""
  images = [_float_rgb(im) for im in images]
  height = max(im.shape[0] for im in images)
  parts = []
  for n, im in enumerate(images):
    if n:
      parts.append(np.ones((height, gap, 3), np.float32))
    parts.append(_place(im, height, im.shape[1]))
  return np.concatenate(parts, axis=1)


def vstack(images: Sequence[np.ndarray], gap: int = GAP // 2) -> np.ndarray:
  """Images one above the other, centred horizontally, ``gap`` white pixels apart."""
  images = [_float_rgb(im) for im in images]
  width = max(im.shape[1] for im in images)
  parts = []
  for n, im in enumerate(images):
    if n:
      parts.append(np.ones((gap, width, 3), np.float32))
    parts.append(_place(im, im.shape[0], width))
  return np.concatenate(parts, axis=0)


def framed(image: np.ndarray, width: int = FRAME) -> np.ndarray:
  """``image`` inside a ``width`` pixel frame of ``FRAME_COLOUR``."""
  image = _float_rgb(image)
  out = np.empty((image.shape[0] + 2 * width, image.shape[1] + 2 * width, 3), np.float32)
  out[:] = FRAME_COLOUR
  out[width:width + image.shape[0], width:width + image.shape[1]] = image
  return out


def border(image: np.ndarray, pad: int = GAP) -> np.ndarray:
  """``image`` inside a white margin of ``pad`` pixels."""
  return np.pad(_float_rgb(image), ((pad, pad), (pad, pad), (0, 0)), constant_values=1.0)


@functools.lru_cache(maxsize=None)
def _font() -> ImageFont.ImageFont:
  """PIL's default bitmap font (11 pixels per line)."""
  if hasattr(ImageFont, "load_default_imagefont"):
    return ImageFont.load_default_imagefont()
  return ImageFont.load_default()


def text(line: str, scale: int = TEXT_SCALE, colour=(0.0, 0.0, 0.0)) -> np.ndarray:
  """One line of ``colour`` text on white: float [13 * scale, W, 3] (11-pixel font, 1-pixel
  margins above and below, magnified by ``scale``)."""
  font = _font()
  height = font.getbbox("Ag")[3]
  width = max(int(font.getbbox(line)[2]) if line else 0, 1)
  canvas = Image.new("L", (width, height + 2), 0)
  ImageDraw.Draw(canvas).text((0, 1), line, fill=255, font=font)
  ink = np.asarray(canvas, np.float32)[..., None] / 255.0
  image = (1.0 - ink) + ink * np.asarray(colour, np.float32)
  return magnify(image.astype(np.float32), scale)


def labelled(image: np.ndarray, label: str, scale: int = TEXT_SCALE) -> np.ndarray:
  """``label`` centred above ``image``."""
  return vstack([text(label, scale), image])


def panel(image: np.ndarray, label: str, footer: np.ndarray | None = None,
          min_height: int = MIN_HEIGHT, scale: int = TEXT_SCALE) -> np.ndarray:
  """A labelled column: ``label``; ``image`` upscaled to ``min_height`` in a ``FRAME``
  pixel frame; ``footer`` (e.g. a colour bar), all centred."""
  parts = [text(label, scale), framed(upscale(image, min_height))]
  if footer is not None:
    parts.append(footer)
  return vstack(parts)


def _row(left: np.ndarray, middle: np.ndarray | None, right: np.ndarray,
         width: int) -> np.ndarray:
  """``left`` at the left end and ``right`` at the right end of a ``width`` row, with
  ``middle`` centred between them when it fits; stacked when they do not fit side by
  side."""
  parts = [p for p in (left, middle, right) if p is not None]
  needed = sum(p.shape[1] for p in parts) + GAP * (len(parts) - 1)
  if needed > width and middle is not None:
    parts, middle = [left, right], None
    needed = left.shape[1] + right.shape[1] + GAP
  if needed > width:
    return vstack(parts, gap=0)
  height = max(p.shape[0] for p in parts)
  row = np.ones((height, width, 3), np.float32)
  row[:left.shape[0], :left.shape[1]] = left
  row[:right.shape[0], width - right.shape[1]:] = right
  if middle is not None:
    x = (width - middle.shape[1]) // 2
    row[:middle.shape[0], x:x + middle.shape[1]] = middle
  return row


def _swatch(colour, scale: int = TEXT_SCALE) -> np.ndarray:
  """A filled square of ``colour`` as tall as a line of text, with a thin dark outline."""
  size = 11 * scale
  square = np.empty((size, size, 3), np.float32)
  square[:] = 0.25
  square[scale:-scale, scale:-scale] = np.asarray(colour, np.float32)
  return square


def colorbar(lo: float, hi: float, width: int, title: str = "depth",
             ends: tuple[str, str] = ("near", "far"), no_surface: bool = True,
             bar_height: int | None = None, scale: int = TEXT_SCALE) -> np.ndarray:
  """The colour map as a horizontal bar ``width`` pixels wide, labelled with its ends.

  Column 0 is the colour of ``lo`` and column ``width - 1`` that of ``hi`` (exactly the
  map's end colours); under the bar "<ends[0]> <lo>" sits at the left, ``title`` in the
  middle and "<ends[1]> <hi>" at the right (values in the units of the coloured data,
  e.g. scene units for depth). With ``no_surface`` a grey swatch says "no surface".
  """
  width = max(int(width), 2)
  bar_height = bar_height or 8 * scale
  bar = np.broadcast_to(_ramp(np.linspace(0.0, 1.0, width))[None],
                        (bar_height, width, 3)).astype(np.float32)
  left = text(f"{ends[0]} {lo:.3g}".strip(), scale)
  right = text(f"{ends[1]} {hi:.3g}".strip(), scale)
  parts = [bar, _row(left, text(title, scale) if title else None, right, width)]
  if no_surface:
    parts.append(legend([("no surface", NO_SURFACE)], width, scale))
  return vstack(parts, gap=scale)


def legend(entries: Sequence[tuple[str, Sequence[float]]], width: int,
           scale: int = TEXT_SCALE) -> np.ndarray:
  """Colour swatches each followed by its name, in lines no wider than ``width`` (an
  entry wider than ``width`` gets a line of its own)."""
  items = [hstack([_swatch(colour, scale), text(name, scale)], gap=2 * scale)
           for name, colour in entries]
  lines, line, used = [], [], 0
  for item in items:
    extra = item.shape[1] + (2 * GAP if line else 0)
    if line and used + extra > width:
      lines.append(hstack(line, gap=2 * GAP))
      line, used = [], 0
      extra = item.shape[1]
    line.append(item)
    used += extra
  if line:
    lines.append(hstack(line, gap=2 * GAP))
  width = max([width] + [l.shape[1] for l in lines])
  return np.concatenate([_place_left(l, width) for l in lines], axis=0)


def _place_left(image: np.ndarray, width: int) -> np.ndarray:
  canvas = np.ones((image.shape[0], width, 3), np.float32)
  canvas[:, :image.shape[1]] = image
  return canvas


# ----------------------------------------------------------------------------- panels


def depth_image(depths: Sequence[tuple[str, np.ndarray]], lo: float, hi: float,
                min_height: int = MIN_HEIGHT) -> np.ndarray:
  """Labelled depth maps side by side on one scale (lo, hi), with its colour bar.

  Args:
    depths: (label, [H, W] depth) pairs; NaN / inf depth is ``NO_SURFACE``.
    lo, hi: the colour scale, e.g. ``depth_range`` of the scene.
    min_height: each map is upscaled to at least this height.
  """
  row = hstack([panel(colorize(d, lo, hi), name, min_height=min_height) for name, d in depths])
  return vstack([row, colorbar(lo, hi, row.shape[1])])


def expert_colours(num_experts: int) -> np.ndarray:
  """[E, 3] the colour of each expert in expert maps (``expert_map.PALETTE``, cycled)."""
  return expert_map.PALETTE[np.arange(num_experts) % len(expert_map.PALETTE)]


def expert_legend(num_experts: int, width: int, scale: int = TEXT_SCALE) -> np.ndarray:
  """Swatches naming each expert's colour: "expert 0", "expert 1", ..."""
  return legend([(f"expert {e}", c) for e, c in enumerate(expert_colours(num_experts))],
                width, scale)


def experts_image(experts: np.ndarray, mode: str = "top1",
                  min_height: int = MIN_HEIGHT) -> np.ndarray:
  """Expert maps of a rendering, one per MoE layer, with a legend of expert colours.

  Args:
    experts: [H, W, L, E] share of each pixel's samples routed to each expert (top-1).
    mode: "top1": each pixel in the colour of its most used expert (argmax of the
      shares); "blend": the share-weighted mix of expert colours
      (``expert_map.colorize_experts``).
    min_height: each map is upscaled to at least this height.
  """
  experts = np.asarray(experts, np.float32)
  if experts.ndim != 4:
    raise ValueError(f"experts must have shape [H, W, L, E], got {experts.shape}")
  maps = [panel(expert_map.colorize_experts(experts[:, :, l], mode=mode),
                f"experts, MoE layer {l + 1}", min_height=min_height)
          for l in range(experts.shape[2])]
  row = hstack(maps)
  return vstack([row, expert_legend(experts.shape[-1], row.shape[1])])


def comparison_sheet(columns: Sequence[np.ndarray], caption: str) -> np.ndarray:
  """Columns (e.g. ``panel`` outputs) side by side with ``caption`` under them, in a
  white margin."""
  return border(vstack([hstack(columns, gap=2 * GAP), text(caption)], gap=GAP))
