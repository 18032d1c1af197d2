"""The Integrator's test panels: `service` runs the flow's own pipeline on one plan (no Airflow);
`app` serves it inside Airflow's api-server with Airflow's authentication."""
