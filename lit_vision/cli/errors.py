"""Turning jsonargparse's reports into the one sentence a researcher needs.

jsonargparse reports a bad option inside a ``class_path`` union as a dump of every union member it tried
(60-90 lines for a typo in a recipe). :func:`condense_parser_error` keeps what matters: which key, what is
wrong, and - for a misspelt option - the closest valid names. Written here because neither jsonargparse nor
LightningCLI offers a short mode.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from lit_vision.introspection import import_dotted, init_parameters


class CLIError(Exception):
    """A condensed command-line error, with the usage line to print above it."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_NOT_ACCEPTED = re.compile(r"(?:Option|Key) '([^']+)' is not accepted")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.+)", re.IGNORECASE)
_EXPECTED_GOT = re.compile(r"Expected an? (.+?)\. Got value: (.+)")
_EXPECTED = re.compile(r"^\s*- Expected an? (<class '[\w.]+'>|[\w.\[\]', ]+)$", re.MULTILINE)
_GIVEN = re.compile(r"^\s*Given value: (.+)$", re.MULTILINE)
_NO_CLASS = re.compile(r"Expected a dot import path string: (\S+)|Expected a path but (\S+) either not accessible")
_SUBTYPES = re.compile(r"Subtypes: \[(.+)\]")
_FILE = re.compile(r"File does not exist: '?([^'\n]+)'?")


def class_options(class_path: str) -> list[str]:
    """Constructor argument names of ``class_path`` and of the ``__init__`` s its ``**kwargs`` lead to (its bases)."""
    try:
        return list(init_parameters(import_dotted(class_path)))
    except (ImportError, AttributeError, ValueError):
        return []


def subclass_names(subtypes: str) -> list[str]:
    """Names of the imported subclasses of the classes in a jsonargparse ``Subtypes: [...]`` listing."""
    names: set[str] = set()
    for path in re.findall(r"<class '([\w.]+)'>|([\w.]+)\[", subtypes):
        try:
            base = import_dotted(path[0] or path[1])
        except (ImportError, AttributeError, ValueError):
            continue
        stack = list(getattr(base, "__subclasses__", list)())
        while stack:
            cls = stack.pop()
            names.add(cls.__name__)
            stack.extend(cls.__subclasses__())
    return sorted(n for n in names if not n.startswith("_"))


def did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def parser_options(parser: Any) -> list[str]:
    return sorted({s for s in getattr(parser, "_option_string_actions", {}) if s.startswith("--")})


def _describe_type(text: str) -> str:
    text = text.strip()
    if m := re.fullmatch(r"<class '([\w.]+)'>", text):
        return m.group(1).rsplit(".", 1)[-1]
    if m := re.fullmatch(r"typing\.Literal\[(.+)\]", text):
        return f"one of {m.group(1)}"
    return text


def condense_parser_error(message: str, parser: Any = None) -> str:
    """One or two lines from a jsonargparse error report (see the module docstring)."""
    keys = _KEY.findall(message)
    key = ".".join(k for k in keys if k) if keys else None
    where = f"--{key}: " if key else ""
    if m := _UNRECOGNIZED.search(message):
        args = m.group(1).strip()
        first = args.split()[0].split("=")[0]
        return f"unrecognized option {args!r}.{did_you_mean(first, parser_options(parser))}"
    if m := _NOT_ACCEPTED.search(message):
        option = m.group(1)
        paths = _CLASS_PATH.findall(message)
        cls = paths[-1] if paths else None
        candidates = class_options(cls) if cls else []
        owner = cls.rsplit(".", 1)[-1] if cls else "this class"
        # class_options follows **kwargs into the bases: an option a base takes but this class sets itself is
        # among them, and "did you mean" would suggest the very option refused.
        inherited = option in candidates
        candidates = [c for c in candidates if c != option]
        hint = did_you_mean(option, candidates)
        listing = f" Its options: {', '.join(candidates)}." if candidates and not hint else ""
        note = f" (a base class's option, which {owner} sets itself)" if inherited else ""
        return f"{where}{owner} takes no option {option!r}{note}.{hint}{listing}"
    if m := _NO_CLASS.search(message):
        name = m.group(1) or m.group(2)
        subtypes = _SUBTYPES.search(message)
        candidates = subclass_names(subtypes.group(1)) if subtypes else []
        return f"{where}no class named {name!r} (give a class name lit_vision knows, or a full class_path).{did_you_mean(name.rsplit('.', 1)[-1], candidates)}"
    if m := _FILE.search(message):
        return f"{where}file does not exist: {m.group(1).strip()}"
    if m := _EXPECTED_GOT.search(message):
        return f"{where}expected {_describe_type(m.group(1))}, got {m.group(2).strip()!r}."
    expected = [_describe_type(e) for e in _EXPECTED.findall(message) if "NoneType" not in e]
    if expected:
        given = _GIVEN.search(message)
        got = f", got {given.group(1).strip()!r}" if given and len(given.group(1)) < 80 else ""
        return f"{where}expected {' or '.join(expected)}{got}."
    lines = [line.strip(" -") for line in message.splitlines()
             if line.strip() and not line.strip().startswith(("Given value", "Subtypes", "Errors:", "Parser key",
                                                                "Does not validate", "Problem with given"))]
    return where + (" ".join(lines[:2]) if lines else message.strip())


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain: jsonargparse wraps an error raised by a constructor (a missing data
    root, an unknown backbone) in a union report; the constructor's own message is the one to show."""
    seen = {id(err)}
    while True:
        nxt = err.__cause__ or err.__context__
        if nxt is None or id(nxt) in seen:
            return err
        seen.add(id(nxt))
        err = nxt


def short_exception(err: BaseException) -> str:
    """The root cause's message; prefixed with its type unless it is a plain data/argument error."""
    cause = root_cause(err)
    text = str(cause).strip() or type(cause).__name__
    if isinstance(cause, (ValueError, FileNotFoundError)) and "Does not validate against" not in text:
        return text
    if "Does not validate against" in text:
        return condense_parser_error(text)
    return f"{type(cause).__name__}: {text}"
