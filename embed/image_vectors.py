"""Images -> vectors, the loop every engine runs: decode a few images ahead in threads, batch, encode.

Reader threads read and decode the next images (Pillow and zlib release the GIL) while the calling thread
runs the encoder (ONNX Runtime or OpenVINO, which release it too) on whole batches. A bad image becomes its
reason, never an exception, and the images keep their order.
"""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from embed.images import ImageError, load_pixels
from embed.runtime import BATCH_SIZE
from embed.sources import ImageRef

if TYPE_CHECKING:
    from embed.runtime import Encoder


def read_pixels(ref: ImageRef, size: int, decoder: str | None = None) -> np.ndarray | str:
    """The encoder input of one image, or why it cannot be read."""
    try:
        return load_pixels(ref.read(), size, decoder=decoder)
    except ImageError as error:
        return str(error)
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as error:  # unreadable file or bad zip member
        return f"cannot read: {error}"


def decoded(refs: list[ImageRef], size: int, workers: int, ahead: int, decoder: str | None = None,
            pool: ThreadPoolExecutor | None = None) -> Iterator[tuple[ImageRef, np.ndarray | str]]:
    """(ref, pixels or error string), in order, decoding up to ``ahead`` images in advance, in ``pool`` (a
    caller's long-lived one) or in ``workers`` threads of a pool made for this call."""
    with contextlib.nullcontext(pool) if pool else ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        queue: deque[tuple[ImageRef, Future]] = deque()
        items = iter(refs)
        for ref in items:
            queue.append((ref, pool.submit(read_pixels, ref, size, decoder)))
            if len(queue) >= ahead:
                break
        while queue:
            ref, future = queue.popleft()
            next_ref = next(items, None)
            if next_ref is not None:
                queue.append((next_ref, pool.submit(read_pixels, next_ref, size, decoder)))
            yield ref, future.result()


def image_vectors(encoder: Encoder, refs: list[ImageRef], workers: int, ahead: int, batch_size: int = BATCH_SIZE,
                  pool: ThreadPoolExecutor | None = None) -> Iterator[tuple[list[ImageRef], np.ndarray | str]]:
    """``(refs, vectors)`` for each batch of up to ``batch_size`` decoded images once encoded, and
    ``([ref], reason)`` for each image that cannot be decoded, as soon as it is known; every ref once.
    ``workers``, ``ahead`` and ``pool`` are those of ``decoded``."""
    batch: list[ImageRef] = []
    pixels: list[np.ndarray] = []
    for ref, result in decoded(refs, encoder.spec.input_size, workers, ahead, encoder.decoder, pool):
        if isinstance(result, str):
            yield [ref], result
            continue
        batch.append(ref)
        pixels.append(result)
        if len(pixels) >= batch_size:
            yield batch, encoder.encode(np.stack(pixels))
            batch, pixels = [], []
    if pixels:
        yield batch, encoder.encode(np.stack(pixels))
