"""``python -m orchestrator.space --write-docs | --check-docs [PAGE]``: regenerate or check the parameter table
of ``docs/search-spaces.md`` (:mod:`orchestrator.space._doc`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._doc import DOCS_PAGE, render_page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.space", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write-docs", action="store_true", help="rewrite the generated block of the page")
    mode.add_argument("--check-docs", action="store_true", help="exit 1 when the page's block is out of date")
    parser.add_argument("page", nargs="?", type=Path, default=DOCS_PAGE, help=f"the page (default: {DOCS_PAGE})")
    args = parser.parse_args(argv)
    text = args.page.read_text(encoding="utf-8")
    new = render_page(text)
    if args.check_docs:
        if new != text:
            print(f"{args.page}: the parameter table is out of date; run python -m orchestrator.space --write-docs",
                  file=sys.stderr)
            return 1
        print(f"{args.page}: the parameter table is up to date")
        return 0
    args.page.write_text(new, encoding="utf-8")
    print(f"wrote the parameter table of {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
