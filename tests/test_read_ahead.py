"""The ordered read-ahead (vinted_tagger/read_ahead.py): order kept, errors raised at the caller, readers a
bounded distance ahead, nothing started or left running once the caller stops."""

from __future__ import annotations

import threading
import time

import pytest

from vinted_tagger.read_ahead import read_ahead


def test_read_ahead_raises_a_readers_error_and_stops_early() -> None:
    def broken():
        yield -1
        raise OSError("part vanished")

    readings = [lambda i=i: iter(range(10 * i, 10 * i + 5)) for i in range(4)]
    with pytest.raises(OSError, match="part vanished"):
        list(read_ahead([readings[0], broken, readings[1]], readers=2))
    ahead = read_ahead(readings, readers=2)
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()  # the readers stop and are joined: nothing hangs, nothing is left running
    assert not [t for t in threading.enumerate() if t.name.startswith("read-ahead")]


def one_item_parts(n: int) -> tuple[list, list[int]]:
    """``n`` readings of one item each, and the list of those started so far."""
    started: list[int] = []

    def reading(i: int):
        started.append(i)
        yield i

    return [lambda i=i: reading(i) for i in range(n)], started


def test_read_ahead_stays_a_few_parts_ahead_of_a_slow_caller() -> None:
    """Many one-item parts (what a cache of small parts is): the readers must not run through them all."""
    readings, started = one_item_parts(50)
    ahead = read_ahead(readings, readers=2)
    assert next(ahead) == 0
    time.sleep(0.5)  # ample time for free-running readers to start every part
    assert max(started) <= 2  # the caller's part and two ahead
    assert list(ahead) == list(range(1, 50))


def test_read_ahead_closed_early_starts_no_waiting_part() -> None:
    readings, started = one_item_parts(50)
    ahead = read_ahead(readings, readers=2)
    assert next(ahead) == 0
    time.sleep(0.3)  # the readers have read parts 1 and 2 and wait at parts 3 and 4
    ahead.close()
    assert sorted(started) == [0, 1, 2]
