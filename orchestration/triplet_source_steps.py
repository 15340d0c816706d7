"""image_triplets: one public triplet dataset (a partition per source kind) converted into triplet shards
under ``data/image_triplets/<source>/``. A source that params do not configure is recorded as such, so
the partition set is fixed and DVC's stages match Dagster's partitions."""

from __future__ import annotations

from compodiff.atomic import atomic_dir, write_json
from compodiff.config_schema import ConfigError
from datagen.image_triplets import SOURCES, read_source, resolved
from datagen.image_triplets.convert import convert
from orchestration.layout import Layout
from orchestration.steps import Log


def image_triplets(layout: Layout, source: str, log: Log = print) -> dict:
    if source not in SOURCES:
        raise ConfigError(f"image_triplets: unknown source {source!r}; one of {SOURCES}")
    p = layout.params
    cfg = getattr(p.triplet_sources, source)
    out = layout.image_triplets(source)
    if cfg is None:
        if not (out / "manifest.json").is_file() or list(out.glob("part-*.parquet")):
            with atomic_dir(out) as tmp:  # no parts of an earlier configuration stay to be trained on
                write_json(tmp / "manifest.json", {"source": source, "configured": False, "read": 0, "kept": 0})
        log(f"image_triplets[{source}]: not configured (triplet_sources.{source})")
        return {"source": source, "configured": False, "read": 0, "kept": 0}
    t = p.triplet_sources
    cfg = resolved(cfg, layout.root)
    identity = {"path": cfg.path, "split": cfg.split, "corpus": cfg.corpus, "key_map": cfg.key_map,
                "join": cfg.join, "seed": p.seed}
    result = convert(source, read_source(source, cfg, p.seed), out, p.world.image_size, t.max_negatives,
                     t.records_per_part, cfg.min_scores, cfg.max_triplets, identity, log)
    result.update({f"skipped.{reason}": n for reason, n in result["skipped"].items()})  # MLflow / Dagster numbers
    log(f"image_triplets[{source}]: kept {result['kept']} of {result['read']} records, skipped {result['skipped']} "
        f"({result['triplets_per_second']:.0f}/s)")
    if not result["kept"]:
        raise ValueError(f"image_triplets[{source}]: no usable triplet in {cfg.path} (skipped {result['skipped']}; "
                         f"e.g. {result['examples']})")
    return result
