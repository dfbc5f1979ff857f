"""Images -> the detector's input pixels: resized to a size bucket on 8-bit pixels, normalised per batch.

transformers' image processor converts every image to float, then rescales, normalises and pads it
in separate passes. Here an image is one resize of its 8-bit pixels with torch's uint8 kernels
(which release the GIL, so a thread pool prepares images on every core while the forward runs),
and a batch is normalised in one pass in torch, on the model's device.

A batch holds images of one shape only: Grounding DINO's input projection (a GroupNorm) computes its
statistics over padded zeros too, so padding would make an image's boxes depend on its batch
neighbours. Which shape an image gets is ``shapes``' business: by default one of a few canonical
shapes (aspect changed by at most 3.05 %, longest side at most 1333), so that web images fall into
few shapes and batches fill up; ``max_stretch=0`` gives the processor's exact sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from grit_pipeline.fetch.decode import open_rgb
from grit_pipeline.grounding.shapes import processor_shapes, target_shapes


@dataclass(frozen=True)
class PreparedImage:
    """An image resized for the detector: ``pixels`` is (height, width, 3) uint8."""

    pixels: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width): images of the same shape can share a batch."""
        return self.pixels.shape[0], self.pixels.shape[1]


@dataclass(frozen=True)
class ImageSpec:
    """How the detector wants its images: the processor's sizes and normalisation, and the bucket step."""

    shortest_edge: int = 800
    longest_edge: int = 1333
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet's, as the processor's defaults
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_stretch: float = 0.03  # see grounding.shapes; 0: the processor's exact sizes

    @classmethod
    def from_processor(cls, image_processor, max_stretch: float = 0.03) -> ImageSpec:
        """The spec of a transformers Grounding DINO image processor (its size, mean and std)."""
        size = image_processor.size  # a dict or transformers' SizeDict; both index by name
        shortest, longest = size["shortest_edge"], size["longest_edge"]
        return cls(
            shortest_edge=int(shortest),
            longest_edge=int(longest or shortest),
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
            max_stretch=max_stretch,
        )

    def target_shape(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the processed image; ``ValueError`` when a side would be 0 pixels."""
        if max(width, height) >= 2 * self.longest_edge * min(width, height):
            # The processor would make the short side 0 pixels; a canonical shape would stretch it.
            exact = processor_shapes([width], [height], self.shortest_edge, self.longest_edge)[0]
            raise ValueError(
                f"a {width}x{height} image resizes to {exact[1]}x{exact[0]} for the detector (shortest "
                f"edge {self.shortest_edge}, longest {self.longest_edge}): a side of 0 pixels cannot be "
                "grounded"
            )
        out_h, out_w = target_shapes(
            [width], [height], self.shortest_edge, self.longest_edge, self.max_stretch
        )[0]
        return int(out_h), int(out_w)


def prepare_image(image: Image.Image, spec: ImageSpec) -> PreparedImage:
    """An image resized to its bucket shape (bilinear, within one 8-bit level of Pillow's)."""
    height, width = spec.target_shape(*image.size)
    # np.array, not asarray: a writable copy, which torch.from_numpy needs (one memcpy).
    pixels = np.array(image if image.mode == "RGB" else image.convert("RGB"))
    return PreparedImage(resize_pixels(pixels, height, width))


def resize_pixels(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8 with torch's uint8 bilinear kernels.

    They run on the channels-last bytes directly (no float copy) and, upsampling, 5 to 8 times
    faster than Pillow's; antialiasing (Pillow's filter support when shrinking) only when a side
    shrinks, since it changes nothing otherwise.
    """
    if pixels.shape[:2] == (height, width):
        return pixels
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # a channels-last view, no copy
    shrinks = height < pixels.shape[0] or width < pixels.shape[1]
    resized = torch.nn.functional.interpolate(
        tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinks
    )
    return resized[0].permute(1, 2, 0).numpy()


def prepare_bytes(data: bytes, spec: ImageSpec) -> PreparedImage:
    """Encoded bytes -> a prepared image; JPEGs decode at a reduced DCT scale when that still covers
    the processor's shortest edge (much faster for large photos)."""
    return prepare_image(open_rgb(data, min_side=spec.shortest_edge), spec)


def pixel_batch(images: Sequence[PreparedImage], spec: ImageSpec, device: torch.device) -> torch.Tensor:
    """Same-shape prepared images -> normalised float32 pixels (batch, 3, height, width) on ``device``."""
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"a detector batch must hold one image shape (padding changes boxes), got {shapes}")
    stacked = torch.from_numpy(np.stack([image.pixels for image in images])).to(device)
    height, width = stacked.shape[1:3]
    pixels = torch.empty((len(images), 3, height, width), dtype=torch.float32, device=device)
    pixels.copy_(stacked.permute(0, 3, 1, 2))  # one pass: to float and to channels-first, 0..255
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
    return pixels.sub_(mean).mul_(inv_std)
