"""Argument parsing for the command line: one-line usage errors and checked numeric options.

`Parser` is argparse's parser with one change: a usage error (an unknown option, a missing or
malformed argument) raises `LlmsimError`, which `llmsim.cli.main` prints as one `llmsim: error:`
line with exit status 2, like every other bad input, instead of argparse's usage block. Sub-parsers
made by `add_subparsers` inherit it. The type functions turn a bad number into such an error
naming the option: `positive_int` (>= 1), `non_negative_int` (>= 0, e.g. seeds), `finite_float`
(no inf or NaN). Units: whatever the option's name says.
"""

from __future__ import annotations

import argparse
import math

from .errors import LlmsimError


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose usage errors are one `LlmsimError` line."""

    def error(self, message: str):  # argparse calls this for every usage error
        raise LlmsimError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
