"""A tiny random Grounding DINO, built in code and saved like a hub checkpoint.

Used by the tests and by offline smoke runs (``DetectorConfig(model="tiny-random")``): the files are
written with ``save_pretrained`` and loaded back through the same ``from_pretrained`` path as a real
checkpoint. The weights are random, with the decoder's output norm scaled down so that token
probabilities sit near 0.5 (about 0.3 to 0.7): pass a box threshold around 0.5 to keep boxes (the
default 0.65 keeps few or none).

The tokenizer is a ``BertTokenizerFast`` over a small WordPiece vocabulary laid out like
bert-base-uncased where it matters: the model hard-codes the ids of ``[CLS]`` (101), ``[SEP]``
(102), ``.`` (1012) and ``?`` (1029) as phrase delimiters, so those ids are kept.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import threading
from pathlib import Path

TINY_CACHE_VERSION = "v2"  # bump when the tiny config or vocabulary changes

# Ordinary words of web alt-texts; any other lower-case word still tokenizes (letters + "##" letters).
_WORDS = """
a an the this that these those some two three four five many several one of in on at to from with
without by for into onto over under above below near next behind beside between across along around
inside outside up down and or but is are was were be being been has have had it its his her their our
my your he she they we you i who which what while as like than very
man men woman women person people boy girl child children baby kid kids family friends couple crowd
player team student teacher doctor chef worker soldier police officer bride groom
dog dogs cat cats bird birds horse horses cow cows sheep bear bears elephant giraffe zebra fish duck
animal animals puppy kitten
car cars truck bus bike bicycle motorcycle train plane airplane boat ship taxi van road street
sidewalk bridge building buildings house home city town tower church wall window door roof stairs
table chair chairs sofa couch bed desk shelf lamp clock kitchen room bathroom sink toilet mirror
computer laptop phone screen keyboard book books paper cover sign poster picture photo image painting
shirt hat cap dress jacket coat shoes bag umbrella glasses tie hanger wire
food pizza cake bread sandwich plate bowl cup glass bottle wine coffee tea fruit apple apples banana
orange vegetables salad
tree trees grass flower flowers garden park field forest mountain mountains hill rock rocks beach sea
ocean water river lake snow sky sun cloud clouds rain fire sand
ball kite frisbee toy toys game guitar piano
red blue green yellow black white brown gray grey pink purple orange golden dark light
big small large little old new young tall short long beautiful pretty happy cute wooden metal plastic
front back top bottom side left right middle center background
sitting standing walking running playing holding wearing looking riding eating drinking lying flying
swimming jumping smiling reads read warming himself herself
snowman customers heart logo view close shot
"""

_SUFFIXES = ["s", "es", "ed", "ing", "ly", "er", "est", "ness", "ful", "less", "ion"]
_SEED_LOCK = threading.Lock()
_FIRST_CHAR_ID = 999  # bert-base-uncased puts "!" at 999, so "." lands on 1012 and "?" on 1029


def caption_vocab() -> list[str]:
    """The WordPiece vocabulary, one entry per id, laid out like bert-base-uncased's first ids."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(99, 99 + _FIRST_CHAR_ID - len(vocab))]
    # Printable ASCII without upper case (the tokenizer lower-cases), in code-point order as in BERT.
    chars = [chr(c) for c in range(0x21, 0x7F) if not "A" <= chr(c) <= "Z"]
    vocab += chars
    vocab += [f"##{c}" for c in chars if c.isalnum()]
    vocab += [f"##{s}" for s in _SUFFIXES]
    seen = set(vocab)
    for word in _WORDS.split():
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    return vocab


def build_tokenizer(folder: Path):
    """A lower-casing ``BertTokenizerFast`` over ``caption_vocab()`` (``vocab.txt`` written in ``folder``)."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(caption_vocab()) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary as ``vocab``, transformers 4 as ``vocab_file``.
    if "vocab_file" in inspect.signature(BertTokenizerFast.__init__).parameters:
        return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=256)
    vocab = {token: i for i, token in enumerate(caption_vocab())}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=256)


def tiny_config(vocab_size: int):
    """Swin embed 16, BERT width 32, d_model 32, two decoder layers (one fails: weight tying)."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=256,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
    )


def save_detector(
    path: str | os.PathLike,
    config,
    image_size: tuple[int, int] = (800, 1333),
    scale_scores: float | None = None,
) -> Path:
    """Save a randomly initialised ``GroundingDinoForObjectDetection`` of ``config`` and its processor.

    ``image_size`` is the processor's (shortest, longest) edge; the seed must be set by the caller.
    """
    import torch
    from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,  # the PIL processor: this machine has no torchvision
    )

    path = Path(path)
    tokenizer = build_tokenizer(path)
    config.text_config.vocab_size = max(config.text_config.vocab_size, tokenizer.vocab_size)
    image_processor = GroundingDinoImageProcessorPil(
        size={"shortest_edge": image_size[0], "longest_edge": image_size[1]}
    )
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    model = GroundingDinoForObjectDetection(config).eval()
    if scale_scores is not None:
        with torch.no_grad():
            # Random layer-normed features give logits of std ~sqrt(d_model): every score ~0 or ~1.
            # Shrinking the decoder's output norm puts the scores near 0.5, as for an untrained head.
            model.model.decoder.layer_norm.weight.mul_(scale_scores)
            model.model.decoder.layer_norm.bias.mul_(scale_scores)
    model.save_pretrained(path)
    return path


def save_tiny_detector(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny random detector to ``path`` (deterministic for a given seed); returns the path."""
    import torch

    # Model initialisation draws from torch's global generator: threads must not interleave draws.
    with _SEED_LOCK:
        torch.manual_seed(seed)
        config = tiny_config(vocab_size=len(caption_vocab()))
        # Small input images keep the tiny model fast; the real processor uses (800, 1333). A
        # shorter side of 96 keeps the coarsest feature map above 1x1 (GroupNorm needs 2 values).
        return save_detector(path, config, image_size=(96, 160), scale_scores=0.05)


def cache_dir() -> Path:
    """``$GRIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/grit_pipeline`` or ``~/.cache/grit_pipeline``."""
    if os.environ.get("GRIT_CACHE_DIR"):
        return Path(os.environ["GRIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "grit_pipeline"


def cached_tiny_detector() -> Path:
    """The tiny detector's folder in the cache, written once.

    Safe under concurrent processes: each writes into its own temporary folder and renames it into
    place; a process that loses the race deletes its copy and uses the winner's.
    """
    final = cache_dir() / f"tiny-grounding-dino-{TINY_CACHE_VERSION}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-grounding-dino-", dir=final.parent))
    try:
        save_tiny_detector(tmp)
        os.rename(tmp, final)
    except OSError:
        if not (final / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
