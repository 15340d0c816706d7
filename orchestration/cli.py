"""The ``compodiff`` command.

  compodiff lifecycle          run every step through Dagster (history kept in .dagster_home)
  compodiff run STEP [--shard] one step, as the DVC stages call it
  compodiff search --text T    composed search over the indexed gallery (--sheet writes a contact sheet)
  compodiff plan [--profile N] dry run of a profile: models, datasets, steps, expected sizes
  compodiff triplet-keys TAR   the members of a triplet tar shard's first samples (to write a key map)
  compodiff profile NAME       switch profile: resolve profiles/NAME.yaml (an overlay) into params.yaml
  compodiff docs               regenerate docs/results.md from metrics/ and benchmarks/results/
  compodiff dvc-yaml           regenerate dvc.yaml from the step registry
  compodiff serve              composed search as an HTTP API and a web page (127.0.0.1:8000)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from compodiff.config_schema import ConfigError, flatten
from compodiff.errors import InputError
from orchestration.params import load_params


def _root() -> Path:
    """The project the command is run in (the nearest folder up with params.yaml and dvc.yaml), else
    $COMPODIFF_ROOT, else the working folder."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    return Path(os.environ.get("COMPODIFF_ROOT") or here).resolve()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def cmd_profile(args) -> int:
    root = _root()
    src = root / "profiles" / f"{args.name}.yaml"
    if not src.is_file():
        names = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        print(f"no profile {args.name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    from compodiff.atomic import atomic_path
    from compodiff.profiles import render

    load_params(src)  # refuse to switch to a profile that does not load
    with atomic_path(root / "params.yaml") as tmp:
        tmp.write_text(render(src))  # the overlay chain resolved: complete, literal values for DVC
    print(f"params.yaml <- profiles/{args.name}.yaml")
    return 0


def cmd_run(args) -> int:
    """One step, without Dagster: what `dvc repro` runs. Still tracked in MLflow."""
    import contextlib

    from orchestration import registry
    from orchestration.dagster_report import report_to_dagster
    from orchestration.layout import Layout
    from orchestration.step_lock import step_lock
    from orchestration.tracking import MLflowTracking

    root = _root()
    params = load_params(root / "params.yaml" if not os.environ.get("COMPODIFF_PARAMS") else None)
    layout = Layout(root, params)
    step = registry.step(args.step)
    if step.sharded and not args.shard:
        raise ConfigError(f"{args.step} needs --shard")
    tracking = MLflowTracking(tracking_uri=params.tracking.tracking_uri, experiment=params.tracking.experiment,
                              root=str(root))
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 records the run
    tracked = tracking.step_run(args.step, params, partition=args.shard or "", extra_tags={"orchestrator": "dvc"},
                                system_metrics=step.training) if rank0 else contextlib.nullcontext()
    with step_lock(layout, args.step, [args.shard] if args.shard else None), tracked as run:
        fn = registry.function(step)
        if step.training:
            result = fn(layout, on_metrics=(lambda s, m: run.log_metrics(m, step=s)) if run else None)
        else:
            result = fn(layout, args.shard) if step.sharded else fn(layout)
        if run:
            run.log_metrics(result)
    if rank0:
        report_to_dagster(root, args.step, args.shard, result, run.url if run else None,
                          registry.version(args.step, params), registry.upstream(args.step))
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, default=str))
    return 0


def cmd_docs(args) -> int:
    from orchestration.results_doc import write_results

    print(f"wrote {write_results(_root())}")
    return 0


def cmd_serve(args) -> int:
    """The HTTP API and web page over the trained model and the index (orchestration.serving)."""
    import torch
    import uvicorn

    from orchestration.serving.app import ServiceSettings, create_app
    from orchestration.serving.engine import load_engine

    root = _root()
    b = load_params(root / "params.yaml").benchmark
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - 1))
    engine = load_engine(root, args.model, args.precision)
    settings = ServiceSettings(b.w_image, b.w_text, b.steps, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                               max_upload_bytes=args.max_upload_bytes, max_upload_pixels=args.max_upload_pixels)
    print(f"serving {args.model or 'data/stage2'} in {args.precision} on {torch.get_num_threads()} thread(s) over "
          f"{engine.size} gallery images on http://{args.host}:{args.port}/ (micro-batches of up to "
          f"{args.max_batch}, {args.max_wait_ms:g} ms)", flush=True)
    uvicorn.run(create_app(engine, settings, batching=args.max_batch > 1), host=args.host, port=args.port,
                log_level="warning")
    return 0


def cmd_dvc_yaml(args) -> int:
    from orchestration.dvc_yaml import write

    print(f"wrote {write(_root())} from orchestration/registry.py")
    return 0


def cmd_plan(args) -> int:
    from orchestration.plan import plan

    return plan(_root(), args.profile)


def cmd_search(args) -> int:
    """Composed search over the indexed gallery with the stage-2 denoiser; optional contact sheet."""
    import numpy as np
    from PIL import Image

    from compodiff.checkpoint import load_checkpoint
    from compodiff.encoders import load_encoder
    from compodiff.pipeline import CompoDiffPipeline
    from compodiff.retrieval import GalleryIndex
    from compodiff.search import composed_search, contact_sheet
    from datagen.shards import decode_png, read_shard
    from orchestration.layout import Layout

    root = _root()
    params = load_params(root / "params.yaml")
    layout = Layout(root, params)
    gallery = read_shard(layout.world_benchmark / "gallery.parquet", ["image_png"]).column("image_png").to_pylist()
    if args.image:
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"reference image not found: {args.image}")
        ref = np.asarray(Image.open(args.image).convert("RGB"))
    else:
        if not 0 <= args.gallery_item < len(gallery):
            raise ConfigError(f"--gallery-item {args.gallery_item} is out of range: the gallery has "
                              f"{len(gallery)} images (0 .. {len(gallery) - 1})")
        ref = decode_png(gallery[args.gallery_item])
    mask = None
    if args.mask:
        if not Path(args.mask).is_file():
            raise FileNotFoundError(f"mask image not found: {args.mask}")
        mask = np.asarray(Image.open(args.mask).convert("L").resize(ref.shape[1::-1])) > 127
    enc = load_encoder(params.encoder.model, params.encoder.pretrained, root=root)
    pipe = CompoDiffPipeline(load_checkpoint(layout.stage_dir(args.stage) / "denoiser.safetensors"), enc)
    index = GalleryIndex.load(layout.faiss_index)
    b = params.benchmark  # the sampling settings the benchmark was scored with, unless given
    scores, ids = composed_search(pipe, index, [ref], [args.text], [args.negative] if args.negative else None,
                                  [mask], k=args.k, w_image=b.w_image if args.w_image is None else args.w_image,
                                  w_text=b.w_text if args.w_text is None else args.w_text,
                                  steps=args.steps or b.steps, eta=b.eta, mix_reference=b.mix_reference)
    for rank, (s, g) in enumerate(zip(scores[0], ids[0]), 1):
        print(f"{rank:3d}  gallery {int(g):6d}  score {float(s):.4f}")
    if args.sheet:
        sheet = contact_sheet(ref, args.text + (f"  (not: {args.negative})" if args.negative else ""),
                              [decode_png(gallery[int(g)]) for g in ids[0]], [float(s) for s in scores[0]])
        sheet.save(args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


def cmd_lifecycle(args) -> int:
    """Materialize every asset in one Dagster run on the multiprocess executor, in the persistent
    instance, so the Dagster UI shows the run this command made (its steps on a Gantt chart)."""
    root = _root()
    os.environ.setdefault("COMPODIFF_ROOT", str(root))
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(root / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").is_file() or not (home / "dagster.yaml").read_text().strip():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    import dagster as dg

    from orchestration import definitions as d
    from orchestration.lifecycle import StepFailed, materialize

    select = set(args.select.split(",")) if args.select else None
    known = {a.key.to_user_string() for a in d.project.assets}
    if select and select - known:
        raise ConfigError(f"--select: no asset(s) {sorted(select - known)}; assets: {', '.join(sorted(known))}")
    t_all = time.perf_counter()
    try:
        outcomes = materialize(d.project, dg.DagsterInstance.get(), select, log=lambda m: print(m, flush=True),
                              log_level="INFO" if args.verbose else "WARNING", serial=args.serial)
    except StepFailed as err:
        print(f"!! {err}", file=sys.stderr)
        return 1
    print(f"Dagster run(s): {', '.join(o.run_id for o in outcomes)}")
    print(f"\nLifecycle finished in {time.perf_counter() - t_all:.0f}s.")
    from orchestration.dvc_record import DvcRecordError, record_in_dvc

    try:
        print(f"DVC: {record_in_dvc(root, args.select.split(',') if args.select else None)}")
    except DvcRecordError as err:
        print(f"!! {err}", file=sys.stderr)
        return 1
    _print_headline(root)
    return 0


def _print_headline(root: Path) -> None:
    params = load_params(root / "params.yaml")
    metrics_dir = root / params.metrics_dir
    print("\nHeadline metrics:")
    for f in sorted(metrics_dir.glob("*.json")):
        flat = flatten(json.loads(f.read_text()))
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in flat.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and "per_type" not in k
                 and not k.startswith(("exports.", "training.")) and k.count("@") <= 1
                 and any(w in k for w in ("mAP@10", "R@10", "t2i_R@1", "fraction", "triplets", "per_method", "loss"))}
        print(f"  {f.stem}: {json.dumps(shown)}")
    print("\nExplore what this run produced:")
    print(f"  DAGSTER_HOME={root}/.dagster_home .venv/bin/dagster dev -h 127.0.0.1 -p 3000   # asset lineage")
    print(f"  .venv/bin/mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db -h 127.0.0.1 -p 5000   # runs")


def cmd_triplet_keys(args) -> int:
    from datagen.image_triplets.synthtriplets import list_keys

    for key, members in list_keys(args.shard, args.samples):
        print(key)
        for ext, what in members.items():
            print(f"  {ext:24s} {what}")
    print("map them in triplet_sources.synthtriplets.key_map: reference, target, instruction "
          "[, source_caption, target_caption] -> EXT or EXT:json_field")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compodiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lifecycle", help="run the whole lifecycle through Dagster")
    p.add_argument("--select", help="comma-separated asset names (default: all)")
    p.add_argument("--verbose", action="store_true", help="show every step's log lines")
    p.add_argument("--serial", action="store_true",
                   help="one step at a time (default: the caption LM and the benchmark beside the main chain)")
    p.set_defaults(func=cmd_lifecycle)
    p = sub.add_parser("run", help="run one step (what DVC stages call)")
    p.add_argument("step")
    p.add_argument("--shard")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("search", help="composed search over the indexed world-benchmark gallery")
    p.add_argument("--text", required=True, help="the instruction")
    p.add_argument("--image", help="reference image file (default: a gallery item, see --gallery-item)")
    p.add_argument("--gallery-item", type=int, default=0, help="use this gallery image as the reference")
    p.add_argument("--negative", help="negative text (replaces the null text in guidance)")
    p.add_argument("--mask", help="mask image (white = the region the text is about)")
    p.add_argument("--k", type=_positive, default=8, help="how many results")
    p.add_argument("--stage", default="stage2", choices=["stage1", "stage2"])
    p.add_argument("--w-image", type=float, help="image guidance (default: benchmark.w_image of params)")
    p.add_argument("--w-text", type=float, help="text guidance (default: benchmark.w_text of params)")
    p.add_argument("--steps", type=_positive, help="DDIM steps (default: benchmark.steps of params)")
    p.add_argument("--sheet", help="write a contact sheet PNG of the results here")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("plan", help="dry run: resolve a profile, check its models and data, print the steps")
    p.add_argument("--profile", help="profiles/NAME.yaml (default: params.yaml)")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("triplet-keys", help="list the members of a WebDataset shard's first samples")
    p.add_argument("shard", help="a .tar shard (SynthTriplets18M)")
    p.add_argument("--samples", type=_positive, default=3)
    p.set_defaults(func=cmd_triplet_keys)
    p = sub.add_parser("docs", help="regenerate docs/results.md from metrics/ and benchmarks/results/")
    p.set_defaults(func=cmd_docs)
    p = sub.add_parser("serve", help="composed search as an HTTP API and a web page")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless you open it)")
    p.add_argument("--port", type=_positive, default=8000)
    p.add_argument("--model", help="models:/compodiff-stage2@champion, or a denoiser checkpoint "
                                   "(default: the run's data/stage2)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",  # compodiff.precision
                   help="the denoiser's weights: fp32, bf16 (CPUs with bf16 units, GPUs) or int8 (CPU)")
    p.add_argument("--threads", type=_positive, help="torch threads of the denoiser passes (default: all cores but "
                   "one, which the event loop needs: on 2 cores two threads double a query's latency)")
    p.add_argument("--max-batch", type=_positive, default=32, help="queries per denoiser pass (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a query waits for others to join")
    p.add_argument("--max-upload-bytes", type=_positive, default=8 << 20)
    p.add_argument("--max-upload-pixels", type=_positive, default=4096 * 4096, help="refused before decoding")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("dvc-yaml", help="regenerate dvc.yaml from the step registry")
    p.set_defaults(func=cmd_dvc_yaml)
    p = sub.add_parser("profile", help="switch params.yaml to profiles/NAME.yaml")
    p.add_argument("name")
    p.set_defaults(func=cmd_profile)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (InputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)  # a user's error: one line naming what and where
        return 2


if __name__ == "__main__":
    sys.exit(main())
