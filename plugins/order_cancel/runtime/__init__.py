"""The Integrator's script runtime (the NiFi API, time limits) and the Jolt mapping: what runs a
user's code and specs. No Airflow here, and nothing of Omnitron or the ERP."""
