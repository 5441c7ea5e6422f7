"""Storefront products and orders, and exchange rates, kept in one SQLite file.

The order data is mostly clean, with a little dirt for the integration's checks to
catch: unknown currencies, order lines with no positive quantity, unknown statuses
and missing customer emails.
"""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from interlink.demo_systems.crm_data import BASE_TIME, format_ts
from interlink.demo_systems.sqlite import create_tables, newer_than, write_transaction

HISTORY = timedelta(days=90)
MAX_ORDER_AGE = timedelta(days=14)  # how long after it was placed an order may still be updated

RATES: dict[str, float] = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85, "SEK": 11.5, "CHF": 0.95, "JPY": 160.0}
_CURRENCY_WEIGHTS = [30, 35, 12, 8, 8, 7]
UNKNOWN_CURRENCY = "XYZ"
_UNKNOWN_CURRENCY_PER_EUR = Decimal("3.7")

STATUSES = ("pending", "paid", "shipped", "cancelled")
_STATUS_WEIGHTS = [20, 35, 35, 10]
_UNKNOWN_STATUSES = ["on_hold", "disputed"]
NEXT_STATUS = {"pending": "paid", "paid": "shipped"}  # what mutate_orders moves an order on to

_ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Essential", "Light", "Mini", "Pro", "Rugged", "Smart"]
_NOUNS = [
    "Backpack", "Bottle", "Candle", "Desk Lamp", "Headphones", "Jacket", "Kettle", "Mug", "Notebook",
    "Scarf", "Sneakers", "Teapot", "Umbrella", "Wallet", "Watch",
]
_FIRST = ["anna", "bob", "carl", "diana", "erik", "fatima", "george", "hannah", "ivan", "julia", "karim", "laura"]
_LAST = ["smith", "muller", "dubois", "jansen", "garcia", "rossi", "andersson", "tanaka", "silva", "murphy"]
_DOMAINS = ["example.com", "mail.example.org", "shop.example.net"]

_SCHEMA = [
    """CREATE TABLE products (
        sku TEXT PRIMARY KEY, name TEXT NOT NULL, stock INTEGER NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE orders (
        row_id INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE, customer_email TEXT, currency TEXT, status TEXT, placed_at TEXT,
        updated_at TEXT NOT NULL)""",
    "CREATE INDEX orders_updated_at ON orders (updated_at, row_id)",
    """CREATE TABLE order_lines (
        order_id TEXT NOT NULL, line_no INTEGER NOT NULL, sku TEXT, quantity INTEGER, unit_price TEXT,
        PRIMARY KEY (order_id, line_no))""",
    "CREATE TABLE rates (currency TEXT PRIMARY KEY, per_eur REAL NOT NULL)",
    "CREATE TABLE idempotency (key TEXT PRIMARY KEY, status INTEGER NOT NULL, body TEXT NOT NULL)",
]

OrderRow = tuple[str, str | None, str, str, str, str]
LineRow = tuple[str, int, str, int, str]


def _random_before(rng: random.Random, moment: datetime, span: timedelta) -> datetime:
    """A moment at most `span` (and at least 1 µs) before `moment`."""
    return moment - timedelta(microseconds=rng.randint(1, span // timedelta(microseconds=1)))


def _products(rng: random.Random, count: int) -> tuple[list[tuple[str, str, int, str]], dict[str, int]]:
    """Product rows and each product's list price in EUR cents."""
    rows = []
    prices: dict[str, int] = {}
    for n in range(1, count + 1):
        sku = f"SKU-{n:05d}"
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice('ABCDEFGH')}{rng.randint(1, 99)}"
        rows.append((sku, name, rng.randint(0, 500), format_ts(_random_before(rng, BASE_TIME, HISTORY))))
        prices[sku] = rng.randint(199, 24999)
    return rows, prices


def _unit_price(eur_cents: int, currency: str) -> str:
    """A list price converted to the order's currency, as a two-decimal string (JPY in whole yen)."""
    per_eur = Decimal(str(RATES[currency])) if currency in RATES else _UNKNOWN_CURRENCY_PER_EUR
    step = Decimal("1") if currency == "JPY" else Decimal("0.01")
    return f"{(Decimal(eur_cents) / 100 * per_eur).quantize(step):.2f}"


def _orders(rng: random.Random, count: int, prices: dict[str, int]) -> tuple[list[OrderRow], list[LineRow]]:
    """Generate `count` orders (ids in the order they were placed) with 1–5 lines each."""
    skus = sorted(prices)
    placed_times = sorted(_random_before(rng, BASE_TIME, HISTORY) for _ in range(count))
    orders: list[OrderRow] = []
    lines: list[LineRow] = []
    for n, placed in enumerate(placed_times, start=1):
        order_id = f"ORD-{n:06d}"
        email = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}{rng.randint(1, 999)}@{rng.choice(_DOMAINS)}"
        currency = rng.choices(list(RATES), weights=_CURRENCY_WEIGHTS)[0]
        status = rng.choices(STATUSES, weights=_STATUS_WEIGHTS)[0]
        if rng.random() < 0.005:
            email = None
        if rng.random() < 0.02:
            currency = UNKNOWN_CURRENCY
        if rng.random() < 0.01:
            status = rng.choice(_UNKNOWN_STATUSES)
        gap_us = min(MAX_ORDER_AGE, BASE_TIME - placed) // timedelta(microseconds=1)
        updated = placed + timedelta(microseconds=rng.randint(0, gap_us))
        orders.append((order_id, email, currency, status, format_ts(placed), format_ts(updated)))
        for line_no, sku in enumerate(rng.sample(skus, rng.randint(1, min(5, len(skus)))), start=1):
            quantity = rng.choice([0, -1, -2]) if rng.random() < 0.01 else rng.choices([1, 2, 3, 4, 5], [50, 25, 12, 8, 5])[0]
            lines.append((order_id, line_no, sku, quantity, _unit_price(prices[sku], currency)))
    return orders, lines


def seed(db_path: Path, orders: int = 2000, products: int = 300, seed: int = 11) -> None:
    """Create and fill the demo storefront database, unless it already has tables."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with write_transaction(db_path) as conn:
        if not create_tables(conn, _SCHEMA):
            return
        rng = random.Random(seed)
        product_rows, prices = _products(rng, products)
        order_rows, line_rows = _orders(rng, orders, prices)
        conn.executemany("INSERT INTO rates VALUES (?, ?)", list(RATES.items()))
        conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", product_rows)
        conn.executemany(
            "INSERT INTO orders (id, customer_email, currency, status, placed_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            order_rows,
        )
        conn.executemany("INSERT INTO order_lines VALUES (?, ?, ?, ?, ?)", line_rows)


def mutate_orders(db_path: Path, count: int, seed: int | None = None) -> list[str]:
    """Move `count` clean orders on to their next status (pending→paid, paid→shipped) and stamp
    them newer than any order.

    Returns the sorted ids of the changed orders.
    """
    rng = random.Random(seed)
    with write_transaction(db_path) as conn:
        candidates = conn.execute(
            f"SELECT o.row_id, o.id, o.status FROM orders AS o"
            f" WHERE o.status IN ({', '.join('?' * len(NEXT_STATUS))})"
            " AND o.customer_email IS NOT NULL"
            " AND o.currency IN (SELECT currency FROM rates)"
            " AND NOT EXISTS (SELECT 1 FROM order_lines AS l WHERE l.order_id = o.id AND l.quantity <= 0)"
            " ORDER BY o.id",
            list(NEXT_STATUS),
        ).fetchall()
        if count > len(candidates):
            raise ValueError(f"only {len(candidates)} clean open orders to mutate, {count} requested")
        chosen = rng.sample(candidates, count)
        start = newer_than(conn.execute("SELECT max(updated_at) FROM orders").fetchone()[0])
        conn.executemany(
            "UPDATE orders SET status = ?, updated_at = ? WHERE row_id = ?",
            [
                (NEXT_STATUS[status], format_ts(start + timedelta(microseconds=i)), row_id)
                for i, (row_id, _, status) in enumerate(chosen)
            ],
        )
    return sorted(row[1] for row in chosen)


def product_stock(db_path: Path) -> dict[str, int]:
    """Every product's stock level, by sku."""
    with closing(sqlite3.connect(db_path)) as conn:
        return dict(conn.execute("SELECT sku, stock FROM products ORDER BY sku").fetchall())
