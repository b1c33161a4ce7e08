"""``lit-vision eval-coco``: evaluate any COCO results file with the code the detection task uses."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IOU_TYPES = ("bbox", "segm")


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a library's message may hold newlines)."""
    return " ".join(str(err).split()) or type(err).__name__


def eval_coco(argv: list[str], debug: bool = False) -> int:
    """``lit-vision eval-coco``: evaluate any COCO results file with the code the detection task uses.

    Every failure is one line on stderr and exit code 2 (``debug``: the traceback instead): a missing or
    malformed file, a bad detection (named by its index), an empty results list.
    """
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

    def fail(message: str) -> int:
        print(f"lit-vision eval-coco: error: {message}", file=sys.stderr)
        return 2

    try:
        stats = evaluate_coco(args.gt, args.results, iou_type=args.iou_type, per_class=args.per_class,
                              allow_empty=False)
    except (FileNotFoundError, CocoEvaluationError) as err:
        if debug:
            raise
        return fail(_one_line(err))
    except Exception as err:  # noqa: BLE001 -- what the checks did not foresee still prints one line
        if debug:
            raise
        return fail(f"evaluating {args.results} against {args.gt} failed: {type(err).__name__}: {_one_line(err)} "
                    "(--debug shows the traceback)")
    print(format_stats(stats))
    for name, ap in stats.get("per_class", {}).items():
        print(f"  AP {name:<24} {ap:.3f}")
    if args.output:
        try:
            Path(args.output).write_text(json.dumps({"iou_type": args.iou_type, **stats}, indent=2))
        except OSError as err:
            return fail(f"cannot write the statistics to {args.output}: {_one_line(err)}")
        print(f"Statistics written to {args.output}")
    return 0
