"""Alembic environment: run by db.migrate with a live connection in ``config.attributes``.

Also works from the alembic CLI for developers: ``alembic -x url=sqlite:///var/station.db``
with ``script_location = db/migrations``.
"""

from alembic import context

from station.db.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from station.db.engine import make_engine

        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        with make_engine(url).connect() as conn:
            _migrate(conn)
    else:
        _migrate(connection)


def _migrate(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # db.engine makes SQLite emit BEGIN itself, so DDL is transactional there as well:
        # a migration interrupted by a crash leaves the old schema, not half a new one
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
