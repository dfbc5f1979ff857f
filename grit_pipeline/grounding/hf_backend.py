"""The default backend: transformers' ``GroundingDinoForObjectDetection`` with span scoring.

Images are prepared by ``preprocess`` (resized to a size bucket, normalised per batch on the
model's device) and batched by processed shape only, never padded (the text is padded to the
longest prompt of the batch, which the attention mask hides). On CUDA the forward runs under bf16 (or fp16) autocast and a
batch that runs out of memory is halved and retried; on CPU everything is float32.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from grit_pipeline.grounding.base import GroundingRequest, GroundingResult
from grit_pipeline.grounding.config import TINY_DETECTOR, DetectorConfig, DetectorUnavailableError
from grit_pipeline.grounding.postprocess import center_to_corners, select_boxes, span_scores
from grit_pipeline.grounding.preprocess import (
    ImageSpec,
    PreparedImage,
    pixel_batch,
    prepare_bytes,
    prepare_image,
)
from grit_pipeline.grounding.spans import Prompt, normalize_caption, span_tokens, validate_spans
from grit_pipeline.grounding.staging import CHECKSUMS, is_staged_url, local_copy


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DetectorUnavailableError(f"device {name!r} was asked for but CUDA is not available here")
    return device


def resolve_model_path(model: str) -> str:
    """The folder or hub id to load: the tiny detector's cache folder for ``TINY_DETECTOR``."""
    if model == TINY_DETECTOR:
        from grit_pipeline.grounding.tiny import cached_tiny_detector

        return str(cached_tiny_detector())
    if is_staged_url(model):  # a staged folder: this machine's checked copy (downloaded once)
        return str(local_copy(model).path)
    looks_like_path = model.startswith((".", "/", "~")) or os.sep in model.strip("/").split("/", 1)[-1]
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DetectorUnavailableError(
                f"detector folder {model!r} has no config.json: expected a folder written by "
                "save_pretrained (model and processor)"
            )
        return str(path)
    if looks_like_path:
        raise DetectorUnavailableError(f"detector folder {model!r} does not exist")
    return model


def load_hf_parts(model: str, local_files_only: bool):
    """The processor and the model in eval mode; a one-line ``DetectorUnavailableError`` if absent.

    The local cache is tried first, without any network access; the hub only when that fails, and
    only after a quick check that it answers (huggingface_hub's own retries take minutes offline).
    """
    source = resolve_model_path(model)
    try:
        return _from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        if Path(source).is_dir():
            raise DetectorUnavailableError(
                f"cannot load detector folder {model!r} (expected a Grounding DINO model and processor "
                f"saved with save_pretrained): {_first_line(err)}"
            ) from err
        if local_files_only or _hub_offline():
            raise _unavailable(model) from err
    _check_hub_reachable(model)
    try:
        return _from_pretrained(source, local_files_only=False)
    except OSError as err:
        raise DetectorUnavailableError(
            f"cannot load detector {model!r} from the hub: {_first_line(err)}"
        ) from err


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _from_pretrained(source: str, local_files_only: bool):
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    network = GroundingDinoForObjectDetection.from_pretrained(source, local_files_only=local_files_only)
    return processor, network.eval()


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _check_hub_reachable(model: str) -> None:
    """Raise ``DetectorUnavailableError`` unless the hub answers (any HTTP status counts as an answer)."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        huggingface_hub.model_info(model, timeout=10)
    except errors.HfHubHTTPError:
        return  # the hub answered (e.g. 401 or 404): from_pretrained reports the precise problem
    except Exception as err:  # connection refused, DNS failure, timeout: the transport's own types
        raise _unavailable(model) from err


def _unavailable(model: str) -> DetectorUnavailableError:
    return DetectorUnavailableError(
        f"cannot load detector {model!r}: it is not in the local Hugging Face cache and the hub "
        "cannot be reached; download it where there is network (huggingface-cli download "
        f"{model}) and pass that local directory instead (--detector DIR, or DetectorConfig(model=DIR))"
    )


def weights_origin(model: str, network) -> dict:
    """Which weights exactly: a staged folder's checksum and revision, or the hub commit loaded."""
    if is_staged_url(model):
        return local_copy(model).provenance()
    record = Path(model).expanduser() / CHECKSUMS
    if model != TINY_DETECTOR and record.is_file():
        saved = json.loads(record.read_text())
        return {"detector_checksum": saved["checksum"], "detector_revision": saved.get("revision")}
    return {"detector_revision": getattr(network.config, "_commit_hash", None)}


class HFDetector:
    """Grounding DINO through transformers; implements the ``Detector`` protocol."""

    def __init__(self, config: DetectorConfig, processor=None, model=None):
        """Load ``config.model``; or wrap an already loaded ``processor`` and ``model`` (both given)."""
        self.config = config
        self.device = resolve_device(config.device)
        if processor is None or model is None:
            processor, model = load_hf_parts(config.model, config.local_files_only)
        self.processor, self.model = processor, model.eval().to(self.device)
        self.batch_size = config.batch_size  # lowered for good after a CUDA out-of-memory error
        self.image_spec = ImageSpec.from_processor(processor.image_processor, config.max_stretch)

    def provenance(self) -> dict:
        return {**self.config.provenance(), **weights_origin(self.config.model, self.model)}

    def image_from_bytes(self, data: bytes) -> PreparedImage:
        """Encoded bytes -> the image as ``ground`` takes it (decoded at reduced scale where possible)."""
        return prepare_bytes(data, self.image_spec)

    def prepare(self, request: GroundingRequest) -> GroundingRequest:
        """The request with its image resized for the detector (``PreparedImage``); cheap when it is."""
        if isinstance(request.image, PreparedImage):
            return request
        return replace(request, image=prepare_image(request.image, self.image_spec))

    def ground(self, requests: Sequence[GroundingRequest]) -> list[GroundingResult]:
        """One result per request; requests without spans are answered without running the model.

        Requests are batched by processed image shape only, so a result never depends on the other
        requests (nothing is padded; see ``preprocess``).
        """
        for request in requests:
            validate_spans(request.caption, request.spans)
        results: dict[int, GroundingResult] = {
            i: GroundingResult(boxes=()) for i, r in enumerate(requests) if not r.spans
        }
        by_shape: dict[tuple[int, int], list[int]] = {}
        prepared = {i: self.prepare(r) for i, r in enumerate(requests) if r.spans}
        for i, request in prepared.items():
            by_shape.setdefault(request.image.shape, []).append(i)
        for indices in by_shape.values():
            start = 0
            while start < len(indices):
                chunk = indices[start : start + self.batch_size]
                for i, result in zip(chunk, self._ground_with_retry([prepared[i] for i in chunk])):
                    results[i] = result
                start += len(chunk)
        return [results[i] for i in range(len(requests))]

    def _ground_with_retry(self, batch: list[GroundingRequest]) -> list[GroundingResult]:
        try:
            return self._ground_batch(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
        torch.cuda.empty_cache()
        half = (len(batch) + 1) // 2
        self.batch_size = min(self.batch_size, half)
        return self._ground_with_retry(batch[:half]) + self._ground_with_retry(batch[half:])

    def encode(self, batch: Sequence[GroundingRequest]) -> tuple[dict, list[Prompt], list]:
        """Model inputs for a batch of one processed image shape, with the prompts and token offsets."""
        prompts = [normalize_caption(r.caption) for r in batch]
        text = self.processor.tokenizer(
            [p.text for p in prompts],
            padding="longest",
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = text.pop("offset_mapping").tolist()
        pixels = pixel_batch([self.prepare(r).image for r in batch], self.image_spec, self.device)
        # One shape per batch, so no image is padded: the mask is all ones.
        mask = torch.ones((pixels.shape[0], *pixels.shape[2:]), dtype=torch.long, device=self.device)
        inputs = {k: v.to(self.device) for k, v in text.items()}
        return {**inputs, "pixel_values": pixels, "pixel_mask": mask}, prompts, offsets

    def _autocast(self):
        if self.device.type != "cuda" or self.config.cuda_dtype == "float32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.cuda_dtype == "bfloat16" else torch.float16
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            dtype = torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _ground_batch(self, batch: Sequence[GroundingRequest]) -> list[GroundingResult]:
        inputs, prompts, offsets = self.encode(batch)
        with torch.inference_mode(), self._autocast():
            outputs = self.model(**inputs)
        num_text = inputs["input_ids"].shape[1]
        probs = outputs.logits[..., :num_text].float().sigmoid().cpu()  # (batch, queries, tokens)
        boxes = center_to_corners(outputs.pred_boxes.float().cpu())  # (batch, queries, 4), normalised
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, request in enumerate(batch):
            results.append(
                score_request(
                    request,
                    prompts[row],
                    offsets[row],
                    int(lengths[row]),
                    probs[row],
                    boxes[row],
                    self.config,
                )
            )
        return results


def score_request(
    request: GroundingRequest,
    prompt: Prompt,
    offsets: Sequence[tuple[int, int]],
    num_tokens: int,
    token_probs: torch.Tensor,
    boxes: torch.Tensor,
    config: DetectorConfig,
) -> GroundingResult:
    """One image's result from its token probabilities ``(queries, tokens)`` and corner boxes."""
    last_end = max((end for _, end in offsets[:num_tokens]), default=0)
    mapped = span_tokens(offsets, prompt, request.spans, num_tokens, truncated=last_end < len(prompt.text))
    scores = span_scores(token_probs, mapped.tokens)
    per_span = select_boxes(scores, boxes, config.box_threshold, config.nms_iou, config.min_box_side)
    return GroundingResult(boxes=per_span, span_errors=dict(mapped.errors))
