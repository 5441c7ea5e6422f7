"""The ERP's invoices, one SQLite table as an ERP keeps it: times as text, NULLs in many columns.

About one invoice in twenty is dirty (no customer, an amount that is not a number or is
negative, an unknown currency or status, a due date that is not a date) for the checks to catch.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from interlink.demo_systems.sqlite import write_transaction

INVOICES = 400
TS_FORMAT = "%Y-%m-%d %H:%M:%S"  # how the ERP writes times: text, a space, no zone (UTC)
BASE_TIME = datetime(2026, 9, 1)
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")
STATUSES = ("draft", "open", "paid", "void")
NOTES = ("paid by bank transfer", "ask for PO number", "Net 30", "  partial  delivery ", "résumé ✓ Zürich")
DIRTY_EVERY, DIRTY_AT = 20, 7  # invoices whose id % DIRTY_EVERY == DIRTY_AT are dirty
DIRTY = (
    {"customer_id": None}, {"customer_id": "   "}, {"amount": "n/a"}, {"amount": -12.5},
    {"currency": "XXX"}, {"status": "lost"}, {"due_date": "not a date"},
)
SCHEMA = """CREATE TABLE IF NOT EXISTS erp_invoices (
    id INTEGER PRIMARY KEY,
    customer_id TEXT,
    amount NUMERIC,
    currency TEXT,
    status TEXT,
    notes TEXT,
    due_date TEXT,
    updated_at TEXT NOT NULL
)"""
COLUMNS = ("id", "customer_id", "amount", "currency", "status", "notes", "due_date", "updated_at")


def seed(path: Path) -> None:
    """Create `path`'s `erp_invoices` table and fill it, unless it already has invoices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_transaction(path) as conn:
        conn.execute(SCHEMA)
        conn.execute("CREATE INDEX IF NOT EXISTS erp_invoices_updated ON erp_invoices (updated_at, id)")
        if conn.execute("SELECT count(*) FROM erp_invoices").fetchone()[0]:
            return
        rng = random.Random(7)
        conn.executemany(
            f"INSERT INTO erp_invoices VALUES ({', '.join('?' * len(COLUMNS))})",
            [tuple(invoice(rng, number).values()) for number in range(1, INVOICES + 1)],
        )


def invoice(rng: random.Random, number: int) -> dict:
    """Invoice `number`: every tenth updated at the same time as the one before, NULL notes and due dates, every twentieth dirty."""
    updated = BASE_TIME + timedelta(minutes=90 * (number - (number % 10 == 0)))
    row = {
        "id": number,
        "customer_id": f"C{rng.randrange(1, 120):04d}",
        "amount": round(rng.uniform(5, 5000), 2),
        "currency": rng.choice(CURRENCIES),
        "status": rng.choice(STATUSES),
        "notes": rng.choice(NOTES) if rng.random() < 0.4 else None,
        "due_date": (updated + timedelta(days=30)).date().isoformat() if rng.random() < 0.7 else None,
        "updated_at": updated.strftime(TS_FORMAT),
    }
    if number % DIRTY_EVERY == DIRTY_AT:
        row.update(DIRTY[number // DIRTY_EVERY % len(DIRTY)])
    return row


def mutate(path: Path, count: int, seed: int | None = None) -> list[str]:
    """Change `count` clean invoices (a new amount and status), each `updated_at` moved past every other; their ids, sorted."""
    rng = random.Random(seed)
    with write_transaction(path) as conn:
        ids = [i for (i,) in conn.execute("SELECT id FROM erp_invoices WHERE id % ? != ? ORDER BY id", (DIRTY_EVERY, DIRTY_AT))]
        chosen = sorted(rng.sample(ids, count))
        latest = max(datetime.fromisoformat(t) for (t,) in conn.execute("SELECT updated_at FROM erp_invoices"))
        now = max(datetime.now(UTC).replace(tzinfo=None), latest + timedelta(microseconds=1)).strftime(TS_FORMAT + ".%f")
        for number in chosen:
            conn.execute(
                "UPDATE erp_invoices SET amount = round(coalesce(amount, 0) + ?, 2), status = ?, updated_at = ? WHERE id = ?",
                (rng.randrange(1, 500), rng.choice(STATUSES), now, number),
            )
    return [str(number) for number in chosen]
