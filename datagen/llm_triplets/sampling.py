"""Sampling edits from the LM: the instruction first, then the edited caption under guidance, and the
LM's own log-likelihood of an edited caption."""

from __future__ import annotations

import numpy as np
import torch

from compodiff.seeding import keeps_global_rng
from datagen.llm_triplets.format import SEP_OUT, STOP, prompt_text


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
