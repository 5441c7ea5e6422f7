"""CRM customers and finance reference data, kept in one SQLite file.

The customer data is deliberately dirty (missing, malformed and oddly formatted
values, duplicate ids) so that the integration layer has something to clean.
"""

from __future__ import annotations

import random
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

from interlink.demo_systems.sqlite import create_tables, newer_than, write_transaction

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
BASE_TIME = datetime(2026, 10, 1, tzinfo=UTC)
HISTORY = timedelta(days=90)

COUNTRIES: dict[str, tuple[str, float]] = {
    "US": ("USD", 0.0), "GB": ("GBP", 0.20), "DE": ("EUR", 0.19), "FR": ("EUR", 0.20),
    "NL": ("EUR", 0.21), "ES": ("EUR", 0.21), "IT": ("EUR", 0.22), "SE": ("SEK", 0.25),
    "PL": ("PLN", 0.23), "CH": ("CHF", 0.081), "CA": ("CAD", 0.05), "AU": ("AUD", 0.10),
    "JP": ("JPY", 0.10), "IN": ("INR", 0.18), "BR": ("BRL", 0.17), "MX": ("MXN", 0.16),
    "IE": ("EUR", 0.23), "DK": ("DKK", 0.25), "NO": ("NOK", 0.25), "BE": ("EUR", 0.21),
}
_COUNTRY_WEIGHTS = [30, 12, 12, 8, 5, 5, 5, 3, 3, 3, 4, 3, 2, 2, 2, 2, 2, 2, 2, 3]
_UNKNOWN_COUNTRIES = ["XX", "ZZ", "QQ"]
_COUNTRY_ALIASES = ["UK", "USA"]

FIRST_NAMES = [
    "Anna", "Bob", "Carl", "Diana", "Erik", "Fatima", "George", "Hannah", "Ivan", "Julia",
    "Karim", "Laura", "Mateo", "Nina", "Oliver", "Priya", "Quentin", "Rosa", "Sven", "Tara",
    "Umar", "Vera", "William", "Xin", "Yusuf", "Zoe", "Lucas", "Emma", "Noah", "Sofia",
]
LAST_NAMES = [
    "Smith", "Müller", "Dubois", "Jansen", "García", "Rossi", "Andersson", "Kowalski",
    "Meier", "Tremblay", "Wilson", "Tanaka", "Sharma", "Silva", "Hernández", "Murphy",
    "Nielsen", "Hansen", "Peeters", "Brown", "Schmidt", "Martin", "de Vries", "López",
    "Bianchi", "Johansson", "Nowak", "Keller", "Roy", "Taylor",
]
_DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "example.co.uk", "shop.example.de"]
_PHONE_FORMATS = ["+49 ## #######", "(###) ###-####", "0044 20 #### ####", "###.###.####", "+1-###-###-####"]
_BAD_PHONES = ["12", "call me", "n/a", "123-45"]
_PADDING = [(" ", ""), ("", " "), ("  ", " "), ("\t", "")]

_SCHEMA = [
    """CREATE TABLE customers (
        row_id INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT, name TEXT, email TEXT, phone TEXT, country TEXT,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX customers_updated_at ON customers (updated_at, row_id)",
    "CREATE TABLE countries (code TEXT PRIMARY KEY, currency TEXT NOT NULL, tax_rate REAL NOT NULL)",
]

Row = tuple[str, str, str | None, str | None, str | None, str]


def format_ts(moment: datetime) -> str:
    """Format an aware datetime as a canonical UTC timestamp, e.g. 2026-10-01T12:00:00.123456Z."""
    return moment.astimezone(UTC).strftime(TS_FORMAT)


def _pad(rng: random.Random, text: str) -> str:
    """Add stray leading and/or trailing whitespace."""
    before, after = rng.choice(_PADDING)
    return f"{before}{text}{after}"


def _phone(rng: random.Random) -> str:
    """A well-formed phone number in one of several national formats."""
    return "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in rng.choice(_PHONE_FORMATS))


def _mailbox(first: str, last: str, domain: str) -> str:
    """first.last@domain, folded to lower-case ASCII."""
    local = f"{first}.{last}".replace(" ", "").lower()
    return unicodedata.normalize("NFKD", f"{local}@{domain}").encode("ascii", "ignore").decode()


def _email(rng: random.Random, first: str, last: str) -> str | None:
    """Mostly valid emails; some missing, malformed, mixed-case or padded."""
    email = _mailbox(first, last, rng.choice(_DOMAINS))
    roll = rng.random()
    if roll < 0.03:
        return None
    if roll < 0.06:
        local, domain = email.split("@")
        return rng.choice([f"{local}@@{domain}", f"{local}.{domain}", f"{local}@"])
    messy = rng.random()
    if messy < 0.17:
        local, domain = email.split("@")
        stem, tld = domain.rsplit(".", 1)
        email = f"{local.title()}@{stem.title()}.{tld.upper()}"
    if 0.10 < messy < 0.25:
        email = _pad(rng, email)
    return email


def _country(rng: random.Random) -> str | None:
    """Mostly valid ISO-2 codes; some missing, unknown, aliased, lower-case or padded."""
    roll = rng.random()
    if roll < 0.01:
        return None
    if roll < 0.03:
        return rng.choice(_UNKNOWN_COUNTRIES)
    if roll < 0.045:
        return rng.choice(_COUNTRY_ALIASES)
    code = rng.choices(list(COUNTRIES), weights=_COUNTRY_WEIGHTS)[0]
    if roll < 0.10:
        return rng.choice([code.lower(), _pad(rng, code), _pad(rng, code.lower())])
    return code


def _customers(rng: random.Random, count: int) -> list[Row]:
    """Generate count distinct customers followed by ~2% later duplicate records."""
    history_us = HISTORY // timedelta(microseconds=1)
    rows: list[Row] = []
    duplicates: list[Row] = []
    for n in range(1, count + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        name = f"{first} {last}"
        phone_roll = rng.random()
        phone = None if phone_roll < 0.15 else rng.choice(_BAD_PHONES) if phone_roll < 0.16 else _phone(rng)
        updated = BASE_TIME - timedelta(microseconds=rng.randint(1, history_us))
        row: Row = (
            f"C{n:06d}",
            _pad(rng, name) if rng.random() < 0.04 else name,
            _email(rng, first, last),
            phone,
            _country(rng),
            format_ts(updated),
        )
        rows.append(row)
        if rng.random() < 0.02:
            gap_us = (BASE_TIME - updated) // timedelta(microseconds=1)
            later = updated + timedelta(microseconds=rng.randint(1, gap_us))
            duplicates.append((
                row[0],
                f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}",
                _mailbox(first, last, rng.choice(_DOMAINS)),
                _phone(rng),
                row[4],
                format_ts(later),
            ))
    return rows + duplicates


def seed(db_path: Path, customers: int = 5000, seed: int = 7) -> None:
    """Create and fill the demo database, unless it already has tables."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with write_transaction(db_path) as conn:
        if not create_tables(conn, _SCHEMA):
            return
        conn.executemany(
            "INSERT INTO countries VALUES (?, ?, ?)",
            [(code, currency, rate) for code, (currency, rate) in COUNTRIES.items()],
        )
        conn.executemany(
            "INSERT INTO customers (id, name, email, phone, country, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            _customers(random.Random(seed), customers),
        )


def _looks_clean(email: str | None, phone: str | None, country: str | None, known: set[str]) -> bool:
    """True if a record would pass basic email, phone and country checks."""
    local, _, domain = (email or "").strip().partition("@")
    return (
        bool(local) and "@" not in domain and "." in domain
        and (phone is None or sum(ch.isdigit() for ch in phone) >= 8)
        and (country or "").strip().upper() in known
    )


def _renamed(rng: random.Random, name: str) -> str:
    """The same first name with a different surname."""
    surname = rng.choice([last for last in LAST_NAMES if last not in name])
    return f"{name.split()[0]} {surname}"


def mutate(db_path: Path, count: int, seed: int | None = None) -> list[str]:
    """Rename `count` clean customers (latest row per id) and stamp them newer than any row.

    Returns the sorted ids of the changed customers.
    """
    rng = random.Random(seed)
    with write_transaction(db_path) as conn:
        known = {code for (code,) in conn.execute("SELECT code FROM countries")}
        latest = conn.execute(
            "SELECT c.row_id, c.id, c.name, c.email, c.phone, c.country FROM customers AS c"
            " JOIN (SELECT max(row_id) AS row_id FROM customers GROUP BY id) USING (row_id)"
            " ORDER BY c.id"
        ).fetchall()
        candidates = [row for row in latest if _looks_clean(*row[3:], known)]
        if count > len(candidates):
            raise ValueError(f"only {len(candidates)} clean customers to mutate, {count} requested")
        chosen = rng.sample(candidates, count)
        start = newer_than(conn.execute("SELECT max(updated_at) FROM customers").fetchone()[0])
        conn.executemany(
            "UPDATE customers SET name = ?, updated_at = ? WHERE row_id = ?",
            [
                (_renamed(rng, name), format_ts(start + timedelta(microseconds=i)), row_id)
                for i, (row_id, _, name, *_) in enumerate(chosen)
            ],
        )
    return sorted(row[1] for row in chosen)


def add_country(db_path: Path, code: str, currency: str, tax_rate: float) -> None:
    """Insert or replace one finance reference row."""
    with write_transaction(db_path) as conn:
        conn.execute("INSERT OR REPLACE INTO countries VALUES (?, ?, ?)", (code, currency, tax_rate))
