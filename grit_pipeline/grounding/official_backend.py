"""The optional backend: the official Grounding DINO package (``pip install 'grit-pipeline[groundingdino]'``).

Same interface, span scoring and post-processing as the ``hf`` backend; the official ``predict()``
takes one image at a time, so this backend runs the images of a batch one by one.

``DetectorConfig.model`` is a directory holding the official python config (``*.py``, e.g.
``GroundingDINO_SwinT_OGC.py``) and checkpoint (``*.pth``), or the paths joined with ``::``
(``CONFIG.py::WEIGHTS.pth``). The package needs torchvision, which has no wheel matching this
project's torch 2.13.0 on every platform; when it cannot be imported the loader raises a
one-line ``DetectorUnavailableError`` saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from grit_pipeline.grounding.base import GroundingRequest, GroundingResult
from grit_pipeline.grounding.config import DetectorConfig, DetectorUnavailableError
from grit_pipeline.grounding.hf_backend import resolve_device, score_request
from grit_pipeline.grounding.spans import normalize_caption, validate_spans

# ImageNet statistics and the 800-pixel shorter side used by the official demo transforms.
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_SHORT_SIDE, _MAX_SIDE = 800, 1333


def import_official():
    """The official package's model builder and helpers, or a one-line error saying why not."""
    try:
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig
        from groundingdino.util.utils import clean_state_dict
    except Exception as err:  # ImportError, or torchvision's operator registration failing at import
        raise DetectorUnavailableError(
            "the groundingdino backend needs the official package and a torchvision matching torch "
            f"{torch.__version__} (pip install 'grit-pipeline[groundingdino]'); importing it failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    return build_model, SLConfig, clean_state_dict


def find_official_files(model: str) -> tuple[Path, Path]:
    """(python config, checkpoint) from ``DIR`` or ``CONFIG.py::WEIGHTS.pth``."""
    if "::" in model:
        config_path, weights_path = (Path(p).expanduser() for p in model.split("::", 1))
    else:
        folder = Path(model).expanduser()
        configs = sorted(folder.glob("*.py")) if folder.is_dir() else []
        weights = sorted(folder.glob("*.pth")) if folder.is_dir() else []
        if len(configs) != 1 or len(weights) != 1:
            raise DetectorUnavailableError(
                f"the groundingdino backend needs a folder with exactly one config .py and one .pth "
                f"checkpoint (or CONFIG.py::WEIGHTS.pth), got {model!r}"
            )
        config_path, weights_path = configs[0], weights[0]
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DetectorUnavailableError(f"groundingdino backend: file {str(path)!r} does not exist")
    return config_path, weights_path


def official_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) after the official ``RandomResize([800], max_size=1333)`` (same rounding)."""
    size = _SHORT_SIDE
    short, long = float(min(width, height)), float(max(width, height))
    if long / short * size > _MAX_SIDE:
        size = round(_MAX_SIDE * short / long)
    if (width <= height and width == size) or (height <= width and height == size):
        return width, height
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def official_transform(image) -> torch.Tensor:
    """The official demo's preprocessing: resized (bilinear), to a tensor, ImageNet-normalised."""
    import numpy as np

    image = image.convert("RGB")
    resized = image.resize(official_size(*image.size), resample=2)  # 2 = PIL bilinear
    array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - torch.tensor(_MEAN)[:, None, None]) / torch.tensor(_STD)[:, None, None]


class OfficialDetector:
    """Grounding DINO through the official package; implements the ``Detector`` protocol."""

    def __init__(self, config: DetectorConfig):
        build_model, sl_config, clean_state_dict = import_official()
        config_path, weights_path = find_official_files(config.model)
        self.config = config
        self.device = resolve_device(config.device)
        args = sl_config.fromfile(str(config_path))
        args.device = self.device.type
        self.model = build_model(args)
        checkpoint = torch.load(str(weights_path), map_location="cpu", weights_only=False)
        self.model.load_state_dict(clean_state_dict(checkpoint.get("model", checkpoint)), strict=False)
        self.model.eval().to(self.device)
        self.tokenizer = self.model.tokenizer

    def image_from_bytes(self, data: bytes):
        """Encoded bytes -> an RGB image in its displayed frame (this backend resizes it itself)."""
        from grit_pipeline.fetch.decode import open_rgb

        return open_rgb(data, min_side=_SHORT_SIDE)

    def provenance(self) -> dict:
        return self.config.provenance()

    def ground(self, requests: Sequence[GroundingRequest]) -> list[GroundingResult]:
        return [self._ground_one(request) for request in requests]

    def _ground_one(self, request: GroundingRequest) -> GroundingResult:
        validate_spans(request.caption, request.spans)
        if not request.spans:
            return GroundingResult(boxes=())
        prompt = normalize_caption(request.caption)
        encoded = self.tokenizer(
            prompt.text, truncation=True, max_length=self.config.max_text_tokens, return_offsets_mapping=True
        )
        image = official_transform(request.image).to(self.device)
        with torch.inference_mode():
            # The official model tokenizes the caption itself, with the same BERT tokenizer.
            outputs = self.model(image[None], captions=[prompt.text])
        num_tokens = len(encoded["input_ids"])
        probs = outputs["pred_logits"][0, :, :num_tokens].float().sigmoid().cpu()  # (queries, tokens)
        from grit_pipeline.grounding.postprocess import center_to_corners

        boxes = center_to_corners(outputs["pred_boxes"][0].float().cpu())
        return score_request(
            request, prompt, encoded["offset_mapping"], num_tokens, probs, boxes, self.config
        )
