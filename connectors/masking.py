"""The one masking rule, for every output: what Interlink may show of a secret or of a person.

Secrets are never shown. In any text (a URL, an error, a response body) these become `***`:
- a URL's password: `postgresql://user:***@host/db` (anything between `user:` and the authority's last `@`);
- the value of every parameter whose name says it is secret (it ends in `password`, `passwd`, `pass`, `pwd`,
  `secret`, `token`, `key`, `auth`, `authorization`, `credential(s)`, `signature`, `sig`, `session`, `cookie`),
  in each form it is written: URL query and DSN (`?password=…`, `&api_key=…`, `password='…'`), JSON or Python
  mappings (`"access_token": "…"`) and headers (`Authorization: …`, `X-API-Key: …`);
- a `Bearer` or `Basic` credential anywhere;
- every secret known by value (a connection's keys and passwords, the credentials a request carried).
Text is masked before it is cut (`cut`), so a secret straddling the cut cannot leak in part.

Personal data in the columns an integration declares sensitive (`Gate.sensitive`) is shown masked:
`a***@example.com` for an email, `A***` for any other value (`mask`); wherever those values turn up in
free text, e.g. a database's error message, they are replaced by their masked form (`mask_values`).
A field is sensitive when its name matches a sensitive one once case and punctuation are ignored
(`Email`, `e-mail` and `E_Mail` all match `email`: `sensitive_fields`); a source field feeding a sensitive
column under another name is declared (`Gate.sensitive_source`).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import pandas as pd

MASK = "***"
MIN_VALUE = 3  # sensitive values shorter than this are not searched for in text (they would mask ordinary words)

SECRET_NAME = re.compile(
    r"(?:pass(?:word|wd)?|pwd|secret|token|key|auth|authorization|credentials?|signature|sig|session|cookie)$", re.I
)
# the password runs to the authority's last `@`: one written with a raw `@` is masked whole
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):(?P<secret>[^\s/?#]+)@")
_ASSIGNED = re.compile(r"""(?P<head>(?P<name>[A-Za-z0-9_.\-]+)=)(?P<secret>'[^']*'|"[^"]*"|[^\s&;,#'")\]}]+)""")
_QUOTED = re.compile(
    r"""(?P<head>(?P<q>["'])(?P<name>[\w.\-]+)(?P=q)\s*:\s*(?P<vq>["']))(?P<secret>(?:\\.|(?!(?P=vq)).)*)(?=(?P=vq))"""
)
_HEADER = re.compile(r"(?P<head>\b(?P<name>[A-Za-z][\w\-]*):[ \t]*(?:(?:Bearer|Basic|Token|Digest)[ \t]+)?)(?P<secret>[^\s,;'\"]+)")
_SCHEME = re.compile(r"(?P<head>\b(?:Bearer|Basic)[ \t]+)(?P<secret>[A-Za-z0-9\-._~+/]+=*)")
EMAIL = re.compile(r"([^@\s])[^@\s]*@([^@\s]+)")
LOCAL_PART = re.compile(r"""([^\s@"'<>()\[\],;:])[^\s@"'<>()\[\],;:]*(?=@)""")


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret in it masked: the `secrets` given by value, and whatever the rule recognises."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\g<head>:{MASK}@", text)
    for pattern in (_ASSIGNED, _QUOTED, _HEADER):
        text = pattern.sub(_named, text)
    return _SCHEME.sub(rf"\g<head>{MASK}", text)


def _named(match: re.Match) -> str:
    secret = match["secret"]
    if not SECRET_NAME.search(match["name"]) or secret.strip("'\"") in ("", MASK):
        return match[0]
    quote = secret[0] if secret[:1] in "'\"" and len(secret) > 1 and secret[-1] == secret[0] else ""
    return f"{match['head']}{quote}{MASK}{quote}"


def mask_url(url: str) -> str:
    """A URL of any kind as it may be shown: its password and its secret parameters masked."""
    return mask_secrets(url)


def plain_url(url: str) -> str:
    """Where `url` points and nothing more, for telemetry: no user info, query or fragment
    (`https://u:p@host:8443/a?q=1#x` → `https://host:8443/a`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def cut(text: str, limit: int, secrets: Iterable[str] = ()) -> str:
    """The first `limit` characters of `text` as it may be shown: masked first, then cut."""
    secrets = tuple(secrets)
    window = limit + max((len(s) for s in secrets), default=0) + 1024  # every secret starting before the cut
    return mask_secrets(text[:window], secrets)[:limit]


def mask(value: object) -> object:
    """`a***@example.com` for an email, `A***` for other text; missing values stay missing."""
    if _missing(value):
        return value
    text = str(value)
    if EMAIL.fullmatch(text):
        return EMAIL.sub(r"\1***@\2", text)
    return text[:1] + MASK if text else text


def _missing(value: object) -> bool:
    """None, NaN or pandas' NA (which exists only once pandas is loaded: masking does not load it, for fast commands)."""
    pandas = sys.modules.get("pandas")
    return value is None or (isinstance(value, float) and math.isnan(value)) or (pandas is not None and value is pandas.NA)


def mask_values(text: str, values: Iterable[object]) -> str:
    """`text` with every occurrence of one of `values` (a sensitive column's) replaced by its masked form."""
    found = {str(v) for v in values if not _missing(v)}
    for value in sorted((v for v in found if len(v) >= MIN_VALUE and v in text), key=len, reverse=True):
        text = text.replace(value, str(mask(value)))
    return text


def field_name(name: object) -> str:
    """A field's name as matched against sensitive ones: `E-Mail`, `e_mail` and `Email` are all `email`."""
    return re.sub(r"[\W_]+", "", str(name)).casefold()


def sensitive_fields(names: Iterable[object], sensitive: Iterable[str]) -> set:
    """Those of `names` that are `sensitive`, compared by `field_name`."""
    wanted = {field_name(s) for s in sensitive}
    return {n for n in names if field_name(n) in wanted} if wanted else set()


def sensitive_values(frame: pd.DataFrame, columns: Iterable[str]) -> set[object]:
    """The distinct values of `frame`'s sensitive `columns`."""
    return {v for column in sensitive_fields(frame.columns, columns) for v in frame[column].dropna().unique()}


def mask_frame(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A copy of `frame` with its sensitive `columns` masked."""
    masked = frame.copy()
    for column in sensitive_fields(frame.columns, columns):
        masked[column] = masked[column].map(mask)
    return masked


def mask_record(record: dict, columns: Iterable[str]) -> dict:
    """A copy of `record` (a source record or a row) with its sensitive `columns` masked."""
    hidden = sensitive_fields(record, columns)
    return {k: mask(v) if k in hidden else v for k, v in record.items()}


def mask_emails(text: str) -> str:
    """`text` with the local part of every email address in it masked: `alice@example.com` → `a***@example.com`."""
    return LOCAL_PART.sub(r"\1***", text)


def mask_exception(exc: BaseException, rule: Callable[[str], str]) -> BaseException:
    """`exc` with its message passed through `rule`, in place: its type is kept, so whoever classifies it still can.

    The errors it wraps (SQLAlchemy's `orig`) or chains are replaced by bare copies of their type made from their
    masked arguments, as a driver's error may keep the database's message elsewhere too (psycopg's diagnostics,
    which pickling carries on: Prefect pickles a failed run's error into its result storage).
    """
    exc.args = tuple(rule(a) if isinstance(a, str) else a for a in exc.args)
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and all(nxt is not e for e in chain):
        chain.append(nxt)
    copies = {id(e): _bare(e, rule) for e in chain[1:]}
    if isinstance(orig := getattr(exc, "orig", None), BaseException):
        exc.orig = copies.setdefault(id(orig), _bare(orig, rule))
    links = [exc, *(copies[id(e)] for e in chain[1:])]
    for before, after in zip(links, links[1:]):
        before.__cause__ = before.__context__ = after
    links[-1].__cause__, links[-1].__context__ = None, None
    return exc


def _bare(error: BaseException, rule: Callable[[str], str]) -> BaseException:
    args = tuple(rule(a) if isinstance(a, str) else a for a in error.args)
    try:
        copy = type(error)(*args)
    except Exception:  # noqa: BLE001 - a type that cannot be remade from its arguments
        copy = RuntimeError(f"{type(error).__name__}: {rule(str(error))}")
    return copy.with_traceback(error.__traceback__)
