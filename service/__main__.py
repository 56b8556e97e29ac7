"""``python -m service [--model DIR] [--host H] [--port P]``: the same as ``classify serve``."""

from __future__ import annotations

import argparse
import sys

from vinted_tagger.errors import run_command


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default=None, help="trained model folder (default: the committed artifacts/model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="python -m service", description=__doc__)).parse_args(argv)
    from service.app import run

    def serve() -> int:
        run(args.model, args.host, args.port, log_level=args.log_level)
        return 0

    # No model, a bad VINTED_TAGGER_* setting, an encoder not exported: one line, exit 2.
    return run_command("python -m service", serve, "stopped")


if __name__ == "__main__":
    sys.exit(main())
