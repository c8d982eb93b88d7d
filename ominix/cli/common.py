"""Pieces every command module shares: the typer app, one-line errors, tables, the pull progress bar."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ominix",
    help="Run open models locally on MLX and serve them behind an OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(error: Exception, code: int = 1):
    """One clear line on stderr, no traceback."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code)


def store_guard():
    """Context manager turning catalog/store errors into `fail`."""
    import contextlib

    from ominix.hub.store import StoreError
    from ominix.registry import RegistryError

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (RegistryError, StoreError) as error:
            fail(error)

    return guard()


def human_size(n: int | None) -> str:
    """A size in a table: '-' when unknown or nothing."""
    from ominix.hub.names import human_bytes

    return human_bytes(n) if n else "-"


def verified_text(value) -> str:
    return {True: "yes", False: "FAILED", None: "-"}[value]


class Rows:
    """A table for the terminal: on a tty, aligned columns that fit its width (one line per row, the
    last column cut with '…' rather than wrapped mid-word); piped, tab-separated whole rows with no
    padding, for grep and cut."""

    def __init__(self, *columns: str):
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add_row(self, *cells) -> None:
        self.rows.append(["" if c is None else str(c) for c in cells])

    def render(self, width: int | None) -> list[str]:
        table = [self.columns] + self.rows
        if width is None:
            return ["\t".join(row).rstrip() for row in table]
        widths = [max(len(row[i]) for row in table) for i in range(len(self.columns) - 1)]
        lines = []
        for row in table:
            head = "".join(cell.ljust(w + 2) for cell, w in zip(row[:-1], widths))
            line = (head + row[-1]).rstrip()
            lines.append(line if len(line) <= width else line[: width - 1] + "…")
        return lines

    def print(self) -> None:
        import shutil
        import sys

        width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else None
        for line in self.render(width):
            typer.echo(line)


def new_table(*columns: str) -> Rows:
    return Rows(*columns)


def print_table(table: Rows) -> None:
    table.print()


def json_lines():
    """An event handler printing one JSON object per line; events come from several threads."""
    import json
    import sys
    import threading

    lock = threading.Lock()

    def print_event(event: dict) -> None:
        with lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    return print_event



class PullProgress:
    """Renders pull events as a rich progress bar (bytes, speed, time left) on stderr. The bar starts
    with the plan, so errors raised before it leave a clean stderr."""

    def __enter__(self):
        self.bar = None
        self.files_done = 0
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def on_event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "plan":
            self._start(event)
        elif self.bar is None:
            return
        elif kind == "progress":
            self.bar.update(self.task, completed=event["bytes"])
        elif kind == "file_done":
            self.files_done += 1
            self.bar.update(self.task, description=self._label())
        elif kind == "done":
            self.bar.update(self.task, completed=event.get("total_bytes") or 0)

    def _start(self, event: dict) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.name, self.files = event["id"], len(event["files"])
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        self.task = self.bar.add_task(self._label(), total=event["total_bytes"] or None,
                                      completed=event["total_bytes"] - event["remaining_bytes"])

    def _label(self) -> str:
        return f"{self.name} [{self.files_done}/{self.files} files]"



def local_model(name: str, verb: str):
    """The directory of a model for `ominix VERB` (pulled first when it is a catalog id that is
    not installed). A model of a kind the verb does not serve is refused before any download,
    with the verb or route that does serve it."""
    from pathlib import Path

    from ominix import kinds
    from ominix.hub import store
    from ominix.hub.download import ensure_local
    from ominix.registry import RegistryError

    try:
        found = store.locate(name)
    except (RegistryError, store.StoreError):
        found = None  # a repo id or URL to pull: pull explains what it cannot find
    entry = found.entry if found else None
    if found is not None and found.path is None and found.kind == "folder":
        raise FileNotFoundError(f"{name}: no such directory")
    if entry is not None:
        _check_kind(name, kinds.detect(None, entry), verb)
    if found is not None and found.path is not None:
        path = Path(found.path)
    else:
        with PullProgress() as progress:
            path = ensure_local(name, on_event=progress.on_event)
    _check_kind(name, kinds.detect(path, entry), verb)
    return path


def _check_kind(name: str, kind, verb: str) -> None:
    from ominix import kinds

    if verb not in kind.verbs:
        raise kinds.mismatch(name, kind, f"`ominix {verb}`")
