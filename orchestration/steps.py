"""The world_pairs step, and what every step module shares: the shard check and the fan-out of shards
over processes. Steps are plain functions that the Dagster assets and the DVC stages (through the CLI)
both call, so the two orchestrators run one logic."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from compodiff.config_schema import ConfigError
from datagen.world.pairs import write_pairs_shard
from orchestration.cores import cores
from orchestration.layout import Layout
from orchestration.registry import REAL_BENCHMARKS, TRIPLET_SOURCES

Log = Callable[[str], None]
Metrics = Callable[[int, dict], None]  # (training step, its numbers): the curves a tracker plots


def check_shard(layout: Layout, shard: str) -> None:
    if shard in REAL_BENCHMARKS or shard in TRIPLET_SOURCES:
        return
    shards = layout.params.world.shards
    if shard not in shards:
        raise ConfigError(f"shard {shard!r} is not in world.shards {list(shards)} of profile "
                          f"{layout.params.profile!r} (params file of another profile?)")


def world_pairs(layout: Layout, shard: str) -> dict:
    check_shard(layout, shard)
    w = layout.params.world
    t0 = time.perf_counter()
    out = layout.world_pairs(shard)
    if layout.params.sources is not None:  # a paper profile: real image-text pairs, never the world
        from datagen.image_text_shards import ingest_shard

        manifest = ingest_shard(layout.params.sources.image_text_pairs, shard, out, w.image_size)
    else:
        manifest = write_pairs_shard(w, layout.params.seed, shard, w.pairs_per_shard, out)
    return {**manifest, "path": str(out), "bytes": out.stat().st_size, "seconds": time.perf_counter() - t0}


def in_processes(work: Callable[[Layout, str], dict], layout: Layout, shards: list[str], workers: int,
                 report: Callable[[dict, int], None], local: Callable[[Layout, str], dict] | None = None) -> list[dict]:
    """``work(layout, shard)`` for every shard: in this process (through ``local`` if given, which may log
    to Dagster) for one worker, else in spawned processes (spawn, not fork: the parent may hold torch's
    thread pools). ``report(manifest, done)`` sees each shard as it lands; manifests come back by shard."""
    done: list[dict] = []

    def land(m: dict) -> None:
        done.append(m)
        report(m, len(done))

    if workers <= 1 or len(shards) == 1:
        for shard in shards:
            land((local or work)(layout, shard))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(work, layout, s) for s in shards]):
                land(fut.result())
    return sorted(done, key=lambda m: m["shard"])


def world_pairs_shards(layout: Layout, shards: list[str], workers: int = 0, log: Log = print) -> list[dict]:
    """Several shards, in parallel processes (one per core by default); each shard is atomic on its own."""
    for shard in shards:
        check_shard(layout, shard)
    return in_processes(world_pairs, layout, shards, workers or min(len(shards), cores()),
                        lambda m, n: log(f"world_pairs: shard {m['shard']} {'kept' if m['skipped'] else 'written'} "
                                         f"({m['count']} pairs, {m['seconds']:.1f}s) [{n}/{len(shards)}]"))
