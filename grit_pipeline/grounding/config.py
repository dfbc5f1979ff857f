"""The detector's options (a picklable frozen dataclass) and the errors of loading one."""

from __future__ import annotations

from dataclasses import dataclass

from grit_pipeline.flags import flag, flag_error, require_choice, require_min

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"

# A tiny Grounding DINO with random weights, built in code (see ``grounding.tiny``): for tests and
# offline smoke runs. Its random scores lie near 0.5 (about 0.3 to 0.7), so the paper's threshold
# would keep no box: its default threshold is TINY_BOX_THRESHOLD (tests pass 0.5 for fewer boxes).
TINY_DETECTOR = "tiny-random"
# Kosmos-2 keeps (chunk, box) pairs scoring above 0.65 (docs/grit.md section 1, step 1.5).
PAPER_BOX_THRESHOLD = 0.65
TINY_BOX_THRESHOLD = 0.3

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
    ``box_threshold`` None (the default) becomes the model's default threshold (``default_threshold``),
    so every command and caller gets the same one.
    """

    model: str = flag(
        DEFAULT_DETECTOR,
        name="--detector",
        metavar="ID_OR_DIR",
        help=f"hub id, local folder, or {TINY_DETECTOR!r} (a tiny random model: offline smoke runs)",
    )
    backend: str = flag(
        "hf",
        name="--detector-backend",
        aliases=("--backend",),
        choices=BACKENDS,
        help="transformers' Grounding DINO (hf) or the official groundingdino package",
    )
    box_threshold: float | None = flag(
        None,
        help=f"keep (chunk, box) pairs scoring above this (default {PAPER_BOX_THRESHOLD}, the paper's; "
        f"{TINY_BOX_THRESHOLD} with {TINY_DETECTOR!r})",
    )
    # Not published by the authors; 0.5 is the usual class-agnostic NMS IoU (docs/grit.md section 1, step 1.4).
    nms_iou: float = flag(0.5, help="IoU above which class-agnostic NMS drops the lower-scoring box")
    batch_size: int = flag(8, name="--detector-batch-size", help="images per detector batch")
    device: str = flag("auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
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
    image_source: str = flag(
        "source",
        name="--detector-image",
        choices=IMAGE_SOURCES,
        help="what the detector sees: the downloaded image decoded at about its input size (source) or "
        "the stored resized copy (stored: less CPU for large photos, less detail)",
    )
    # torch's intra-op threads in each worker process; None or 0: the process's share of its
    # machine's cores, counted on the worker (the build counts it at launch for local runners).
    threads: int | None = flag(
        None,
        name="--detector-threads",
        metavar="N",
        help="torch threads per worker process (default: the cores each process may use, divided by the "
        "SDK processes of its machine, on every runner)",
    )

    def __post_init__(self) -> None:
        if self.box_threshold is None:  # the one place the default threshold is chosen
            object.__setattr__(self, "box_threshold", self.default_threshold(self.model))
        require_choice(self, backend=BACKENDS, image_source=IMAGE_SOURCES)
        require_choice(self, cuda_dtype=("bfloat16", "float16", "float32"))
        for name in ("box_threshold", "nms_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise flag_error(self, name, "must be in [0, 1]")
        require_min(self, batch_size=1, threads=0)
        if not 2 < self.max_text_tokens <= 256:
            raise flag_error(self, "max_text_tokens", "must be in (2, 256]")
        if not 0.0 < self.min_box_side < 1.0:
            raise flag_error(self, "min_box_side", "must be in (0, 1)")
        if not 0.0 <= self.max_stretch < 0.5:
            raise flag_error(self, "max_stretch", "must be in [0, 0.5)")

    @staticmethod
    def default_threshold(model: str) -> float:
        """The box threshold of ``model`` when none is given: the paper's, or the tiny detector's."""
        return TINY_BOX_THRESHOLD if model == TINY_DETECTOR else PAPER_BOX_THRESHOLD

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
