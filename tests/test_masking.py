"""The one masking rule: secrets in every form they are written, 4xx bodies masked before they are cut, database
errors without the rows' values, and dead letters listed with their sensitive values masked unless revealed."""

from __future__ import annotations

import pickle

import httpx
import pytest
import sqlalchemy as sa
from interlink.connectors.connections import RestConnection, SqlConnection
from interlink.connectors.errors import AuthError
from interlink.connectors.masking import cut, mask_exception, mask_secrets, mask_values
from interlink.connectors.rest import RestClient
from interlink.connectors.sql import create_engine
from interlink.tasks.deliver import deliver

from interlink.deadletter import DeadLetters, Reject
from interlink.inventory import _target
from tests.test_deliver import BILLING_CUSTOMERS, INTEGRATION, customers

SECRET = "Zq9-canary-s3cret"


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/db",
        f"postgresql+psycopg://postgres@127.0.0.1:5432/db?sslpassword={SECRET}&application_name=x",
        f"mysql+pymysql://root@127.0.0.1/db?passwd={SECRET}",
        f"https://api.example.com/v1?token={SECRET}&limit=5",
        f"https://api.example.com/v1?api_key={SECRET}",
        f"https://user:{SECRET}@api.example.com/?X-Amz-Signature={SECRET}",
        f"postgresql+psycopg://postgres:pw@{SECRET}@127.0.0.1:5432/db",  # a raw `@` in the password
        f"amqp://guest:a@b@{SECRET}@127.0.0.1:5672/",
        f"host=db.internal port=5432 user=bob password={SECRET} dbname=billing",
        f"host=db.internal password='{SECRET} with spaces' dbname=billing",
        f'{{"error": "invalid", "access_token": "{SECRET}"}}',
        f"{{'client_secret': '{SECRET}', 'client_id': 'interlink'}}",
        f"Authorization: Bearer {SECRET}\nX-API-Key: {SECRET}",
        f"the request carried Basic {SECRET}",
        f"INTERLINK_CRM__AUTH__KEY={SECRET}",
    ],
)
def test_a_secret_in_any_form_is_masked(text):
    masked = mask_secrets(text)
    assert "canary" not in masked and "***" in masked


def test_what_is_not_secret_stays_readable():
    text = "crm /customers: set records_path=None; key_param=updated_since; OAuth2 token request: /oauth/token answered 401"
    assert mask_secrets(text) == text
    assert mask_secrets("postgresql+psycopg://postgres:pw@127.0.0.1:5432/db?application_name=x") == (
        "postgresql+psycopg://postgres:***@127.0.0.1:5432/db?application_name=x"
    )


def test_connections_show_where_they_point_without_their_secrets():
    rest = RestConnection(base_url=f"https://svc:{SECRET}@api.example.com/?api_key={SECRET}")
    sql = SqlConnection(url=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1/db?token={SECRET}&application_name=x")
    assert _target(rest) == "https://svc:***@api.example.com/?api_key=***"
    assert _target(sql) == "postgresql+psycopg://postgres:***@127.0.0.1/db?token=***&application_name=x"


@pytest.mark.parametrize("start", range(185, 201))
def test_a_key_straddling_the_cut_of_a_4xx_body_never_leaks_in_part(start):
    """The server echoes the key it got; wherever the key falls around the 200-character cut, none of it is shown."""
    key = "sk-canary-0123456789abcdef"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="." * start + request.headers["X-API-Key"] + " is not valid")

    with RestClient("crm", "http://crm.test", transport=httpx.MockTransport(echo)) as client:  # the key unknown to it
        with pytest.raises(AuthError) as caught:
            client.request("GET", "/customers", headers={"X-API-Key": key})
    assert "sk-ca" not in str(caught.value) and "credentials were rejected" in str(caught.value)
    assert cut("." * start + key, 200, [key]) == ("." * start + "***")[:200]


def test_a_bearer_token_echoed_alone_is_masked():
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"detail": f"token {request.headers['Authorization'].split()[1]} has expired"})

    with RestClient("crm", "http://crm.test", transport=httpx.MockTransport(echo)) as client:
        with pytest.raises(AuthError) as caught:
            client.request("GET", "/customers", headers={"Authorization": f"Bearer {SECRET}"})
    assert SECRET not in str(caught.value) and "has expired" in str(caught.value)


@pytest.mark.parametrize("billing_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_database_error_carries_no_bound_parameters(billing_url):
    """A target whose table lacks a column: the error names it, and none of the rows' values."""
    engine = create_engine(billing_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (crm_id VARCHAR(32) PRIMARY KEY, name VARCHAR(200), email VARCHAR(254),"
                             " phone VARCHAR(32), country VARCHAR(8), currency VARCHAR(3), crm_updated_at TIMESTAMP,"
                             " row_hash VARCHAR(16) NOT NULL, synced_at TIMESTAMP NOT NULL)"))  # no tax_rate
    engine.dispose()
    rows = customers(3, email=["ada.canary@example.org", "bo.canary@example.org", "cy.canary@example.org"])
    with pytest.raises(sa.exc.DBAPIError) as caught:
        deliver(billing_url, BILLING_CUSTOMERS, rows, INTEGRATION, "w1", None, ("email", "phone"))
    text = str(caught.value)
    assert "tax_rate" in text and "[SQL: INSERT INTO customers" in text  # the error still says what failed
    assert "[parameters:" not in text and "canary" not in text and "+4930" not in text
    assert caught.value.params is None and b"canary" not in pickle.dumps(caught.value)  # as Prefect stores a failed run's error


@pytest.mark.parametrize("billing_url", ["postgresql"], indirect=True)
def test_a_sensitive_value_the_database_quotes_in_its_error_is_masked(billing_url):
    """A target that refuses a row by raising with its value (a trigger): the error shows the value masked."""
    engine = create_engine(billing_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (crm_id VARCHAR(32) PRIMARY KEY, name VARCHAR(200), email VARCHAR(254),"
                             " phone VARCHAR(32), country VARCHAR(8), currency VARCHAR(3), tax_rate DOUBLE PRECISION,"
                             " crm_updated_at TIMESTAMP, row_hash VARCHAR(16) NOT NULL, synced_at TIMESTAMP NOT NULL)"))
        conn.execute(sa.text("CREATE FUNCTION no_canaries() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                             "IF NEW.email LIKE '%canary%' THEN RAISE EXCEPTION 'customer % is blocked', NEW.email; END IF; "
                             "RETURN NEW; END $$"))
        conn.execute(sa.text("CREATE TRIGGER no_canaries BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION no_canaries()"))
    rows = customers(3, email=["ada@example.org", "bo.canary@example.org", "cy@example.org"])
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            deliver(billing_url, BILLING_CUSTOMERS, rows, INTEGRATION, "w1", None, ("email", "phone"))
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE customers"))
            conn.execute(sa.text("DROP FUNCTION no_canaries()"))
        engine.dispose()
    shown = "\n".join(str(e) for e in (caught.value, caught.value.orig, caught.value.__cause__) if e is not None)
    assert "customer b***@example.org is blocked" in shown and "canary" not in shown
    assert b"canary" not in pickle.dumps(caught.value)  # psycopg's own diagnostics, which pickling carries, too


def test_an_error_is_masked_in_place_with_its_chain():
    try:
        try:
            raise ValueError("row bo.canary@example.org is bad")
        except ValueError as inner:
            raise RuntimeError("delivery failed for bo.canary@example.org") from inner
    except RuntimeError as exc:
        error = mask_exception(exc, lambda text: mask_values(text, ["bo.canary@example.org"]))
    assert type(error) is RuntimeError and str(error) == "delivery failed for b***@example.org"
    assert type(error.__cause__) is ValueError and str(error.__cause__) == "row b***@example.org is bad"
    assert error.__context__ is error.__cause__  # what pickling carries on (Prefect's result storage) is masked too


def test_dead_letters_are_listed_masked_unless_revealed(home):
    url = f"sqlite:///{home / 'interlink.db'}"
    record = {"id": "C1", "email": "bo.canary@@example", "phone": "+44 20 7946 0018", "country": "GB"}
    reject = Reject("C1", "deliver", "Duplicate entry 'bo.canary@@example' for key 'email'", {"email": "bo.canary@@example"}, [record])
    DeadLetters(url).put("crm_to_billing", [reject], None)

    [shown] = DeadLetters(url, {"crm_to_billing": ("email", "phone")}).entries()
    assert shown["values"] == {"email": "b***"} and shown["payload"] == [record | {"email": "b***", "phone": "+***"}]
    assert shown["reason"] == "Duplicate entry 'b***' for key 'email'"
    [revealed] = DeadLetters(url, {"crm_to_billing": ("email", "phone")}).entries(reveal=True)
    assert revealed["payload"] == [record] and "bo.canary@@example" in revealed["reason"]


def test_a_source_field_is_masked_by_what_it_means_not_how_it_is_spelt(home):
    """`Email` and `e-mail` in a source record match a sensitive `email`; `contact_mail`, mapped to `email` by the
    transform, is masked because the gate declares it (`sensitive_source`); other fields stay readable."""
    from interlink.data_checks.policy import Gate

    gate = Gate(sensitive=("email",), sensitive_source=("contact_mail",))
    url = f"sqlite:///{home / 'interlink.db'}"
    records = [{"id": "C1", "Email": "bo.canary@example.org", "e-mail": "bo.canary@example.org", "country": "GB"},
               {"id": "C1", "contact_mail": "bo.canary@example.org", "emails_sent": 3}]
    DeadLetters(url).put("contacts", [Reject("C1", "check", "bad address bo.canary@example.org", {"email": "bo.canary@example.org"}, records)], None)

    [shown] = DeadLetters(url, {"contacts": gate.masked}).entries()
    assert shown["payload"] == [
        {"id": "C1", "Email": "b***@example.org", "e-mail": "b***@example.org", "country": "GB"},
        {"id": "C1", "contact_mail": "b***@example.org", "emails_sent": 3},
    ]
    assert shown["values"] == {"email": "b***@example.org"} and shown["reason"] == "bad address b***@example.org"
    assert gate.masked == ("email", "contact_mail")
