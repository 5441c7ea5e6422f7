"""The data-quality report: one offline HTML page per ledger, its charts rendered by a real headless browser."""

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from interlink.connectors.masking import mask_emails as mask
from interlink.data_checks.customers import billing_customers
from interlink.data_checks.gate import build_docs, context, validate
from interlink.data_checks.offline_docs import make_offline
from plotly.offline import get_plotlyjs
from prefect.settings import PREFECT_UI_URL, temporary_settings

from interlink.deadletter import RESOLVED, DeadLetters, Reject
from interlink.ledger import Counts, Ledger
from interlink.quality_report import build_report, render
from tests.test_enrich_check import batch, row

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
RAW_EMAILS = ("alice.smith@@example.com", "bob.jones@", "dave.example.com", "jane.roe@example.com", "carol@example.org")
CHARTS = ["crm_to_billing-delivery", "crm_to_billing-volume", "orders_to_erp-delivery", "orders_to_erp-volume"]


def run(ledger: Ledger, integration: str, counts: Counts, watermark: str, error: str | None = None, circuits=None) -> None:
    try:
        with ledger.record(integration, kind="sync", flow_run_id=None, target="sqlite:///t.db", watermark="w0") as entry:
            entry.counts, entry.watermark, entry.circuits = counts, watermark, circuits
            if error:
                raise RuntimeError(error)
    except RuntimeError:
        pass


def reject(key: str, reason: str, **values) -> Reject:
    return Reject(record_key=key, stage="check", reason=reason, values=values, payload=[{"id": key, "email": "carol@example.org"}])


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/state.db"
    ledger = Ledger(url)
    run(ledger, "crm_to_billing", Counts(100, 80, 0, 0, 20), "2026-11-01T00:00:00")
    run(ledger, "orders_to_erp", Counts(50, 48, 0, 0, 2), "2026-11-01T08:00:00")
    run(ledger, "crm_to_billing", Counts(30, 0, 25, 3, 2), "2026-11-02T00:00:00")
    run(ledger, "orders_to_erp", Counts(12, 2, 10, 0, 0), "2026-11-02T08:00:00")
    run(ledger, "crm_to_billing", Counts(rows_read=5), "2026-11-02T00:00:00", "finance down for jane.roe@example.com", "finance")
    letters = DeadLetters(url)
    letters.put("crm_to_billing", [
        reject("C1", "expect_column_values_to_match_regex(email): email well formed; "
                     "expect_column_values_to_be_in_set(country): country known", email="alice.smith@@example.com", country="XX"),
        reject("C2", "expect_column_values_to_match_regex(email): email well formed", email="bob.jones@"),
        reject("C3", "expect_column_values_to_not_be_null(phone)", phone=None),
        reject("C4", "expect_column_values_to_match_regex(email): email well formed", email="dave.example.com"),
    ], None)
    letters.settle("crm_to_billing", ["C3"], RESOLVED)
    letters.put("orders_to_erp", [reject("O1", "expect_column_values_to_be_in_set(currency): known", currency="XYZ")], None)
    return url


@pytest.fixture
def page(state_url: str, tmp_path: Path) -> Path:
    return build_report(state_url, tmp_path / "reports" / "quality.html")


@pytest.mark.parametrize(("value", "masked"), [
    ("alice@example.com", "a***@example.com"),
    ("write to bob.jones@mail.example.org, or to x@y.de", "write to b***@mail.example.org, or to x***@y.de"),
    ("'alice.smith@@example.com'", "'a***@@example.com'"),
    ("bob.jones@", "b***@"),
    ("no address here", "no address here"),
])
def test_mask_hides_the_local_part_of_every_email(value, masked):
    assert mask(value) == masked
    assert mask(masked) == masked


def test_each_integration_has_its_section_charts_and_tables(page: Path):
    html = page.read_text()
    for name in ("crm_to_billing", "orders_to_erp"):
        assert f'<section id="{name}"><h2>{name}</h2>' in html
    assert re.findall(r'<div id="([\w-]+)" class="plotly-graph-div"', html) == CHARTS
    assert html.count(get_plotlyjs()) == 1 and "<script src=" not in html  # embedded once, nothing to fetch
    crm = html.split('<section id="crm_to_billing">')[1].split("</section>")[0]
    checks = re.findall(r"<tr><td>(expect_\w+\(\w+\))</td><td>check</td><td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td>", crm)
    assert checks == [
        ("expect_column_values_to_match_regex(email)", "3", "3"),
        ("expect_column_values_to_be_in_set(country)", "1", "1"),
        ("expect_column_values_to_not_be_null(phone)", "1", "0"),
    ]
    assert "email well formed" not in html and "&#x27;XX&#x27;" in crm
    assert "3 runs shown; the last, run 5, is" in crm and 'class="FAILED">FAILED' in crm and "finance" in crm
    assert "2026-11-02T00:00:00" in crm and "2026-11-02T08:00:00" not in crm


def test_the_page_shows_no_raw_email(page: Path):
    html = page.read_text()
    assert not [e for e in RAW_EMAILS if e in html]
    assert "j***@example.com" in html  # a well-formed address keeps its domain
    for masked in ("a***", "b***", "d***"):  # malformed addresses in an email column are masked whole
        assert f"&#x27;{masked}&#x27;" in html
    assert EMAIL.findall(html.replace(get_plotlyjs(), "")) == []  # plotly.js itself holds an author's address


def test_an_empty_ledger_gives_a_page_without_charts():
    assert "No runs recorded yet." in render([], []) and "plotly" not in render([], []).lower()


@pytest.fixture
def chromium() -> str:
    """The headless browser; without one the test skips, or fails under REQUIRE_SERVICES=1."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "chromium is not installed (`make tools` installs it on Debian as root)"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def browse(chromium: str, page: Path, profile: Path, *options: str) -> str:
    """Open `page` in headless Chromium with every network request sent to a dead proxy; returns stdout."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
               "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000", "--window-size=1280,2000", *options, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_every_chart_renders_offline_in_headless_chromium(chromium: str, page: Path, tmp_path: Path):
    dom = browse(chromium, page, tmp_path / "profile", "--dump-dom")
    charts = dom.split('class="plotly-graph-div')[1:]
    assert len(charts) == len(CHARTS)
    for chart in charts:
        assert 'class="main-svg"' in chart and 'class="trace scatter' in chart
    browse(chromium, page, tmp_path / "profile", f"--screenshot={tmp_path / 'quality.png'}")
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_declared_sensitive_columns_are_masked_in_examples():
    letter = {"integration": "crm_to_billing", "stage": "check", "status": "open",
              "reason": "expect_column_values_to_match_regex(phone): phone is E.164", "values": {"phone": "915.246.0195"}}
    assert "915.246.0195" in render([], [letter])
    masked = render([], [letter], {"crm_to_billing": ("phone",)})
    assert "915.246.0195" not in masked and "&#x27;9***&#x27;" in masked


def test_a_record_dead_lettered_by_two_runs_counts_once(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/state.db"
    ledger, letters = Ledger(url), DeadLetters(url)
    for _ in range(2):  # a full refresh fails the same record again
        run(ledger, "crm_to_billing", Counts(rows_read=10, rows_inserted=9, rows_quarantined=1), "w1")
        letters.put("crm_to_billing", [reject("C1", "expect_column_values_to_not_be_null(email)")], None)
    text = re.sub(r"<[^>]+>", "", build_report(url, tmp_path / "quality.html").read_text())
    assert "dead-lettered 1 rows (10.0% of its rows read). Dead-letter store: 1 records, 1 open." in text



def test_shares_are_per_run_and_failing_checks_are_counted_as_checks_not_records(tmp_path: Path):
    """Issue 28: "dead-lettered 505 records (5.0% of read)" divided by the rows read over every run shown, and the
    per-check counts (625 for 505 records) did not say a record can fail several checks."""
    url = f"sqlite:///{tmp_path}/state.db"
    ledger, letters = Ledger(url), DeadLetters(url)
    run(ledger, "crm_to_billing", Counts(rows_read=5000, rows_inserted=4495, rows_quarantined=505), "w1")
    run(ledger, "crm_to_billing", Counts(rows_read=40, rows_inserted=38, rows_quarantined=2), "w2")
    letters.put("crm_to_billing", [
        reject("C1", "expect_column_values_to_match_regex(email): email well formed; expect_column_values_to_not_be_null(phone)"),
        reject("C2", "expect_column_values_to_match_regex(email): email well formed"),
    ], None)
    html = build_report(url, tmp_path / "quality.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    assert "the last, run 2, is QUARANTINED" in text
    assert "read 40, delivered 38, dead-lettered 2 rows (5.0% of its rows read). Dead-letter store: 2 records, 2 open." in text
    assert "Counted in checks, not records: 2 dead-lettered records failed 3 checks in all" in text
    assert "<th>check</th><th>stage</th><th>failed checks</th>" in html
    latest = html.split("<h3>Latest runs</h3>")[1]
    assert re.findall(r"<td>(\d+\.\d%)</td>", latest) == ["5.0%", "10.1%"]  # each run's own share


DECLARED = {"crm_to_billing": ("email", "phone"), "inventory_to_storefront": (), "orders_to_erp": ("customer_email",)}
RUN_ID = "5f0c6a59-8e0e-4c43-9d1e-6a3a8f0a1b2c"
DECISION = "approved by alice at 2026-11-03 02:10:00 UTC (505 of 5000 rows fail): known CRM clean-up, ticket OPS-1234 explains why"


@pytest.fixture
def decided(state_url: str) -> str:
    """The ledger of `state_url` with one more run: approved by a person, with its Prefect flow run."""
    with Ledger(state_url).record("crm_to_billing", kind="sync", flow_run_id=RUN_ID, target="sqlite:///t.db", watermark="w0") as entry:
        entry.counts, entry.decision = Counts(5000, 4495, 0, 0, 505), DECISION
    return state_url


def test_every_declared_integration_has_a_section_and_those_never_run_say_so(decided: str, tmp_path: Path):
    html = build_report(decided, tmp_path / "quality.html", DECLARED).read_text()
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', html, re.S))
    assert list(sections) == list(DECLARED)
    assert "No runs recorded yet. This integration has never run here." in sections["inventory_to_storefront"]
    assert "plotly-graph-div" not in sections["inventory_to_storefront"]
    assert re.findall(r'<div id="([\w-]+)" class="plotly-graph-div"', html) == CHARTS


def test_decisions_and_links_to_the_runs_in_the_prefect_ui(decided: str, tmp_path: Path):
    with temporary_settings({PREFECT_UI_URL: "http://prefect.internal:4200"}):
        html = build_report(decided, tmp_path / "quality.html", DECLARED).read_text()
    crm = html.split('<section id="crm_to_billing">')[1].split("</section>")[0]
    link = f'<a href="http://prefect.internal:4200/runs/flow-run/{RUN_ID}" title="{RUN_ID}">{RUN_ID[:8]}</a>'
    decisions = crm.split("<h3>Approval decisions</h3>")[1].split("<h3>")[0]
    assert link in decisions and f"<td>{DECISION}</td>" in decisions  # whole, however long
    assert link in crm.split("<h3>Latest runs</h3>")[1]
    orders = html.split('<section id="orders_to_erp">')[1]
    assert "<h3>Approval decisions</h3><p>None.</p>" in orders


def test_a_run_that_quarantined_rows_shows_as_a_warning_not_a_success(decided: str, tmp_path: Path):
    html = build_report(decided, tmp_path / "quality.html", DECLARED).read_text()
    crm = html.split('<section id="crm_to_billing">')[1].split("</section>")[0]
    assert 'the last, run 6, is <span class="QUARANTINED">QUARANTINED</span>' in crm
    latest = crm.split("<h3>Latest runs</h3>")[1]
    assert re.findall(r'<td class="(\w+)">\1</td>', latest) == ["QUARANTINED", "FAILED", "QUARANTINED", "QUARANTINED"]
    assert ".QUARANTINED { color: #9a6700" in html


EXTERNAL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.IGNORECASE)


def page_requests(chromium: str, page: Path, profile: Path) -> list[str]:
    """The network requests that `page` made in headless Chromium (its own file loads aside), read from the browser's
    network log: requests whose network isolation key is the file page's (the browser's own background traffic is not)."""
    log = profile.parent / "netlog.json"
    browse(chromium, page, profile, f"--log-net-log={log}", "--dump-dom")
    netlog = json.loads(log.read_text())
    start = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in netlog["events"]
            if e["type"] == start and e["params"].get("network_isolation_key", "").startswith("file://")]


def test_the_page_fetches_nothing_from_the_network(chromium: str, decided: str, tmp_path: Path):
    page = build_report(decided, tmp_path / "quality.html", DECLARED)
    assert not EXTERNAL.findall(page.read_text())
    assert page_requests(chromium, page, tmp_path / "profile") == []
    cdn = tmp_path / "cdn.html"  # the check sees a page that does fetch
    cdn.write_text('<html><head><script src="https://cdn.example.com/x.js"></script></head><body></body></html>')
    assert EXTERNAL.findall(cdn.read_text()) and page_requests(chromium, cdn, tmp_path / "profile2") == ["https://cdn.example.com/x.js"]


PROBE = """<script>document.title = JSON.stringify({
  bodyMargin: getComputedStyle(document.body).marginTop,
  jquery: typeof jQuery, bootstrapTable: typeof (window.jQuery && jQuery.fn.bootstrapTable), vegaEmbed: typeof vegaEmbed,
  icon: (document.querySelector("i[class*='fa-']") && getComputedStyle(document.querySelector("i[class*='fa-']")).fontFamily) || ""
});</script>"""


def probed(chromium: str, page: Path, profile: Path) -> dict:
    """What the browser made of `page`: a copy next to it, with a script that reads computed styles and the libraries."""
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(chromium, probe, profile, "--dump-dom")
    return json.loads(html_lib.unescape(re.search(r"<title>(\{.*?\})</title>", dom)[1]))


def test_data_docs_render_offline_with_their_styles_and_scripts(chromium: str, tmp_path: Path):
    """Great Expectations' pages load Bootstrap, jQuery, Font Awesome and Vega from CDNs; ours load the vendored copies."""
    ctx = context(tmp_path)
    validate(ctx, batch(row("C1"), row("C2", email="bad")), billing_customers(), "offline-run")
    index = build_docs(ctx, "offline-run")
    [page] = (tmp_path / "reports" / "validations").rglob("*.html")
    for shown in (index, page):
        assert not EXTERNAL.findall(shown.read_text()), shown
        local = re.findall(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["']([^"'?#]+)""", shown.read_text())
        ours = [ref for ref in local if "static/vendor/" in ref or ref.endswith("logo-long.png")]  # (GX's favicon link on
        assert {Path(ref).name for ref in ours} >= {"bootstrap.min.css", "all.min.css", "jquery.min.js", "vega.min.js", "logo-long.png"}
        assert [ref for ref in ours if not (shown.parent / ref).is_file()] == []  # validation pages is one level short)
        assert page_requests(chromium, shown, tmp_path / f"profile-{shown.name}") == []
        seen = probed(chromium, shown, tmp_path / f"probe-{shown.name}")
        assert seen["bodyMargin"] == "0px", seen  # Bootstrap's reboot applied (a bare page has the browser's 8px)
        assert seen["jquery"] == seen["bootstrapTable"] == seen["vegaEmbed"] == "function", seen
    assert "Font Awesome" in probed(chromium, page, tmp_path / "probe-icons")["icon"]


def test_a_data_docs_address_without_a_local_copy_is_reported_and_left(tmp_path: Path):
    page = tmp_path / "index.html"
    page.write_text('<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script><script src="https://cdn.example.com/new.js"></script>')
    assert make_offline(tmp_path, [page]) == {"https://cdn.example.com/new.js"}
    assert page.read_text() == '<script src="static/vendor/jquery.min.js"></script><script src="https://cdn.example.com/new.js"></script>'
