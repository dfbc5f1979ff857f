"""Images served from 127.0.0.1 by a process of its own, for the benchmarks: one distinct URL per row.

- ``served_jpegs``: ``LoopbackServer`` (threaded) answering ``/img/I.jpg`` with coloured-rectangle
  JPEGs, for builds, where the server's cost is small beside the job's;
- ``served_photos``: a lean asyncio server with prepared answers, for the fetch benchmarks, where
  the server's CPU time (which a remote web server would spend elsewhere) must take as little as
  it can of the cores the fetcher under test uses: ``LoopbackServer`` spends more per request than
  the fetcher does. It serves ``photo_bodies``: photo-like or real-photo JPEGs, sizes in rotation.

Each yields the server's port and stops the process when the block ends.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from grit_pipeline.testing.http_server import LoopbackServer, Route
from grit_pipeline.testing.images import jpeg_bytes, photo_jpeg, photo_mosaic_jpeg

DISTINCT_IMAGES = 48  # photo bodies, served round-robin under distinct paths, sizes in rotation


def serve_jpegs(count: int, size: tuple[int, int], distinct: int, ports, stop) -> None:
    """``/img/0.jpg`` ... ``/img/{count-1}.jpg``: ``distinct`` JPEGs of ``size`` in rotation, until ``stop``."""
    bodies = [jpeg_bytes(*size, (i * 5 % 255, 90, 200)) for i in range(distinct)]
    with LoopbackServer() as server:
        for i in range(count):
            server.add(f"/img/{i}.jpg", Route(bodies[i % len(bodies)]))
        ports.put(server.port)
        stop.wait()


@contextmanager
def _in_process(target, args, start_timeout_s: float) -> Iterator[int]:
    ports, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=target, args=(*args, ports, stop), daemon=True)
    server.start()
    try:
        yield ports.get(timeout=start_timeout_s)
    finally:
        stop.set()
        server.join(timeout=10)


def served_jpegs(
    count: int, size: tuple[int, int] = (320, 240), distinct: int = 50
) -> AbstractContextManager[int]:
    """``with served_jpegs(rows) as port:`` ``http://127.0.0.1:PORT/img/I.jpg`` for I below ``count``."""
    return _in_process(serve_jpegs, (count, size, distinct), 120)


def photo_bodies(
    sizes: list[tuple[int, int]], content: str = "synthetic"
) -> list[tuple[tuple[int, int], bytes]]:
    """``DISTINCT_IMAGES`` (size, JPEG) pairs, sizes in rotation: ``synthetic`` (``photo_jpeg``,
    quality 85) or ``photos`` (the bundled photos tiled into each size, ``photo_mosaic_jpeg``, quality 92)."""
    picked = [sizes[i % len(sizes)] for i in range(DISTINCT_IMAGES)]
    make = photo_jpeg if content == "synthetic" else photo_mosaic_jpeg
    return [(size, make(*size, seed=i)) for i, size in enumerate(picked)]


def serve_photos(count: int, sizes: list[tuple[int, int]], content: str, ports, stop) -> None:
    """``/img/I.jpg`` for I below ``count``: ``photo_bodies`` in rotation, prepared answers, until ``stop``."""
    served = [data for _, data in photo_bodies(sizes, content)]
    heads = [b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n" for _ in served]
    heads = [head + f"Content-Length: {len(body)}\r\n\r\n".encode() for head, body in zip(heads, served)]
    routes = {f"/img/{i}.jpg".encode(): i % len(served) for i in range(count)}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            index = routes.get(request.split(b" ", 2)[1])
            if index is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                writer.writelines((heads[index], served[index]))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up (its timeout); nothing to answer
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=1024)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        server.close()

    asyncio.run(main())


def served_photos(
    count: int, sizes: list[tuple[int, int]], content: str = "synthetic", start_timeout_s: float = 300
) -> AbstractContextManager[int]:
    """``with served_photos(urls, sizes) as port:`` the lean server of ``photo_bodies``, on PORT."""
    return _in_process(serve_photos, (count, sizes, content), start_timeout_s)
