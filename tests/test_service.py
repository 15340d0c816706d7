"""`compodiff serve` over real HTTP on loopback: composed queries, micro-batching, and every bad input
answered with a 4xx naming its field while the server stays up."""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_orchestration import copy_project, env_for, run

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / ".venv" / "bin" / "compodiff")
# what a model needs to be served: the encoder, a denoiser (stage 1's, the quickest) and the indexed gallery
NEEDS = "world_pairs,encoder,pair_features,stage1,world_benchmark,gallery_features,faiss_index"
pytestmark = pytest.mark.slow  # a lifecycle of seven tiny steps, then a server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(image: np.ndarray | Image.Image) -> str:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("served"))
    env = env_for(root)
    run([CLI, "lifecycle", "--select", NEEDS], root, env, timeout=900)
    port = free_port()
    proc = subprocess.Popen([CLI, "serve", "--port", str(port), "--model", "data/stage1/denoiser.safetensors",
                             "--max-wait-ms", "40", "--max-upload-bytes", "200000", "--max-upload-pixels", "1000000"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited: {proc.stdout.read()[-3000:]}") from None
        time.sleep(0.5)
    else:
        raise AssertionError("the server did not answer /health in 180 s")
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)


def search(url, **body):
    return httpx.post(f"{url}/search", json=body, timeout=120)


def test_a_composed_query_returns_the_top_k_with_the_baseline_and_its_latency(server):
    url, _ = server
    ready = httpx.get(f"{url}/ready").json()
    assert ready["ready"] and ready["gallery"] > 10
    r = search(url, gallery_id=3, instruction="make the circle red", k=5)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["ids"]) == 5 and out["scores"] == sorted(out["scores"], reverse=True)
    assert out["baseline"]["method"] == "image_text_sum" and len(out["baseline"]["ids"]) == 5
    assert out["latency_ms"] > 0
    # the same query with a negative text composes another target
    neg = search(url, gallery_id=3, instruction="make the circle red", negative="a blue star", k=5).json()
    assert neg["scores"] != out["scores"]
    # an uploaded reference (the gallery image itself) and a painted mask of its size
    image = np.asarray(Image.open(io.BytesIO(httpx.get(f"{url}/images/3").content)).convert("RGB"))
    up = search(url, image=png(image), instruction="make the circle red", k=5)
    assert up.status_code == 200 and len(up.json()["ids"]) == 5
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[: image.shape[0] // 2] = 255
    masked = search(url, gallery_id=3, mask=png(mask), instruction="make the circle red", k=5)
    assert masked.status_code == 200 and masked.json()["scores"] != out["scores"]
    assert httpx.get(f"{url}/openapi.json").json()["paths"].keys() >= {"/search", "/images/{gallery_id}", "/ready"}
    assert "<canvas" in httpx.get(f"{url}/").text  # the web page, with its mask canvas


def test_concurrent_queries_share_a_denoiser_pass(server):
    url, _ = server
    before = httpx.get(f"{url}/stats").json()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: search(url, gallery_id=i, instruction="add a star", k=3), range(8)))
    assert all(a.status_code == 200 for a in answers)
    after = httpx.get(f"{url}/stats").json()
    assert after["queries"] - before["queries"] == 8
    assert after["largest_batch"] > 1 and after["passes"] - before["passes"] < 8


def test_every_bad_input_is_a_4xx_naming_its_field(server):
    url, _ = server
    size = httpx.get(f"{url}/ready").json()["gallery"]
    good = dict(gallery_id=0, instruction="make the circle red", k=3)
    bomb = Image.new("1", (1200, 1200))  # 1.44 M pixels in a few hundred bytes: refused before decoding
    truncated = base64.b64decode(png(np.zeros((32, 32, 3), np.uint8)))[:60]
    cases = [
        ({"image": base64.b64encode(b"hello, not an image").decode(), "gallery_id": None}, 422, "image"),
        ({"image": base64.b64encode(truncated).decode(), "gallery_id": None}, 422, "image"),
        ({"image": "%%% not base64", "gallery_id": None}, 422, "image"),
        ({"image": base64.b64encode(b"\x89PNG" + bytes(300000)).decode(), "gallery_id": None}, 413, "image"),
        ({"image": png(bomb), "gallery_id": None}, 413, "image"),
        ({"mask": png(np.zeros((5, 7), np.uint8))}, 422, "mask"),
        ({"gallery_id": size + 5}, 404, "gallery_id"),
        ({"k": size + 1}, 422, "k"),
        ({"k": 0}, 422, "k"),
        ({"w_image": -1.0}, 422, "w_image"),
        ({"w_text": math.nan}, 422, "w_text"),
        ({"steps": 0}, 422, "steps"),
        ({"instruction": "   "}, 422, "instruction"),
        ({"gallery_id": None}, 422, "gallery_id"),
    ]
    for change, status, field in cases:
        body = {k: v for k, v in {**good, **change}.items() if v is not None}
        r = httpx.post(f"{url}/search", content=json.dumps(body), headers={"Content-Type": "application/json"},
                       timeout=60)
        assert r.status_code == status, (change.keys(), r.status_code, r.text)
        assert r.json()["detail"]["field"] == field, r.text
    assert httpx.get(f"{url}/images/{size}").status_code == 404
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # still up, and still answering
    assert search(url, **good).status_code == 200


def test_an_index_of_another_encoder_stops_the_start_up(server):
    from compodiff.retrieval import GalleryIndex, IndexInfo
    from orchestration.serving.engine import StartupError, load_engine

    _, root = server
    path = root / "data" / "faiss_index" / "gallery.faiss"
    index = GalleryIndex.load(path)
    info = IndexInfo(**{**index.info.__dict__, "encoder": "ViT-L-14/openai"})
    GalleryIndex(index.index, info, index.vectors).save(root / "other" / "gallery.faiss")
    engine = load_engine(root, "data/stage1/denoiser.safetensors")
    from orchestration.serving.engine import SearchEngine

    with pytest.raises(StartupError, match="built from 'ViT-L-14/openai' embeddings"):
        SearchEngine(engine.pipe, GalleryIndex.load(root / "other" / "gallery.faiss"), engine.gallery_png,
                     engine.gallery, engine.encoder_id, 0.0, 0.0)


def test_an_int8_engine_answers_as_the_fp32_one_does(server):
    import torch

    from orchestration.serving.engine import Query, load_engine

    _, root = server
    model = "data/stage1/denoiser.safetensors"
    fp32, int8 = load_engine(root, model), load_engine(root, model, "int8")
    assert int8.pipe.precision == "int8" and fp32.pipe.precision == "fp32"
    queries = [Query("make the circle red", "", 1.5, 3.0, 10, 10, gallery_id=i) for i in range(8)]
    a, b = fp32.search(queries), int8.search(queries)
    # one pass of the text tower gives the denoiser's token states and the baseline's pooled embedding
    texts = ["make the circle red", "leave out the star", ""]
    tokens, pooled = fp32._encode(texts)
    torch.testing.assert_close(pooled, fp32.pipe.encoder.encode_text(texts), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens.tokens, fp32.pipe.encode_text(texts).tokens)
    overlap = [len(set(x.ids) & set(y.ids)) / 10 for x, y in zip(a, b)]
    # int8 weights move the composed target a little, not the answer: 0.71 on this tiny stage-1 model (a random
    # ranking would share about a fifth), and the default run's stage 2 loses 0.15 mAP@10 (serving_precision.md)
    assert np.mean(overlap) >= 0.6, overlap
    assert [x.baseline_ids for x in a] == [y.baseline_ids for y in b]  # the baseline has no denoiser


@pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(), reason="Debian's chromium is not installed")
def test_the_page_in_a_browser_answers_text_negative_and_mask_queries(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.test_ui import shots_dir
    from tools.lifecycle_screenshot import ARGS, CHROMIUM

    url, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url, wait_until="load")
        expect(page.locator("#ref")).to_be_visible()
        page.fill("#gallery-id", "3")
        page.click("#load-gallery")
        page.fill("#instruction", "make the circle red")
        page.fill("#k", "6")

        def results() -> list[str]:
            page.click("#search")
            expect(page.locator("#status")).to_contain_text("results in", timeout=60_000)
            expect(page.locator("#results figure")).to_have_count(6)
            expect(page.locator("#baseline figure")).to_have_count(6)
            return page.locator("#results figcaption").all_inner_texts()

        plain = results()
        page.fill("#negative", "a blue star")
        negative = results()
        assert negative != plain  # the negative text changes what comes back
        page.check("#use-mask")
        box = page.locator("#mask").bounding_box()
        page.mouse.move(box["x"] + 20, box["y"] + 20)
        page.mouse.down()
        page.mouse.move(box["x"] + 120, box["y"] + 90, steps=12)
        page.mouse.up()
        masked = results()
        assert masked != negative
        page.screenshot(path=str(shots_dir(tmp_path) / "service.png"))
        page.fill("#instruction", " ")
        page.click("#search")
        expect(page.locator("#status")).to_contain_text("error in instruction")
        browser.close()
