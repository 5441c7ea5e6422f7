"""orders_to_erp against the real demo storefront (OAuth2, page numbers), on SQLite, PostgreSQL and MariaDB."""

import sqlite3
from contextlib import closing

import pandas as pd
import sqlalchemy as sa
from interlink.connectors.sql import create_engine
from interlink.demo_systems.storefront_data import mutate_orders
from interlink.flows.orders_to_erp import PIPELINE as orders_to_erp

from interlink.deadletter import DeadLetters
from interlink.settings import Settings


def source(db) -> tuple[pd.DataFrame, pd.DataFrame]:
    with closing(sqlite3.connect(db)) as conn:
        return pd.read_sql("SELECT * FROM orders", conn), pd.read_sql("SELECT * FROM order_lines", conn)


def erp(url) -> tuple[pd.DataFrame, pd.DataFrame]:
    engine = create_engine(url)
    with engine.connect() as conn:
        orders = pd.read_sql(sa.text("SELECT * FROM erp_orders ORDER BY order_id"), conn).drop(columns="synced_at")
        lines = pd.read_sql(sa.text("SELECT * FROM erp_order_lines ORDER BY order_id, line_no"), conn)
    engine.dispose()
    return orders, lines


def test_orders_and_their_lines_reach_the_erp_converted_to_eur_and_only_once(storefront, storefront_db, erp_url):
    with storefront() as app:
        first = orders_to_erp.sync(chunk_size=700)  # three chunks
        orders, lines = erp(erp_url)
        again = orders_to_erp.sync()
        changed = mutate_orders(storefront_db, 10, seed=4)
        third = orders_to_erp.sync()

    src_orders, src_lines = source(storefront_db)
    assert app.state.hits["/oauth/token"] == 1  # one token for the whole run
    open_keys = {e["record_key"] for e in DeadLetters(Settings().state_db).entries("orders_to_erp", "open")}
    assert first["rows_read"] == len(src_orders) and first["rows_inserted"] == len(orders)
    assert set(orders["order_id"]).isdisjoint(open_keys) and set(orders["order_id"]) | open_keys == set(src_orders["id"])

    delivered_lines = src_lines[src_lines["order_id"].isin(orders["order_id"])]
    assert len(lines) == len(delivered_lines) == orders["line_count"].sum()
    rate = orders["total"] / orders["total_eur"]
    assert ((rate - orders["eur_rate"]).abs() < 0.01 * orders["eur_rate"]).all()
    assert set(orders.loc[orders["currency"] == "EUR", "eur_rate"]) == {1.0}

    assert again["rows_inserted"] == again["rows_updated"] == 0
    assert third["rows_updated"] == 10
    after, _ = erp(erp_url)
    status = after.set_index("order_id")["status"]
    expected = src_orders.set_index("id")["status"]
    assert all(status[o] == expected[o] for o in changed)


def test_bad_orders_are_dead_lettered_with_the_failing_expectation(storefront, erp_url):
    with storefront():
        orders_to_erp.sync()
    letters = DeadLetters(Settings().state_db).entries("orders_to_erp", "open")
    reasons = " ".join(e["reason"] for e in letters)
    assert "currency is known to the rates API" in reasons
    assert "every line orders at least 1" in reasons
    assert "a known order status" in reasons
    unknown_currency = next(e for e in letters if "eur_rate" in e["values"])
    assert unknown_currency["payload"][0]["currency"] == "XYZ" and unknown_currency["payload"][0]["lines"]
