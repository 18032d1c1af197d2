"""A plan's work and a run's: the plan contract and its step records, the one plan pipeline, the
batch runner, fetching, the completed watermark, the run summary and report. No Airflow here."""
