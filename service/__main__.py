"""``python -m service [--model DIR] [--host H] [--port P]``: the same as ``classify serve``."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default=None, help="trained model folder (default: the committed artifacts/model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="python -m service", description=__doc__)).parse_args(argv)
    from service.app import run

    try:
        run(args.model, args.host, args.port, log_level=args.log_level)
    except (FileNotFoundError, ValueError) as error:  # no model, bad VINTED_TAGGER_* setting
        print(f"python -m service: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
