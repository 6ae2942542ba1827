# syntax=docker/dockerfile:1.7
# The MLflow tracking server: mlflow with the basic-auth extra (Flask-WTF) and the PostgreSQL driver, runs as a
# non-root user. The dependencies that mlflow shares with the project are constrained to requirements/lock.txt.
# Build from the repository root (k8s/image/build.sh mlflow):  qshield-mlflow:<mlflow version>
# MLFLOW_VERSION must equal the mlflow== pin of requirements/lock.txt (tests/test_k8s.py checks the default).
FROM python:3.11-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
ARG FLASK_WTF_VERSION=1.3.0

COPY requirements/lock.txt /tmp/lock.txt
RUN python -m pip install --no-cache-dir -c /tmp/lock.txt \
      "mlflow==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" "Flask-WTF==${FLASK_WTF_VERSION}" \
 && rm /tmp/lock.txt \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlflow

USER 10001:10001
ENV HOME=/tmp
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host=0.0.0.0", "--port=5000"]
