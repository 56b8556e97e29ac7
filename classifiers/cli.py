"""``classify``: train heads on an embedding cache, predict, evaluate.

    classify train --data data.parquet --cache CACHE --out MODEL_DIR [--head logreg|lightgbm|auto] [--tags T...]
    classify predict [--model MODEL_DIR] (--cache CACHE | --images SOURCE...) [--ids test.parquet]
                     --out predictions.parquet [--with-scores]
    classify evaluate --predictions predictions.parquet --labels labels.parquet [--tags T...] [--json]

Mistakes a user can make (a missing file, a cache from another encoder, an unknown head, an output that cannot
be written, a bad model folder) print one line on stderr and exit with status 2; outputs are checked before
any long work. A new sub-command is one entry in ``COMMANDS``: (add its arguments, run it). Serving over HTTP
is ``vinted-serve`` (service/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from classifiers.artifacts import DEFAULT_MODEL_DIR
from vinted_tagger.errors import run_command

SHOWN_MISSING = 5  # uuids named in a "left out" message; the rest are counted


# --------------------------------------------------------------------------------------------- train


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="label Parquet (uuid, cc3, tag columns, optional group)")
    parser.add_argument("--cache", required=True, help="embedding cache folder (from `embed`)")
    parser.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="model folder (default: %(default)s)")
    parser.add_argument("--head", default="logreg", help="logreg (default), lightgbm or auto (best by CV)")
    add_tags(parser)


def add_tags(parser: argparse.ArgumentParser) -> None:
    from classifiers.labels import DEFAULT_TAGS

    parser.add_argument("--tags", nargs="+", metavar="TAG", default=None,
                        help=f"tag columns (default: {', '.join(map(repr, DEFAULT_TAGS))}); each holds 0, 1 or null")


def run_train(args: argparse.Namespace) -> int:
    from classifiers.artifacts import check_model_target, save_model
    from classifiers.heads import check_head_kind
    from classifiers.train import train

    check_head_kind(args.head)  # before minutes of reading: a typo fails at once
    for path, what in ((args.data, "label file"), (args.cache, "cache folder")):
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} {path} does not exist")
    check_model_target(Path(args.out))  # before training, not after it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = train(args.data, args.cache, head=args.head, tags=args.tags)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    path = save_model(model, args.out)
    for line in summary_lines(model):
        print(line)
    print(f"saved {path.parent} ({model.timing['total_seconds']:.1f} s training)")
    return 0


def summary_lines(model) -> list[str]:
    """One line per head: kind, chosen hyper-parameters, CV scores, threshold, rows, seconds."""
    info, timing = model.info, model.timing
    category = info["category"]
    cv = category["cv"]
    choice = f"C={cv['C']:g}" if "C" in cv else f"rounds={cv.get('rounds')}"
    lines = [f"category  {category['kind']:<8} {choice} T={cv['temperature']:.2f}  CV top-1 {cv['top1']:.3f} "
             f"top-2 {cv['top2']:.3f} log-loss {cv['logloss']:.3f}  ({category['rows']} rows, "
             f"{len(category['classes'])} classes, {timing['category_seconds']:.1f} s)"]
    for name, tag in info.get("tags", {}).items():
        cv = tag["cv"]
        choice = f"C={cv['C']:g}" if "C" in cv else f"rounds={cv.get('rounds')}"
        lines.append(f"tag {name!r:<12} {tag['kind']:<8} {choice} threshold {tag['threshold']:.3f}  "
                     f"CV precision {cv['precision']:.3f} recall {cv['recall']:.3f} F1 {cv['f1']:.3f} "
                     f"AP {cv['average_precision']:.3f}  ({tag['rows']} rows, {tag['positives']} positive, "
                     f"{timing[f'tag_seconds/{name}']:.1f} s)")
    return lines


# ------------------------------------------------------------------------------------------- predict


def add_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help=f"model folder (default: $VINTED_TAGGER_MODEL, else {DEFAULT_MODEL_DIR})")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", help="embedding cache made with the model's encoder")
    source.add_argument("--images", nargs="+", metavar="SOURCE", help="image files, folders or zip archives")
    parser.add_argument("--ids", help="Parquet with a uuid column: predict these, in this order")
    parser.add_argument("--out", required=True, help="predictions Parquet to write")
    parser.add_argument("--with-scores", action="store_true", help="add p_<class> and score_<tag> columns")
    parser.add_argument("--runtime", default="auto", help="with --images: encoder runtime (auto, onnxruntime, openvino)")
    parser.add_argument("--precision", default="auto", help="with --images: encoder precision (auto, fp32, bf16, int8)")


def run_predict(args: argparse.Namespace) -> int:
    from classifiers.predict import Tagger, predict_cache_to, ran_metadata
    from embed.output import check_file
    from embed.variants import variant_of
    from embed.sources import read_ids

    check_file(args.out, "predictions file")
    tagger = Tagger.load(args.model)
    ids = read_ids(args.ids) if args.ids else None
    if args.cache:
        if not Path(args.cache).exists():
            raise FileNotFoundError(f"cache folder {args.cache} does not exist")
        # Streamed part by part into row groups: memory stays flat whatever the cache's size.
        rows, missing = predict_cache_to(tagger, args.cache, args.out, ids, with_scores=args.with_scores)
    else:
        frame, missing = predict_images(tagger, args.images, ids, args.with_scores, args.runtime, args.precision)
        write_predictions(frame, Path(args.out), ran_metadata(tagger, [tagger.ran]))
        rows = len(frame)
        print(f"encoder {tagger.encoder().spec.name} ran {tagger.ran['variant']} (computed in "
              f"{tagger.ran['ran_precision']}); the model's heads were trained on {variant_of(tagger.runtime)}",
              file=sys.stderr)
    if missing:
        print(f"{len(missing)} uuid(s) without an embedding left out: {_examples(missing)}", file=sys.stderr)
    print(f"wrote {rows} rows to {args.out}")
    return 0


def predict_images(tagger, sources: list[str], ids: list[str] | None, with_scores: bool,
                   runtime: str = "auto", precision: str = "auto"):
    """Embed ``sources`` with the model's encoder into a temporary cache, then predict from it."""
    from classifiers.predict import predict_cache
    from embed import pipeline

    for source in sources:
        if not Path(source).exists():
            raise FileNotFoundError(f"image source {source} does not exist")
    # The model's own encoder, from its recorded identity (never resolved by name: no torch or open_clip).
    encoder = tagger.load_encoder(runtime, precision, batches=(pipeline.BATCH_SIZE,))
    with tempfile.TemporaryDirectory(prefix="classify-") as folder:
        cache = Path(folder) / "cache"
        summary = pipeline.embed_sources(sources, cache, encoder=encoder, ids=ids, progress=sys.stderr.isatty())
        missing = set(summary.missing)  # reported by predict_cache below; here only the images that failed
        failed = [(uuid, reason) for uuid, _, reason in summary.failures if uuid not in missing]
        if failed:
            print(f"{len(failed)} image(s) could not be embedded: "
                  + "; ".join(f"{u}: {r}" for u, r in failed[:SHOWN_MISSING]), file=sys.stderr)
        return predict_cache(tagger, cache, ids, with_scores=with_scores)


def write_predictions(frame: pd.DataFrame, path: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    from vinted_tagger.files import write_parquet

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_parquet(table.replace_schema_metadata({**(table.schema.metadata or {}), **(metadata or {})}), path)


def read_table(path: str) -> pd.DataFrame:
    """A Parquet file; one that is not one (or is damaged) is a user mistake, not a traceback."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise ValueError(f"{path} is not a readable Parquet file ({error})") from None


def _examples(uuids: list[str]) -> str:
    shown = ", ".join(uuids[:SHOWN_MISSING])
    return shown + (f" and {len(uuids) - SHOWN_MISSING} more" if len(uuids) > SHOWN_MISSING else "")


# ------------------------------------------------------------------------------------------ evaluate


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="predictions Parquet (uuid, category1, ...)")
    parser.add_argument("--labels", required=True, help="label Parquet (uuid, cc3, tag columns)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_tags(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    from classifiers.evaluate import evaluate, format_report
    from classifiers.labels import read_labels

    for path in (args.predictions, args.labels):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist")
    result = evaluate(read_table(args.predictions), read_labels(args.labels), tags=args.tags)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


# ------------------------------------------------------------------------------------------------ main

# name -> (help, add arguments, run): a new sub-command is one more entry.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": ("train the heads on an embedding cache", add_train, run_train),
    "predict": ("predict categories and tags", add_predict, run_predict),
    "evaluate": ("score predictions against labels", add_evaluate, run_evaluate),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classify", description="Train heads, predict, evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    # EncoderMismatch, ModelError, OutputError (ValueErrors), EncoderError (UserError): one line, exit 2.
    status = run_command(f"classify {args.command}", lambda: args.run(args), "nothing was half-written")
    if status == 0 and args.command != "evaluate":
        print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
