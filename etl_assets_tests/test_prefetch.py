"""The background-thread iterator that overlaps CSV parsing and COPY encoding with the main thread's work."""

import threading
import time

import pytest

from etl_assets.warehouse.prefetch import prefetch


def test_items_arrive_in_order_and_the_producer_runs_ahead_of_the_consumer():
    produced = []

    def numbers():
        for i in range(5):
            produced.append(i)
            yield i

    iterator = prefetch(numbers(), depth=2)
    assert next(iterator) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # item 0 taken, 1 and 2 queued ahead
        time.sleep(0.01)
    assert produced == [0, 1, 2]
    assert list(iterator) == [1, 2, 3, 4]


def test_a_producer_error_is_raised_at_the_item_where_it_happened():
    def failing():
        yield 1
        raise ValueError("bad block at line 7")

    iterator = prefetch(failing())
    assert next(iterator) == 1
    with pytest.raises(ValueError, match="line 7"):
        next(iterator)


def test_a_consumer_that_stops_early_stops_and_closes_the_producer():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    iterator = prefetch(endless(), depth=1, name="endless-test")
    assert next(iterator) == 0
    iterator.close()
    assert closed.wait(5), "the producer's generator was not closed"
    assert not any(t.name == "endless-test" for t in threading.enumerate())
