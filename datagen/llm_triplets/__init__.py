"""LLM-based caption triplets (paper 4.2): a causal LM fine-tuned with LoRA on seed edits.

The IP2P format: prompt "<caption>\\n##\\n", completion "<instruction>\\n%%\\n<edited caption>\\nEND".
The paper fine-tunes OPT-6.7B (``AutoModelForCausalLM.from_pretrained``) on IP2P's 452k triplets; the
world profile pre-trains a small OPT on world captions (with a byte-level BPE tokenizer trained by the
``tokenizers`` library), LoRA-fine-tunes it on edits written by the world's grammar, and saves base,
adapter and tokenizer with ``save_pretrained`` so they load back through the path that loads OPT-6.7B.

A package by concern: ``format`` (the text format and its parse), ``seeds`` (IP2P's seed file), ``lm``
(tokenizers, models, LoRA, loading), ``training``, ``sampling``, ``triplets`` (the whole step's core).
"""

from datagen.llm_triplets.format import (
    SEP_EDIT,
    SEP_OUT,
    STOP,
    completion_text,
    normalise,
    parse_completion,
    prompt_text,
    seed_completions,
)
from datagen.llm_triplets.lm import add_lora, build_world_lm, load_lm, save_adapter, tokens_absent_from, train_tokenizer
from datagen.llm_triplets.sampling import AfterMarker, FrequencyPenalty, OutputTemperature, generate, output_logprob
from datagen.llm_triplets.seeds import SeedStats, read_ip2p_jsonl
from datagen.llm_triplets.training import train_causal_lm
from datagen.llm_triplets.triplets import llm_triplets

__all__ = [
    "AfterMarker", "FrequencyPenalty", "OutputTemperature", "SEP_EDIT", "SEP_OUT", "STOP", "SeedStats", "add_lora",
    "build_world_lm", "completion_text", "generate", "llm_triplets", "load_lm", "normalise", "output_logprob",
    "parse_completion", "prompt_text", "read_ip2p_jsonl", "save_adapter", "seed_completions", "tokens_absent_from",
    "train_causal_lm", "train_tokenizer"
]
