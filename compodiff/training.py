"""Stage-1 / stage-2 training of the denoiser: AdamW, warm-up + cosine schedule, gradient clipping,
EMA, optional bf16 autocast, periodic checkpoints with exact resume, and DDP under torchrun.

A checkpoint holds the model, the EMA, the optimizer, the scheduler, the RNG states and the step
(the data position: every batch is a pure function of (seed, step), see ``objectives``), so a run
killed and resumed ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from compodiff.atomic import atomic_path
from compodiff.denoiser import CompoDiffDenoiser, DenoiserConfig
from compodiff.diffusion import CosineSchedule
from compodiff.ema import EMA
from compodiff.objectives import PairFeatures, TripletFeatures, make_batch, shard_rows
from compodiff.seeding import keeps_global_rng


@dataclass(frozen=True)
class TrainSpec:
    """Everything one training run needs besides its data (flat, so it is also the MLflow params)."""

    stage: str
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    mix: tuple[float, float, float]
    weight_decay: float
    ema_decay: float
    grad_clip: float
    condition_dropout: float
    bf16: bool
    checkpoint_every: int
    seed: int
    bidirectional_alpha: float = 0.0


class TrainingDiverged(FloatingPointError):
    pass


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes (gloo on CPU, NCCL on GPUs)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays on GPUs and on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere the
    CPU emulates it, slower than fp32, so training stays in fp32 there."""
    if device.type != "cpu":
        return True
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


class TextTokens:
    """Per-token text states from the frozen text tower, with a bounded cache of distinct texts."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], capacity: int):
        self.encode, self.capacity, self.cache = encode, capacity, {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self.cache})
        fresh = dict(zip(todo, self.encode(todo))) if todo else {}
        if self.capacity:
            for t, v in fresh.items():
                if len(self.cache) >= self.capacity:
                    break
                self.cache[t] = v.to(torch.float16)  # half the memory; tokens are conditions, not targets
        return torch.stack([(self.cache[t] if t in self.cache else fresh[t]).float() for t in texts])


def save_training_state(path: Path, step: int, model, ema: EMA, opt, sched, spec: TrainSpec,
                        config: DenoiserConfig, loss: float = float("nan")) -> Path:
    state = {"step": step, "loss": loss, "model": model.state_dict(), "ema": ema.state_dict(),
             "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "spec": asdict(spec),
             "denoiser_config": config.to_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(path: Path, spec: TrainSpec, config: DenoiserConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same failure to the user
        raise ValueError(f"cannot resume from {path}: {err}") from None
    if state.get("denoiser_config") != config.to_dict():
        raise ValueError(f"cannot resume from {path}: it was trained with denoiser {state.get('denoiser_config')}, "
                         f"this run builds {config.to_dict()}")
    theirs = {k: v for k, v in state.get("spec", {}).items() if k != "steps"}
    ours = {k: v for k, v in asdict(spec).items() if k != "steps"}
    theirs["mix"] = tuple(theirs.get("mix", ()))
    if theirs != ours:
        diff = sorted(k for k in ours if theirs.get(k) != ours[k])
        raise ValueError(f"cannot resume from {path}: its training settings differ in {diff}")
    if state.get("step", 0) > spec.steps:
        raise ValueError(f"cannot resume from {path}: it is at step {state['step']}, beyond this run's {spec.steps}")
    return state


@keeps_global_rng  # it seeds torch's global RNG each step (dropout)
def train_denoiser(model: CompoDiffDenoiser, spec: TrainSpec, pairs: PairFeatures | None,
                   triplets: TripletFeatures | None, text_tokens: Callable[[list[str]], torch.Tensor],
                   checkpoint_dir: Path, log: Callable[[int, dict], None] | None = None,
                   stop_after: int | None = None) -> dict:
    """Train in place; returns the summary. ``checkpoint_dir/last.pt`` is resumed from when present.
    ``stop_after`` ends the process after that many steps of this call (a simulated kill, for tests)."""
    rank, world = distributed()
    cfg = model.config
    schedule = CosineSchedule(cfg.timesteps)
    device = next(model.parameters()).device
    schedule.to(device)
    ema = EMA(model, spec.ema_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(spec.warmup_steps, spec.steps))
    start, resumed_loss = 0, float("nan")
    last = checkpoint_dir / "last.pt"
    if last.is_file():
        state = load_training_state(last, spec, cfg)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        resumed_loss = float(state.get("loss", float("nan")))
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    bf16 = spec.bf16 and bf16_is_fast(device)
    model.train()
    # a finished run called again trains nothing and reports the loss it ended with
    t0, seen, loss_value, done = time.perf_counter(), 0, resumed_loss, 0
    for step in range(start, spec.steps):
        batch = make_batch(step, spec.seed, spec.batch_size, spec.mix, pairs, triplets, cfg.timesteps,
                           spec.condition_dropout, cfg.mask_size, spec.bidirectional_alpha)
        rows = shard_rows(batch.x0.shape[0], rank, world)
        torch.manual_seed(spec.seed * 1_000_003 + step * 101 + rank)  # model dropout, if any
        x0, weight = batch.x0[rows].to(device), batch.weight[rows].to(device)
        tokens = text_tokens(batch.texts[rows]).to(device)
        x_t = schedule.q_sample(x0, batch.t[rows].to(device), batch.noise[rows].to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = net(x_t, batch.t[rows].to(device), tokens, batch.image[rows].to(device),
                       batch.mask[rows].to(device))
        per_row = ((pred.float() - x0) ** 2).mean(dim=1)
        loss = world * (weight * per_row).sum() / spec.batch_size  # see objectives.shard_rows
        if world > 1:
            reported = loss.detach().clone()
            dist.all_reduce(reported)
            reported = reported.item() / world
        else:
            reported = loss.item()
        if not math.isfinite(reported):
            raise TrainingDiverged(f"{spec.stage}: loss is {reported} at step {step}; the last good checkpoint "
                                   f"is {last if last.is_file() else 'none (no checkpoint yet)'}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip, foreach=True)
        opt.step()
        sched.step()
        ema.update(model)
        loss_value = reported
        seen += spec.batch_size
        done += 1
        if log is not None and rank == 0 and (step % 25 == 0 or step == spec.steps - 1):
            log(step, {"loss": loss_value, "lr": sched.get_last_lr()[0], "grad_norm": float(grad_norm)})
        if rank == 0 and ((step + 1) % spec.checkpoint_every == 0 or step + 1 == spec.steps):
            save_training_state(last, step + 1, model, ema, opt, sched, spec, cfg, loss_value)
        if stop_after is not None and done >= stop_after:
            break
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - t0
    model.eval()
    return {"stage": spec.stage, "final_loss": loss_value, "steps": spec.steps, "resumed_from": start,
            "seconds": seconds, "samples_per_second": seen / max(seconds, 1e-9), "world_size": world, "bf16": bf16,
            "ema": ema}
