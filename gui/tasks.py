"""Work off the Tk thread: lanes of background jobs whose results come back on the Tk thread.

Tk is not thread-safe, so worker threads never touch a widget. A job's outcome (and anything a worker
`post`s, such as progress) goes into a queue that the Tk thread drains every `POLL_MS` through
`after`. The window therefore stays responsive while images decode and models run.
"""

from __future__ import annotations

import queue
import threading
import time
import tkinter as tk
from collections.abc import Callable
from typing import Any

POLL_MS = 20


class _Lane:
    """One daemon thread running jobs in order. Daemon, so closing the window never waits long for a
    job (a big batch) to finish; `Tasks.close` gives running jobs a moment to end first."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"gui-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._stopped = True  # queued jobs are dropped, not run
        self._jobs.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None and not self._stopped:
            job()


class Tasks:
    """Named lanes, one thread each: jobs in a lane run in the order they were submitted, so a model
    load submitted before an image is always finished before that image is classified."""

    def __init__(self, root: tk.Misc, on_error: Callable[[BaseException], None]):
        self.root = root
        self.on_error = on_error
        self._inbox: queue.SimpleQueue[tuple[Callable[..., Any] | None, tuple, bool]] = queue.SimpleQueue()
        self._lanes: dict[str, _Lane] = {}
        self._pending = 0  # jobs submitted whose outcome has not been handled yet; Tk thread only
        self._closed = False
        self._after = root.after(POLL_MS, self._poll)

    # -- called on the Tk thread -----------------------------------------------------------------

    def submit(
        self,
        lane: str,
        fn: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Run fn(*args) in `lane`; then on_done(result) or on_error(exception) on the Tk thread."""
        if self._closed:
            return
        if lane not in self._lanes:
            self._lanes[lane] = _Lane(lane)
        fail = on_error or self.on_error

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: BLE001 - every failure is shown, none kills the lane
                self._inbox.put((fail, (e,), True))
            else:
                self._inbox.put((on_done, (result,), True))

        self._pending += 1
        self._lanes[lane].submit(job)

    @property
    def busy(self) -> bool:
        return self._pending > 0 or not self._inbox.empty()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Pump Tk events until every job and posted callback has been handled (for tests and
        scripted use: a user never needs this). False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            self.root.update()
            if not self.busy:
                return True
            time.sleep(0.005)
        return False

    def close(self, grace: float = 2.0) -> None:
        """Stop every lane and wait up to `grace` seconds for running jobs: a process that exits while a
        worker is inside onnxruntime can abort in C++ teardown ("terminate called ...")."""
        self._closed = True
        try:
            self.root.after_cancel(self._after)
        except tk.TclError:
            pass
        for lane in self._lanes.values():
            # A running job finishes in its daemon thread; its outcome is ignored because nobody
            # drains the inbox any more.
            lane.stop()
        deadline = time.monotonic() + grace
        for lane in self._lanes.values():
            lane.join(max(0.0, deadline - time.monotonic()))

    def drain(self) -> None:
        while True:
            try:
                fn, args, counted = self._inbox.get_nowait()
            except queue.Empty:
                return
            if counted:
                self._pending -= 1
            if fn is None or self._closed:
                continue
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a failing handler must not stop the polling
                self.on_error(e)

    def _poll(self) -> None:
        try:
            self.drain()
        finally:
            if not self._closed:
                self._after = self.root.after(POLL_MS, self._poll)

    # -- called from any thread ------------------------------------------------------------------

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the Tk thread soon (progress reports, partial results)."""
        self._inbox.put((fn, args, False))
