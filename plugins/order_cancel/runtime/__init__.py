"""The Integrator's script runtime (the NiFi API, time limits), the Jolt mapping and the response
evaluation: what runs a user's code and specs. No Airflow here."""
