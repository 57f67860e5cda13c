#!/bin/sh
# Runs once, when the postgres-data volume is empty (the postgres image's initdb hook): one role and
# one database for MLflow, one for loopml. Passwords come from the environment (deploy/compose/.env)
# and are passed to psql as variables, never written into this file.
set -eu
: "${PG_MLFLOW_PASSWORD:?}" "${PG_LOOPML_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v mlflow_password="$PG_MLFLOW_PASSWORD" -v loopml_password="$PG_LOOPML_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE loopml LOGIN PASSWORD :'loopml_password';
CREATE DATABASE loopml OWNER loopml;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE loopml FROM PUBLIC;
SQL
