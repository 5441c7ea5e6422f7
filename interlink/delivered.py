"""What was last delivered to targets that cannot tell us themselves (APIs): one hash per record."""

from collections.abc import Iterable

from interlink.connectors.sql import select_in, upsert, utcnow
from interlink.state import DELIVERED, state_engine


class Delivered:
    def __init__(self, url: str):
        self._engine = state_engine(url)

    def hashes(self, integration: str, keys: Iterable[str]) -> dict[str, str]:
        """The hash last delivered for each of `keys` that was delivered before."""
        with self._engine.connect() as conn:
            rows = select_in(
                conn, [DELIVERED.c.record_key, DELIVERED.c.row_hash], DELIVERED.c.record_key, keys,
                where=DELIVERED.c.integration == integration,
            )
        return {key: row_hash for key, row_hash in rows}

    def record(self, integration: str, hashes: dict[str, str]) -> None:
        """Remember what was just delivered."""
        now = utcnow()
        rows = [{"integration": integration, "record_key": k, "row_hash": h, "delivered_at": now} for k, h in hashes.items()]
        with self._engine.begin() as conn:
            upsert(conn, DELIVERED, rows, keys=["integration", "record_key"])
