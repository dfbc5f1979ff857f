"""The tokenizer and the Kosmos2Processor: pretrained, or trained offline on the corpus captions.

Offline, a ``tokenizers`` Unigram model (the sentencepiece algorithm Kosmos-2's own vocabulary
uses) is trained on the shards' captions and wrapped in an ``XLMRobertaTokenizerFast``, the class
the released processor uses, so ids 0-3 are ``<s> <pad> </s> <unk>`` as in docs/grit.md section 3.
``Kosmos2Processor`` then adds the 11 tag tokens and the 1,024 ``<patch_index_NNNN>`` tokens itself.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable

from transformers import CLIPImageProcessor, Kosmos2Processor, XLMRobertaTokenizerFast

from grit_pipeline.schemas.reader import list_shard_files, read_shard

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in the released vocabulary
# CLIP's normalisation, as in microsoft/kosmos-2-patch14-224's image processor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
KOSMOS2_IMAGE_TOKENS = 64  # what Kosmos2Processor inserts unless its saved tokenizer config says otherwise


def corpus_captions(data: str, max_rows: int) -> list[str]:
    """Up to ``max_rows`` plain captions from the shards under ``data``."""
    captions: list[str] = []
    for path in list_shard_files(data):
        column = read_shard(path, ["caption"]).column("caption").to_pylist()
        captions.extend(c for c in column if c)
        if len(captions) >= max_rows:
            break
    if not captions:
        raise ValueError(f"no captions found under {data}: cannot train a tokenizer on an empty corpus")
    return captions[:max_rows]


def _word_pieces(captions: list[str], vocab_size: int) -> list[tuple[str, float]] | None:
    """Whole words plus characters as Unigram pieces, when the corpus has few enough distinct words.

    The Unigram trainer seeds its pieces from substrings that repeat across *distinct* words, so a
    corpus of a few dozen words (``grit synth``) comes out as single characters; there, every word
    is made a piece (scored by its log frequency) and characters cover unseen words.
    """
    words = Counter(f"\u2581{w}" for caption in captions for w in caption.split())
    chars = Counter(ch for word, n in words.items() for ch in word for _ in range(n))
    if len(words) + len(chars) + len(SPECIAL_TOKENS) > vocab_size:
        return None
    total = sum(words.values()) + sum(chars.values())
    pieces = {**{c: n for c, n in chars.items()}, **words}
    return [(piece, math.log(n / total)) for piece, n in sorted(pieces.items(), key=lambda kv: -kv[1])]


def _unigram(captions: list[str], vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    pieces = _word_pieces(captions, vocab_size)
    if pieces is not None:
        vocab = [(token, 0.0) for token in SPECIAL_TOKENS] + pieces
        tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("<unk>")))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        return tokenizer
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(captions, trainer)
    return tokenizer


def train_tokenizer(captions: Iterable[str], vocab_size: int) -> XLMRobertaTokenizerFast:
    """A Unigram tokenizer for ``captions``, with Kosmos-2's four special tokens at ids 0-3.

    ``vocab_size`` is an upper bound: a small corpus yields fewer pieces, which suits a tiny model.
    """
    from tokenizers import decoders, normalizers, processors

    captions = [unicodedata.normalize("NFKC", c) for c in captions]
    tokenizer = _unigram(captions, vocab_size)
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        sep_token="</s>",
        cls_token="<s>",
        mask_token="<mask>",
    )


def build_processor(
    tokenizer, image_size: int, num_image_tokens: int = KOSMOS2_IMAGE_TOKENS
) -> Kosmos2Processor:
    """A Kosmos2Processor around ``tokenizer`` for square images of ``image_size`` pixels, inserting
    ``num_image_tokens`` image slots (the model's ``latent_query_num``) in its standard call.

    The image processor is CLIP's (bicubic resize of the shorter side, centre crop, CLIP mean/std),
    as in the released checkpoint, at this preset's resolution.
    """
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    if num_image_tokens != KOSMOS2_IMAGE_TOKENS:
        record_image_tokens(tokenizer, num_image_tokens)
    return Kosmos2Processor(image_processor, tokenizer)


def record_image_tokens(tokenizer, num_image_tokens: int) -> None:
    """Save the slot count where ``Kosmos2Processor.from_pretrained`` reads it back as its default.

    ``processor_config.json`` cannot carry it (transformers keeps only ``__init__`` arguments there,
    and the count is not one); the processor does take call defaults from the tokenizer's saved
    init arguments, so ``tokenizer_config.json`` gets ``num_image_tokens``. transformers 5.x logs a
    one-time deprecation notice for that route and plans to drop it in v5.29; the README's verbatim
    snippet test checks the inserted count equals the model's ``latent_query_num``, so a transformers
    that stops honouring it fails there rather than at a user's first call.
    """
    tokenizer.init_kwargs["num_image_tokens"] = num_image_tokens


def processor_from_corpus(
    data: str, image_size: int, vocab_size: int, max_rows: int, num_image_tokens: int = KOSMOS2_IMAGE_TOKENS
) -> Kosmos2Processor:
    """Train a tokenizer on the corpus under ``data`` and wrap it in a processor."""
    tokenizer = train_tokenizer(corpus_captions(data, max_rows), vocab_size)
    return build_processor(tokenizer, image_size, num_image_tokens)


def load_processor(path_or_id: str) -> Kosmos2Processor:
    """A saved processor (a checkpoint folder, or a hub id when the hub is reachable)."""
    try:
        return Kosmos2Processor.from_pretrained(path_or_id)
    except OSError as err:
        raise OSError(
            f"cannot load a Kosmos-2 processor from {path_or_id!r}: give a local checkpoint folder "
            "(with processor_config.json and tokenizer files), or allow hub access"
        ) from err
