"""The flow's operators: thin, like the HTTP provider's. Hooks build the clients, the pipeline does
the plan's work, an operator wires them to Airflow (templated input, XCom, state, logs, failure)."""
