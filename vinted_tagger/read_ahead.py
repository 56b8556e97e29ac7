"""Ordered read-ahead: the items of several slow readings (Parquet parts, files), in order, with a few
readings under way at once in threads and a bounded number of items held in memory."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor


def read_ahead(readings: list, readers: int, depth: int = 2) -> Iterator:
    """The items of each ``readings[i]()`` in order, ``readers`` of them read at once in threads: reading i
    starts only once the caller has reached reading i - ``readers``, and runs at most ``depth`` items ahead
    of the caller, so memory holds about (``readers`` + 1) x ``depth`` items however fast the readers are."""
    stop = threading.Event()
    end = object()
    reached = threading.Condition()
    position = [0]  # the reading the caller is taking items from

    def put(box: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def fill(index: int, reading, box: queue.Queue) -> None:
        with reached:
            while position[0] < index - readers and not stop.is_set():
                reached.wait(0.1)
        if stop.is_set():  # the caller stopped early: this reading never starts
            return
        try:
            for item in reading():
                if not put(box, item):
                    return
            put(box, end)
        except BaseException as error:  # handed to the caller, raised there
            put(box, error)

    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="read-ahead")
    boxes = [queue.Queue(maxsize=depth) for _ in readings]
    try:
        for index, (reading, box) in enumerate(zip(readings, boxes)):
            pool.submit(fill, index, reading, box)  # started in this order: the caller's reading is always under way
        for index, box in enumerate(boxes):
            with reached:
                position[0] = index
                reached.notify_all()
            while (item := box.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:  # also when the caller stops early: readers stop, readings not started never are
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
