"""Run an iterator one step ahead in a background thread.

Arrow and numpy release the GIL while they parse, encode and compress, so on a
machine with two cores the next CSV chunk can be parsed (or the next COPY batch
encoded) while the current one is transformed (or sent). Memory stays bounded:
at most `depth` items wait in the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterable[T], depth: int = 1, name: str = "prefetch") -> Iterator[T]:
    """Yield `items` in order while a thread produces the next `depth` of them.

    An exception in the producer is raised here, at the item where it happened; when the
    consumer stops early (break, an exception, garbage collection), the producer stops too.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:
            put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True, name=name)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
