"""Progress of long work: a tqdm bar on a terminal, plain timestamped lines in a log.

tqdm disables itself (or writes carriage returns that pile up into one giant line) when its output is a file, so a
job under Snakemake or SLURM would show no sign of life for hours. `Progress` draws a bar only when the stream is a
terminal; otherwise it writes one plain line (time, what, done/total, the caller's fields such as losses, rate, ETA)
every `every_s` seconds, and always after the last update. Epoch loops pass `every_s=0`: one line per epoch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any, TypeVar

LINE_INTERVAL_S = 60.0  # a batch-level line at most this often in a log (epoch loops log every epoch)
T = TypeVar("T")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """'1:02:03' (hours unbounded), '?' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_count(value: float, scale: bool) -> str:
    """An integer count, or with k/M/G/T prefixes when `scale` (bytes)."""
    if not scale:
        return f"{value:g}" if value != int(value) else str(int(value))
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            return f"{value:.1f}{prefix}" if prefix else f"{value:.0f}"
        value /= 1000
    raise AssertionError("unreachable")


def format_value(value: Any) -> str:
    """A field value: floats with 4 significant digits, others as they print."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Count work done toward `total` and show it: a bar on a terminal, else a line per `every_s` seconds."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "it",
        initial: int = 0,
        every_s: float = LINE_INTERVAL_S,
        final_line: bool = True,
        unit_scale: bool = False,
        stream: IO[str] | None = None,
    ):
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.final_line, self.unit_scale = final_line, unit_scale
        self.stream = stream if stream is not None else sys.stderr
        self.count = self.start_count = self.logged_count = initial
        self.fields: dict[str, Any] = {}
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=unit_scale,
                file=self.stream,
                dynamic_ncols=True,
                leave=final_line,
            )

    def update(self, n: int = 1, **fields: Any) -> None:
        """Add `n` units done; `fields` (losses, lr, ...) are shown with the count until replaced."""
        self.count += n
        if fields:
            self.fields = fields
        if self.bar is not None:
            if fields:
                self.bar.set_postfix({k: format_value(v) for k, v in fields.items()}, refresh=False)
            self.bar.update(n)
            return
        if time.monotonic() - self.last_line >= self.every_s:
            self.write_line()

    def line(self) -> str:
        """The plain progress line: time, what, unit done/total (percent) | fields, rate, elapsed, ETA."""
        elapsed = time.monotonic() - self.started
        done = self.count - self.start_count
        rate = done / elapsed if elapsed > 0 else float("nan")
        where = f"{self.unit} {format_count(self.count, self.unit_scale)}"
        eta = None
        if self.total:
            where += f"/{format_count(self.total, self.unit_scale)} ({100 * self.count / self.total:.0f}%)"
            eta = format_duration((self.total - self.count) / rate if rate > 0 else float("nan"))
        parts = [f"{name} {format_value(value)}" for name, value in self.fields.items()]
        if rate >= 1:
            parts.append(f"{format_count(rate, self.unit_scale) if self.unit_scale else f'{rate:.3g}'} {self.unit}/s")
        elif rate > 0:
            parts.append(f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {format_duration(elapsed)}" + (f", ETA {eta}" if eta is not None else ""))
        return f"{datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {self.desc}: {where} | " + ", ".join(parts)

    def write_line(self) -> None:
        """Write the plain line now (flushed: a log follows it live)."""
        print(self.line(), file=self.stream, flush=True)
        self.last_line, self.logged_count = time.monotonic(), self.count

    def close(self, finished: bool = True) -> None:
        """End the display: close the bar, or write the last line if it was not written yet (not after a failure:
        the error follows)."""
        if self.bar is not None:
            self.bar.close()
        elif finished and self.final_line and self.count != self.logged_count:
            self.write_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        self.close(finished=exc_type is None)


def progress(items: Iterable[T], desc: str, total: int | None = None, **options: Any) -> Iterator[T]:
    """Yield `items`, counting each one on a `Progress` (options as for Progress; total defaults to len(items))."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, **options) as shown:
        for item in items:
            yield item
            shown.update()
