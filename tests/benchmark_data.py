"""Tiny benchmark folders in the exact official formats, with generated images and made-up boxes.

Flickr30k Entities: ``Sentences/ID.txt``, ``Annotations/ID.xml`` (bndbox / nobndbox / scene, an object
naming two phrases), ``val.txt`` / ``test.txt``, ``flickr30k-images/ID.jpg``. RefCOCO(+/g): the refer
toolkit's ``refs(unc).p`` / ``refs(umd).p`` pickles and COCO ``instances.json``, images in ``train2014/``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 64, 48

# image id -> (sentence lines, [(phrase ids, kind, (xmin, ymin, xmax, ymax) 1-based inclusive)])
FLICKR = {
    "1001": (
        [
            "[/EN#1/people A man] in [/EN#2/clothing a red shirt] walks [/EN#3/animals a brown dog] on [/EN#4/scene the street] .",
            "[/EN#1/people A person] with [/EN#3/animals/other a dog] .",
            "[/EN#0/notvisual Nobody] knows .",
        ],
        [
            (("1",), "bndbox", (5, 5, 30, 40)),
            (("2",), "bndbox", (10, 10, 25, 20)),
            (("3",), "bndbox", (35, 25, 60, 45)),
            (("3",), "bndbox", (40, 30, 50, 40)),
            (("4",), "scene", None),
            (("0",), "nobndbox", None),
        ],
    ),
    "1002": (
        ["[/EN#10/animals A black cat] sits on [/EN#11/other a wooden box] ."],
        [(("10",), "bndbox", (2, 2, 20, 20)), (("11", "12"), "bndbox", (1, 21, 64, 48))],
    ),
    "1003": (["[/EN#20/people Two children] play ."], [(("20",), "bndbox", (10, 10, 50, 40))]),
}
FLICKR_SPLITS = {"val": ["1001", "1002"], "test": ["1003"]}
FLICKR_VAL_QUERIES = 7  # boxed phrases of the val sentences: 3 + 2 + 0 (1001), 2 (1002)


def _image(path: Path, boxes, seed: int) -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), (90 + seed * 20, 120, 140))
    draw = ImageDraw.Draw(image)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        draw.rectangle([x0 - 1, y0 - 1, x1 - 1, y1 - 1], fill=((60 * i) % 255, 200, (90 * i) % 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def _xml(image_id: str, objects) -> str:
    parts = [f"<annotation><filename>{image_id}.jpg</filename>"]
    parts.append(f"<size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>")
    for names, kind, corners in objects:
        parts.append("<object>" + "".join(f"<name>{n}</name>" for n in names))
        if kind == "bndbox":
            tags = ("xmin", "ymin", "xmax", "ymax")
            parts.append("<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, corners)) + "</bndbox>")
        else:
            parts.append(f"<{kind}>1</{kind}>")
        parts.append("</object>")
    return "\n".join([*parts, "</annotation>"])


def write_flickr30k(root: Path) -> Path:
    for image_id, (lines, objects) in FLICKR.items():
        (root / "Sentences").mkdir(parents=True, exist_ok=True)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, objects))
        boxes = [c for _, kind, c in objects if kind == "bndbox"]
        _image(root / "flickr30k-images" / f"{image_id}.jpg", boxes, int(image_id) % 7)
    for split, ids in FLICKR_SPLITS.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


# COCO image id -> annotations (ann id, [x, y, w, h] pixels)
COCO = {
    1: [(100, [5.0, 5.0, 25.0, 35.0]), (101, [34.0, 24.0, 26.0, 20.0])],
    2: [(102, [0.0, 20.0, 64.0, 28.0])],
}
# dataset -> refs file, [(ref id, ann id, image id, split, sentences)]
REFS = {
    "refcoco": (
        "refs(unc).p",
        [
            (1, 100, 1, "val", ["man on the left", "left guy"]),
            (2, 101, 1, "testA", ["dog on the right"]),
            (3, 102, 2, "testB", ["the wooden box"]),
            (4, 102, 2, "train", ["box"]),
        ],
    ),
    "refcoco+": ("refs(unc).p", [(5, 100, 1, "val", ["man in red"]), (6, 101, 1, "testB", ["brown dog"])]),
    "refcocog": (
        "refs(umd).p",
        [(7, 100, 1, "val", ["a man wearing a red shirt"]), (8, 102, 2, "test", ["a box"])],
    ),
}


def write_refcoco(root: Path, dataset: str) -> Path:
    folder = root / dataset
    images = [
        {"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": WIDTH, "height": HEIGHT} for i in COCO
    ]
    annotations = [
        {"id": ann, "image_id": i, "bbox": bbox, "category_id": 1, "area": bbox[2] * bbox[3], "iscrowd": 0}
        for i, anns in COCO.items()
        for ann, bbox in anns
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    )
    refs_name, rows = REFS[dataset]
    refs, sent_id = [], 0
    for ref_id, ann_id, image_id, split, sentences in rows:
        sents = []
        for text in sentences:
            sents.append({"sent_id": sent_id, "sent": text, "raw": text.capitalize(), "tokens": text.split()})
            sent_id += 1
        refs.append({
            "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
            "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "sentences": sents,
            "sent_ids": [s["sent_id"] for s in sents],
        })  # fmt: skip
    with (folder / refs_name).open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)  # the released files are Python 2 pickles
    for image in images:
        boxes = [(x + 1, y + 1, x + w, y + h) for _, (x, y, w, h) in COCO[image["id"]]]
        _image(folder / "train2014" / image["file_name"], boxes, image["id"])
    return folder
