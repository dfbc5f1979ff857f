"""The fetch stage's options (``FetchConfig``) and the reasons it treats as transient."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from grit_pipeline import reasons
from grit_pipeline.flags import flag, flag_error, require_min, require_positive

# Resize modes that keep the whole picture: boxes normalised by the original size stay valid.
# img2dataset's center_crop and border would move or cut the content the boxes point at.
BOX_SAFE_RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest")
# Failures worth another attempt (and worth `grit build --retry-rejects` later): the table of every
# reject reason (``grit_pipeline.reasons``, and the README's copy of it) says which.
TRANSIENT_REASONS = reasons.TRANSIENT_REASONS


@dataclass(frozen=True)
class FetchConfig:
    """Download and image options (all recorded in the run manifest)."""

    timeout_s: float = flag(
        10.0,
        name="--timeout",
        metavar="S",
        help="one deadline per attempt: connect, headers and body together",
    )
    retries: int = flag(2, help="extra attempts after a transient failure")
    backoff_s: float = flag(0.5, name="--backoff", metavar="S", help="wait before retry n: S * 2**n")
    # One row's attempts and waits together: 3 full attempts (30 s) plus one capped Retry-After (30 s).
    total_timeout_s: float = flag(
        60.0, name="--total-timeout", metavar="S", help="one row's attempts and waits together"
    )
    max_retry_after_s: float = flag(
        30.0,
        name="--max-retry-after",
        metavar="S",
        help="a server asking to wait longer is not retried now (--retry-rejects later)",
    )
    # Per host and worker process. 6 connections is what every browser opens to one host, so any
    # site that serves web pages tolerates it; 10 requests/s (bursts of 10) is a few pages' images
    # per second. Big image CDNs tolerate far more; a site with a stated policy may want less
    # (upload.wikimedia.org asks unidentified bots for at most 2 at once). 0 lifts a limit.
    max_host_connections: int = flag(
        6, metavar="N", help="connections per host and worker process (0: no limit)"
    )
    max_host_requests_per_s: float = flag(
        10.0,
        name="--max-host-rate",
        metavar="R",
        help="requests per second per host and worker process (0: no limit)",
    )
    thread_count: int = flag(32, name="--threads", help="downloads in flight per worker process")
    # A photo above 32 MiB is almost surely not a web photo.
    max_bytes: int = flag(32 * 2**20, help="largest download in bytes")
    # 50 Mpx: above any camera photo we want (8K UHD is 33 Mpx), far below a decompression bomb's gigapixels.
    max_pixels: int = flag(50_000_000, help="largest image in pixels (decompression bombs)")
    # Degenerate shapes are rejected before grounding (reason degenerate_image): below 16 px there is
    # nothing to ground (Grounding DINO's coarsest feature map is 1/32 of the input), and beyond 10:1
    # an image is a banner or a strip; the detector's processor would shrink its short side to
    # 1333 / ratio px (0 px for a 4000x1 image, which fails the whole batch).
    min_side_px: int = 16
    max_aspect_ratio: float = 10.0
    allow_private_addresses: bool = flag(
        False, help="allow loopback/private/link-local targets (tests, private mirrors)"
    )
    allowed_networks: tuple[str, ...] = flag(
        (),
        name="--allow-network",
        metavar="CIDR",
        help="exempt one network from the address guard (repeatable)",
    )
    # As img2dataset: its token, so a site that blocks img2dataset blocks us too, and its directives.
    user_agent_token: str = "img2dataset"
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    # Resize policy (img2dataset's options). Default: shortest side 512 when bigger, aspect kept,
    # nothing cropped, so boxes normalised by the original size stay valid; Grounding DINO
    # upsamples to 800 anyway and Kosmos-2 trains at 224.
    image_size: int = flag(512, help="stored image size in pixels (img2dataset's, per --resize-mode)")
    resize_mode: str = flag("keep_ratio", choices=BOX_SAFE_RESIZE_MODES, help="img2dataset's resize mode")
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = flag(95, help="JPEG quality of the stored image")

    def __post_init__(self) -> None:
        if self.resize_mode not in BOX_SAFE_RESIZE_MODES:
            raise flag_error(
                self,
                "resize_mode",
                f"would crop or pad the image and break the boxes; use one of {', '.join(BOX_SAFE_RESIZE_MODES)}",
            )
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network)
            except ValueError as err:
                raise ValueError(f"--allow-network: {err}") from err
        require_min(self, retries=0, thread_count=1, min_side_px=1, max_aspect_ratio=1, image_size=1)
        require_min(self, max_retry_after_s=0, max_host_connections=0, max_host_requests_per_s=0)
        require_min(self, backoff_s=0, max_bytes=1, max_pixels=1)
        require_positive(self, "timeout_s")
        if self.total_timeout_s < self.timeout_s:
            raise ValueError(
                f"the total time per row ({self.total_timeout_s:g} s) is shorter than one attempt's "
                f"timeout ({self.timeout_s:g} s); raise --total-timeout or lower --timeout"
            )
