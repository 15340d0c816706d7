"""LLM-based caption triplets (paper 4.2): a causal LM fine-tuned with LoRA on seed edits.

The IP2P format: prompt "<caption>\\n##\\n", completion "<instruction>\\n%%\\n<edited caption>\\nEND".
The paper fine-tunes OPT-6.7B (``AutoModelForCausalLM.from_pretrained``) on IP2P's 452k triplets; the
world profile pre-trains a small OPT on world captions (with a byte-level BPE tokenizer trained by the
``tokenizers`` library), LoRA-fine-tunes it on edits written by the world's grammar, and saves base,
adapter and tokenizer with ``save_pretrained`` so they load back through the path that loads OPT-6.7B.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compodiff.seeding import keeps_global_rng

SEP_EDIT, SEP_OUT, STOP = "\n##\n", "\n%%\n", "\nEND"


def prompt_text(caption: str) -> str:
    return caption + SEP_EDIT


def completion_text(instruction: str, output: str) -> str:
    return instruction + SEP_OUT + output + STOP


def seed_completions(seeds: list[tuple[str, str, str]], instruction_dropout: float, seed: int) -> list[str]:
    """IP2P completions of (caption, instruction, edited caption) seeds, a share ``instruction_dropout``
    of them with the instruction left out. Those teach the unconditional branch ("the caption, some
    edit") that ``generate``'s ``guidance_scale`` contrasts with, as CompoDiff drops its text
    condition to train classifier-free guidance (paper 3.3)."""
    if not 0.0 <= instruction_dropout < 1.0:
        raise ValueError(f"instruction_dropout must be in [0, 1), got {instruction_dropout}")
    dropped = np.random.default_rng([seed, 41]).random(len(seeds)) < instruction_dropout
    return [completion_text("" if d else instr, out) for (_, instr, out), d in zip(seeds, dropped)]


# --- seed triplets ------------------------------------------------------------------
@dataclass
class SeedStats:
    lines: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)


def read_ip2p_jsonl(path: str | Path) -> tuple[list[dict], SeedStats]:
    """IP2P's ``gpt-generated-prompts.jsonl``: {input | caption, edit, output}; bad lines are counted."""
    stats, rows = SeedStats(), []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            stats.lines += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                stats.skipped["not JSON"] += 1
                continue
            source = obj.get("input", obj.get("caption")) if isinstance(obj, dict) else None
            if not all(isinstance(v, str) and v.strip() for v in (source, obj.get("edit"), obj.get("output"))):
                stats.skipped["missing input/caption, edit or output"] += 1
                continue
            rows.append({"caption": source.strip(), "instruction": obj["edit"].strip(),
                         "output": obj["output"].strip(), "line": n})
            stats.kept += 1
    return rows, stats


# --- the world's small OPT ------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int, out_dir: str | Path, kind: str = "bpe"):
    """A tokenizer trained on ``texts`` with the tokenizers library, saved as a transformers tokenizer.

    "bpe": byte-level BPE, OPT's own tokenizer family. "word": whole words, punctuation and newlines
    (for a closed vocabulary such as the world's: half the sequence length, no partial bytes)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        # words keep their leading space (as BPE does), so decoding is a plain concatenation
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[^\s,.]+|\n|[,.]| "), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: 'bpe' or 'word'")
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(out_dir))
    return fast


def _batches(rng: np.random.Generator, n: int, batch: int):
    """Random batches, every index once per epoch. Not grouped by length: sorted pools (a quarter of
    the tokens are padding otherwise) made the world LM's held-out pre-training loss 0.80 instead of
    0.66 after 600 steps, since a caption's length tells its number of objects."""
    order = rng.permutation(n)
    cursor = 0
    while True:
        if cursor + batch > n:
            order, cursor = rng.permutation(n), 0
        yield order[cursor:cursor + batch]
        cursor += batch


def _encode(tokenizer, prompts: list[str], completions: list[str] | None, max_len: int):
    """Token ids with the prompt masked out of the loss (labels -100) when completions are given."""
    ids, labels = [], []
    for i, p in enumerate(prompts):
        a = [tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"]
        b = [] if completions is None else tokenizer(completions[i], add_special_tokens=False)["input_ids"]
        b = b + [tokenizer.eos_token_id]
        seq = (a + b)[:max_len]
        lab = ([-100] * len(a) + b)[:max_len] if completions is not None else seq[:]
        ids.append(seq)
        labels.append(lab)
    width = max(len(s) for s in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
    lab = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
    return input_ids, attn, lab


@keeps_global_rng  # it seeds torch's global RNG (init, dropout, sampling)
def train_causal_lm(model, tokenizer, prompts: list[str], completions: list[str] | None, steps: int,
                    batch_size: int, lr: float, seed: int, max_len: int = 128,
                    log: Callable[[int, float], None] | None = None) -> float:
    """Plain AdamW loop with linear warm-up and cosine decay; returns the final loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    torch.manual_seed(seed)
    batches = _batches(np.random.default_rng(seed), len(prompts), min(batch_size, len(prompts)))
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        idx = next(batches)
        ids, attn, labels = _encode(tokenizer, [prompts[i] for i in idx],
                                    None if completions is None else [completions[i] for i in idx], max_len)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"language-model loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, loss_value)
    model.eval()
    return loss_value


def build_world_lm(tokenizer, hidden: int, layers: int, heads: int, ffn: int, max_positions: int):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, ffn_dim=ffn,
                    num_attention_heads=heads, max_position_embeddings=max_positions, word_embed_proj_dim=hidden,
                    pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, dropout=0.0, attention_dropout=0.0)
    return OPTForCausalLM(cfg)


def tokens_absent_from(tokenizer, texts: list[str]) -> list[int]:
    """Vocabulary ids (special tokens aside) that never occur in ``texts``.

    The world's OPT is pre-trained on captions only, so the IP2P format's tokens ("##", "%%", "END")
    and the instruction verbs keep their random initial embedding, which is also the LM head's row
    (tied): LoRA, which leaves the embedding frozen, then cannot make the model write them (26 of the
    96 tokens; 5% of prompts consistent at temperature 0.7). OPT-6.7B has seen every token it has."""
    seen = set()
    for text in texts:
        seen.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(set(range(len(tokenizer))) - seen - set(tokenizer.all_special_ids))


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str],
             new_tokens: list[int] | None = None):
    """LoRA on ``target_modules``; the embedding rows of ``new_tokens`` train as well (peft's
    trainable tokens: only those rows, saved with the adapter)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                            target_modules=list(target_modules), task_type="CAUSAL_LM",
                                            trainable_token_indices=list(new_tokens) if new_tokens else None))


def load_lm(base: str | Path, adapter: str | Path | None, tokenizer: str | Path | None = None,
            local_files_only: bool = True):
    """The same ``from_pretrained`` path for OPT-6.7B (hub id or local dir) and the world's OPT."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer or base), local_files_only=local_files_only)
    tok.padding_side = "left"  # generation continues the prompt at the right edge
    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=local_files_only)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), local_files_only=local_files_only)
    return model.eval(), tok


# --- sampling ---------------------------------------------------------------------------
class FrequencyPenalty:
    """OpenAI-style frequency penalty (IP2P used 0.1): logit -= penalty * count of the token so far."""

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty, self.prompt_length = penalty, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if self.penalty == 0 or generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.penalty * counts


class OutputTemperature:
    """Sampling temperature per part: ``instruction`` before the IP2P output separator, ``output`` after it.

    The instruction is where the diversity is (which edit, which object, which value); the edited
    caption is a function of caption and instruction, so sampling it only adds copy errors. One
    temperature for both is IP2P's sampler (``output`` = ``instruction``). Runs before top-p, as a
    temperature does."""

    def __init__(self, instruction: float, output: float, prompt_length: int, marker: list[int]):
        if instruction <= 0 or output <= 0:
            raise ValueError(f"temperatures must be > 0, got instruction {instruction}, output {output}")
        self.instruction, self.output = instruction, output
        self.prompt_length, self.marker = prompt_length, torch.tensor(marker)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        k = len(self.marker)
        if generated.shape[1] >= k:
            after = (generated.unfold(1, k, 1) == self.marker.to(generated.device)).all(-1).any(-1)
        else:
            after = torch.zeros(generated.shape[0], dtype=torch.bool, device=scores.device)
        t = torch.where(after, self.output, self.instruction).to(scores.dtype)
        return scores / t[:, None]


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    return ids, torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])


def _find(seq: list[int], marker: list[int]) -> int:
    """Index just past the first occurrence of ``marker`` in ``seq``; -1 if absent."""
    k = len(marker)
    for i in range(len(seq) - k + 1):
        if seq[i:i + k] == marker:
            return i + k
    return -1


class AfterMarker:
    """Stops a row once its generated part holds ``marker`` (transformers' ``stop_strings`` needs a
    tokenizer whose vocabulary it can map to byte strings, which the world's word-level one is not)."""

    def __init__(self, marker: list[int], prompt_length: int):
        self.marker, self.prompt_length = torch.tensor(marker), prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        generated, k = input_ids[:, self.prompt_length:], len(self.marker)
        if generated.shape[1] < k:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return (generated[:, -k:] == self.marker.to(input_ids.device)).all(-1)


@torch.no_grad()
@keeps_global_rng  # it seeds torch's global RNG (init, dropout, sampling)
def generate(model, tokenizer, captions: list[str], temperature: float, top_p: float, frequency_penalty: float,
             max_new_tokens: int, batch_size: int, seed: int, output_temperature: float | None = None,
             guidance_scale: float = 1.0) -> list[str]:
    """Sampled completions (text after the prompt), cut at the stop sequence. ``temperature`` for the
    instruction, ``output_temperature`` (default: the same) for the edited caption.

    ``guidance_scale`` != 1 writes the edited caption with classifier-free guidance (transformers'
    CFG processor, Sanchez et al. 2023): log p(y | caption) + g * (log p(y | caption, instruction) -
    log p(y | caption)), the unconditional branch being the same prompt with an empty instruction
    (trained where ``seed_completions`` drops instructions; on the world it works as well untrained).
    The instruction is sampled first, up to the output separator, then the edited caption is written
    under guidance; a small LM that mostly copies the caption (a third of the world's prompts came back
    unedited at g = 1) is pushed toward the words the instruction changes."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    torch.manual_seed(seed)
    marker = tokenizer(SEP_OUT.strip(), add_special_tokens=False)["input_ids"]
    separator = tokenizer(SEP_OUT, add_special_tokens=False)["input_ids"]
    if not guidance_scale > 0:
        raise ValueError(f"guidance_scale must be > 0 (1: no guidance), got {guidance_scale}")
    # the unconditional branch's prompt ends like the conditional one, at the marker, with no instruction
    empty_instruction = separator[:_find(separator, marker)]
    if guidance_scale != 1.0 and not empty_instruction:
        raise ValueError(f"the tokenizer splits {SEP_OUT!r} so that it does not contain {SEP_OUT.strip()!r}")
    t_out = temperature if output_temperature is None else output_temperature
    common = dict(do_sample=True, temperature=1.0, top_p=top_p, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    # no padding or unknown token (decoding would drop them silently, so the text would not be what
    # was sampled); the instruction is never empty: that is guidance's unconditional branch
    never = [t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id) if t is not None]
    common["suppress_tokens"] = [t for t in never if t != tokenizer.eos_token_id]
    first = dict(begin_suppress_tokens=separator[:1])
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start:start + batch_size]
        enc = tokenizer([tokenizer.bos_token + prompt_text(c) for c in chunk], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        width = enc["input_ids"].shape[1]
        # temperature 1.0 disables generate's own warper: OutputTemperature does it, after the penalty
        processors = [FrequencyPenalty(frequency_penalty, width), OutputTemperature(temperature, t_out, width, marker)]
        if guidance_scale == 1.0:
            seqs = model.generate(**enc, max_new_tokens=max_new_tokens,
                                  logits_processor=LogitsProcessorList(processors), **first, **common)
            out += [tokenizer.decode(s, skip_special_tokens=True) for s in seqs[:, width:]]
            continue
        # phase 1: the instruction, up to and including the separator
        seqs = model.generate(**enc, max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList(processors),
                              stopping_criteria=StoppingCriteriaList([AfterMarker(marker, width)]), **first, **common)
        texts, cond, uncond, budget, rows = [], [], [], [], []
        for i, s in enumerate(seqs):
            prompt = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
            gen = s[width:].tolist()
            end = _find(gen, marker)
            texts.append(tokenizer.decode(gen[:end] if end >= 0 else gen, skip_special_tokens=True))
            if end >= 0 and end < max_new_tokens:
                rows.append(i)
                cond.append(prompt + gen[:end])
                uncond.append(prompt + empty_instruction)
                budget.append(max_new_tokens - end)
        if rows:
            # phase 2: the edited caption under guidance; each row keeps its own token budget
            c_ids, c_mask = _left_pad(cond, tokenizer.pad_token_id)
            u_ids, u_mask = _left_pad(uncond, tokenizer.pad_token_id)
            w2 = c_ids.shape[1]
            # the penalty counts the caption's own tokens here, not the instruction's (whose new value
            # the caption has to repeat)
            guided = [FrequencyPenalty(frequency_penalty, w2), OutputTemperature(t_out, t_out, w2, marker)]
            seqs2 = model.generate(input_ids=c_ids, attention_mask=c_mask, max_new_tokens=max(budget),
                                   guidance_scale=guidance_scale, negative_prompt_ids=u_ids,
                                   negative_prompt_attention_mask=u_mask,
                                   logits_processor=LogitsProcessorList(guided),
                                   **common)
            for i, b, s in zip(rows, budget, seqs2[:, w2:]):
                texts[i] += tokenizer.decode(s[:b], skip_special_tokens=True)
        out += texts
    return out


@torch.no_grad()
def output_logprob(model, tokenizer, captions: list[str], instructions: list[str], outputs: list[str],
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """log p(edited caption | caption, instruction) under ``model``, summed over the edited caption's tokens
    and the stop sequence's (an edited caption cut short is unlikely where it ends), and their count: one
    teacher-forced pass over each triplet in the training format.

    The LM's own confidence in what it wrote: on the world, an edited caption that is not the instruction
    applied to the caption (the right word replaced by a wrong one) is one the LM was unsure of (ROC AUC
    0.90-0.95 against the grammar's check, three fine-tuned models), so it can filter with no grammar."""
    def tokens(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    sums, counts = np.zeros(len(captions)), np.zeros(len(captions), dtype=np.int64)
    for start in range(0, len(captions), batch_size):
        rows, spans = [], []
        for c, i, o in zip(*(x[start:start + batch_size] for x in (captions, instructions, outputs))):
            # tokenized in two parts, so that no "%%" an instruction may hold can move the boundary
            context = [tokenizer.bos_token_id] + tokens(prompt_text(c)) + tokens(i + SEP_OUT)
            scored = tokens(o + STOP)
            rows.append(context + scored)
            spans.append((len(context), len(context) + len(scored)))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        # token t is predicted at position t - 1; gather minus logsumexp, not a second vocabulary-wide
        # tensor (OPT-6.7B: 50k columns a position)
        token_logp = logits.gather(-1, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
        for k, (a, b) in enumerate(spans):
            sums[start + k] = token_logp[k, a - 1:b - 1].sum().item()
            counts[start + k] = b - a
    return sums, counts


_PUNCT = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCT)).strip()


def parse_completion(caption: str, completion: str) -> tuple[str, str] | str:
    """(instruction, edited caption), or the reason it is rejected (IP2P's rules)."""
    if STOP not in completion:
        return "no stop sequence"
    body = completion.split(STOP)[0]
    parts = body.split(SEP_OUT)
    if len(parts) != 2:
        return "not exactly one instruction and one output"
    instruction, output = (p.strip() for p in parts)
    if not instruction or not output:
        return "empty instruction or output"
    if normalise(output) == normalise(caption):
        return "output equals input"
    return instruction, output


def llm_triplets(model, tokenizer, ids: list[str], captions: list[str], sample_cfg: dict, seed: int,
                 consistent: Callable[[str, str, str], tuple[bool, str]] | None = None,
                 edit_kind: Callable[[str, str], str] | None = None,
                 min_output_logprob: float | None = None) -> tuple[dict, dict]:
    """Generate, parse, validate, deduplicate, score; keep what scores at least ``min_output_logprob``
    (None: all). Returns (rows, statistics with counted rejections).

    Every row records its score and token count (columns ``output_logprob``, ``output_tokens``; see
    ``output_logprob``), so a later run can re-filter with another threshold. With ``edit_kind`` the
    statistics count the kept triplets per kind of edit, and with ``consistent`` as well, the consistency
    per kind (a near-greedy sampler can be consistent by writing one easy kind only, which the overall
    fraction alone would hide) and the consistency of what the threshold dropped."""
    t0 = time.perf_counter()
    completions = generate(model, tokenizer, captions, seed=seed, **sample_cfg)
    seconds = time.perf_counter() - t0
    rejected, seen, parsed_rows = Counter(), set(), []
    for cid, cap, comp in zip(ids, captions, completions):
        parsed = parse_completion(cap, comp)
        if isinstance(parsed, str):
            rejected[parsed] += 1
            continue
        instruction, output = parsed
        key = (normalise(cap), normalise(instruction), normalise(output))
        if key in seen:
            rejected["duplicate"] += 1
            continue
        seen.add(key)
        parsed_rows.append((cid, cap, instruction, output))
    t1 = time.perf_counter()
    logp, n_tokens = output_logprob(model, tokenizer, [r[1] for r in parsed_rows], [r[2] for r in parsed_rows],
                                    [r[3] for r in parsed_rows], sample_cfg["batch_size"])
    scoring_seconds = time.perf_counter() - t1
    rows = {k: [] for k in ("id", "source_id", "reference", "instruction", "target", "method", "seed",
                            "output_logprob", "output_tokens")}
    checked = good = dropped = dropped_good = 0
    kinds, kinds_good = Counter(), Counter()
    for (cid, cap, instruction, output), lp, nt in zip(parsed_rows, logp, n_tokens):
        ok = consistent(cap, instruction, output)[0] if consistent is not None else None
        if min_output_logprob is not None and not lp >= min_output_logprob:  # NaN (a broken LM) fails too
            rejected["output log-likelihood below min_output_logprob"] += 1
            dropped += 1
            dropped_good += bool(ok)
            continue
        kind = edit_kind(cap, instruction) if edit_kind is not None else None
        kinds[kind] += 1
        if consistent is not None:
            checked += 1
            good += ok
            kinds_good[kind] += ok
        rows["id"].append(f"{cid}:llm")
        rows["source_id"].append(cid)
        rows["reference"].append(cap)
        rows["instruction"].append(instruction)
        rows["target"].append(output)
        rows["method"].append("llm")
        rows["seed"].append(seed)
        rows["output_logprob"].append(float(lp))
        rows["output_tokens"].append(int(nt))
    stats = {"prompts": len(captions), "kept": len(rows["id"]), "rejected": dict(rejected),
             "generation_seconds": seconds, "scoring_seconds": scoring_seconds,
             "triplets_per_second": len(captions) / max(seconds + scoring_seconds, 1e-9),
             "min_output_logprob": min_output_logprob}
    if consistent is not None:
        stats["consistency_checked"] = checked
        stats["consistent_fraction"] = good / checked if checked else 0.0
        stats["parse_and_consistent_fraction"] = good / max(1, len(captions))
        stats["consistent_fraction_of_dropped"] = dropped_good / dropped if dropped else None
    if edit_kind is not None:
        stats["edit_kinds"] = dict(kinds.most_common())
        stats["top_edit_kind_share"] = max(kinds.values()) / len(rows["id"]) if rows["id"] else 0.0
        if consistent is not None:
            stats["consistent_fraction_by_kind"] = {k: kinds_good[k] / n for k, n in kinds.most_common()}
    return rows, stats
