"""Where the library's log records go: the console (stderr) for tools, and a run's log file.

Library modules log with `logging.getLogger(__name__)` and configure nothing; a program that
wants to see those records calls `setup_logging` once (every tool does, through
detection.config.cli.configure_logging), and the training and evaluation runs add
`log_to_file(output_dir / "log.txt")`. Only the "detection" and "backbones" loggers are
configured: records still propagate to the root logger, so pytest's caplog and an
application's own root handlers see them as before (an application that configures the root
logger with a console handler should not also call setup_logging, or it gets each line twice).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

__all__ = [
    "LOGGERS",
    "console_configured",
    "log_to_file",
    "remove_log_file",
    "reset_logging",
    "setup_logging",
]

LOGGERS = ("detection", "backbones")
CONSOLE_PREFIX = "[resdet]"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_state: dict = {"console": None, "files": {}}


class _ConsoleFormatter(logging.Formatter):
    """INFO records as `[resdet] message`; other levels name themselves: `[resdet] WARNING: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        return f"{CONSOLE_PREFIX} {level}{text}"


class _ConsoleHandler(logging.Handler):
    """Writes each record to the current sys.stderr through tqdm.write.

    sys.stderr is looked up per record, not kept, so redirection (contextlib, pytest's capture)
    after setup still receives the lines; tqdm.write clears an active progress bar, writes the
    line and redraws the bar, instead of printing into the middle of it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:
            self.handleError(record)


class _FileHandler(logging.FileHandler):
    """A FileHandler that creates its folder when it first writes (delay=True: a run that
    logs nothing leaves no file and no folder behind).

    With `hold`, records are kept in memory until `commit()` writes them and the ones after
    (a run whose inputs are not checked yet must write nothing); closed uncommitted, they are
    dropped.
    """

    def __init__(self, path: str, hold: bool = False) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.held: list[logging.LogRecord] | None = [] if hold else None

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)  # already filtered by level in handle()
        else:
            super().emit(record)

    def commit(self) -> None:
        """Write the held records, then every later one as it comes. (Not `release`: that is
        logging.Handler's lock.)"""
        held, self.held = self.held or [], None
        for record in held:
            self.emit(record)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _is_main_rank() -> bool:
    # RANK is set by torchrun before the process starts, so this holds before (and without)
    # the process group; the other ranks repeat what rank 0 says
    return int(os.environ.get("RANK", "0") or 0) == 0


def _handlers() -> list[logging.Handler]:
    console = _state["console"]
    return ([console] if console is not None else []) + list(_state["files"].values())


def _sync_levels() -> None:
    """Each configured logger passes the most detailed level one of its handlers wants."""
    levels = [h.level for h in _handlers()]
    for name in LOGGERS:
        logging.getLogger(name).setLevel(min(levels) if levels else logging.NOTSET)


def console_level(verbosity: int) -> int:
    """The console's level for a verbosity: -1 (--quiet) WARNING, 0 INFO, 1+ (-v) DEBUG."""
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity == 0:
        level = logging.INFO
    else:
        level = logging.DEBUG
    return level if _is_main_rank() else max(level, logging.WARNING)


def setup_logging(verbosity: int = 0) -> logging.Handler:
    """Show the library's log records on stderr; returns the console handler.

    verbosity -1 shows warnings and errors only, 0 also INFO, 1 or more also DEBUG; processes
    other than rank 0 (the RANK environment variable) show warnings and errors only. Calling
    it again changes the level of the same handler (no line is ever printed twice).
    """
    console = _state["console"]
    if console is None:
        console = _ConsoleHandler()
        console.setFormatter(_ConsoleFormatter())
        for name in LOGGERS:
            logging.getLogger(name).addHandler(console)
        _state["console"] = console
    console.setLevel(console_level(verbosity))
    _sync_levels()
    return console


def log_to_file(
    path: str | os.PathLike, level: int | None = None, *, hold: bool = False
) -> logging.Handler:
    """Also append the library's records to `path`, each line with a timestamp and a level.

    `level` defaults to INFO, or DEBUG when the console shows DEBUG (-v). The file and its
    folder are created at the first record. Calling it again for the same path returns the same
    handler; remove_log_file(handler) detaches and closes it. With `hold`, nothing is written
    until `handler.commit()`: then the records so far, and later ones as they come.
    """
    key = str(Path(path).resolve())
    handler = _state["files"].get(key)
    if handler is None:
        handler = _FileHandler(key, hold=hold)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
        for name in LOGGERS:
            logging.getLogger(name).addHandler(handler)
        _state["files"][key] = handler
    if level is None:
        console = _state["console"]
        level = min(logging.INFO, console.level if console is not None else logging.INFO)
    handler.setLevel(level)
    _sync_levels()
    return handler


def console_configured() -> bool:
    """Whether setup_logging installed the console handler (a tool runs), so that INFO records
    reach stderr."""
    return _state["console"] is not None


def remove_log_file(handler: logging.Handler) -> None:
    """Stop writing to a file added by log_to_file and close it (a no-op for other handlers)."""
    for key, h in list(_state["files"].items()):
        if h is handler:
            del _state["files"][key]
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(h)
            h.close()
    _sync_levels()


def reset_logging() -> None:
    """Undo setup_logging and every log_to_file (for tests that run several tools in one
    process): the loggers go back to having no handler and no level of their own."""
    for handler in list(_state["files"].values()):
        remove_log_file(handler)
    console = _state["console"]
    if console is not None:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(console)
        _state["console"] = None
    _sync_levels()
