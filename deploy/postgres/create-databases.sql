-- One database each: MLflow and Prefect both keep an alembic_version table, so they cannot share one.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
