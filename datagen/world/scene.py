"""Scene graphs of the procedural world and their seeded sampler.

A ``Scene`` is what a caption describes. Any field may be left open (``None``):
a caption that does not say a size or a position fits many scenes, and
``Scene.resolve`` fills the open fields from a seed, the way a text-to-image
model fills in what a prompt leaves unsaid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from datagen.world import lexicon as lx


@dataclass(frozen=True)
class WorldObject:
    shape: str
    colour: str
    size: str | None = None
    position: str | None = None

    def __post_init__(self) -> None:
        _check("shape", self.shape, lx.SHAPES)
        _check("colour", self.colour, lx.COLOURS)
        if self.size is not None:
            _check("size", self.size, lx.SIZES)
        if self.position is not None:
            _check("position", self.position, lx.POSITIONS)


@dataclass(frozen=True)
class Scene:
    objects: tuple[WorldObject, ...]
    background: str | None = None
    texture: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= lx.MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {lx.MAX_OBJECTS} objects, got {len(self.objects)}")
        positions = [o.position for o in self.objects if o.position is not None]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two objects share a position: {positions}")
        if self.background is not None:
            _check("background", self.background, lx.BACKGROUNDS)
        if self.texture is not None:
            _check("texture", self.texture, lx.TEXTURES)

    @property
    def is_resolved(self) -> bool:
        return (self.background is not None and self.texture is not None
                and all(o.size is not None and o.position is not None for o in self.objects))

    def resolve(self, rng: np.random.Generator) -> Scene:
        """Fill every open field; fields already set are kept."""
        background = self.background or _pick(rng, list(lx.BACKGROUNDS))
        texture = self.texture or _pick(rng, lx.TEXTURES)
        taken = {o.position for o in self.objects if o.position is not None}
        objects = []
        for o in self.objects:
            size = o.size or _pick(rng, list(lx.SIZES))
            position = o.position
            if position is None:
                position = _pick(rng, [p for p in lx.POSITIONS if p not in taken])
                taken.add(position)
            objects.append(WorldObject(o.shape, o.colour, size, position))
        return Scene(tuple(objects), background, texture)

    def to_json(self) -> str:
        return json.dumps({"objects": [asdict(o) for o in self.objects],
                           "background": self.background, "texture": self.texture},
                          sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Scene:
        d = json.loads(text)
        return Scene(tuple(WorldObject(**o) for o in d["objects"]), d["background"], d["texture"])

    def with_objects(self, objects) -> Scene:
        return replace(self, objects=tuple(objects))


def sample_scene(rng: np.random.Generator, max_objects: int = lx.MAX_OBJECTS,
                 min_contrast: float = 90.0) -> Scene:
    """A random fully resolved scene whose objects stand out from the background."""
    background = _pick(rng, list(lx.BACKGROUNDS))
    texture = _pick(rng, lx.TEXTURES)
    bg_rgb = np.array(lx.BACKGROUNDS[background], dtype=float)
    visible = [c for c, rgb in lx.COLOURS.items() if np.linalg.norm(np.array(rgb) - bg_rgb) >= min_contrast]
    n = int(rng.integers(1, max_objects + 1))
    positions = rng.choice(list(lx.POSITIONS), size=n, replace=False)
    objects = tuple(
        WorldObject(_pick(rng, lx.SHAPES), _pick(rng, visible), _pick(rng, list(lx.SIZES)), str(p))
        for p in positions
    )
    return Scene(objects, background, texture)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _check(kind: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; the world knows {sorted(allowed)}")
