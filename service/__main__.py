"""``vinted-serve`` (= ``python -m service``): serve the model over HTTP, the one serve entry point.

    vinted-serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--log-level info] [--<setting> VALUE ...]

Every service setting (service.settings.Settings) is also a flag, e.g. ``--max-batch 4`` for
``VINTED_TAGGER_MAX_BATCH=4``; a flag wins over the environment variable, which wins over the default.
A busy port, a missing or bad model, an encoder not built here, a bad setting, or a missing serve extra is one
line on stderr and exit status 2 (the port and the extra are checked before any model loads).
"""

from __future__ import annotations

import argparse
import sys

from embed.chatter import c_messages_captured
from service.settings import Settings
from vinted_tagger.errors import MissingExtra, run_command
from vinted_tagger.settings import ENV_PREFIX


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vinted-serve", description="Serve the tagger over HTTP (docs at /docs).")
    parser.add_argument("--model", default=None,
                        help=f"trained model folder (default: {ENV_PREFIX}MODEL, else the packaged default model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    settings = parser.add_argument_group("service settings (each also an environment variable)")
    for name, field in Settings.model_fields.items():
        settings.add_argument(f"--{name.replace('_', '-')}", type=field.annotation, default=None,
                              metavar=field.annotation.__name__.upper(),
                              help=f"{ENV_PREFIX}{name.upper()} (default: {field.default})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("vinted-serve", lambda: serve(args), "the server stopped")


def serve(args: argparse.Namespace) -> int:
    try:
        from service.app import run  # FastAPI and uvicorn: the serve extra
    except ImportError as error:
        raise MissingExtra(f"serving needs the serve extra, pip install 'vinted-tagger[serve]' ({error})") from None
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name) is not None}
    # A busy port, a missing or bad model, an encoder not built here, a bad setting: raised before it serves.
    # Lines C decoders (libtiff) write to fd 2 stay out of the log: counted, the count said on a Ctrl-C stop.
    with c_messages_captured() as decoder_lines:
        run(args.model, args.host, args.port, settings=Settings.from_env(**overrides), log_level=args.log_level)
    if decoder_lines.lines:
        print(f"vinted-serve: {decoder_lines.lines} decoder message lines were captured", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
