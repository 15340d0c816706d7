"""The sections of params.yaml that the data generation reads: the world, the world CLIP's training, the caption
triplets, the image pairs, the CLIP filter and the real and public datasets (frozen dataclasses; the loader
and the root schema are ``orchestration.params``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from compodiff.config_schema import at_least, keys_of

# the CLIP filter's scores and the triplet methods that may have thresholds of their own
SCORES = ("sim_0", "sim_1", "sim_image", "sim_dir", "sim_keyword", "sim_instruction")
METHODS = ("keyword", "llm")


@dataclass(frozen=True)
class WorldConfig:
    """The procedural world that stands in for LAION (DESIGN.md, embedded default)."""

    image_size: int
    shards: tuple[str, ...]
    pairs_per_shard: int
    heldout_pairs: int  # a separate shard of pairs never seen in training, for evaluation
    p_size: float  # probability that a caption names the objects' sizes
    p_position: float  # ... and their positions
    max_objects: int = 3


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Contrastive training of the world's own open_clip model (stand-in for pretrained CLIP)."""

    embed_dim: int
    vision_layers: tuple[int, ...]
    vision_width: int
    text_width: int
    text_layers: int
    text_heads: int
    context_length: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    eval_pairs: int
    threads: int
    # share of training captions rewritten in everyday English (datagen.world.language): synonyms, carrier
    # phrases, requests, so the text tower knows more than the captions' few dozen words, as CLIP does
    paraphrase: float = 0.0
    # share of those paraphrases that also say, in the words of edited pictures, a colour, size or object the
    # picture shows or one it lacks (language.edit_clause): the words of change get trained embeddings
    edit_clauses: float = 0.0
    bf16: bool = False  # autocast the towers in bfloat16 (the loss stays fp32): 1.3x a step on avx512_bf16 CPUs


@dataclass(frozen=True)
class KeywordConfig:
    """Keyword-based caption triplets (paper 4.1)."""

    spacy: str  # "world" (the lexicon pipeline), or a spaCy package name / path (en_core_web_sm)
    min_count: int  # frequency filter of object terms
    window: tuple[float, float]  # CLIP text similarity window of replacements (paper: [0.5, 0.7])
    both_directions: bool
    validate_with_world: bool  # world profile: drop target captions the world cannot render


@dataclass(frozen=True)
class LMConfig:
    """The world's small OPT: tokenizer + pre-training on world captions."""

    tokenizer: str  # "word" or "bpe" (byte-level, OPT's family), trained with the tokenizers library
    captions_per_document: int  # pre-training documents: several captions of one scene, as COCO has
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    steps: int
    batch_size: int
    lr: float
    pretrain_captions: int


@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    steps: int
    batch_size: int
    lr: float
    # train the embedding rows of tokens the base never saw in pre-training (the world's OPT, pre-trained
    # on captions, has never seen the IP2P format's tokens); a hub model's tokens are all pre-trained
    train_new_tokens: bool = True
    # train every embedding row (tied with the LM head), not only the new ones: on the lifecycle's world OPT,
    # which writes the wrong shape in shape edits (28% consistent), 59% / 48% with every row (two LoRA seeds)
    train_embeddings: bool = False
    # share of seeds trained with the instruction left out: the unconditional branch of guidance
    instruction_dropout: float = 0.0


@dataclass(frozen=True)
class SampleConfig:
    temperature: float
    top_p: float
    frequency_penalty: float
    max_new_tokens: int
    batch_size: int
    output_temperature: float | None = None  # the edited caption's; None: ``temperature`` (IP2P's one sampler)
    guidance_scale: float = 1.0  # classifier-free guidance of the edited caption by the instruction; 1: none


@dataclass(frozen=True)
class LLMConfig:
    """LLM-based caption triplets (paper 4.2)."""

    base_model: str | None  # hub id or local dir (paper: facebook/opt-6.7b); None: train the world's OPT
    seed_triplets: str | None  # IP2P gpt-generated-prompts.jsonl; None: the world's edit grammar
    seed_count: int  # world: how many seed edits the grammar writes
    prompts: int  # captions sent to the fine-tuned model
    lm: LMConfig | None
    lora: LoraConfig
    sample: SampleConfig
    # keep an LLM triplet only if the fine-tuned LM's log-likelihood of its edited caption and stop sequence
    # (given caption and instruction, summed over their tokens) is at least this; None keeps all. Every kept
    # row records it.
    min_output_logprob: float | None = None
    # world: the share of seed edits that make two edits in one instruction (the "combined" kind)
    seed_combined: float = 0.0
    # how many seed triplets also become training triplets of the LLM method, as the paper re-uses IP2P's
    # own caption triplets beside the ones its fine-tuned OPT writes (0: none)
    reuse_seeds: int = 0
    threads: int | None = None  # the LM steps' torch threads (None: every core); fixed, so the adapter is too


@dataclass(frozen=True)
class CaptionTripletsConfig:
    keyword: KeywordConfig
    llm: LLMConfig


@dataclass(frozen=True)
class DiffusersConfig:
    """Stable Diffusion image pairs with IP2P-style self-attention injection (paper 4.3)."""

    checkpoints: tuple[str, ...]  # local dirs or hub ids, used in rotation (paper: SD 1.5/2.0/2.1/anime)
    steps: int
    resolution: int
    p_range: tuple[float, float]  # fraction of steps with the source's self-attention injected
    guidance_range: tuple[float, float]
    batch_pairs: int
    fp16: bool  # on GPU only


@dataclass(frozen=True)
class ImagePairsConfig:
    generator: str  # "procedural" (the world renderer) or "diffusers"
    samples_per_triplet: int  # N renderings per caption triplet, each with its own seed
    max_triplets_per_shard: int  # 0: all
    chunk_size: int  # triplets per resumable part of a shard
    diffusers: DiffusersConfig
    # of each shard's max_triplets_per_shard, the share given first to LLM triplets (the paper's mix is 39%
    # LLM); keyword triplets fill the rest. None: one seeded draw over all methods.
    llm_share: float | None = None


@dataclass(frozen=True)
class ClipFilterConfig:
    """CLIP filtering (paper 4.4, IP2P): a pair is kept when every score clears its threshold."""

    sim_image: float  # cos(img_0, img_1) (paper 0.70)
    sim_0: float  # cos(img_0, txt_0) (0.2)
    sim_1: float  # cos(img_1, txt_1) (0.2)
    sim_dir: float  # cos(img_1 - img_0, txt_1 - txt_0) (0.2)
    sim_keyword: float  # keyword triplets: cos(target keyword, img_1) (0.20)
    sim_instruction: float  # LLM triplets: cos(instruction, img_1) (0.20)
    best_k: int  # per caption triplet, the best k by sim_dir
    min_keep_rate: float  # blocking asset check: fewer kept means the generator or encoder broke
    # per method ("keyword", "llm"), thresholds that replace the ones above: an edit that changes the whole
    # background moves sim_image more than a swapped object does, so one image rule cannot serve both
    per_method: dict[str, dict[str, float]] = field(default_factory=dict, metadata=keys_of(METHODS, SCORES))
    # blocking asset check: every edit kind the benchmark asks about is at least this share of the kept
    # triplets (world profiles, where the kind is known)
    min_kind_share: float = 0.0


@dataclass(frozen=True)
class SourcesConfig:
    """The real datasets of the paper profiles, from local paths (the world profile has none)."""

    image_text_pairs: str  # LAION-2B image-text shards (parquet / webdataset), the stage-1 and Eq. 1-2 data
    captions: str  # caption sources of the keyword triplets (COYO-700M, SD prompts, LAION-COCO)
    fashioniq: str | None = None
    cirr: str | None = None
    circo: str | None = None
    genecis: str | None = None
    text_encoder2: str | None = None  # T5-XL (the CLIP + T5 variant): local dir or hub id


@dataclass(frozen=True)
class TripletSourceConfig:
    """One public triplet dataset, read from a local copy in its published layout (datagen.image_triplets)."""

    path: str  # the dataset's root (IP2P, MegaPairs, LaSCo annotations, CIRR, FashionIQ) or its shard folder
    weight: float = field(default=1.0, metadata=at_least(0))  # share of stage-2 draws, beside generated_weight
    split: str = "train"  # LaSCo: train | val; CIRR and FashionIQ: their training split (Appendix B)
    corpus: str | None = None  # LaSCo: the COCO 2014 image root (images joined by COCO id)
    key_map: dict[str, str] | None = None  # SynthTriplets18M: field -> tar member extension ("EXT" or "EXT:json_key")
    min_scores: dict[str, float] | None = None  # IP2P: the shipped CLIP scores a pair must reach (None: keep all)
    max_triplets: int | None = None  # read at most this many records (a quick look at a huge source)
    join: str = "clip4cir"  # FashionIQ: how its two captions make one instruction


@dataclass(frozen=True)
class TripletSourcesConfig:
    """Public triplet datasets mixed into stage 2 with the project's own filtered triplets (none in the world)."""

    generated_weight: float = field(default=1.0, metadata=at_least(0))  # the generated triplets' share; 0: none
    max_negatives: int = field(default=3, metadata=at_least(0))  # hard negatives kept per triplet (MegaPairs)
    records_per_part: int = field(default=10000, metadata=at_least(1))  # converted per output file: the resume unit
    ip2p: TripletSourceConfig | None = None  # InstructPix2Pix, the zip release's folder layout
    ip2p_parquet: TripletSourceConfig | None = None  # InstructPix2Pix as the hub's parquet files
    megapairs: TripletSourceConfig | None = None
    lasco: TripletSourceConfig | None = None
    synthtriplets: TripletSourceConfig | None = None  # SynthTriplets18M WebDataset shards
    cirr: TripletSourceConfig | None = None  # supervised fine-tuning (Appendix B)
    fashioniq: TripletSourceConfig | None = None
