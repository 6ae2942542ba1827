#!/bin/sh
# Run once by the official postgres image, when it initialises an empty data directory (/docker-entrypoint-initdb.d,
# after initdb, against a server listening on its Unix socket only): create MLflow's own login role, its database,
# and the database of the sweeps' Optuna studies (the Tune driver on the Ray head persists each study there:
# QSHIELD_OPTUNA_STORAGE in k8s/base/rayjob.yaml). The role owns those two databases and nothing else: no
# superuser, no CREATEDB, no CREATEROLE, no replication. No credential is written here: they come from the environment (Secret qshield-mlflow-db), and psql
# quotes them itself (:"identifier", :'literal'), so any value is safe.
set -eu
: "${MLFLOW_DB_USER:?MLFLOW_DB_USER is not set (Secret qshield-mlflow-db, key username)}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set (Secret qshield-mlflow-db, key password)}"
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set=role="$MLFLOW_DB_USER" --set=password="$MLFLOW_DB_PASSWORD" --set=db="${MLFLOW_DB_NAME:-mlflow}" \
  --set=optuna_db="${OPTUNA_DB_NAME:-optuna}" <<'SQL'
CREATE ROLE :"role" WITH LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"db" WITH OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
CREATE DATABASE :"optuna_db" WITH OWNER :"role";
REVOKE ALL ON DATABASE :"optuna_db" FROM PUBLIC;
SQL
echo "created role $MLFLOW_DB_USER and databases ${MLFLOW_DB_NAME:-mlflow}, ${OPTUNA_DB_NAME:-optuna}"
