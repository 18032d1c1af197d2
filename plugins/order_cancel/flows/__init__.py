"""Flow files: the models of the contract, loading (one problem per line, per file), schedules, and
the deep checks (scripts compile, Jolt specs build). No Airflow here."""
