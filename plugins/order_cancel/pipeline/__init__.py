"""A plan's work and a run's: the plan contract and its step records, the one plan pipeline with
its ERP side (the response evaluation, InvokeHTTP's attributes), the batch runner, fetching, the
completed watermark, the run summary and report. No Airflow here."""
