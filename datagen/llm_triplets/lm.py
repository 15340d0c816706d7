"""The causal LMs: a tokenizer and a small OPT trained for the world, LoRA adapters (peft), and loading
base, adapter and tokenizer back through the path that loads OPT-6.7B."""

from __future__ import annotations

from pathlib import Path


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


def save_adapter(model, out: Path, base_name: str) -> None:
    """``save_pretrained`` of the LoRA adapter, naming ``base_name`` as its base (not the temporary folder
    the base was saved to meanwhile) and listing its target modules in order, so that one seed writes the
    same bytes whatever the process (peft stores them from a set)."""
    import json

    model.save_pretrained(str(out))
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    written = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = base_name
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = out / "README.md"
    if written and card.is_file():
        card.write_text(card.read_text().replace(str(written), base_name))


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
