"""Zero-shot evaluation of the stage-2 model on the real benchmarks (FashionIQ, CIRR, CIRCO, GeneCIS),
one partition each; a benchmark whose path (``sources.<name>``) is not configured is recorded as such.
The query is CompoDiff's target embedding for (reference image, text); the evaluators of
``compodiff.benchmarks`` score it exactly as the peers do."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compodiff.atomic import write_json
from compodiff.benchmarks import circo, cirr, fashioniq, genecis
from compodiff.checkpoint import load_checkpoint
from compodiff.config_schema import ConfigError
from compodiff.encoders import load_encoder
from compodiff.pipeline import CompoDiffPipeline
from orchestration.cores import use_cores
from orchestration.layout import Layout
from orchestration.registry import REAL_BENCHMARKS
from orchestration.steps import Log


def _images(paths: list[Path], enc) -> torch.Tensor:
    out = []
    for start in range(0, len(paths), 256):
        batch = []
        for p in paths[start:start + 256]:
            with Image.open(p) as im:
                batch.append(im.convert("RGB"))
        out.append(enc.encode_images(batch))
    return torch.cat(out)


def _normalised(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def real_benchmark(layout: Layout, name: str, log: Log = print) -> dict:
    p = layout.params
    if name not in REAL_BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; one of {REAL_BENCHMARKS}")
    root = getattr(p.sources, name, None) if p.sources else None
    out_path = layout.metrics / "real" / f"{name}.json"
    if not root:
        write_json(out_path, {"benchmark": name, "configured": False})
        log(f"{name}: sources.{name} is not configured; skipped")
        return {"configured": 0}
    root = Path(root) if Path(root).is_absolute() else layout.root / root
    t0 = time.perf_counter()
    use_cores(p.training.threads)
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    pipe = CompoDiffPipeline(load_checkpoint(layout.stage_dir("stage2") / "denoiser.safetensors"), enc)
    b = p.benchmark

    def compose(refs: torch.Tensor, texts: list[str]) -> np.ndarray:
        return _normalised(pipe.compose(refs, texts, w_image=b.w_image, w_text=b.w_text, steps=b.steps,
                                        mix_reference=b.mix_reference))

    result: dict = {"benchmark": name, "configured": True, "path": str(root), "w_image": b.w_image,
                    "w_text": b.w_text, "steps": b.steps}
    if name == "fashioniq":
        cats = sorted(f.name.split(".")[1] for f in (root / "captions").glob("cap.*.val.json"))
        per = {}
        for cat in cats:
            d = fashioniq.load(root, cat, "val", join="searle")
            gallery = _normalised(_images([d.image(a) for a in d.gallery], enc))
            refs = _images([d.image(a) for a in d.candidates], enc)
            # SEARLE's join: both caption orders, each composed, averaged, normalised again
            q = sum(compose(refs, [t[i] for t in d.texts]) for i in range(len(d.texts[0])))
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            per[cat] = fashioniq.recall(q @ gallery.T, d.target_indices())
        result.update({"join": "searle", "per_category": per, **fashioniq.average(per)})
    elif name == "cirr":
        d = cirr.load(root, "val")
        gallery = _normalised(_images([d.image(n) for n in d.gallery], enc))
        ref = _images([d.image(n) for n in d.references], enc)
        result.update(cirr.metrics(compose(ref, d.captions) @ gallery.T, d))
        if (root / "captions" / "cap.rc2.test1.json").is_file():
            t = cirr.load(root, "test1")
            tg = _normalised(_images([t.image(n) for n in t.gallery], enc))
            sims = compose(_images([t.image(n) for n in t.references], enc), t.captions) @ tg.T
            result["submission"] = [str(x) for x in cirr.submission(sims, t, layout.metrics / "real", "cirr_test1")]
    elif name == "circo":
        d = circo.load(root, "val")
        gallery = _normalised(_images([d.image(i) for i in d.gallery], enc))
        q = compose(_images([d.image(i) for i in d.references], enc), d.captions)
        result.update(circo.metrics(circo.top_unique(q @ gallery.T, d.gallery), d.ground_truths, d.targets,
                                    d.aspects))
        if (root / "annotations" / "test.json").is_file():
            t = circo.load(root, "test", check_images=False)
            qt = compose(_images([t.image(i) for i in t.references], enc), t.captions)
            top = circo.top_unique(qt @ gallery.T, t.gallery)
            result["submission"] = str(circo.submission(top, layout.metrics / "real" / "circo_test.json"))
    else:
        per = {}
        for f in sorted(root.glob("*.json")):
            if f.stem not in genecis.TASKS:
                continue
            task = genecis.load(f, root / "images")
            sims = []
            for tpl in task.templates:
                ref = enc.encode_images([task.image(tpl.reference)])
                cands = _normalised(enc.encode_images([task.image(x) for x in [tpl.target, *tpl.gallery]]))
                sims.append((compose(ref, [tpl.condition]) @ cands.T)[0])
            per[f.stem] = genecis.recall(sims)
        result.update({"per_task": per, "mean_R@1": genecis.mean_r1(per) if per else None})
    result["seconds"] = time.perf_counter() - t0
    write_json(out_path, result)
    log(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items() if isinstance(v, float) and "@" in k))
    return {k: v for k, v in result.items() if isinstance(v, (int, float))}
