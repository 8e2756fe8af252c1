"""What llmsim prints to the terminal besides tables: the console and the progress bars.

`make_console()` is the stdout console of every command: on a terminal rich wraps lines to its
width; when stdout is a pipe, a file or a test's capture, lines are never wrapped (rich would
otherwise break them at 80 columns in mid-phrase) and tables take their natural width.

Progress bars count what they say and show elapsed time, and an ETA wherever the total is known
in advance: `llmsim run` counts requests ended (`run_progress_columns`, `run_progress_update`),
`sweep` and `compare` count runs, `capacity` counts probes (`count_progress`). Bars are drawn only
on a terminal. Units: counts of requests, runs or probes; times as rich formats them (h:mm:ss).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

NOT_A_TERMINAL_WIDTH = 1000  # columns when stdout is not a terminal: long lines stay whole


def make_console() -> Console:
    """The console for stdout (see the module docstring)."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=NOT_A_TERMINAL_WIDTH, soft_wrap=True)


def _resends(sc) -> bool:
    """Whether a run's ended requests can outnumber its requests: closed-loop clients that re-send."""
    a = sc.workload.arrivals
    return a.kind == "closed-loop" and a.resend_failed and (a.max_attempts is None or a.max_attempts > 1)


def run_progress_columns(sc) -> tuple:
    """The columns of `llmsim run`'s bar for scenario `sc`. `simulate` reports requests ended, every
    attempt counting; with re-sends that can exceed the number of requests, so the bar then counts
    attempts, says so, and shows no total and no ETA (rather than "240/200")."""
    if _resends(sc):
        count = TextColumn("{task.completed:,.0f} attempts ended (re-sends included) for {task.fields[requests]} requests")
        return TextColumn("simulating"), BarColumn(), count, TimeElapsedColumn()
    return (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("requests ended"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


def run_progress_update(sc, bar: Progress, task):
    """The `progress(ended, total)` callback of `simulate` that drives `run_progress_columns`'s bar
    (`task` added with a `requests` field)."""
    if _resends(sc):
        def update(done, total):
            bar.update(task, completed=done, total=None, requests=f"{total:,}" if total else "all")
    else:
        def update(done, total):
            bar.update(task, completed=done, total=total)
    return update


def count_progress(console: Console, what: str, unit: str, eta: bool = True) -> Progress:
    """A bar counting `unit` (runs, probes) with elapsed time and, where the total is known in
    advance (`eta`), the estimated time left; disabled when stdout is not a terminal."""
    columns = [TextColumn(f"{what} [dim]{{task.description}}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
