"""``classify``: train heads on an embedding cache, predict, evaluate.

    classify train --data data.parquet --cache CACHE --out MODEL_DIR [--head logreg|lightgbm|auto] [--tags T...]
                   [--overwrite]
    classify predict [--model MODEL_DIR] (--cache CACHE | --images SOURCE...) [--ids test.parquet]
                     --out predictions.parquet [--with-scores] [--allow-missing] [--overwrite]
    classify evaluate --predictions predictions.parquet --labels labels.parquet [--tags T...] [--json]

Mistakes a user can make (a missing file, a cache from another encoder, an unknown head, an output that cannot
be written, a bad model folder, a label file that is not Parquet, a mistyped option) print one line on stderr
and exit with status 2; inputs and outputs are checked before any model or data is loaded. Nothing the user did
not name is replaced: an existing model folder or predictions file only with ``--overwrite``, and ids a cache
lacks stop ``predict`` (naming them) unless ``--allow-missing``. A new sub-command is one entry in ``COMMANDS``: (add its arguments, run it). Serving over HTTP
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
from embed.variants import PRECISIONS, RUNTIMES
from vinted_tagger.errors import ArgumentParser, UserError, run_command
from vinted_tagger.files import check_parquet

SHOWN_MISSING = 5  # uuids named in a "left out" message; the rest are counted


# --------------------------------------------------------------------------------------------- train


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="label Parquet (uuid, cc3, tag columns, optional group)")
    parser.add_argument("--cache", required=True, help="embedding cache folder (from `embed`)")
    parser.add_argument("--out", required=True, help="model folder to write (a new or empty folder)")
    parser.add_argument("--head", default="logreg", help="logreg (default), lightgbm or auto (best by CV)")
    add_tags(parser)
    add_overwrite(parser, "a model folder that already holds a model (the packaged default model included)")


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_tags(parser: argparse.ArgumentParser) -> None:
    from classifiers.labels import DEFAULT_TAGS

    parser.add_argument("--tags", nargs="+", metavar="TAG", default=None,
                        help=f"tag columns (default: {', '.join(map(repr, DEFAULT_TAGS))}); each holds 0, 1 or null")


def run_train(args: argparse.Namespace) -> int:
    from classifiers.artifacts import check_model_target, save_model
    from classifiers.heads import check_head_kind
    from classifiers.train import train

    check_head_kind(args.head)  # before minutes of reading: a typo fails at once
    check_parquet(args.data, "label file")
    if not Path(args.cache).exists():
        raise FileNotFoundError(f"cache folder {args.cache} does not exist")
    check_model_out(Path(args.out), args.overwrite)
    check_model_target(Path(args.out))  # before training, not after it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = train(args.data, args.cache, head=args.head, tags=args.tags, progress=True)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    path = save_model(model, args.out)
    for line in summary_lines(model):
        print(line)
    print(search_line(model.info))
    print(f"saved {path.parent} ({model.timing['total_seconds']:.1f} s training)")
    return 0


def check_model_out(out: Path, overwrite: bool) -> None:
    """A model is written over another one (the packaged default above all) only when the user says so."""
    if overwrite:
        return
    if out.resolve() == DEFAULT_MODEL_DIR:
        raise UserError(f"{out} is the packaged default model (the one the service loads); "
                        "write to a new folder, or pass --overwrite to replace it")
    if (out / "model.json").exists():
        raise UserError(f"{out} already holds a model; choose a new folder or pass --overwrite to replace it")


def search_line(info: dict) -> str:
    """One line: which head kinds were compared on which folds, and which won for each head."""
    heads = {"category": info["category"], **info.get("tags", {})}
    folds = next(iter(heads.values()))["cv"].get("folds", "the")
    kinds = sorted({name for head in heads.values() for name in head.get("candidates", {head["kind"]: 0})})
    won = ", ".join(f"{name}: {head['kind']}{_versus(head, 'logloss' if name == 'category' else 'f1')}"
                    for name, head in heads.items())
    return (f"head search ({info['head']}): compared {' and '.join(kinds)} on {folds} "
            f"{'group-aware ' if info.get('group_aware_cv') else ''}folds for {len(heads)} heads; chosen: {won}")


def _versus(head: dict, metric: str) -> str:
    """The chosen kind's CV score against the other candidates' (when candidates were compared), or nothing."""
    others = {kind: cv for kind, cv in head.get("candidates", {}).items() if kind != head["kind"]}
    if not others or metric not in head["cv"]:
        return ""
    versus = ", ".join(f"{kind} {cv[metric]:.3f}" for kind, cv in others.items() if metric in cv)
    return f" (CV {metric} {head['cv'][metric]:.3f} vs {versus})"


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
    parser.add_argument("--out", required=True, help="predictions Parquet to write (a new file)")
    parser.add_argument("--with-scores", action="store_true", help="add p_<class> and score_<tag> columns")
    parser.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES), help="with --images: encoder runtime")
    parser.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS),
                        help="with --images: encoder precision")
    parser.add_argument("--key", default="stem", choices=("stem", "path"),
                        help="with --images: an image's uuid, its file stem (default) or its path relative to its source")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the predictions even when some --ids have no embedding (they are left out)")
    add_overwrite(parser, "an existing predictions file")


def run_predict(args: argparse.Namespace) -> int:
    from classifiers.predict import Tagger, predict_cache_to, ran_metadata
    from embed.output import check_new_file
    from embed.variants import variant_of
    from embed.sources import read_ids

    check_new_file(args.out, "predictions file", args.overwrite)
    if args.ids:
        check_parquet(args.ids, "ids file")
    ids = read_ids(args.ids) if args.ids else None
    if args.cache:
        if not Path(args.cache).exists():
            raise FileNotFoundError(f"cache folder {args.cache} does not exist")
        if ids is not None:  # before the model loads: a cache that lacks ids fails in a second
            check_missing(ids_not_in_cache(args.cache, ids), len(ids), args)
    tagger = Tagger.load(args.model)
    if args.cache:
        # Streamed part by part into row groups: memory stays flat whatever the cache's size.
        rows, missing = predict_cache_to(tagger, args.cache, args.out, ids, with_scores=args.with_scores)
        failed = 0
        if missing and not args.allow_missing:  # embeddings present but not usable (not finite)
            Path(args.out).unlink(missing_ok=True)
    else:
        frame, missing, failed = predict_images(tagger, args.images, ids, args.with_scores, args.runtime,
                                                args.precision, args.out, args.key)
        rows = len(frame)
    check_missing(missing, rows + len(missing), args)
    if args.images:
        write_predictions(frame, Path(args.out), ran_metadata(tagger, [tagger.ran]))
        print(f"encoder {tagger.encoder().spec.name} ran {tagger.ran['variant']} (computed in "
              f"{tagger.ran['ran_precision']}); the model's heads were trained on {variant_of(tagger.runtime)}",
              file=sys.stderr)
    if missing:
        print(f"{len(missing)} uuid(s) without an embedding left out: {_examples(missing)}", file=sys.stderr)
    print(f"wrote {rows} rows to {args.out}")
    return 1 if args.images and failed else 0  # with --images: 1 when any photo failed (named above)


def ids_not_in_cache(cache: str, ids: list[str]) -> list[str]:
    from embed.cache import held_uuids

    todo = dict.fromkeys(ids)
    for held in held_uuids(Path(cache)):
        for uuid in held.to_pylist():
            todo.pop(uuid, None)
    return list(todo)


def check_missing(missing: list[str], wanted: int, args: argparse.Namespace) -> None:
    """Partial predictions are refused (nothing written) unless asked for: an incomplete file must not pass."""
    if missing and not args.allow_missing:
        where = f"cache {args.cache}" if args.cache else "the images"
        raise UserError(f"{len(missing)} of {wanted} ids have no embedding in {where}: {_examples(missing)}; "
                        "nothing written (embed them first, or pass --allow-missing to leave them out)")


def predict_images(tagger, sources: list[str], ids: list[str] | None, with_scores: bool,
                   runtime: str = "auto", precision: str = "auto", out: str | Path | None = None,
                   key: str = "stem"):
    """Embed ``sources`` with the model's encoder into a temporary cache, then predict from it. The failed,
    ignored and duplicate files are named on stderr, and their lists are kept beside ``out``
    (``failure_lists``). Returns (predictions, missing ids, how many photos failed)."""
    from classifiers.predict import predict_cache
    from embed import pipeline
    from embed.summary import decoder_messages_counted, save_failures

    for source in sources:
        if not Path(source).exists():
            raise FileNotFoundError(f"image source {source} does not exist")
    # The model's own encoder, from its recorded identity (never resolved by name: no torch or open_clip).
    encoder = tagger.load_encoder(runtime, precision, batches=(pipeline.BATCH_SIZE,))
    with tempfile.TemporaryDirectory(prefix="classify-") as folder:
        cache = Path(folder) / "cache"
        with decoder_messages_counted() as summaries:
            summary = pipeline.embed_sources(sources, cache, encoder=encoder, ids=ids, progress=sys.stderr.isatty(),
                                             key=key)
            summaries.append(summary)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            save_failures(out, summary, failure_lists(Path(out)))
            summary.cache = str(out)
        summary.missing = []  # reported by predict_cache's caller, against the --ids order
        summary.report("classify", failure_lists(Path(out)) if out is not None else None)
        frame, missing = predict_cache(tagger, cache, ids, with_scores=with_scores)
        return frame, missing, summary.failed


def failure_lists(out: Path) -> dict[str, Path]:
    """Where ``classify predict --images --out OUT`` keeps the embed lists: beside OUT, named after it
    (OUT_failures.csv, OUT_ignored.csv, OUT_duplicates.csv)."""
    from embed.summary import LISTS

    return {name: out.with_name(out.stem + name) for _, name in LISTS}


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

    check_parquet(args.predictions, "predictions file")
    check_parquet(args.labels, "label file")
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
    parser = ArgumentParser(prog="classify", description="Train heads, predict, evaluate.")
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
