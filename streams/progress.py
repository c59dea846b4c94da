"""Progress of long commands (``baseline``, ``simulate --count``) on stderr, for people only.

Shown only when stderr is a terminal: scripts and tests that read stdout or stderr see
exactly what they saw before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextmanager
def progress(description: str, total: int | None = None, console: Console | None = None) -> Iterator[
        Callable[[int], None]]:  # fmt: skip
    """A function that takes the count done so far, drawing a bar (or, without ``total``, a
    running count) on stderr while the block runs; a no-op when stderr is not a terminal."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield lambda done: None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"),
               *([BarColumn(), MofNCompleteColumn()] if total else [TextColumn("{task.completed:,.0f}")]),
               TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
