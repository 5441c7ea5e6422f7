"""Alembic's environment for the state database.

`interlink.migrations.upgrade` runs it on a connection it passes in (`config.attributes["connection"]`).
Run any other way (e.g. `alembic.command.check`), it connects to the configured state database itself.
"""

from alembic import context

from interlink.migrations import VERSION_TABLE


def run(connection) -> None:
    from interlink.state import METADATA  # for autogenerate and `check`; the revisions themselves never use it

    context.configure(connection=connection, target_metadata=METADATA, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the state database's migrations run online only: `interlink state upgrade`")

connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from interlink.connectors.sql import create_engine
    from interlink.settings import Settings

    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or Settings.load().state_db)
    with engine.connect() as conn:
        run(conn)
        conn.commit()
    engine.dispose()
