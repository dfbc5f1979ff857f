"""RefCOCO, RefCOCO+ and RefCOCOg (Yu et al. 2016, Mao et al. 2016) in the refer toolkit's layout.

One folder per dataset, as github.com/lichengunc/refer distributes them: ``refs(unc).p`` (RefCOCO,
RefCOCO+; splits val, testA, testB) or ``refs(umd).p`` (RefCOCOg; val, test), a pickled list of
refs ``{ref_id, ann_id, image_id, split, sentences: [{sent_id, sent, raw, tokens}], ...}``, and
``instances.json`` (COCO annotations: ``images`` with file names and sizes, ``annotations`` with
``bbox`` = [x, y, width, height] in pixels). Images are COCO ``train2014``. Every sentence of a
ref is one query; its text is ``sent`` (the lower-cased form the benchmarks are scored with).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

from grit_pipeline.locations import Box

# dataset -> (refs file, evaluation splits)
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "refcoco": ("refs(unc).p", ("val", "testA", "testB")),
    "refcoco+": ("refs(unc).p", ("val", "testA", "testB")),
    "refcocog": ("refs(umd).p", ("val", "test")),
}


@dataclass(frozen=True)
class Expression:
    key: str  # "ref_id:sent_id"
    image_path: str
    text: str
    box: Box  # normalised to the image


def load_refs(path: Path) -> list[dict]:
    """The refs pickle (written by Python 2; ``latin1`` reads its byte strings as text)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected the refer toolkit's {path.name}")
    # Unpickling can run code named in the file: the format leaves no choice, so read only the
    # benchmark's own download (the README says where it comes from).
    with path.open("rb") as handle:
        try:
            refs = pickle.load(handle, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
            raise ValueError(f"{path}: not a readable refs pickle ({err})") from err
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a pickled list of refs, got {type(refs).__name__}")
    return refs


def _normalised(bbox, image: dict) -> Box:
    x, y, w, h = (float(v) for v in bbox)
    width, height = float(image["width"]), float(image["height"])
    return Box(x / width, y / height, (x + w) / width, (y + h) / height)


def read_split(data: str | Path, dataset: str, split: str, images: str | Path) -> list[Expression]:
    """Every expression of ``split``, in refs-file order."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    refs_name, splits = DATASETS[dataset]
    if split not in splits:
        raise ValueError(f"{dataset} has the evaluation splits {', '.join(splits)}, not {split!r}")
    data = Path(data)
    instances_path = data / "instances.json"
    if not instances_path.exists():
        raise FileNotFoundError(f"{instances_path} not found: expected COCO's instances.json beside the refs")
    instances = json.loads(instances_path.read_text())
    try:
        return _expressions(load_refs(data / refs_name), instances, split, Path(images))
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{data}: refs or instances.json lack the field {err} (not the refer layout?)"
        ) from err


def _expressions(refs: list[dict], instances: dict, split: str, images: Path) -> list[Expression]:
    image_by_id = {image["id"]: image for image in instances["images"]}
    box_by_ann = {ann["id"]: ann["bbox"] for ann in instances["annotations"]}
    expressions = []
    for ref in refs:
        if ref["split"] != split:
            continue
        image = image_by_id[ref["image_id"]]
        box = _normalised(box_by_ann[ref["ann_id"]], image)
        path = str(images / image["file_name"])
        for sentence in ref["sentences"]:
            key = f"{ref['ref_id']}:{sentence['sent_id']}"
            expressions.append(Expression(key, path, sentence["sent"].strip(), box))
    return expressions
