"""The declaration's owners, SLAs and retention: read without Prefect, mistakes named, defaults merged."""

from __future__ import annotations

import subprocess
import sys
from datetime import time, timedelta
from pathlib import Path

import pytest
import yaml
from interlink.connectors.errors import ConfigError
from interlink.demo_systems.cli import DEMO_PROJECT
from interlink.deployments.declaration import duration, duration_text, read

ROOT = Path(__file__).parents[1]
BASE = {
    "timezone": "Europe/Berlin",
    "retention": {"dead_letters": "90d", "runs": "400d"},
    "integrations": {"crm_to_billing": {"owner": {"team": "Billing", "contact": "#billing-oncall"},
                                        "sla": {"fresh_within": "26h", "done_by": "06:00"},
                                        "retention": {"dead_letters": "180d"}}},
    "deployments": [{"integration": "crm_to_billing", "cron": "0 2 * * *"},
                    {"integration": "crm_to_billing", "flow": "reconcile", "cron": "0 5 * * 0"}],
}


def declared(tmp_path: Path, text: dict | str):
    path = tmp_path / "deployments.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    return read(path)


def test_owner_sla_and_retention_are_read_and_merged(tmp_path):
    found = declared(tmp_path, BASE)
    product = found.integrations["crm_to_billing"]
    assert str(product.owner) == "Billing (#billing-oncall)"
    assert product.sla.fresh_within == timedelta(hours=26) and product.sla.done_by == time(6)
    retention = found.retention_of("crm_to_billing")
    assert retention.dead_letters == timedelta(days=180)  # its own
    assert retention.runs == timedelta(days=400)  # the file's
    assert retention.reports is None  # declared nowhere: kept for ever
    assert found.retention_of("undeclared").dead_letters == timedelta(days=90)


def test_the_description_names_owner_schedule_timezone_and_sla(tmp_path):
    found = declared(tmp_path, BASE)
    sync, reconcile = found.deployments
    assert found.description(sync).split("\n\n") == [
        "Owner: Billing (#billing-oncall)",
        "Schedule: `0 2 * * *` in Europe/Berlin",
        "SLA: a Completed sync at least every 26h; each scheduled sync done by 06:00 Europe/Berlin",
    ]
    assert "SLA" not in found.description(reconcile)  # the SLA is the sync's


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d["integrations"].clear(), "integrations.crm_to_billing is not declared: give the deployed integration its owner"),
    (lambda d: d["integrations"]["crm_to_billing"].pop("owner"), "integrations.crm_to_billing.owner: is not set"),
    (lambda d: d["integrations"]["crm_to_billing"]["sla"].update(fresh_within="26 hours"), "'26 hours' is not a duration"),
    (lambda d: d["integrations"]["crm_to_billing"].update(sla={}), "promises nothing"),
    (lambda d: d["retention"].update(runs="1y"), "retention.runs: '1y' is not a duration"),
    (lambda d: d["deployments"][0].update(cron="61 2 * * *"), "deployments[0] (crm_to_billing sync).cron: '61 2 * * *' is not a cron string"),
    (lambda d: d["deployments"][0].update(flow="synk"), "'synk' is not a flow"),
    (lambda d: d.update(timezone="Europe/Berlim"), "timezone: 'Europe/Berlim' is not a timezone"),
])
def test_a_mistake_is_one_line_naming_the_key(tmp_path, change, says):
    text = yaml.safe_load(yaml.safe_dump(BASE))
    change(text)
    with pytest.raises(ConfigError) as raised:
        declared(tmp_path, text)
    assert says in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


@pytest.mark.parametrize(("text", "seconds"), [("26h", 93600), ("90d", 7776000), ("1h30m", 5400), ("45s", 45)])
def test_durations_read_and_written_as_declared(text, seconds):
    assert duration(text) == timedelta(seconds=seconds)
    assert duration_text(duration(text)) == text


def test_reading_the_declaration_imports_neither_prefect_nor_an_integration():
    """What keeps `interlink status` fast: the declaration alone is read."""
    code = ("import sys; from interlink.deployments.declaration import read; read(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows', 'great_expectations')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_shipped_declaration_gives_every_deployed_integration_an_owner():
    found = read(Path(DEMO_PROJECT["INTERLINK_DEPLOYMENTS_FILE"]))
    assert {d.integration for d in found.deployments} <= set(found.integrations)
    assert found.prune is not None
