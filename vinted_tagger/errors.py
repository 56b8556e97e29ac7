"""A user's mistake, and how every command line reports one: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_USAGE = 2  # a user's mistake (argparse uses 2 as well)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class UserError(Exception):
    """A mistake the user can fix (a missing file, a wrong name, an encoder not built yet): reported, not a bug."""


class MissingExtra(UserError, RuntimeError):
    """An optional part of the install (an extra: export, ray, serve, ...) is needed and not installed."""


# What a user's mistake raises: the project's own errors, unreadable or missing files, bad values and names
# (unknown names raise ValueError listing the valid ones; pydantic's ValidationError is a ValueError).
USER_ERRORS = (UserError, OSError, ValueError)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def run_command(prog: str, work: Callable[[], int], interrupted: str) -> int:
    """``work()``'s exit code; a user's mistake is one line on stderr and exit 2, Ctrl-C one line and 130."""
    try:
        return work()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``prog: error: ...; see prog --help``) and exit 2, not the
    usage block: the same shape as every other mistake. Sub-command parsers inherit it."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")
