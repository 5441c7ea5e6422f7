"""A REST target counts only what the API confirms, creates new keys and updates known ones as declared, and keeps
a watermark in the state database.

Against a stand-in for Directus 12 (`tests/directus_like.py`: 204 to a PATCH of a missing item, creating nothing),
a small upsert API, and json-server 0.17 (npm, a REST server we did not write: 404 to a PATCH of a missing id, POST to
the collection creates) as both ends of a REST → REST integration.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
from interlink.connectors.errors import RetriableError
from interlink.demo_systems.server import serve
from interlink.flows.pipeline import Pipeline
from interlink.tasks.ingest import RestSource
from interlink.tasks.send import RestTarget, send_changed
from prefect import task
from prefect.cache_policies import NO_CACHE
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from interlink.delivered import Delivered
from interlink.settings import RestConnection, Settings
from tests.directus_like import directus_like
from tests.json_server import free_port, json_server

CUSTOMERS = "/items/customers/{id}"
DIRECTUS = {"path": CUSTOMERS, "key": "id", "fields": ("name",), "absent": (403, 404)}


def customers(names: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(names), "name": list(names.values())}, index=range(10, 10 + len(names)))


def send(url: str, target: RestTarget, rows: pd.DataFrame, integration: str = "customers_to_cms"):
    return send_changed(RestConnection(base_url=url), Settings().state_db, target, rows, integration, "run-1")


@pytest.fixture
def directus(home) -> Iterator[Starlette]:
    app = directus_like({"customers": {}})
    with serve(app) as url:
        app.state.url = url
        yield app


def held(app: Starlette) -> dict[int, str]:
    return {int(k): item["name"] for k, item in app.state.items["customers"].items()}


@pytest.mark.parametrize("absent", [(404,), (403, 404)], ids=["403 not declared absent", "403 declared absent"])
def test_a_204_to_a_patch_of_a_missing_item_is_never_counted(directus, absent):
    delivery = send(directus.state.url, RestTarget("cms", **{**DIRECTUS, "absent": absent}), customers({1: "Ada", 2: "Bo", 3: "Cy"}))

    assert held(directus) == {}  # Directus created nothing
    assert delivery.counts.rows_inserted == delivery.counts.rows_updated == 0  # and nothing is said to have arrived
    assert sorted(delivery.failures.index) == [10, 11, 12]
    reason = delivery.failures.at[10, "reason"]
    if absent == (404,):  # the read-back's 403 is an error like any other: a dead letter naming it
        assert "GET /items/customers/1 answered 403" in reason and reason.endswith("declare absent=(403, 404) on the RestTarget")
    else:
        assert reason == (
            "cms: PATCH /items/customers/1 answered 204, but GET /items/customers/1 finds nothing there; "
            "to create keys the target does not hold, declare create=(method, path) on the RestTarget"
        )
    assert Delivered(Settings().state_db).hashes("customers_to_cms", ["1", "2", "3"]) == {}  # sent again next run


def test_new_keys_are_created_known_ones_updated_and_a_lost_one_created_again(directus):
    directus.state.items["customers"]["9"] = {"id": 9, "name": "Old Ida"}  # there before Interlink: found by a GET
    target = RestTarget("cms", **DIRECTUS, create=("POST", "/items/customers"))
    first = send(directus.state.url, target, customers({1: "Ada", 2: "Bo", 3: "Cy", 4: "Di", 9: "Ida"}))
    assert (first.counts.rows_inserted, first.counts.rows_updated, len(first.failures)) == (4, 1, 0)
    assert held(directus) == {1: "Ada", 2: "Bo", 3: "Cy", 4: "Di", 9: "Ida"}

    del directus.state.items["customers"]["3"]  # lost at the target behind Interlink's back
    requests = directus.state.requests.copy()
    second = send(directus.state.url, target, customers({1: "Ada", 2: "Bob", 3: "Cyd", 4: "Di", 9: "Ida K"}))

    assert held(directus) == {1: "Ada", 2: "Bob", 3: "Cyd", 4: "Di", 9: "Ida K"}
    assert (second.counts.rows_inserted, second.counts.rows_updated, second.counts.rows_unchanged) == (1, 2, 2)
    # known keys go straight to PATCH; the lost one's 204 is read back (403), then it is created
    assert directus.state.requests - requests == {"PATCH": 3, "GET": 1, "POST": 1}


def test_unchanged_rows_are_the_ones_delivered_identically(directus):
    target = RestTarget("cms", **DIRECTUS, create=("POST", "/items/customers"))
    send(directus.state.url, target, customers({1: "Ada", 2: "Bo"}))
    rows = customers({1: "Ada", 2: "Bob", 3: "Cy"})  # 2 changed, 3 never delivered
    assert list(target.unchanged(Settings(), rows, "customers_to_cms")) == [10]
    assert list(target.unchanged(Settings(), rows, "another_integration")) == []


def upsert_api() -> Starlette:
    """`PUT /things/{id}` creates (201) or replaces (200) the thing, answering with it."""
    things: dict[str, dict] = {}

    async def put(request: Request) -> JSONResponse:
        key = request.path_params["id"]
        status = 200 if key in things else 201
        things[key] = {"id": key, **await request.json()}
        return JSONResponse(things[key], status)

    app = Starlette(routes=[Route("/things/{id}", put, methods=["PUT"])])
    app.state.things = things
    return app


def test_put_as_upsert_counts_201_as_created_and_200_as_changed(home):
    app = upsert_api()
    app.state.things["2"] = {"id": "2", "name": "Old Bo"}  # there before Interlink: replaced, not created
    target = RestTarget("things", path="/things/{id}", key="id", fields=("name",), method="PUT")
    with serve(app) as url:
        first = send(url, target, customers({1: "Ada", 2: "Bo"}), "things")
        second = send(url, target, customers({1: "Ada", 2: "Bob", 3: "Cy"}), "things")
    assert (first.counts.rows_inserted, first.counts.rows_updated) == (1, 1)
    assert (second.counts.rows_inserted, second.counts.rows_updated, second.counts.rows_unchanged) == (1, 1, 1)
    assert {k: v["name"] for k, v in app.state.things.items()} == {"1": "Ada", "2": "Bob", "3": "Cy"}


# REST → REST against json-server: people (source) → customers (target), on one json-server.

PEOPLE = [{"id": i, "name": f"Person {i}", "updated_at": f"2026-01-01T00:{i:02d}:00Z"} for i in range(1, 31)]


@task(name="transform", cache_policy=NO_CACHE)
def to_customers(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": raw["id"].astype("int64"), "name": raw["name"].str.upper()}, index=raw.index)


def named_customers():
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(name="named_customers", expectations=[gxe.ExpectColumnValuesToNotBeNull(column="name")])


PIPELINE = Pipeline(
    name="people_to_customers",
    source=RestSource(
        "people", "/people", "updated_at", "updated_at_gte", sorted=True,
        paginator={"type": "link_header", "page_size_param": "_limit", "page_size": 10},
        params={"_page": 1, "_sort": "updated_at,id", "_order": "asc,asc"},
    ),
    transform=to_customers,
    suite=named_customers,
    target=RestTarget("customers", path="/customers/{id}", key="id", fields=("name",), create=("POST", "/customers")),
    key="id",
    source_key="id",
)


@pytest.fixture
def rest_to_rest(home, tmp_path, monkeypatch) -> Iterator[httpx.Client]:
    with json_server({"people": PEOPLE, "customers": []}, tmp_path) as url, httpx.Client(base_url=url) as admin:
        monkeypatch.setenv("INTERLINK_PEOPLE__BASE_URL", url)
        monkeypatch.setenv("INTERLINK_CUSTOMERS__BASE_URL", url)
        yield admin


def target_holds(admin: httpx.Client) -> dict[int, str]:
    return {c["id"]: c["name"] for c in admin.get("/customers").json()}


def counted(summary: dict) -> tuple[int, ...]:
    return tuple(summary[k] for k in ("rows_read", "rows_inserted", "rows_updated", "rows_unchanged", "rows_quarantined"))


def test_a_rest_to_rest_integration_creates_then_updates_only_changes_and_rereads_only_the_watermark(rest_to_rest):
    admin = rest_to_rest
    first = PIPELINE.sync()
    assert counted(first) == (30, 30, 0, 0, 0)
    assert target_holds(admin) == {p["id"]: p["name"].upper() for p in PEOPLE}  # what was counted is what json-server holds
    assert PIPELINE.target.watermark(Settings(), PIPELINE.name) == "2026-01-01T00:30:00Z"  # in the state database

    again = PIPELINE.sync()
    assert counted(again) == (1, 0, 0, 1, 0)  # only the record at the watermark is read, and found delivered

    for i, name in ((4, "Dora"), (17, "Quinn")):  # two changed at the source, later than the watermark
        admin.patch(f"/people/{i}", json={"name": name, "updated_at": f"2026-01-02T00:{i:02d}:00Z"}).raise_for_status()
    admin.post("/people", json={"id": 31, "name": "Rue", "updated_at": "2026-01-02T01:00:00Z"}).raise_for_status()
    third = PIPELINE.sync()

    assert counted(third) == (4, 1, 2, 1, 0)  # the record at the old watermark, the two changed, the new one
    holds = target_holds(admin)
    assert len(holds) == 31 and holds[4] == "DORA" and holds[17] == "QUINN" and holds[31] == "RUE" and holds[5] == "PERSON 5"
    assert counted(PIPELINE.sync()) == (1, 0, 0, 1, 0)


def test_a_target_that_fails_leaves_the_watermark_where_it_was(rest_to_rest, monkeypatch):
    admin = rest_to_rest
    monkeypatch.setenv("INTERLINK_CUSTOMERS__BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("INTERLINK_CUSTOMERS__MAX_ATTEMPTS", "1")
    with pytest.raises(RetriableError, match="cannot connect"):
        PIPELINE.sync()
    assert PIPELINE.target.watermark(Settings(), PIPELINE.name) is None

    monkeypatch.setenv("INTERLINK_CUSTOMERS__BASE_URL", str(admin.base_url).rstrip("/"))
    assert counted(PIPELINE.sync()) == (30, 30, 0, 0, 0)  # everything read again, and delivered
    assert len(target_holds(admin)) == 30 and PIPELINE.target.watermark(Settings(), PIPELINE.name) == "2026-01-01T00:30:00Z"
