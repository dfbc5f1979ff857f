"""The fetch stage against a real HTTP server on 127.0.0.1: downloads, guards, retries, decoding."""

from __future__ import annotations

import hashlib
import io
import ipaddress

import pytest
from PIL import Image

from grit_pipeline.fetch import (
    AddressPolicy,
    FetchConfig,
    FetchedImage,
    Fetcher,
    FetchError,
    FetchFailure,
    build_opener,
    download,
    download_with_retries,
    is_public_address,
)
from grit_pipeline.testing import LoopbackServer, Route, bomb_png, jpeg_bytes

LOOPBACK_ONLY = ("127.0.0.1/32",)


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as srv:
        yield srv


def fetch_one(url: str, **options) -> FetchedImage | FetchFailure:
    options.setdefault("allowed_networks", LOOPBACK_ONLY)
    options.setdefault("timeout_s", 2.0)
    options.setdefault("backoff_s", 0.01)
    fetcher = Fetcher(FetchConfig(**options))
    try:
        [(_, result)] = fetcher.fetch_all([("k", url)])
    finally:
        fetcher.close()
    return result


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.100.100.200", False),  # shared address space (Alibaba's metadata)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("fe80::1", False),
    ],
)
def test_public_address_table(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_success_records_original_size_hash_and_resizes(server):
    body = jpeg_bytes(800, 600)
    url = server.add("/big.jpg", Route(body))
    result = fetch_one(url, image_size=128)
    assert isinstance(result, FetchedImage)
    assert (result.width, result.height) == (800, 600)
    assert (result.image_width, result.image_height) == (171, 128)  # shortest side 128, aspect kept
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert Image.open(io.BytesIO(result.image)).size == (171, 128)


def test_small_image_is_kept_as_downloaded(server):
    body = jpeg_bytes(64, 48)
    result = fetch_one(server.add("/small.jpg", Route(body)))
    assert isinstance(result, FetchedImage)
    assert result.image == body  # smaller than image_size and already JPEG: not re-encoded
    assert (result.image_width, result.image_height) == (64, 48)


@pytest.mark.parametrize(
    ("route", "options", "reason", "transient"),
    [
        (Route(b"", status=404), {}, "http_404", False),
        (Route(b"", status=503), {"retries": 0}, "http_503", True),
        (Route(b"\x00garbage\xff" * 50), {}, "not_an_image", False),
        (Route(jpeg_bytes()[:200]), {}, "not_an_image", False),  # truncated JPEG: header ok, pixels not
        (Route(jpeg_bytes(), headers=(("X-Robots-Tag", "noai"),)), {}, "robots_disallowed", False),
        (
            Route(jpeg_bytes(), headers=(("X-Robots-Tag", "img2dataset: noindex"),)),
            {},
            "robots_disallowed",
            False,
        ),
        (Route(jpeg_bytes(400, 400)), {"max_bytes": 1000}, "file_too_large", False),
        # The answer comes long after the deadline, so the attempt times out however slow the machine is.
        (Route(jpeg_bytes(), delay_s=5.0), {"timeout_s": 0.3, "retries": 0}, "timeout", True),
    ],
    ids=["404", "503", "corrupt", "truncated", "noai", "noindex-for-us", "too-large", "timeout"],
)
def test_failures_become_reasons(server, route, options, reason, transient):
    url = server.add(f"/case-{reason}-{len(server.routes)}", route)
    result = fetch_one(url, **options)
    assert isinstance(result, FetchFailure), result
    assert (result.reason, result.transient) == (reason, transient)


def test_robots_directive_for_another_agent_is_ignored(server):
    url = server.add("/otherbot.jpg", Route(jpeg_bytes(), headers=(("X-Robots-Tag", "otherbot: noai"),)))
    assert isinstance(fetch_one(url), FetchedImage)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets our filter
def test_decompression_bomb_is_refused_from_its_header(server):
    url = server.add("/bomb.png", Route(bomb_png(), headers=(("Content-Type", "image/png"),)))
    result = fetch_one(url, max_pixels=50_000_000)
    assert isinstance(result, FetchFailure)
    assert result.reason == "too_many_pixels"
    assert "10000x10000" in result.error


def test_500_then_success_is_retried(server):
    url = server.add("/flaky.jpg", Route(jpeg_bytes(), fail_first=1))
    assert isinstance(fetch_one(url, retries=1), FetchedImage)
    assert server.hits["/flaky.jpg"] == 2


def test_backoff_doubles_between_attempts(server):
    url = server.add("/always500", Route(b"", status=500))
    waits: list[float] = []
    config = FetchConfig(retries=3, backoff_s=0.25, allowed_networks=LOOPBACK_ONLY)
    with pytest.raises(FetchError) as info:
        download_with_retries(
            url, config, build_opener(AddressPolicy(False, LOOPBACK_ONLY)), sleep=waits.append
        )
    assert info.value.failure.reason == "http_500"
    assert waits == [0.25, 0.5, 1.0]
    assert server.hits["/always500"] == 4


def test_guard_refuses_loopback_by_default(server):
    url = server.add("/guarded.jpg", Route(jpeg_bytes()))
    result = fetch_one(url, allowed_networks=())
    assert isinstance(result, FetchFailure)
    assert result.reason == "private_address"
    assert server.hits["/guarded.jpg"] == 0  # refused before connecting


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/x.jpg",
    ],
    ids=["other-loopback", "metadata", "ipv6-loopback"],
)
def test_guard_is_checked_again_on_every_redirect(server, target):
    # Only 127.0.0.1 is allowed, so the first hop connects and the redirect target must be refused.
    url = server.redirect(f"/hop-to-{len(server.routes)}", target.format(port=server.port))
    result = fetch_one(url)
    assert isinstance(result, FetchFailure)
    assert result.reason == "private_address", result.error


def test_redirect_chain_to_an_allowed_image_is_followed(server):
    image_url = server.add("/final.jpg", Route(jpeg_bytes()))
    url = server.redirect("/r1", server.redirect("/r2", image_url, status=301))
    assert isinstance(fetch_one(url), FetchedImage)


def test_redirect_to_file_scheme_and_non_http_urls_are_refused(server):
    url = server.redirect("/to-file", "file:///etc/passwd")
    assert fetch_one(url).reason == "bad_redirect"
    assert fetch_one("ftp://127.0.0.1/x.jpg").reason == "invalid_url"
    with pytest.raises(FetchError):
        download("file:///etc/passwd", FetchConfig(), build_opener())


def test_resize_modes_that_break_boxes_are_refused():
    with pytest.raises(ValueError, match="break the boxes"):
        FetchConfig(resize_mode="center_crop")


def test_many_urls_in_flight_all_come_back(server):
    urls = [server.add(f"/many/{i}.jpg", Route(jpeg_bytes(32 + i, 32))) for i in range(40)]
    fetcher = Fetcher(FetchConfig(allowed_networks=LOOPBACK_ONLY, thread_count=4), max_in_flight=6)
    try:
        results = dict(fetcher.fetch_all(enumerate(urls)))
    finally:
        fetcher.close()
    assert sorted(results) == list(range(40))
    assert [results[i].width for i in range(40)] == [32 + i for i in range(40)]


@pytest.mark.timeout(60)  # a row lost to the exception would leave drain() waiting for ever
def test_decodes_run_on_one_thread_per_core_and_a_surprise_is_that_rows_failure(server, monkeypatch):
    import os
    import threading

    from grit_pipeline.fetch import pool

    threads, decode_one = set(), pool.decode_one

    def recording(data, *args):
        threads.add(threading.current_thread().name)
        if len(data) % 7 == 0:  # some rows: a bug nothing expected
            raise RuntimeError("surprise")
        return decode_one(data, *args)

    monkeypatch.setattr(pool, "decode_one", recording)
    bodies = [jpeg_bytes(40 + i, 30) for i in range(30)]
    urls = [server.add(f"/threads/{i}.jpg", Route(body)) for i, body in enumerate(bodies)]
    fetcher = Fetcher(FetchConfig(allowed_networks=LOOPBACK_ONLY, thread_count=8))
    try:
        results = dict(fetcher.fetch_all(enumerate(urls)))
        for i, body in enumerate(bodies[:3]):
            results.update(fetcher.submit_bytes(len(urls) + i, body))
        results.update(fetcher.drain())
    finally:
        fetcher.close()
    assert sorted(results) == list(range(33))  # every row back, none lost to the exception
    surprised = {i for i, body in enumerate(bodies + bodies[:3]) if len(body) % 7 == 0}
    assert surprised and len(surprised) < 33
    for i, result in results.items():
        if i in surprised:
            assert result.reason == "unexpected_error" and "surprise" in result.error, result
        else:
            assert isinstance(result, FetchedImage) and result.width == 40 + i % 30
    cores = len(os.sched_getaffinity(0))
    assert threads and threads <= {f"grit-decode_{n}" for n in range(cores)}


def test_a_fetcher_dropped_without_close_stops_its_decode_threads():
    import gc
    import threading

    def decoders():
        return {t for t in threading.enumerate() if t.name.startswith("grit-decode")}

    before = decoders()  # other tests' closed Fetchers may still be stopping theirs
    fetcher = Fetcher(FetchConfig(allowed_networks=LOOPBACK_ONLY))
    [(_, result)] = fetcher.submit_bytes("k", jpeg_bytes()) + fetcher.drain()
    assert isinstance(result, FetchedImage)
    own = decoders() - before
    assert own
    fetcher._pool.shutdown()  # only the decode threads are left to the Fetcher's finaliser
    del fetcher, result
    gc.collect()
    for thread in own:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in own)
