"""The fetch stage's options (``FetchConfig``) and the reasons it treats as transient."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from grit_pipeline import reasons

# Resize modes that keep the whole picture: boxes normalised by the original size stay valid.
# img2dataset's center_crop and border would move or cut the content the boxes point at.
BOX_SAFE_RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest")
# Failures worth another attempt (and worth `grit build --retry-rejects` later): the table of every
# reject reason (``grit_pipeline.reasons``, and the README's copy of it) says which.
TRANSIENT_REASONS = reasons.TRANSIENT_REASONS


@dataclass(frozen=True)
class FetchConfig:
    """Download and image options (all recorded in the run manifest)."""

    timeout_s: float = 10.0  # one deadline per attempt: connect, headers and body together
    retries: int = 2  # extra attempts after a transient failure
    backoff_s: float = 0.5  # wait before retry n is backoff_s * 2**n
    # One row's attempts and waits together: 3 full attempts (30 s) plus one capped Retry-After (30 s).
    total_timeout_s: float = 60.0
    max_retry_after_s: float = 30.0  # a server asking for longer is not retried now (--retry-rejects later)
    # Per host and worker process. 6 connections is what every browser opens to one host, so any
    # site that serves web pages tolerates it; 10 requests/s (bursts of 10) is a few pages' images
    # per second. Big image CDNs tolerate far more; a site with a stated policy may want less
    # (upload.wikimedia.org asks unidentified bots for at most 2 at once). 0 lifts a limit.
    max_host_connections: int = 6
    max_host_requests_per_s: float = 10.0
    thread_count: int = 32  # concurrent downloads per worker process
    max_bytes: int = 32 * 2**20  # a photo above 32 MiB is almost surely not a web photo
    # 50 Mpx: above any camera photo we want (8K UHD is 33 Mpx), far below a decompression bomb's gigapixels.
    max_pixels: int = 50_000_000
    # Degenerate shapes are rejected before grounding (reason degenerate_image): below 16 px there is
    # nothing to ground (Grounding DINO's coarsest feature map is 1/32 of the input), and beyond 10:1
    # an image is a banner or a strip; the detector's processor would shrink its short side to
    # 1333 / ratio px (0 px for a 4000x1 image, which fails the whole batch).
    min_side_px: int = 16
    max_aspect_ratio: float = 10.0
    allow_private_addresses: bool = False  # tests and private mirrors only
    allowed_networks: tuple[str, ...] = ()  # CIDRs exempt from the guard, e.g. a private mirror's subnet
    # As img2dataset: its token, so a site that blocks img2dataset blocks us too, and its directives.
    user_agent_token: str = "img2dataset"
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    # Resize policy (img2dataset's options). Default: shortest side 512 when bigger, aspect kept,
    # nothing cropped, so boxes normalised by the original size stay valid; Grounding DINO
    # upsamples to 800 anyway and Kosmos-2 trains at 224.
    image_size: int = 512
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = 95

    def __post_init__(self) -> None:
        if self.resize_mode not in BOX_SAFE_RESIZE_MODES:
            raise ValueError(
                f"resize mode {self.resize_mode!r} would crop or pad the image and break the boxes; "
                f"use one of {', '.join(BOX_SAFE_RESIZE_MODES)}"
            )
        for network in self.allowed_networks:
            ipaddress.ip_network(network)  # raises ValueError naming a malformed CIDR
        if self.min_side_px < 1 or self.max_aspect_ratio < 1:
            raise ValueError(
                f"min_side_px must be >= 1 and max_aspect_ratio >= 1, got {self.min_side_px} and "
                f"{self.max_aspect_ratio}"
            )
        if self.retries < 0 or self.timeout_s <= 0 or self.thread_count < 1:
            raise ValueError("retries must be >= 0, timeout_s > 0 and thread_count >= 1")
        if self.total_timeout_s < self.timeout_s:
            raise ValueError(
                f"the total time per row ({self.total_timeout_s:g} s) is shorter than one attempt's "
                f"timeout ({self.timeout_s:g} s); raise --total-timeout or lower --timeout"
            )
        if min(self.max_retry_after_s, self.max_host_connections, self.max_host_requests_per_s) < 0:
            raise ValueError(
                "max_retry_after_s, max_host_connections and max_host_requests_per_s must be >= 0"
            )
