"""Reading and converting public triplet datasets: triplets per second on one core, per format.

Fixtures are written in each published layout (tests/triplet_fixtures.py) with random-pixel JPEGs, the
worst case for the PNG re-encoding; every format at 64x64, IP2P's folders also at 512x512. The
converter runs in this one process (one core: PIL decodes and encodes on the calling thread), so
triplets/s is per core. The reference, measured in the same run: the same conversion re-encoding every
image as PNG, where the converter keeps a JPEG that already has the shard's size (decoded once to
check it). The target is 500/s per core at 64x64.

  .venv/bin/python benchmarks/bench_image_triplets.py --out benchmarks/results/image_triplets_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import report  # noqa: E402

from compodiff.config_schema import from_dict  # noqa: E402
from datagen.config import TripletSourceConfig  # noqa: E402
from datagen.image_text_shards import square_image  # noqa: E402
from datagen.image_triplets import convert as convert_module  # noqa: E402
from datagen.image_triplets import read_source  # noqa: E402
from datagen.shards import encode_png  # noqa: E402
from tests import triplet_fixtures as fx  # noqa: E402

TARGET_PER_CORE = 500


def _always_png(data: bytes, size: int) -> bytes:
    return encode_png(square_image(data, size))


def measure(name: str, spec: dict, size: int, out: Path, repeats: int) -> dict:
    cfg = from_dict(TripletSourceConfig, spec)
    best, best_cpu, result = float("inf"), 0.0, None
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = convert_module.convert(name, read_source(name, cfg, 0), out / f"{name}-{size}-{r}", size, 3, 10**9,
                                        log=lambda m: None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return {"triplets": result["kept"], "seconds": best, "cpu_seconds": best_cpu,
            "triplets_per_second": result["kept"] / best, "triplets_per_cpu_second": result["kept"] / best_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000, help="triplets per 64x64 fixture")
    ap.add_argument("--count-512", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="best of")
    ap.add_argument("--out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = args.count
        fixtures = {
            "ip2p": {"path": str(fx.ip2p_folder(tmp / "ip2p", prompts=n // 2, seeds=2))},
            "megapairs": {"path": str(fx.megapairs(tmp / "megapairs", rows=n))},
            "synthtriplets": {"path": str(fx.synthtriplets(tmp / "synth", shards=4, per_shard=n // 4)),
                              "key_map": fx.SYNTH_KEY_MAP},
            "ip2p_parquet": {"path": str(fx.ip2p_parquet(tmp / "parquet", rows=n))},
        }
        large = {"path": str(fx.ip2p_folder(tmp / "ip2p512", prompts=args.count_512 // 2, seeds=2, size=512))}
        formats = {f"{name}@64": measure(name, spec, 64, tmp / "out", args.repeats) for name, spec in fixtures.items()}
        formats["ip2p@512"] = measure("ip2p", large, 512, tmp / "out", args.repeats)
        saved = convert_module.shard_image
        convert_module.shard_image = _always_png
        try:
            reference = {"ip2p@64": measure("ip2p", fixtures["ip2p"], 64, tmp / "ref", args.repeats),
                         "ip2p@512": measure("ip2p", large, 512, tmp / "ref", args.repeats)}
        finally:
            convert_module.shard_image = saved
    small = formats["ip2p@64"]["triplets_per_second"]
    report({"run": "bench_image_triplets", "machine": platform.processor() or platform.machine(),
            "cores_visible": os.cpu_count(), "target_triplets_per_second_per_core_64": TARGET_PER_CORE,
            "formats": formats, "reference_always_png": reference,
            "ip2p_64_over_target": small / TARGET_PER_CORE,
            "speedup_over_reference": {k: formats[k]["triplets_per_second"] / v["triplets_per_second"]
                                       for k, v in reference.items()}}, args.out)


if __name__ == "__main__":
    main()
