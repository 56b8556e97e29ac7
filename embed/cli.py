"""``embed``: build or extend an embedding cache from image sources.

    embed SOURCE... --out CACHE [--encoder NAME] [--ids IDS.parquet] [--key stem|path] [--batch-size N]
                    [--runtime auto|onnxruntime|openvino] [--precision auto|fp32|bf16|int8]
                    [--engine local|ray] [--address ADDR] [--workers N]
    embed --compact --out CACHE
    embed --list-encoders
    embed --list-variants [--encoder NAME] [--model MODEL_DIR] [--batch-size N] [--remeasure]
    embed --export-only [--encoder NAME]
    embed --calibrate SOURCE... [--ids TRAIN.parquet] [--encoder NAME]   (builds the int8 copy)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from embed.cache import compact_cache
from embed.encoders import get_encoder, table_text
from embed.engines import ENGINES, EngineChoice
from embed.variants import AGREEMENT_FILE, PRECISIONS, RUNTIMES, measured, variant_of
from embed.images import DECODERS
from embed.pipeline import DEFAULT_ENCODER, EncoderChoice, embed_sources
from embed.runtime import BATCH_SIZE, Encoder, encoder_dir, graph_dir
from embed.sources import KEYS, read_ids
from embed.summary import decoder_messages_counted
from vinted_tagger.errors import ArgumentParser, run_command
from vinted_tagger.files import check_parquet


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="embed", description="Embed images into a Parquet cache.")
    p.add_argument("sources", nargs="*", help="zip archives, folders or image files; the uuid is the file stem")
    p.add_argument("--key", default="stem", choices=KEYS,
                   help="an image's uuid: its file stem (default) or its path relative to its source (when stems collide)")
    p.add_argument("--out", help="cache folder (created or resumed)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="encoder name (see --list-encoders)")
    p.add_argument("--ids", help="Parquet file with a uuid column: embed only these uuids")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per encoder call (memory grows with it)")
    p.add_argument("--threads", type=int, default=None, help="encoder threads (default: all cores)")
    p.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES),
                   help="encoder runtime (default auto: the fastest this machine has, see README)")
    p.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS),
                   help="encoder arithmetic (default auto: bf16 where the CPU has it, else fp32; int8 needs --calibrate)")
    p.add_argument("--decoder", default=None, choices=DECODERS, help="JPEG decoder (default: pillow)")
    p.add_argument("--calibrate", action="store_true",
                   help="build the encoder's int8 copy from a seeded sample of SOURCE (restricted to --ids) and exit")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="local (default): this process; ray: decode + encode on a Ray cluster (the ray extra)")
    p.add_argument("--address", default=None, help="ray engine: cluster address (host:port, ray://...); "
                   "default: a local cluster")
    p.add_argument("--workers", type=int, default=None, help="ray engine: encoder actors (default: cluster CPUs / threads)")
    p.add_argument("--compact", action="store_true", help="merge the small parts of --out and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list-encoders", action="store_true", help="print the encoder table and exit")
    p.add_argument("--export-only", action="store_true", help="build the encoder's ONNX file and exit")
    p.add_argument("--list-variants", action="store_true",
                   help="print each runtime variant's speed here, its agreement with the model's and what auto takes")
    p.add_argument("--model", default=None, help="--list-variants: the model folder whose variant to agree with "
                   "(default: $VINTED_TAGGER_MODEL, else the packaged model)")
    p.add_argument("--remeasure", action="store_true", help="--list-variants: time every variant here again")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list_encoders:
        print(table_text())
        return 0
    # A user's mistake (OutputError, ImageError, EncoderError, an unreadable source, ...): one line, exit 2.
    return run_command("embed", lambda: run(args), "the cache keeps every finished part, run again to resume")


def run(args) -> int:
    if args.export_only:
        Encoder.load(get_encoder(args.encoder))
        print(f"embed: encoder {args.encoder} ready in {graph_dir(get_encoder(args.encoder))}")
        return 0
    if args.calibrate:
        return calibrate(args)
    if args.list_variants:
        return list_variants(args)
    if args.compact:
        if not args.out:
            parser().error("--compact needs --out CACHE")
        merged = compact_cache(args.out)
        print(f"embed: compacted {args.out}: {merged} small parts merged")
        return 0
    if not args.sources or not args.out:
        parser().error("SOURCE and --out are required")
    if args.batch_size < 1:
        parser().error("--batch-size must be at least 1")
    if args.ids:
        check_parquet(args.ids, "ids file")
    ids = read_ids(args.ids) if args.ids else None
    if args.engine != "ray" and (args.address or args.workers):
        parser().error("--address and --workers need --engine ray")
    encoder = EncoderChoice(args.encoder, args.runtime, args.precision, args.decoder, args.threads, args.batch_size)
    engine = EngineChoice(args.engine, args.address, args.workers)
    with decoder_messages_counted() as summaries:  # third-party chatter: counted into the summary, not shown
        summary = embed_sources(args.sources, args.out, encoder, ids, engine, progress=not args.quiet, key=args.key)
        summaries.append(summary)
    summary.report()
    nothing_done = summary.encoded == 0 and summary.skipped == 0
    return 1 if nothing_done else 0


def calibrate(args) -> int:
    from embed.quantize import calibrate as quantise  # needs the onnx package ([export] extra)
    from embed.sources import list_images, select

    if not args.sources:
        parser().error("--calibrate needs SOURCE (training images)")
    refs, _ = select(list_images(args.sources), read_ids(args.ids) if args.ids else None)
    record = quantise(get_encoder(args.encoder), refs)
    calibration = record["calibration"]
    print(f"embed: int8 copy of {args.encoder} calibrated on {calibration['images']} images "
          f"(seed {calibration['seed']}, sample {calibration['fingerprint'][:12]}) in {encoder_dir(get_encoder(args.encoder))}")
    return 0


def list_variants(args) -> int:
    import json

    from embed.runtime import ensure_onnx, variant_report
    from vinted_tagger.settings import model_dir

    folder = Path(args.model) if args.model else model_dir()
    # The model's runtime record (model.json's training.runtime: what its heads were trained on).
    model = json.loads((folder / "model.json").read_text()) if (folder / "model.json").is_file() else {}
    against = model.get("training", {}).get("runtime")
    rows, auto = variant_report(ensure_onnx(get_encoder(args.encoder))[1], against, args.batch_size, args.remeasure)
    base = variant_of(against)
    table = [("variant", f"img/s here (batch {args.batch_size})", f"agreement with {base} (the model's)",
              "interchangeable")]
    for row in rows:
        speed = "-" if row["images_per_s"] is None else f"{row['images_per_s']:.1f}"
        agreement = "not measured" if row["agreement"] is None else f"{row['agreement']:.4f}"
        table.append((row["variant"], speed if row["cannot_run"] is None else f"cannot run: {row['cannot_run']}",
                      agreement, "yes" if row["interchangeable"] else "no"))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print(f"noise floor of the agreement: {measured()['noise_floor']['agreement']:.4f} ({AGREEMENT_FILE.name}); "
          f"auto takes {auto.name}")
    return 0


def report(summary) -> None:
    for uuid, origin, reason in summary.failures[:SHOWN_FAILURES]:
        where = f" ({origin})" if origin else ""
        print(f"embed: {'missing' if reason == MISSING_REASON else 'failed'}: {uuid}{where}: {reason}", file=sys.stderr)
    if len(summary.failures) > SHOWN_FAILURES:
        print(f"embed: ... {len(summary.failures) - SHOWN_FAILURES} more", file=sys.stderr)
    if summary.failures:
        print(f"embed: all failures are listed in {summary.cache}/_failures.csv", file=sys.stderr)
    print(summary.line())


if __name__ == "__main__":
    sys.exit(main())
