"""The plan ledger: every attempt at every plan, across runs, in a database of its own (no Airflow)."""
