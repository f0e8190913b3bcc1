"""Ctrl-C and SIGTERM in a headless run: stop at the next step boundary and keep the work.

The first SIGINT/SIGTERM only sets a flag that the training loop polls before every micro-batch
(`Callbacks.should_stop`), so the loop stops within one step and writes a checkpoint, exactly as
ComfyUI's Cancel does. A second signal means "now": the default behaviour comes back and a
KeyboardInterrupt is raised at once. A cloud VM being stopped sends SIGTERM first, which is why
both signals are handled the same way. A second signal within REPEAT_S of the first is the same
request arriving twice (Ctrl-C reaches every process of the group, and accelerate's launcher then
also sends SIGTERM to its workers), not a person pressing again.
"""
from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger("lora_studio.interrupt")

REPEAT_S = 1.0
SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class StopOnSignal:
    """Context manager: while active, SIGINT/SIGTERM ask the run to stop instead of killing it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first = 0.0
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention for "ended by signal N": 128 + N (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            if time.monotonic() - self._first < REPEAT_S:
                return  # the same request, delivered twice
            self._restore()  # a second request: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.signum, self._first = signum, time.monotonic()
        log.warning("%s received: stopping after the current step and writing a checkpoint "
                    "(press Ctrl-C again to stop at once, without one)", signal.Signals(signum).name)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def __enter__(self) -> "StopOnSignal":
        # Handlers can only be installed from the main thread; elsewhere (a server thread) the
        # caller's own cancel mechanism applies and this is a no-op.
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
