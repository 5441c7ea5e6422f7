"""The state database's revisions, oldest first by their number; Alembic reads them as files."""
