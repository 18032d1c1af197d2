"""The plans page: the plan ledger in the Airflow UI (search, timelines, retry)."""
