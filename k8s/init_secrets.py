"""Create the gitignored ``*.env`` files that the kustomize secretGenerators read, from the committed templates.

For every ``*.env.example`` under the given directory (default: ``k8s/``), write the ``*.env`` next to it, with
every value ``CHANGE_ME`` replaced by a fresh random URL-safe secret (``secrets.token_hex``: 48 hex characters by
default) and every other line copied unchanged. Existing ``*.env`` files are left alone unless ``--force`` is
given, so re-running never rotates a password that a database already uses. New files are created with mode 0600.

    python k8s/init_secrets.py            # all of k8s/
    python k8s/init_secrets.py k8s/base   # one directory
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PLACEHOLDER", "fill_template", "init_env_files", "main"]

PLACEHOLDER = "CHANGE_ME"
EXAMPLE_SUFFIX = ".example"


def fill_template(text: str, token: Callable[[], str]) -> str:
    """Return ``text`` (an env template) with each ``KEY=CHANGE_ME`` value replaced by ``token()``.

    Comment lines, blank lines and other values are kept as they are; each placeholder gets its own call of
    ``token``. A line without ``=`` (other than comments and blanks) is refused, as the renderer refuses it.

    Raises:
        ValueError: on a line that is neither a comment, blank, nor ``KEY=VALUE``.
    """
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(line)
            continue
        if "=" not in line:
            raise ValueError(f"line {number}: {line!r} is not KEY=VALUE")
        key, value = line.split("=", 1)
        lines.append(f"{key}={token()}" if value.strip() == PLACEHOLDER else line)
    return "\n".join(lines) + "\n"


def init_env_files(
    root: Path, *, force: bool = False, token: Callable[[], str] | None = None, nbytes: int = 24
) -> list[Path]:
    """Write ``X.env`` for every ``X.env.example`` below ``root``; return the files written.

    Args:
        root: directory searched recursively for ``*.env.example``.
        force: overwrite existing ``*.env`` files (default False: keep them).
        token: generator of secret values; default ``secrets.token_hex(nbytes)``.
        nbytes: random bytes per generated value (default 24, i.e. 48 hex characters); at least 16.

    Raises:
        ValueError: if ``root`` is not a directory, ``nbytes < 16``, or a template line is malformed.
    """
    if not root.is_dir():
        raise ValueError(f"root {str(root)!r} is not a directory")
    if nbytes < 16:
        raise ValueError(f"nbytes must be at least 16 (128 bits), got {nbytes}")
    make_token = token if token is not None else (lambda: secrets.token_hex(nbytes))
    written = []
    for template in sorted(root.rglob(f"*.env{EXAMPLE_SUFFIX}")):
        target = template.with_name(template.name[: -len(EXAMPLE_SUFFIX)])
        if target.exists() and not force:
            continue
        content = fill_template(template.read_text(encoding="utf-8"), make_token)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent), help="default: k8s/")
    parser.add_argument("--force", action="store_true", help="overwrite existing .env files (rotates secrets)")
    args = parser.parse_args(argv)
    try:
        written = init_env_files(Path(args.root), force=args.force)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("nothing to do: every .env file exists (use --force to regenerate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
