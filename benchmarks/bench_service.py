"""Load on `compodiff serve`, on loopback: 1, 8 and 32 concurrent clients, micro-batching on and off.

For each setting it reports p50 and p99 latency, queries per second and every error; bounded in count
(``--queries`` per client count, at least one per client) and time (``--timeout`` per request). Run on
a project whose default run has built the model and the index:

  .venv/bin/python benchmarks/bench_service.py --root . --out benchmarks/results/service_cpu.json
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import report  # noqa: E402

QUERIES = ["make the circle red", "set the backdrop to lavender", "also show a cyan circle", "leave out the star",
           "scale the arrow to small", "have a hexagon instead of the star"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, max_batch: int, wait_ms: float, precision: str,
          threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [str(root / ".venv" / "bin" / "compodiff"), "serve", "--port", str(port), "--max-batch", str(max_batch),
           "--max-wait-ms", str(wait_ms), "--precision", precision] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            if httpx.get(f"{url}/ready", timeout=2).json().get("ready"):
                return proc, url
        except (httpx.HTTPError, ValueError):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {proc.stdout.read()[-2000:]}") from None
        time.sleep(0.5)
    raise SystemExit("the server did not get ready in 180 s")


def load(url: str, clients: int, n: int, gallery: int, timeout: float) -> dict:
    # each client keeps one connection, as a product's backend would: a new httpx.Client per request
    # costs about 33 ms of the client's own set-up, which the latency would otherwise count
    local = threading.local()

    def one(i: int):
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=timeout)
        body = {"gallery_id": (37 * i) % gallery, "instruction": QUERIES[i % len(QUERIES)], "k": 10}
        t0 = time.perf_counter()
        try:
            r = local.client.post(f"{url}/search", json=body)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - t0, ok

    stats0 = httpx.get(f"{url}/stats").json()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    stats1 = httpx.get(f"{url}/stats").json()
    lat = np.array([r[0] for r in results]) * 1000
    passes = stats1["passes"] - stats0["passes"]
    return {"clients": clients, "queries": n, "errors": int(sum(not r[1] for r in results)),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "queries_per_second": n / wall, "denoiser_passes": passes, "mean_batch": n / max(passes, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--queries", type=int, default=64, help="queries per setting (at least one per client)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--threads", type=int, help="compodiff serve --threads (default: its own)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"], help="compodiff serve --precision")
    ap.add_argument("--run", default="", help="what else ran on the machine meanwhile, recorded with the figures")
    ap.add_argument("--out")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    out = {"run": f"bench_service on {os.cpu_count()} cores" + (f"; {args.run}" if args.run else ""),
           "max_wait_ms": args.max_wait_ms, "precision": args.precision, "threads": args.threads or "default",
           "settings": []}
    for batching, max_batch in (("on", args.max_batch), ("off", 1)):
        proc, url = start(root, max_batch, args.max_wait_ms, args.precision, args.threads)
        try:
            gallery = httpx.get(f"{url}/ready").json()["gallery"]
            load(url, 1, 4, gallery, args.timeout)  # warm-up: the first passes pay for allocation
            for c in args.clients:
                row = {"batching": batching, **load(url, c, max(args.queries, c), gallery, args.timeout)}
                out["settings"].append(row)
                print(f"batching {batching:3s} clients {c:3d}: p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
                      f"  {row['queries_per_second']:6.1f} q/s  errors {row['errors']}  mean batch "
                      f"{row['mean_batch']:.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    by = {(r["batching"], r["clients"]): r for r in out["settings"]}
    top = max(args.clients)
    if ("on", top) in by and ("off", top) in by:
        out[f"batching_speedup_at_{top}_clients"] = by[("on", top)]["queries_per_second"] / \
            by[("off", top)]["queries_per_second"]
    report(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
