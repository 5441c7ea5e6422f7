"""JSON answers decoded so that a value JSON does not allow costs its record, not the answer.

orjson decodes an answer that is strict JSON in one pass. An answer it refuses (bytes that are not UTF-8,
NaN or Infinity, a number beyond a double, a lone surrogate escape), or one that names a key twice in an
object (which orjson keeps quiet about, keeping the last), is decoded again by Python's `json` with hooks
that mark such values instead of failing: bytes that are not UTF-8 become lone surrogates (`surrogateescape`),
which `interlink.tasks.admit.Pages` refuses record by record; NaN, Infinity and 1e400 stay as their text, marked with why
(the reasons of `STRICT_JSON`, which the drop folder's JSON lines are read with); an object naming a key twice is marked. `undecodable`
then wraps each record holding a marked value, naming its fields, for `Pages` to refuse alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson


class Unread(str):
    """A value JSON does not allow (NaN, Infinity, 1e400), kept as the answer wrote it; `why` it is refused."""

    why: str


class Twice(dict):
    """An object that names a key twice, the last value kept; `why` it is refused."""

    why: str


class Undecodable(NamedTuple):
    """A record that holds a value JSON does not allow, with why, naming the fields."""

    record: Any
    why: str


def decode(content: bytes) -> tuple[Any, bool]:
    """The answer decoded, and whether it is strict JSON (if not, see `undecodable`); ValueError if it is no JSON."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    else:
        # Each key comes with a colon; a key named twice, and its value, are missing from the decoded answer, so
        # written again it has fewer colons. (An answer that escapes a colon in its text is checked the slow way.)
        if content.count(b":") == orjson.dumps(body).count(b":"):
            return body, True
    return _MARKING.decode(content.decode("utf-8", "surrogateescape")), False


def undecodable(records: list[Any]) -> list[Any]:
    """`records`, each one holding a marked value wrapped as `Undecodable`, naming its fields."""
    return [Undecodable(record, "; ".join(why)) if (why := reasons(record)) else record for record in records]


def reasons(value: Any, path: str = "") -> list[str]:
    """Why `value` cannot be read, each reason naming the field (a dotted path); none when it can."""
    prefix = f"{path}: " if path else ""
    if isinstance(value, Unread):
        return [prefix + value.why]
    found = [prefix + value.why] if isinstance(value, Twice) else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += reasons(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            found += reasons(item, f"{path}[{number}]")
    return found


def no_constant(name: str) -> float:
    """Refuse NaN and Infinity, which Python's `json` would take."""
    raise ValueError(f"{name} is no JSON number")


def finite(text: str) -> float:
    """A JSON number as a double; refused when a double cannot hold it."""
    if math.isinf(number := float(text)):
        raise ValueError(f"{text} is beyond the range of a double")
    return number


def once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict; refused when it names a key twice."""
    if len(found := dict(pairs)) < len(pairs):
        twice = next(key for key in found if sum(k == key for k, _ in pairs) > 1)
        raise ValueError(f"an object names {twice!r} twice")
    return found


# JSON as the standard has it: no NaN or Infinity (Python's `json` takes them), no number a double cannot hold,
# no key twice in one object (Python's `json` keeps the last silently)
STRICT_JSON = json.JSONDecoder(parse_constant=no_constant, parse_float=finite, object_pairs_hook=once)


def _marked(check: Callable[[Any], Any], value: Any, mark: type[Unread | Twice]) -> Any:
    """`check(value)`, or where it refuses the value, the value as `mark`, with why."""
    try:
        return check(value)
    except ValueError as exc:
        marked = mark(value)
        marked.why = str(exc)
        return marked


_MARKING = json.JSONDecoder(
    parse_constant=lambda name: _marked(no_constant, name, Unread),
    parse_float=lambda text: _marked(finite, text, Unread),
    object_pairs_hook=lambda pairs: _marked(once, pairs, Twice),
)
