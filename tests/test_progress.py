"""Runs' progress: the watchers the flows tell of each batch, and `interlink run`'s live display in a terminal."""

import io
import logging
import sys

from prefect.logging.handlers import PrefectConsoleHandler

from interlink.ledger import Counts, Entry
from interlink.progress import batch_done, watching
from interlink.progress_view import display


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_terminal_each_run_is_a_live_row_and_log_lines_print_above_it(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "160")
    logger = logging.getLogger("tests.progress")
    handler = PrefectConsoleHandler(terminal)  # a rich console's handler, as Prefect's flow run logs have
    logger.addHandler(handler)
    try:
        with display(as_json=False) as shown, shown.run("crm_to_billing", "sync") as tally:
            batch_done("crm_to_billing", 1, Entry(counts=Counts(rows_read=10, rows_inserted=9, rows_quarantined=1)))
            logger.warning("a page was retried")
            batch_done("orders_to_erp", 1, Entry(counts=Counts(rows_read=99)))  # another run's: not this row's
            batch_done("crm_to_billing", 2, Entry(counts=Counts(rows_read=20, rows_inserted=17, rows_updated=1, rows_quarantined=2)))
    finally:
        logger.removeHandler(handler)
    out = capsys.readouterr().out
    assert tally.batches == 2 and str(tally).startswith("2 batches in ")
    assert "a page was retried" in out and terminal.getvalue() == "" and handler.stream is terminal  # above the row, then back
    assert handler.console.file is terminal
    last = out.rsplit("crm_to_billing", 1)[1]  # the row's final frame
    assert "batch 2: read 20, inserted 17, updated 1, quarantined 2" in last and "99" not in out
    assert "\x1b[" in out  # drawn with terminal control codes, unlike the plain lines of a pipe


def test_a_failing_watcher_does_not_fail_the_run_nor_stop_the_others(caplog):
    seen = []

    def broken(batch):
        raise RuntimeError("display gone")

    with watching(broken), watching(seen.append):
        batch_done("crm_to_billing", 1, Entry(counts=Counts(rows_read=5)))
    batch_done("crm_to_billing", 2, Entry())  # nobody watches any more
    assert [(b.number, b.counts.rows_read) for b in seen] == [(1, 5)]
    assert "display gone" in caplog.text
