"""Inspection history: schema, engine, migrations, the single writer, image archive, queries.

Layers: ``models`` (schema) → ``engine`` (URL → engine, SQLite pragmas) → ``migrations``
(Alembic, run at start-up) → ``writer`` (the pipeline's result sink) / ``queries`` (HMI, CLI)
→ ``archive`` (image files, retention, reconciliation).
"""
