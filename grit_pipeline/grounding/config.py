"""The detector's options (a picklable frozen dataclass) and the errors of loading one."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"

# A tiny Grounding DINO with random weights, built in code (see ``grounding.tiny``): for tests and
# offline smoke runs. Its random scores lie near 0.5 (about 0.3 to 0.7): pass box_threshold=0.5 with it.
TINY_DETECTOR = "tiny-random"

BACKENDS = ("hf", "groundingdino")
# What the build's detector looks at: the image as downloaded, decoded at (about) the processor's
# size, or the stored copy (resized by the fetch stage, e.g. shortest side 512, upsampled again).
IMAGE_SOURCES = ("source", "stored")

# Scores and IoUs are compared in steps of this size (rounded to 4 decimals), ties broken by a
# stable key, and scores are kept rounded: a difference of float noise between two runs (1e-7
# between batch sizes) can change a box only when it straddles a step boundary.
SCORE_STEPS = 10_000
SCORE_RESOLUTION = 1 / SCORE_STEPS

# Reason codes, stored in rejects rows and ``GroundingResult.span_errors``.
NO_BOX_ABOVE_THRESHOLD = "no_box_above_threshold"
OVER_TOKEN_LIMIT = "over_token_limit"
SPAN_HAS_NO_TOKENS = "span_has_no_tokens"
GROUNDING_ERROR = "grounding_error"  # an exception while grounding this one image (error text kept)


@dataclass(frozen=True)
class DetectorConfig:
    """How to load and run a grounding detector; the fields that change results go into ``provenance()``.

    ``model`` is a hub id, a local directory saved with ``save_pretrained`` (``hf``), a directory
    holding the official config and checkpoint (``groundingdino``), or ``TINY_DETECTOR``.
    """

    model: str = DEFAULT_DETECTOR
    backend: str = "hf"
    # Kosmos-2 keeps (chunk, box) pairs scoring above 0.65 (docs/grit.md section 1, step 1.5).
    box_threshold: float = 0.65
    # Not published by the authors; 0.5 is the usual class-agnostic NMS IoU (docs/grit.md section 1, step 1.4).
    nms_iou: float = 0.5
    batch_size: int = 8
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    # Autocast dtype on CUDA: "bfloat16" (falls back to float16 where bf16 is unsupported),
    # "float16", or "float32" to disable autocast. CPU always runs float32.
    cuda_dtype: str = "bfloat16"
    # Grounding DINO's text encoder takes 256 tokens ([CLS] and [SEP] included).
    max_text_tokens: int = 256
    # Only a boxed area at least this fraction of the image side survives (drops zero-size boxes).
    min_box_side: float = 1e-4
    # Passed to from_pretrained: never touch the network, even for a hub id (HF_HUB_OFFLINE also works).
    local_files_only: bool = False
    # Images are resized to the nearest of a few canonical shapes, their aspect changed by at most
    # this much (3.05 % in all with pixel rounding, longest side <= 1333: see grounding.shapes), so
    # that same-shape batches fill (batches are never padded: see grounding.preprocess).
    # 0: the processor's exact sizes (almost every image its own shape).
    max_stretch: float = 0.03
    image_source: str = "source"  # see IMAGE_SOURCES
    # torch's intra-op threads in each worker process; 0 leaves torch's default (every core).
    threads: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 <= self.box_threshold <= 1.0:
            raise ValueError(f"box_threshold must be in [0, 1], got {self.box_threshold}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 2 < self.max_text_tokens <= 256:
            raise ValueError(f"max_text_tokens must be in (2, 256], got {self.max_text_tokens}")
        if not 0.0 < self.min_box_side < 1.0:
            raise ValueError(f"min_box_side must be in (0, 1), got {self.min_box_side}")
        if not 0.0 <= self.max_stretch < 0.5:
            raise ValueError(f"max_stretch must be in [0, 0.5), got {self.max_stretch}")
        if self.image_source not in IMAGE_SOURCES:
            raise ValueError(f"image_source must be one of {IMAGE_SOURCES}, got {self.image_source!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.cuda_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"cuda_dtype must be bfloat16, float16 or float32, got {self.cuda_dtype!r}")

    def provenance(self) -> dict:
        """What a shard records about the detector that grounded it (plain JSON values)."""
        return {
            "detector": self.model,
            "detector_backend": self.backend,
            "box_threshold": self.box_threshold,
            "nms_iou": self.nms_iou,
            "max_text_tokens": self.max_text_tokens,
            "min_box_side": self.min_box_side,
            "detector_max_stretch": self.max_stretch,
            "detector_image": self.image_source,
            "span_scoring": "mean token probability over the span's tokens",
            "nms": "class-agnostic, all spans of an image",
            "batching": "one processed image shape per batch, never padded",
            "detector_shapes": "canonical aspect grid" if self.max_stretch else "processor sizes",
            "score_resolution": SCORE_RESOLUTION,
        }


class DetectorUnavailableError(RuntimeError):
    """The detector cannot be loaded here: weights not cached offline, or its backend not installed.

    The message is one line meant for the user (the CLI prints it without a traceback).
    """
