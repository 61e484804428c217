"""Progress: what a long command has done so far (objects or files, rows, the rate, the time elapsed)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time

from etl_assets.cli.common import dg


class Progress:
    """What a long command has done so far: steps (objects or files) and rows, the rate, the time elapsed.

    Where stdout and stderr are both a terminal: one live line at the bottom of the screen, redrawn
    twice a second (anything else the command prints first clears it). Otherwise: a plain line per
    step on stderr. Either way, a last line with the totals when the command ends.

    A run's steps are followed through its events (`listen`, in the process that executes the run:
    this one, or the child SupervisedRuns forks): each materialization (with its `rows_read`) and
    step failure is written to a pipe this process reads, so the command shows the steps of a run as
    they finish. `count="runs"`: a step is a whole run (`settle(label, ok)`), the events only add rows;
    `count="started"`: steps of this process (`started`), each done when the next starts.
    """

    TICK = 0.25  # seconds between reads of the pipe
    REDRAW = 0.5  # seconds between redraws of the live line

    def __init__(self, command: str, unit: str = "objects", total: int = 0, count: str = "events",
                 live: bool | None = None, follow_output: bool = False):
        self.command, self.unit, self.total, self.count = command, unit, total, count
        self.live = (sys.stdout.isatty() and sys.stderr.isatty()) if live is None else live
        self.follow_output = follow_output  # the live line shows the command's last line of output
        self.done = self.rows = 0
        self.current = ""
        self._t0 = time.monotonic()
        self.lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._label_rows: dict[str, int] = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # a full pipe drops an event; it never blocks a run
        self._pending = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streams: tuple | None = None
        self._shown = False  # the live line is on the screen
        self._line_start = True  # the command's own output ends with a newline
        self._drawn_at = 0.0

    # -- set-up

    def __enter__(self) -> Progress:
        global _ACTIVE
        _ACTIVE = self
        if self.live:
            self._streams = (sys.stdout, sys.stderr)
            self._out = sys.stderr
            sys.stdout, sys.stderr = _ClearsProgress(sys.stdout, self), _ClearsProgress(sys.stderr, self)
        else:
            self._out = sys.stderr
        self._thread = threading.Thread(target=self._tick, name="etl-assets progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind, *exc) -> None:
        global _ACTIVE
        if kind is None and self.count == "started":  # the last step started has ended
            self.done = self.total
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.lock:
            self._take_events()
            self._clear()
            if self._streams is not None:
                sys.stdout, sys.stderr = self._streams
            if self.done or self.rows:
                self._say(self._summary(final=True))
        _ACTIVE = None
        os.close(self._read)
        os.close(self._write)

    # -- what happens (any thread; `listen`'s callback in the run's process)

    def listen(self, instance: dg.DagsterInstance, run_id: str, label: str) -> None:
        """Follow one run's events as they are stored. `DagsterInstance.add_event_listener` calls back in
        the process that stores the event; without it (another Dagster) there is no per-step progress,
        and the command still prints its line per run."""
        write = self._write

        def forward(entry) -> None:
            event = entry.dagster_event
            if event is None:
                return
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.step_materialization_data.materialization
                rows = materialization.metadata.get("rows_read")
                message = {"label": label, "what": "done", "name": materialization.asset_key.to_user_string(),
                           "rows": rows.value if isinstance(getattr(rows, "value", None), int) else 0}
            elif event.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_START):
                what = "failed" if event.event_type == dg.DagsterEventType.STEP_FAILURE else "start"
                message = {"label": label, "what": what, "name": (event.step_key or "").replace("__", "/")}
            else:
                return
            try:
                os.write(write, (json.dumps(message) + "\n").encode())
            except OSError:  # a full pipe (a lagging reader) or a closed one: progress is a bonus
                pass

        add_listener = getattr(instance, "add_event_listener", None)
        if add_listener is not None:
            add_listener(run_id, forward)

    def started(self, name: str, number: int, total: int) -> None:
        """A step of this process begins (catalog refresh: object `number` of `total`)."""
        with self.lock:
            self.total, self.done, self.current = total, number - 1, name
            if not self.live:
                self._say(f"{self.command}: {name} ({number} of {total} {self.unit}, "
                          f"{_clock(time.monotonic() - self._t0)} elapsed)")
            self._draw()

    def settle(self, label: str | None = None, ok: bool | None = None) -> None:
        """Take in every event written so far (a run has ended: all of them); with `label`, one more
        run has ended (count="runs")."""
        with self.lock:
            self._take_events()
            if label is not None and self.count == "runs":
                self.done += 1
                if not self.live:
                    rows = self._label_rows.get(label, 0)
                    self._say(f"{self.command}: {label}: {f'{rows:,} rows' if ok else 'FAILED'} ({self._summary()})")
            self._draw()

    # -- the reading thread

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK):
            with self.lock:
                self._take_events()
                if time.monotonic() - self._drawn_at >= self.REDRAW:
                    self._draw()

    def _take_events(self) -> None:
        while True:
            try:
                chunk = os.read(self._read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._event(event)

    def _event(self, event: dict) -> None:
        label, name, what = event["label"], event["name"], event["what"]
        if what == "start":  # a file's run has one step: the file says it all
            self.current = label if self.count == "runs" else f"{label} {name}"
            return
        if (label, name) in self._seen:
            return
        self._seen.add((label, name))
        self.rows += event.get("rows") or 0
        self._label_rows[label] = self._label_rows.get(label, 0) + (event.get("rows") or 0)
        if self.count == "events":
            self.done += 1
        if not self.live and self.count == "events":
            outcome = f"{event['rows']:,} rows" if what == "done" else "FAILED"
            self._say(f"{self.command}: {label}: {name}: {outcome} ({self._summary()})")

    # -- showing it (with the lock held)

    def _summary(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self._t0
        unit = self.unit[:-1] if final and self.done == 1 and self.unit.endswith("s") else self.unit
        parts = [f"{self.done}/{self.total} {unit}" if self.total and not final else f"{self.done} {unit}"]
        if self.rows:
            parts.append(f"{self.rows:,} rows")
            if elapsed >= 1:
                parts.append(f"{self.rows / elapsed:,.0f} rows/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        return ", ".join(parts) if not final else f"{self.command}: " + ", ".join(parts)

    def _say(self, line: str) -> None:
        self._clear()
        print(line, file=self._out, flush=True)

    def _draw(self) -> None:
        if not self.live or not self._line_start:
            return
        self._drawn_at = time.monotonic()
        width = shutil.get_terminal_size((100, 24)).columns - 1
        if self.follow_output:
            line = f"{self.command}: {self.current} ({_clock(time.monotonic() - self._t0)} elapsed)"
        else:
            line = f"{self.command}: {self.current + ': ' if self.current else ''}{self._summary()}"
        self._out.write("\r\x1b[K" + line[:width])
        self._out.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._shown = False

    def _wrote(self, text: str) -> None:
        self._line_start = text.endswith("\n")
        if self.follow_output:
            last = [line for line in text.splitlines() if line.strip()]
            if last:
                self.current = last[-1].strip()


class _ClearsProgress:
    """sys.stdout or sys.stderr while a live progress line is shown: what the command prints clears the
    line first, so output never lands on it (the next redraw puts it back below)."""

    def __init__(self, stream, progress: Progress):
        self._stream, self._progress = stream, progress

    def write(self, text: str) -> int:
        if not text:
            return 0
        with self._progress.lock:
            if self._progress._line_start:
                self._progress._clear()
            written = self._stream.write(text)
            self._stream.flush()
            self._progress._wrote(text)
        return written

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


_ACTIVE: Progress | None = None


def _before_fork() -> None:  # a forked run never inherits the lock held by the progress thread
    if _ACTIVE is not None:
        _ACTIVE.lock.acquire()


def _after_fork() -> None:
    if _ACTIVE is not None:
        _ACTIVE.lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"

