"""Where a Salesforce load's staging time goes, measured from outside the pipeline.

Inside `with StageTimes() as stages:` the functions the staging calls are wrapped (and put back at
the end): the wait for the CSV reader's next chunk is "read", `transform_chunk` is "transform" less
the Pandera validation in it, "validate"; `stages.watch(batch)` times the batch's row stream as a whole,
and what the other stages leave of it is "stage" (garbage collections and, streamed, the wait for the
warehouse to take the chunk). Wall seconds and the CPU seconds of the thread that ran
each stage are kept apart: a loaded machine changes the second much less.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimes:
    def __init__(self):
        self._wall: dict[str, float] = {}
        self._cpu: dict[str, float] = {}
        self._lock = threading.Lock()
        self._saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> StageTimes:
        from etl_assets.salesforce import staging, transform

        for module, name, wrap in ((staging, "prefetch", self._reads), (staging, "transform_chunk", self._transforms),
                                   (transform, "validation", self._validations)):
            original = getattr(module, name)
            self._saved.append((module, name, original))
            setattr(module, name, wrap(original))
        return self

    def __exit__(self, *exc) -> None:
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()

    def clear(self) -> None:
        with self._lock:
            self._wall.clear()
            self._cpu.clear()

    def seconds(self) -> dict[str, float]:
        """Wall seconds per stage, of every batch watched since the last `clear`."""
        return self._split(self._wall)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per stage of the thread that ran it."""
        return self._split(self._cpu)

    def watch(self, batch) -> None:
        """Time `batch`'s row stream (each read of it, if it is read again) from its first row to its last."""
        read = batch.source.read

        def timed(staged, limits) -> Iterator:
            with self._clock("total"):
                yield from read(staged, limits)

        batch.source = dataclasses.replace(batch.source, read=timed)

    def _split(self, measured: dict[str, float]) -> dict[str, float]:
        with self._lock:
            got = dict(measured)
        if "total" not in got:
            return {}
        read, validate = got.get("read", 0.0), got.get("validate", 0.0)
        transform = got.get("transform", 0.0)  # validate included
        return {"read": read, "transform": transform - validate, "validate": validate,
                "stage": max(got["total"] - read - transform, 0.0)}

    @contextmanager
    def _clock(self, stage: str):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            with self._lock:
                self._wall[stage] = self._wall.get(stage, 0.0) + wall
                self._cpu[stage] = self._cpu.get(stage, 0.0) + cpu

    def _reads(self, prefetch):
        def timed(items, *args, **kwargs) -> Iterator:
            chunks = prefetch(items, *args, **kwargs)
            try:
                while True:
                    with self._clock("read"):
                        chunk = next(chunks, _END)
                    if chunk is _END:
                        return
                    yield chunk
            finally:
                chunks.close()

        return timed

    def _transforms(self, transform_chunk):
        def timed(*args, **kwargs):
            with self._clock("transform"):
                return transform_chunk(*args, **kwargs)

        return timed

    def _validations(self, validation):
        times = self

        class Timed:
            def __init__(self, checks):
                self.checks = checks

            def failures(self, frame):
                with times._clock("validate"):
                    return self.checks.failures(frame)

        def timed(*args, **kwargs):
            with self._clock("validate"):
                checks = validation(*args, **kwargs)
            return Timed(checks)

        return timed


_END = object()
