"""HTTP clients of Omnitron and the ERP, their session and login tokens. Every path, parameter and
body of the wire contract lives here. No Airflow here."""
