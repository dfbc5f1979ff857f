"""Flickr30k Entities (Plummer et al.): sentences with marked phrases, and the phrases' boxes.

The dataset's own files, as released at github.com/BryanPlummer/flickr30k_entities:
``Sentences/ID.txt`` (five lines, phrases marked ``[/EN#18/people A man]``, a phrase may carry
several types ``/EN#5/people/bodyparts``), ``Annotations/ID.xml`` (``<object>`` elements naming one
or more phrase ids, each with a ``<bndbox>``, ``<nobndbox>`` or ``<scene>``), the split lists
``train.txt`` / ``val.txt`` / ``test.txt``, and the images ``flickr30k-images/ID.jpg``.

Phrases whose id has no box (``nobndbox``, ``scene``, ``notvisual``) are kept but carry no box; the
evaluation (MDETR's, which Kosmos-2 used) skips them. XML boxes are 1-based inclusive pixels, as in
the official loader (which subtracts 1 from every corner); here they become normalised
``Box((xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H)``.

>>> text, phrases = parse_sentence("[/EN#18/people A man] rides [/EN#19/other a bike] .")
>>> text
'A man rides a bike .'
>>> [(p.phrase_id, p.types, text[p.start:p.end]) for p in phrases]
[('18', ('people',), 'A man'), ('19', ('other',), 'a bike')]
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from pathlib import Path

from grit_pipeline.locations import Box

SPLITS = ("train", "val", "test")
_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)+) ([^\]]*)\]")


@dataclass(frozen=True)
class Phrase:
    """One marked phrase of a sentence: character span into the clean sentence, and its boxes."""

    phrase_id: str
    types: tuple[str, ...]
    start: int
    end: int
    text: str
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class Sentence:
    image_id: str
    image_path: str
    index: int  # line number in Sentences/ID.txt, from 0
    text: str  # the sentence with the markup removed
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class Annotation:
    width: int
    height: int
    boxes: dict[str, tuple[Box, ...]]  # phrase id -> boxes (ids without a box are absent)


def parse_sentence(line: str) -> tuple[str, list[Phrase]]:
    """The clean sentence and its phrases; raises ValueError on unbalanced markup.

    The line is stripped first, so that phrase offsets index the text as it is used (a line
    starting with whitespace would otherwise shift every phrase).
    """
    line = line.strip()
    parts, phrases, cursor, length = [], [], 0, 0
    for match in _PHRASE.finditer(line):
        before = line[cursor : match.start()]
        parts.append(before)
        length += len(before)
        text = match.group(3)
        types = tuple(t for t in match.group(2).split("/") if t)
        phrases.append(Phrase(match.group(1), types, length, length + len(text), text))
        parts.append(text)
        length += len(text)
        cursor = match.end()
    parts.append(line[cursor:])
    clean = "".join(parts)
    if "[/EN#" in clean:
        raise ValueError(f"unbalanced Flickr30k Entities markup in {line.strip()!r}")
    return clean, phrases


def _int(element, tag: str, where: str) -> int:
    found = element.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{where}: <{tag}> missing")
    return int(float(found.text))


def read_annotation(path: Path) -> Annotation:
    """Image size and the boxes of every phrase id of one ``Annotations/ID.xml``."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise ValueError(f"{path}: not valid XML ({err})") from err
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: <size> missing")
    width, height = _int(size, "width", str(path)), _int(size, "height", str(path))
    boxes: dict[str, list[Box]] = {}
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:  # nobndbox or scene: the phrase has no box
            continue
        corners = [_int(bndbox, tag, str(path)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        box = Box(
            (corners[0] - 1) / width, (corners[1] - 1) / height, corners[2] / width, corners[3] / height
        )
        for name in obj.iter("name"):
            boxes.setdefault(name.text.strip(), []).append(box)
    return Annotation(width, height, {k: tuple(v) for k, v in boxes.items()})


def split_ids(root: Path, split: str) -> list[str]:
    """Image ids listed in ``ROOT/SPLIT.txt``."""
    path = root / f"{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected the Flickr30k Entities split list {split}.txt")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_split(root: str | Path, split: str, images: str | Path | None = None) -> list[Sentence]:
    """Every sentence of the split's images, phrases with their boxes, in split-list order."""
    root = Path(root)
    image_dir = Path(images) if images else root / "flickr30k-images"
    sentences = []
    for image_id in split_ids(root, split):
        annotation = read_annotation(root / "Annotations" / f"{image_id}.xml")
        lines = (root / "Sentences" / f"{image_id}.txt").read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            text, phrases = parse_sentence(line)
            boxed = tuple(replace(p, boxes=annotation.boxes.get(p.phrase_id, ())) for p in phrases)
            sentences.append(Sentence(image_id, str(image_dir / f"{image_id}.jpg"), index, text, boxed))
    return sentences
