"""Print the Secrets that the manifests under k8s/ reference by name, with fresh random values, for kubectl.

The manifests never contain a secret value: they name four Secrets that must exist in the namespace before the
first apply (docs/kubernetes.md, step 2). This prints them as YAML, to be piped straight into the cluster:

    kubectl apply -f k8s/base/namespace.yaml
    python k8s/init_secrets.py | kubectl create -f -
    python k8s/init_secrets.py --only qshield-ray-auth | kubectl create -f -     # one of them

``kubectl create`` (not ``apply``) refuses to replace a Secret that exists, so re-running never rotates a password
that PostgreSQL or MLflow already uses; it creates only the missing ones (and reports the others as AlreadyExists).
With a secret manager (External Secrets, Sealed Secrets, SOPS) create the same names and keys there instead.

Each object is written by ``kubectl create secret generic NAME --from-file=KEY=FILE --dry-run=client -o yaml``:
kubectl builds the Secret, this script only chooses the values. Generated values are ``secrets.token_hex(24)``
(48 hex characters: URL-safe, as the PostgreSQL connection URI of MLflow needs); fixed values are the account
names. They reach kubectl through files in a private temporary directory (mode 0700, deleted afterwards), never
through command-line arguments, and only the YAML on stdout carries them: pipe it to kubectl, never into a file in
the repository.

What is hand-written here is only the table ``SECRETS`` (which names and keys the manifests read; the tests check
it against every reference in the rendered overlays) and the value generation.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GENERATED", "SECRETS", "SecretSpec", "build_secrets", "main"]

#: marks a key whose value is generated (``secrets.token_hex``) rather than fixed
GENERATED = None

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class SecretSpec:
    """One Secret the manifests read: its type and its keys, each with a fixed value or ``GENERATED``."""

    keys: dict[str, str | None]
    type: str = "Opaque"
    purpose: str = ""


SECRETS: dict[str, SecretSpec] = {
    "qshield-postgres": SecretSpec(
        keys={"password": GENERATED},
        purpose="PostgreSQL superuser (postgres): read by the database container only",
    ),
    "qshield-mlflow-db": SecretSpec(
        keys={"username": "mlflow", "password": GENERATED},
        type="kubernetes.io/basic-auth",
        purpose="MLflow's own database role, created on the database's first start; no superuser rights",
    ),
    "qshield-mlflow-auth": SecretSpec(
        keys={
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": GENERATED,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": GENERATED,
        },
        purpose="MLflow basic auth: admin account (also used by the Ray pods) and the CSRF signing key",
    ),
    "qshield-ray-auth": SecretSpec(
        keys={"auth_token": GENERATED},
        purpose="Ray token authentication (KubeRay authOptions.secretName; KubeRay reads key auth_token)",
    ),
}


def build_secrets(
    names: Sequence[str] | None = None,
    *,
    namespace: str = "qshield",
    kubectl: str = "kubectl",
    token: Callable[[], str] | None = None,
    nbytes: int = 24,
) -> str:
    """Return the YAML of the named Secrets (default: all of ``SECRETS``), one document each, as kubectl writes it.

    Args:
        names: Secrets to build, from ``SECRETS``; ``None`` for all.
        namespace: namespace written into each Secret (a DNS-1123 label).
        kubectl: the kubectl executable (a name found on ``PATH``, or a path).
        token: generator of secret values; default ``secrets.token_hex(nbytes)``.
        nbytes: random bytes per generated value (default 24, i.e. 48 hex characters); at least 16.

    Raises:
        ValueError: an unknown Secret name, a bad namespace, ``nbytes < 16``, or kubectl not found or failing.
    """
    wanted = list(SECRETS) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in SECRETS]
    if unknown:
        raise ValueError(f"unknown Secret {', '.join(unknown)}; the manifests use: {', '.join(SECRETS)}")
    if not wanted:
        raise ValueError("no Secret to build")
    if not _DNS_LABEL.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} is not a DNS-1123 label (lower-case letters, digits, '-')")
    if nbytes < 16:
        raise ValueError(f"nbytes must be at least 16 (128 bits), got {nbytes}")
    executable = shutil.which(kubectl)
    if executable is None:
        raise ValueError(f"kubectl not found ({kubectl!r}): install kubectl, or pass --kubectl PATH")
    make_token = token if token is not None else (lambda: secrets.token_hex(nbytes))

    documents = []
    with tempfile.TemporaryDirectory(prefix="qshield-secrets-") as directory:
        os.chmod(directory, 0o700)
        for name in wanted:
            spec = SECRETS[name]
            command = [executable, "create", "secret", "generic", name, f"--namespace={namespace}"]
            command += [f"--type={spec.type}", "--dry-run=client", "--output=yaml"]
            for index, (key, fixed) in enumerate(spec.keys.items()):
                path = Path(directory) / f"{name}.{index}"
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    handle.write(make_token() if fixed is GENERATED else fixed)
                command.append(f"--from-file={key}={path}")
            result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            if result.returncode != 0:
                raise ValueError(f"kubectl failed to build Secret {name}: {result.stderr.strip()}")
            documents.append(result.stdout.rstrip("\n"))
    return "---\n" + "\n---\n".join(documents) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    table = "\n".join(f"  {name}: {', '.join(spec.keys)} ({spec.purpose})" for name, spec in SECRETS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Secrets:\n" + table,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="build only this Secret (repeatable)")
    parser.add_argument("--namespace", default="qshield", help="default: qshield")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl executable (default: kubectl on PATH)")
    args = parser.parse_args(argv)
    if sys.stdout.isatty():
        parser.exit(2, "error: refusing to print secret values to a terminal; pipe into `kubectl create -f -`\n")
    try:
        output = build_secrets(args.only, namespace=args.namespace, kubectl=args.kubectl)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
