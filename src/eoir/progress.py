"""Progress of long work: one helper for optimisation steps, pairs and training steps.

On a terminal it draws one line that it rewrites (``label 40/150 [#####.....] 3.1 it/s ETA
00:35``); when the output is not a terminal (a log file, CI) it writes a plain line now and then
(every ``every`` seconds, and at the end); disabled, it writes nothing. From Python, ``progress``
arguments take ``True`` (this display), ``False`` (nothing) or a callable
``progress(done, total)`` called after every unit of work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "ProgressLike", "progress_for"]

ProgressLike = bool | Callable[[int, int], None]


class Progress:
    """A counted job's progress (see the module docstring).

    Parameters
    ----------
    total : int
        Units of work in all (steps, pairs).
    label : str
        What the units are, shown first (``"optimisation"``, ``"pairs"``).
    enabled : bool
        Write anything at all.
    stream : file, optional
        Where to write (default: standard error, so that results on standard output stay
        clean).
    every : float
        Seconds between plain lines when ``stream`` is not a terminal (0: every update).
    callback : callable, optional
        ``callback(done, total)`` after every update, written or not.
    start : int
        Units already done (a resumed job): the rate counts only the new ones.
    echo : callable, optional
        Where plain lines go instead of ``stream`` (a logger, say).
    """

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool = True,
        stream: TextIO | None = None,
        every: float = 10.0,
        callback: Callable[[int, int], None] | None = None,
        start: int = 0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.total, self.label, self.enabled = max(int(total), 0), label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.callback = every, callback
        self.start = self.done = start
        self.began = self.last = time.perf_counter()
        self.echo = echo
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open = False

    def update(self, done: int | None = None, note: str = "") -> None:
        """Record progress: ``done`` units in all (default: one more), with a short ``note``
        (a loss, a pair's name) shown after the count."""
        self.done = self.done + 1 if done is None else int(done)
        if self.callback is not None:
            self.callback(self.done, self.total)
        if not self.enabled:
            return
        now = time.perf_counter()
        final = self.done >= self.total
        if self.tty:
            self.stream.write("\r" + self.line(note, bar=True) + ("\n" if final else ""))
            self.stream.flush()
            self._open = not final
        elif final or self.every <= 0 or now - self.last >= self.every:
            if self.echo is not None:
                self.echo(self.line(note))
            else:
                self.stream.write(self.line(note) + "\n")
                self.stream.flush()
            self.last = now

    def line(self, note: str = "", bar: bool = False) -> str:
        """The progress line: count, optional bar, note, rate and time left."""
        elapsed = max(time.perf_counter() - self.began, 1e-9)
        rate = (self.done - self.start) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        text = f"{self.label} {self.done}/{self.total}"
        if bar and self.total:
            filled = int(20 * self.done / self.total)
            text += f" [{'#' * filled}{'.' * (20 - filled)}]"
        if note:
            text += f" {note}"
        eta = f"{int(left // 60):02d}:{int(left % 60):02d}" if left == left else "--:--"
        return f"{text} {rate:.2f} it/s ETA {eta}"

    def close(self) -> None:
        """End an unfinished line on a terminal (an interrupted job)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_for(progress: ProgressLike, total: int, label: str, **options) -> Progress:
    """A :class:`Progress` from a ``progress`` argument: True, False or a callback."""
    if callable(progress) and not isinstance(progress, bool):
        return Progress(total, label, enabled=False, callback=progress, **options)
    return Progress(total, label, enabled=bool(progress), **options)
