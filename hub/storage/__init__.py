"""Storage stage: the database and one class per family of tables; the only place in ``hub`` that holds SQL.

``database`` (engine, migrations, transactions, counters, retention), ``rows`` (the ORM rows),
``events``, ``nodes``, ``alerts``, ``commands``, ``rejected``.
"""
