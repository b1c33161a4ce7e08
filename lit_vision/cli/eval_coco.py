"""``lit-vision eval-coco``: evaluate any COCO results file with the code the detection task uses."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IOU_TYPES = ("bbox", "segm")


def eval_coco(argv: list[str]) -> int:
    """``lit-vision eval-coco``: evaluate any COCO results file with the code the detection task uses."""
    parser = argparse.ArgumentParser(
        prog="lit-vision eval-coco",
        description="COCO AP/AR of a results file against ground truth (identical to pycocotools).",
    )
    parser.add_argument("--gt", required=True, help="COCO instances JSON (ground truth)")
    parser.add_argument("--results", required=True, help="COCO results JSON (list of detections)")
    parser.add_argument("--iou-type", choices=IOU_TYPES, default="bbox")
    parser.add_argument("--per-class", action="store_true", help="also print AP per category")
    parser.add_argument("--output", help="write the statistics as JSON to this file")
    args = parser.parse_args(argv)
    from lit_vision.evaluation.coco import (  # pycocotools: lazily
        CocoEvaluationError,
        evaluate_coco,
        format_stats,
    )

    try:
        stats = evaluate_coco(args.gt, args.results, iou_type=args.iou_type, per_class=args.per_class)
    except (FileNotFoundError, CocoEvaluationError) as err:
        print(f"lit-vision eval-coco: error: {err}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    for name, ap in stats.get("per_class", {}).items():
        print(f"  AP {name:<24} {ap:.3f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"iou_type": args.iou_type, **stats}, indent=2))
        print(f"Statistics written to {args.output}")
    return 0
