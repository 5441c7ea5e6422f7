"""The hand-written ceiling: one httpx client reading the offset pages in turn, psycopg COPY into one table, one commit."""

from __future__ import annotations

import time

import httpx
import psycopg

from benchmarks.contenders import FIELDS, main

TYPES = {"updated_at": "timestamptz", "created_at": "timestamptz"}  # the rest are text
COLUMNS = ", ".join(f"{field} {TYPES.get(field, 'text')}" for field in FIELDS)


def run(config: dict) -> dict:
    started = time.perf_counter()
    table = f"{config['schema']}.customers"
    rows = 0
    with (
        httpx.Client(base_url=config["url"], headers={"X-API-Key": config["api_key"]}) as http,
        psycopg.connect(config["pg"]) as conn,
    ):
        conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
        with conn.cursor().copy(f"COPY {table} ({', '.join(FIELDS)}) FROM STDIN") as copy:
            offset, total = 0, 1
            while offset < total:
                body = http.get("/customers", params={"limit": config["page"], "offset": offset}).raise_for_status().json()
                for record in body["data"]:
                    copy.write_row([record[f] for f in FIELDS])
                rows += len(body["data"])
                offset, total = offset + config["page"], body["total"]
    return {"sync_s": time.perf_counter() - started, "rows_read": rows}


if __name__ == "__main__":
    main(run)
