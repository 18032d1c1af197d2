"""The Airflow adapters, the only code of the package that imports Airflow (with panels.app): the
DAG factory, the operators, the hooks, the REST API client and the layout of run data."""
