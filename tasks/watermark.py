"""The committed watermark of an integration, read from its target."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.sql import create_engine, read_watermark


@task(name="read-watermark", cache_policy=NO_CACHE)
def committed_watermark(url: str, integration: str) -> str | None:
    engine = create_engine(url)
    try:
        return read_watermark(engine, integration)
    finally:
        engine.dispose()
