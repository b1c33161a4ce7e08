"""The Ultralytics side of ``benchmarks/yolo_vs_ultralytics.py``; runs under a scratch venv's Python, never ours.

Ultralytics is AGPL: it is no dependency of lit_vision and none of its code is copied here; this script only
calls its public API (``YOLO(...).train`` / ``.val``) from a separate virtual environment, as a user would.
It trains ``yolov8n.yaml`` from scratch (``pretrained=False``, nothing downloaded), with no gradient
accumulation (``nbs = batch``) and no plots, then validates ``last.pt`` (the EMA weights of the last epoch,
as lit_vision's side predicts from its ``last.ckpt``) at conf 0.001 / IoU 0.7 / 300 detections with
``save_txt`` + ``save_conf``: one ``labels/<stem>.txt`` per image, normalised to the original image. The driver
turns those into a COCO results file and scores them with lit_vision's evaluator, the judge of both sides.

No network: the driver sets ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false``; this script also refuses every
socket connection and DNS lookup before importing Ultralytics and lists any attempt in its report, and puts a
local font where Ultralytics' dataset check would otherwise try to download ``Arial.ttf``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

NETWORK_ATTEMPTS: list[str] = []


def close_network() -> None:
    """Refuse (and record) every connection and name lookup: proof that the run needed no network."""

    def caller() -> str:
        frames = [f for f in traceback.extract_stack()[:-2] if "ultralytics" in f.filename]
        return f" from {frames[-1].filename.split('site-packages/')[-1]}:{frames[-1].lineno}" if frames else ""

    def refuse_connect(self: socket.socket, address: Any) -> None:
        NETWORK_ATTEMPTS.append(f"connect {address}{caller()}")
        raise OSError("network closed by yolo_vs_ultralytics_peer.py")

    def refuse_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        NETWORK_ATTEMPTS.append(f"getaddrinfo {host}{caller()}")
        raise socket.gaierror("network closed by yolo_vs_ultralytics_peer.py")

    socket.socket.connect = refuse_connect  # type: ignore[method-assign]
    socket.getaddrinfo = refuse_lookup  # type: ignore[assignment]


def place_font() -> None:
    """check_det_dataset() looks for Arial.ttf in Ultralytics' config dir and downloads it when absent; plots are
    off, so any local TrueType font under that name ends the lookup (matplotlib ships DejaVuSans)."""
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    target = USER_CONFIG_DIR / "Arial.ttf"
    if not target.exists():
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", target)


def gflops(model: Any, image_size: int) -> float | None:
    """Forward FLOPs of one ``image_size`` square image, counted by torch (the same counter as lit_vision's side)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        net = copy.deepcopy(model).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 3, image_size, image_size))
        return counter.get_total_flops() / 1e9
    except Exception:  # noqa: BLE001 -- a statistic, not a reason to fail the run
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Ultralytics data.yaml")
    parser.add_argument("--out", required=True, type=Path, help="run folder; report.json is written there")
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--imgsz", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="{}", help="JSON dict of further train() arguments")
    args = parser.parse_args()
    close_network()
    place_font()

    import torch
    from ultralytics import YOLO, __version__

    def set_threads(*_: Any) -> None:
        """Ultralytics' select_device() sets min(8, cores - 1) threads on CPU (1 here); both sides get --threads."""
        torch.set_num_threads(args.threads)

    report: dict[str, Any] = {"ultralytics": __version__, "torch": torch.__version__,
                              "epoch_start": [], "epoch_end": []}
    model = YOLO(args.model)  # a .yaml: built from scratch, no weights
    model.add_callback("on_pretrain_routine_end", set_threads)
    model.add_callback("on_val_start", set_threads)  # the final validation of best.pt selects the device again
    model.add_callback("on_train_epoch_start", lambda trainer: report["epoch_start"].append(time.time()))
    model.add_callback("on_fit_epoch_end", lambda trainer: report["epoch_end"].append(time.time()))
    train_args = {"data": args.data, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                  "workers": args.workers, "device": "cpu", "nbs": args.batch, "pretrained": False, "plots": False,
                  "seed": args.seed, "project": str(args.out), "name": "train", "exist_ok": True, "verbose": False}
    train_args |= json.loads(args.extra)
    report["train_args"] = train_args
    report["fit_start"] = time.time()
    model.train(**train_args)
    report["fit_end"] = time.time()
    report["threads"] = torch.get_num_threads()
    report["workers"] = model.trainer.args.workers  # after Ultralytics' own choice (0 when training on a CPU)
    last = Path(model.trainer.last)
    report["results_csv"] = str(last.parents[1] / "results.csv")
    trained = YOLO(str(last))
    report["params"] = sum(p.numel() for p in trained.model.parameters())  # with the dataset's classes
    report["gflops"] = gflops(trained.model.float(), args.imgsz)
    trained.add_callback("on_val_start", set_threads)
    metrics = trained.val(data=args.data, split="val", imgsz=args.imgsz, batch=args.batch,
                                  workers=args.workers, device="cpu", conf=0.001, iou=0.7, max_det=300,
                                  save_txt=True, save_conf=True, plots=False, project=str(args.out), name="val",
                                  exist_ok=True, verbose=False)
    report["val_end"] = time.time()
    report["val_threads"] = torch.get_num_threads()
    report["own_map"], report["own_map_50"] = float(metrics.box.map), float(metrics.box.map50)
    report["predictions_dir"] = str(args.out / "val" / "labels")
    report["network_attempts"] = NETWORK_ATTEMPTS
    (args.out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
