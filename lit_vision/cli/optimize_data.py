"""``lit-vision optimize-data``: write a dataset into LitData shards for the streaming DataModules.

    lit-vision optimize-data --format imagefolder --root data/imagenette --output shards/imagenette
    lit-vision optimize-data --format voc --root VOCdevkit/VOC2012 --output s3://bucket/voc --num-workers 8
    lit-vision optimize-data --format coco --train-images train2017 --train-annotations instances_train2017.json \\
        --val-images val2017 --val-annotations instances_val2017.json --output shards/coco

The source is read and checked by the format's file-based DataModule (lit_vision.data.streaming.writer), so a
bad input is the same one-line error naming the file as for ``fit``; exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

FORMATS = ("imagefolder", "coco", "voc", "voc-seg", "coco-seg")  # lit_vision.data.streaming.writer.FORMATS
# Which options each format's DataModule takes (argparse dest -> constructor argument).
_OPTIONS = {
    "imagefolder": ("root", "val_fraction", "split_seed", "on_bad"),
    "voc": ("root", "train_split", "val_split", "test_split", "class_names", "on_bad"),
    "voc-seg": ("root", "train_split", "val_split", "test_split", "class_names"),
    "coco": ("train_images", "train_annotations", "val_images", "val_annotations", "test_images",
             "test_annotations", "on_bad", "with_masks"),
    "coco-seg": ("train_images", "train_annotations", "val_images", "val_annotations", "test_images",
                 "test_annotations", "class_names"),
}


USAGE = "lit-vision optimize-data --format FORMAT --output DIR_OR_URI [source options] [--help]"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lit-vision optimize-data", usage=USAGE,
                                description="Write a dataset into LitData's optimised shards (docs/streaming.md).")
    p.add_argument("--format", required=True, choices=FORMATS, help="source layout")
    p.add_argument("--output", required=True, help="new folder or object-store URI (s3://bucket/prefix)")
    p.add_argument("--root", help="imagefolder: root with train/ val/ [test/]; voc, voc-seg: the year folder")
    p.add_argument("--train-split", default=None, help="voc, voc-seg: id list (default train)")
    p.add_argument("--val-split", default=None, help="voc, voc-seg: id list (default val)")
    p.add_argument("--test-split", default=None, help="voc, voc-seg: id list (default none)")
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}-images", help=f"coco, coco-seg: {split} image folder")
        p.add_argument(f"--{split}-annotations", help=f"coco, coco-seg: {split} instances JSON")
    p.add_argument("--with-masks", action="store_true", default=None, help="coco: also store instance masks")
    p.add_argument("--class-names", nargs="+", help="voc, voc-seg, coco-seg: class names in label order")
    p.add_argument("--val-fraction", type=float, help="imagefolder without val/: fraction held out per class")
    p.add_argument("--split-seed", type=int, default=None, help="imagefolder: seed of that split")
    p.add_argument("--on-bad", choices=("error", "skip"), default=None, help="bad annotations/files: fail or skip")
    p.add_argument("--chunk-bytes", default="64MB", help="target chunk size (default 64MB)")
    p.add_argument("--num-workers", type=int, default=4, help="writer processes (default 4)")
    p.add_argument("--shuffle-seed", type=int, default=0,
                   help="write the training split in this seed's random order (LitData shuffles only inside chunks)")
    p.add_argument("--keep-order", action="store_true", help="write the training split in source order instead")
    return p


def optimize_data_command(argv: list[str], debug: bool = False) -> int:
    """Parse, write, print a summary; any failure is one line on stderr and exit code 2 (``debug``: traceback)."""
    parser = _parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"{parser.format_usage().strip()}\nlit-vision optimize-data: error: {' '.join(message.split())}",
              file=sys.stderr)
        return 2

    options: dict[str, Any] = {k: getattr(args, k) for k in _OPTIONS[args.format] if getattr(args, k) is not None}
    general = ("format", "output", "chunk_bytes", "num_workers", "shuffle_seed", "keep_order")
    unused = sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                    if v is not None and k not in (*_OPTIONS[args.format], *general))
    if unused:
        return fail(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --format {args.format}")
    if args.num_workers < 1:
        return fail(f"--num-workers must be >= 1, got {args.num_workers}")
    from lit_vision.data.checks import DataError  # torch and LitData: only now

    try:
        from lit_vision.data.streaming.writer import optimize_data

        index = optimize_data(args.format, args.output, chunk_bytes=args.chunk_bytes, num_workers=args.num_workers,
                              shuffle_seed=None if args.keep_order else args.shuffle_seed, **options)
    except (DataError, ImportError, TypeError) as err:
        if debug:
            raise
        return fail(str(err))
    except Exception as err:
        if debug:
            raise
        return fail(f"writing {args.output} failed: {type(err).__name__}: {err} (--debug shows the traceback)")
    counts = ", ".join(f"{split} {entry['num_items']}" for split, entry in index["splits"].items())
    print(f"{index['task']} shards of {args.format} written to {args.output} ({counts} items; "
          f"{len(index['class_names'])} classes)")
    return 0
