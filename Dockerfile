# The Astro project's image: Astro Runtime with the Airflow version the tests run with.
#
# Astro Runtime 3.3-8 ships Apache Airflow 3.3.2 (Astronomer's build 3.3.2+astro.1), the version
# pinned in requirements-dev.txt; tests/e2e/dags/test_astro_project.py keeps the two in step.
# Source: Astronomer's Runtime version catalog, https://updates.astronomer.io/astronomer-runtime
# ("3.3-8": airflowVersion 3.3.2, released 2026-09-23, Python 3.12 / 3.13 / 3.14, default 3.14),
# as cut into astronomer/astro-cli pkg/runtimeversions/testdata/catalog.json on 2026-09-25.
# Airflow 3 Runtime images live in astrocrpublic.azurecr.io/runtime (Airflow 2 ones in
# quay.io/astronomer/astro-runtime); see https://www.astronomer.io/docs/runtime/runtime-image-architecture
# and https://www.astronomer.io/docs/runtime/runtime-release-notes.
# The -python-3.12 distribution: Runtime 3.3 has no Python 3.11 (what .venv runs), 3.12 is the
# closest; the default image would be Python 3.14.
#
# The image's ONBUILD steps do the rest: they install packages.txt (apt, empty here) and
# requirements.txt (uv, strict resolver since Runtime 3.3-2: a pin that conflicts with the image's
# own packages fails the build), then copy the project (minus .dockerignore) to /usr/local/airflow.
# There, dags/ is the DAGs folder, plugins/ is on sys.path (the order_cancel package), and the flows
# are read from include/flows, the package's default (set explicitly below).
FROM astrocrpublic.azurecr.io/runtime:3.3-8-python-3.12

ENV ORDER_CANCEL_FLOWS_DIR=/usr/local/airflow/include/flows
# Under the CeleryExecutor each worker imports the package once; its tasks' processes inherit it.
ENV AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=order_cancel.airflow.celery_config.CELERY_CONFIG
