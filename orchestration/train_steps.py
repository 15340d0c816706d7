"""Training steps: stage1, stage2 (the denoiser, paper 3.2) and combiner (the baseline).
Plain functions called by the Dagster assets and the CLI; ``stage1`` / ``stage2`` also run under
``torchrun --nproc_per_node N .venv/bin/compodiff run stage2`` (DDP, rank 0 writes)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict

import numpy as np
import torch

from compodiff.atomic import atomic_dir, write_json
from compodiff.checkpoint import load_checkpoint, save_checkpoint
from compodiff.combiner import Combiner, CombinerSpec, save_combiner, train_combiner
from compodiff.config_schema import ConfigError
from compodiff.denoiser import CompoDiffDenoiser, preset
from compodiff.encoders import load_encoder
from compodiff.feature_store import load_features
from compodiff.objectives import PairFeatures, TripletFeatures, kind_balance_weights, source_mix_weights
from compodiff.training import TextTokens, TrainSpec, distributed, train_denoiser
from orchestration.code_deps import code_version
from orchestration.cores import use_cores
from orchestration.layout import Layout
from orchestration.registry import TRIPLET_SOURCES
from orchestration.steps import Log, Metrics


def load_pair_features(layout: Layout, dim: int) -> PairFeatures:
    p = layout.params
    image, masked, mask, captions = [], [], [], []
    for s in p.world.shards:
        arrays, texts, _ = load_features(layout.pair_features(s), dim, p.encoder.model, ("image", "masked"))
        image.append(arrays["image"])
        masked.append(arrays["masked"])
        side = p.world.image_size
        mask.append(np.unpackbits(arrays["mask"], axis=-1, count=side)[:, :, :side])
        captions += texts["caption"]
    return PairFeatures(torch.from_numpy(np.concatenate(image)), torch.from_numpy(np.concatenate(masked)),
                        torch.from_numpy(np.concatenate(mask)), captions)


def load_triplet_features(layout: Layout, dim: int) -> TripletFeatures:
    arrays, texts, _ = load_features(layout.triplet_features, dim, layout.params.encoder.model,
                                     ("reference", "target"))
    balance = layout.params.training.stage2.kind_balance
    if balance and "edit_kind" not in texts:
        raise ConfigError(f"training.stage2.kind_balance {balance} needs the triplets' edit kinds, which "
                          f"{layout.triplet_features} lacks (written by an older triplet_features): rerun it")
    weight = kind_balance_weights(texts["edit_kind"], balance) if balance else None
    if "source" in texts:  # the sources mixed at their weights (triplet_sources)
        ts = layout.params.triplet_sources
        mix = {"generated": ts.generated_weight,
               **{n: getattr(ts, n).weight for n in TRIPLET_SOURCES if getattr(ts, n) is not None}}
        try:
            weight = source_mix_weights(texts["source"], mix, weight)
        except ValueError as err:
            raise ConfigError(f"{layout.triplet_features}: {err} in triplet_sources; rerun triplet_features") from None
    return TripletFeatures(torch.from_numpy(arrays["reference"]), torch.from_numpy(arrays["target"]),
                           texts["instruction"], texts["reversed_instruction"], weight, texts.get("edit_kind"),
                           texts.get("source"))


def _spec(layout: Layout, stage: str) -> TrainSpec:
    t = layout.params.training
    s = getattr(t, stage)
    return TrainSpec(stage, s.steps, s.batch_size, s.lr, s.warmup_steps, tuple(s.mix), t.weight_decay, t.ema_decay,
                     t.grad_clip, t.condition_dropout, t.bf16, t.checkpoint_every, layout.params.seed,
                     t.bidirectional.alpha if (stage == "stage2" and t.bidirectional.enabled) else 0.0)


def _stage2_init(layout: Layout):
    init = layout.params.training.stage2.init
    return layout.root / init if init else layout.stage_dir("stage1") / "denoiser.safetensors"


def _data_digest(layout: Layout, stage: str) -> str:
    """The training data's identity: new features (another filter, more pairs) mean a new run."""
    h = hashlib.sha256()
    files = [layout.pair_features(s) for s in layout.params.world.shards]
    if stage != "stage1":
        files += [layout.triplet_features, _stage2_init(layout)]
    for f in files:
        if f.is_file():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def train_stage(layout: Layout, stage: str, log: Log = print, on_metrics: Metrics | None = None) -> dict:
    p = layout.params
    use_cores(p.training.threads)
    rank, world = distributed()
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    cfg = preset(p.training.denoiser, embed_dim=enc.embed_dim, text_dim=enc.text_width)
    if stage == "stage1":
        torch.manual_seed(p.seed)
        model = CompoDiffDenoiser(cfg)
    else:  # stage 2 fine-tunes stage 1's EMA weights, or the weights training.stage2.init names
        init = _stage2_init(layout)
        if not init.is_file():
            what = "training.stage2.init" if p.training.stage2.init else "stage1"
            raise FileNotFoundError(f"stage2 starts from {what}'s weights; missing: {init}")
        model = load_checkpoint(init)
        if model.config != cfg:
            raise ConfigError(f"stage1 weights {init} are a {model.config} denoiser; this profile builds {cfg}")
    spec = _spec(layout, stage)
    pairs = load_pair_features(layout, enc.embed_dim) if spec.mix[0] + spec.mix[1] > 0 else None
    triplets = load_triplet_features(layout, enc.embed_dim) if spec.mix[2] > 0 else None
    tokens = TextTokens(lambda texts: enc.text_tokens(texts)[0], p.training.text_cache)
    # Outside the output, so a killed run resumes; keyed by every setting, the step count included
    # (the learning-rate schedule spans the whole run) and the code, so other settings or code start afresh.
    key = json.dumps({**asdict(spec), "denoiser": cfg.to_dict(), "encoder": p.encoder.model,
                      "data": _data_digest(layout, stage), "code": code_version("orchestration.train_steps"),
                      **({"kind_balance": getattr(p.training, stage).kind_balance} if triplets else {}),
                      **({"triplet_mix": triplets.shares(triplets.source)} if triplets and triplets.source else {})},
                     sort_keys=True)
    state_dir = layout.data / "train_state" / f"{stage}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def progress(step: int, m: dict) -> None:
        log(f"{stage}: step {step + 1}/{spec.steps} loss {m['loss']:.4f} lr {m['lr']:.2e}")
        if on_metrics:
            on_metrics(step, m)

    summary = train_denoiser(model, spec, pairs, triplets, tokens, state_dir, progress)
    ema = summary.pop("ema")
    summary.update({"pairs": len(pairs) if pairs else 0, "triplets": len(triplets) if triplets else 0,
                    "denoiser": p.training.denoiser, "parameters": sum(x.numel() for x in model.parameters())})
    if triplets is not None and triplets.kind is not None:  # the coverage's last stage: what training draws
        summary["triplet_kind_share"] = triplets.kind_shares()
    if triplets is not None and triplets.source is not None:
        summary["triplet_source_share"] = triplets.shares(triplets.source)
    if rank == 0:
        # the weights, the state and the manifest appear together or not at all: a killed step leaves the
        # previous output whole
        with atomic_dir(layout.stage_dir(stage)) as out:
            save_checkpoint(ema.model, out / "denoiser.safetensors", {"stage": stage, "encoder": p.encoder.model})
            shutil.copyfile(state_dir / "last.pt", out / "training_state.pt")
            write_json(out / "manifest.json", summary)
        if stage == "stage2":
            first = layout.stage_dir("stage1") / "manifest.json"

            write_json(layout.training_metrics, {"stage1": json.loads(first.read_text()) if first.is_file() else None,
                                                 "stage2": summary})
        log(f"{stage}: final loss {summary['final_loss']:.4f} in {summary['seconds']:.0f}s "
            f"({summary['samples_per_second']:.0f} samples/s)")
    return summary


def stage1(layout: Layout, log: Log = print, on_metrics: Metrics | None = None) -> dict:
    return train_stage(layout, "stage1", log, on_metrics)


def stage2(layout: Layout, log: Log = print, on_metrics: Metrics | None = None) -> dict:
    return train_stage(layout, "stage2", log, on_metrics)


def combiner(layout: Layout, log: Log = print, on_metrics: Metrics | None = None) -> dict:
    """The Combiner baseline on the same filtered triplets, trained twice: without and with the
    reversed loss of BLIP4CIR+Bi (alpha and prefix of training.bidirectional), for the results table."""
    p = layout.params
    c = p.combiner
    use_cores(p.training.threads)
    enc = load_encoder(p.encoder.model, p.encoder.pretrained, root=layout.root)
    trip = load_triplet_features(layout, enc.embed_dim)
    text = enc.encode_text(trip.instruction)
    reverse = enc.encode_text(trip.reversed_instruction)
    out = layout.stage_dir("combiner")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"triplets": len(trip), "alpha": p.training.bidirectional.alpha}
    for name, rev in (("combiner", None), ("combiner_bidirectional", reverse)):
        torch.manual_seed(p.seed)
        model = Combiner(CombinerSpec(enc.embed_dim, c.projection_dim, c.hidden_dim, c.dropout, c.logit_scale))

        def progress(step: int, m: dict, name=name) -> None:
            log(f"{name}: step {step + 1}/{c.steps} loss {m['loss']:.4f}")
            if on_metrics:
                on_metrics(step, {f"{name}.loss": m["loss"]})

        s = train_combiner(model, trip.reference, trip.target, text, rev, p.training.bidirectional.alpha,
                           c.steps, c.batch_size, c.lr, p.seed, progress, weight=trip.weight)
        save_combiner(model, out / f"{name}.safetensors")
        summary.update({f"{name}.{k}": v for k, v in s.items()})
    summary["final_loss"] = summary["combiner.final_loss"]
    summary["steps"] = c.steps
    write_json(out / "manifest.json", summary)
    write_json(layout.combiner_metrics, summary)
    log(f"combiner: final loss {summary['combiner.final_loss']:.4f} / bi-directional "
        f"{summary['combiner_bidirectional.final_loss']:.4f}")
    return summary
