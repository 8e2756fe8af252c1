"""User-facing errors.

`LlmsimError` carries a one-line message meant for the person running llmsim: the CLI prints it
without a traceback and exits non-zero. Raise it for bad input (a malformed file, an unknown key,
an impossible configuration), never for bugs. `did_you_mean` and `unknown_name` word the common
"not a known name" case the same way everywhere.
"""


import difflib


class LlmsimError(Exception):
    """A problem with the user's input, reported as one clear line."""


def closest(word: str, options) -> str | None:
    """The option most like `word` (a likely misspelling), or None."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, options) -> str:
    """' (did you mean 'x'?)' when an option is close to `word`, else ''."""
    match = closest(word, options)
    return f" (did you mean {match!r}?)" if match else ""


def read_text(path, what: str) -> str:
    """The UTF-8 text of the file at `path`, or LlmsimError naming the `what` file and why: missing,
    unreadable, or not UTF-8 (with the offending byte and offset)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise LlmsimError(f"{what} file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LlmsimError(f"{what} file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise LlmsimError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def unknown_name(what: str, name: str, known: list[str], escape: str = "a path to a YAML file") -> LlmsimError:
    """The error for a name that is not in a catalog: suggestion, the known names, the path escape."""
    return LlmsimError(f"unknown {what} '{name}'{did_you_mean(name, known)}; known: {', '.join(known) or 'none'} (or give {escape})")
