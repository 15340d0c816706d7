"""The HTTP API and the web page. Every bad input is a 4xx naming the field; nothing a client sends
crashes the server."""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from orchestration.serving.batcher import MicroBatcher
from orchestration.serving.engine import Query, SearchEngine

PAGE = Path(__file__).with_name("page.html")


@dataclass(frozen=True)
class ServiceSettings:
    w_image: float  # defaults of a query: the params' benchmark section
    w_text: float
    steps: int
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 8 << 20
    max_upload_pixels: int = 4096 * 4096  # decompression bombs stop here, before decoding
    max_steps: int = 100
    max_k: int = 100


class SearchRequest(BaseModel):
    instruction: str
    gallery_id: int | None = None  # the reference: a gallery image ...
    image: str | None = None  # ... or an upload, base64 (PNG, JPEG or WebP)
    negative: str = ""
    mask: str | None = None  # base64 PNG over the reference: white is the region the text is about
    w_image: float | None = None
    w_text: float | None = None
    steps: int | None = None
    k: int = 10


def bad(field: str, message: str, status: int = 422) -> HTTPException:
    return HTTPException(status, detail={"field": field, "message": message})


def decode_upload(field: str, data: str, s: ServiceSettings):
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad(field, "not base64") from None
    if len(raw) > s.max_upload_bytes:
        raise bad(field, f"{len(raw)} bytes, over the limit of {s.max_upload_bytes}", 413)
    try:
        im = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise bad(field, f"not an image ({type(err).__name__})") from None
    if im.format not in ("PNG", "JPEG", "WEBP"):
        raise bad(field, f"{im.format} images are not accepted: PNG, JPEG or WebP")
    if im.width * im.height > s.max_upload_pixels:
        raise bad(field, f"{im.width}x{im.height} pixels, over the limit of {s.max_upload_pixels}", 413)
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise bad(field, f"truncated or corrupt image ({err})") from None
    return im


def to_query(req: SearchRequest, engine: SearchEngine, s: ServiceSettings) -> Query:
    if not req.instruction.strip():
        raise bad("instruction", "an instruction is required")
    for name, value in (("w_image", req.w_image), ("w_text", req.w_text)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise bad(name, f"{value} is not a finite, non-negative guidance weight")
    steps = s.steps if req.steps is None else req.steps
    if not 1 <= steps <= s.max_steps:
        raise bad("steps", f"{steps} is not in 1 .. {s.max_steps}")
    if not 1 <= req.k <= min(engine.size, s.max_k):
        raise bad("k", f"{req.k} is not in 1 .. {min(engine.size, s.max_k)} (the gallery holds {engine.size})")
    if (req.gallery_id is None) == (req.image is None):
        raise bad("gallery_id", "give one reference: gallery_id or image")
    image = None
    if req.image is not None:
        image = np.asarray(decode_upload("image", req.image, s).convert("RGB"))
    elif not 0 <= req.gallery_id < engine.size:
        raise bad("gallery_id", f"{req.gallery_id} is not in 0 .. {engine.size - 1}", 404)
    mask = None
    if req.mask is not None:
        m = decode_upload("mask", req.mask, s)
        side = image.shape[:2] if image is not None else (engine.image_size, engine.image_size)
        if (m.height, m.width) != tuple(side):
            raise bad("mask", f"{m.width}x{m.height} pixels; the reference is {side[1]}x{side[0]}")
        mask = np.asarray(m.convert("L")) > 127
    return Query(req.instruction, req.negative, s.w_image if req.w_image is None else req.w_image,
                 s.w_text if req.w_text is None else req.w_text, steps, req.k, req.gallery_id, image, mask)


def create_app(engine: SearchEngine, settings: ServiceSettings, batching: bool = True) -> FastAPI:
    batcher = MicroBatcher(engine.search, settings.max_batch if batching else 1, settings.max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="CompoDiff composed image retrieval", lifespan=lifespan,
                  description="Composed search over the indexed gallery: a reference image and a text that changes it.")
    app.state.batcher = batcher

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": batcher.task is not None and not batcher.task.done(), "gallery": engine.size,
                "image_size": engine.image_size, "encoder": engine.encoder_id, "precision": engine.pipe.precision,
                "defaults": {"w_image": settings.w_image, "w_text": settings.w_text, "steps": settings.steps}}

    @app.get("/stats")
    def stats() -> dict:
        """How the queries were batched: passes of the denoiser and the queries they answered."""
        sizes = batcher.batches
        return {"passes": len(sizes), "queries": sum(sizes), "largest_batch": max(sizes, default=0)}

    @app.get("/images/{gallery_id}", responses={200: {"content": {"image/png": {}}}})
    def image(gallery_id: int) -> Response:
        if not 0 <= gallery_id < engine.size:
            raise bad("gallery_id", f"{gallery_id} is not in 0 .. {engine.size - 1}", 404)
        return Response(engine.gallery_png[gallery_id], media_type="image/png")

    @app.post("/search")
    async def search(req: SearchRequest) -> dict:
        t0 = time.perf_counter()
        answer = await batcher.submit(to_query(req, engine, settings))
        return {"ids": answer.ids, "scores": answer.scores,
                "baseline": {"method": "image_text_sum", "ids": answer.baseline_ids, "scores": answer.baseline_scores},
                "latency_ms": 1000 * (time.perf_counter() - t0)}

    return app
