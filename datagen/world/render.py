"""Render a resolved scene to an RGB image and a per-object segmentation map.

Jitter (position, size, rotation, shade, texture phase) comes from the render
seed alone, so the same scene with the same seed gives the same pixels, and an
edited scene rendered with the reference's seed keeps every pixel the edit did
not touch: the world's counterpart of prompt-to-prompt.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from datagen.world import lexicon as lx
from datagen.world.scene import Scene

SUPERSAMPLE = 2  # draw at 2x and box-filter down: anti-aliased edges at little cost
_BINARY = [0] * 128 + [255] * 128  # lookup table: anti-aliased coverage -> hard mask


def render(scene: Scene, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image uint8 (size, size, 3), segmap uint8 (size, size)).

    ``segmap`` holds 0 for background and i + 1 where object i is visible, so the
    exact mask of object i is ``segmap == i + 1`` (what CLIPSeg estimates for real images).
    """
    if not scene.is_resolved:
        raise ValueError(f"render needs a resolved scene (call Scene.resolve first): {scene.to_json()}")
    rng = np.random.default_rng(seed)
    big = size * SUPERSAMPLE
    # Textures are drawn at the output size (their edges need no anti-aliasing) and
    # upsampled, which halves the render time.
    canvas = _background(scene.background, scene.texture, size, rng)
    canvas = np.repeat(np.repeat(canvas, SUPERSAMPLE, axis=0), SUPERSAMPLE, axis=1)
    segmap = Image.new("L", (big, big), 0)
    image = Image.fromarray(canvas)
    # Draw large objects first so small ones stay visible on top of them. Each object
    # draws its jitter from its own stream, keyed by its layout cell, so removing or
    # adding one object leaves the others exactly where they were.
    order = sorted(range(len(scene.objects)), key=lambda i: -lx.SIZES[scene.objects[i].size])
    for i in order:
        obj = scene.objects[i]
        cell = lx.POSITIONS[obj.position]
        orng = np.random.default_rng([seed, cell[0], cell[1], 7])
        mask = _object_mask(obj.shape, obj.size, cell, big, orng)
        shade = _jitter_colour(lx.COLOURS[obj.colour], orng)
        image.paste(shade, None, mask)
        segmap.paste(i + 1, None, mask.point(_BINARY))
    image = image.resize((size, size), Image.Resampling.BOX)
    segmap = segmap.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8), np.asarray(segmap, dtype=np.uint8)


def _jitter_colour(rgb, rng: np.random.Generator) -> tuple[int, int, int]:
    scale = rng.uniform(0.85, 1.12)
    c = np.clip(np.array(rgb, dtype=float) * scale + rng.uniform(-12, 12, 3), 0, 255)
    return tuple(int(v) for v in c)


def _object_mask(shape: str, size: str, cell: tuple[int, int], big: int,
                 rng: np.random.Generator) -> Image.Image:
    radius = lx.SIZES[size] * big / 2 * rng.uniform(0.88, 1.12)
    cx = (cell[0] + 0.5) / 3 * big + rng.uniform(-0.06, 0.06) * big
    cy = (cell[1] + 0.5) / 3 * big + rng.uniform(-0.06, 0.06) * big
    angle = rng.uniform(-15, 15) * math.pi / 180
    # Keep most of the shape inside the frame: a shape cut by the edge would not match its name.
    margin = min(radius * 0.85, big / 2)
    cx, cy = float(np.clip(cx, margin, big - margin)), float(np.clip(cy, margin, big - margin))
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for points, fill in _outline(shape):
        rot = [(cx + radius * (x * math.cos(angle) - y * math.sin(angle)),
                cy + radius * (x * math.sin(angle) + y * math.cos(angle))) for x, y in points]
        draw.polygon(rot, fill=fill)
    return mask


def _ellipse(rx: float, ry: float, dx: float = 0.0, n: int = 40) -> list[tuple[float, float]]:
    return [(dx + rx * math.cos(2 * math.pi * k / n), ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _regular(n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _outline(shape: str) -> list[tuple[list[tuple[float, float]], int]]:
    """Unit-radius polygons (points, fill): 255 paints the shape, 0 cuts a hole."""
    if shape == "circle":
        return [(_ellipse(1, 1), 255)]
    if shape == "oval":
        return [(_ellipse(1, 0.58), 255)]
    if shape == "ring":
        return [(_ellipse(1, 1), 255), (_ellipse(0.55, 0.55), 0)]
    if shape == "crescent":
        return [(_ellipse(1, 1), 255), (_ellipse(0.85, 0.85, dx=0.45), 0)]
    if shape == "square":
        return [([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)], 255)]
    if shape == "rectangle":
        return [([(-1, -0.5), (1, -0.5), (1, 0.5), (-1, 0.5)], 255)]
    if shape == "diamond":
        return [([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)], 255)]
    if shape == "triangle":
        return [(_regular(3), 255)]
    if shape == "trapezoid":
        return [([(-0.5, -0.6), (0.5, -0.6), (1, 0.6), (-1, 0.6)], 255)]
    if shape == "pentagon":
        return [(_regular(5), 255)]
    if shape == "hexagon":
        return [(_regular(6, 0.0), 255)]
    if shape == "octagon":
        return [(_regular(8, math.pi / 8), 255)]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.42
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return [(pts, 255)]
    if shape == "heart":
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17, -y / 17 + 0.1))
        return [(pts, 255)]
    if shape == "cross":
        a, b = 0.32, 1.0
        return [([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                  (-b, a), (-b, -a), (-a, -a)], 255)]
    if shape == "arrow":
        return [([(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)], 255)]
    raise ValueError(f"no outline for shape {shape!r}")


@functools.lru_cache(maxsize=4)
def _grid(big: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    return yy, xx


def _background(name: str, texture: str, big: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(lx.BACKGROUNDS[name], dtype=np.float32)
    # The texture's second tone: darker on light backgrounds, lighter on dark ones.
    tone = base * 0.72 if base.mean() > 110 else np.minimum(base * 1.45 + 25, 255)
    yy, xx = _grid(big)
    period = rng.uniform(0.09, 0.16)
    phase = rng.uniform(0, 1)
    if texture == "plain":
        pattern = np.zeros((big, big), np.float32)
    elif texture == "striped":
        theta = rng.uniform(0, math.pi)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        pattern = (((u / period + phase) % 1.0) < 0.5).astype(np.float32)
    elif texture == "dotted":
        gx, gy = (xx / period + phase) % 1.0 - 0.5, (yy / period + phase) % 1.0 - 0.5
        pattern = (gx ** 2 + gy ** 2 < 0.06).astype(np.float32)
    elif texture == "checkered":
        pattern = ((np.floor(xx / period + phase) + np.floor(yy / period + phase)) % 2).astype(np.float32)
    elif texture == "gridded":
        gx, gy = (xx / period + phase) % 1.0, (yy / period + phase) % 1.0
        pattern = ((gx < 0.14) | (gy < 0.14)).astype(np.float32)
    elif texture == "wavy":
        pattern = ((np.sin(2 * math.pi * (yy / period + 0.25 * np.sin(2 * math.pi * xx * 2.5) + phase)) > 0)
                   .astype(np.float32))
    elif texture == "speckled":
        pattern = (rng.random((big, big)) < 0.18).astype(np.float32)
    elif texture == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        u = (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta)
        pattern = np.clip(u + 0.5, 0, 1)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    rgb = base[None, None, :] * (1 - pattern[..., None]) + tone[None, None, :] * pattern[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)
