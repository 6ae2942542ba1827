#!/bin/sh
# Run once by the official postgres image, when it initialises an empty data directory (/docker-entrypoint-initdb.d,
# after initdb, against a server listening on its Unix socket only): create MLflow's own login role and its
# database. The role owns that database and nothing else: no superuser, no CREATEDB, no CREATEROLE, no
# replication. No credential is written here: they come from the environment (Secret qshield-mlflow-db), and psql
# quotes them itself (:"identifier", :'literal'), so any value is safe.
set -eu
: "${MLFLOW_DB_USER:?MLFLOW_DB_USER is not set (Secret qshield-mlflow-db, key username)}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set (Secret qshield-mlflow-db, key password)}"
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set=role="$MLFLOW_DB_USER" --set=password="$MLFLOW_DB_PASSWORD" --set=db="${MLFLOW_DB_NAME:-mlflow}" <<'SQL'
CREATE ROLE :"role" WITH LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"db" WITH OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
echo "created role $MLFLOW_DB_USER and database ${MLFLOW_DB_NAME:-mlflow}"
