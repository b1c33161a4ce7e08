"""Per-class reports: the numbers equal independent references (pycocotools, counted by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lit_vision.data import ImageFolderDataModule
from lit_vision.evaluation import evaluate_coco
from lit_vision.tasks import ImageClassifier
from lit_vision.visualize.report import (
    classification_report,
    detection_report,
    segmentation_report,
    write_report_files,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "coco_eval"
GT = FIXTURE / "instances_val2014_100.json"
RESULTS = FIXTURE / "instances_val2014_fakebbox100_results.json"


def test_classifier_confusion_matrix_equals_a_hand_count_of_the_same_predictions(imagefolder_root: Path) -> None:
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, data)
    report = model.eval_reports["val"]
    # The same predictions, independently: a forward pass over the validation loader, counted pair by pair.
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            preds += model(batch["image"]).argmax(1).tolist()
            labels += batch["label"].tolist()
    expected = np.zeros((model.num_classes, model.num_classes), dtype=np.int64)  # rows: true class, columns: predicted
    for true, pred in zip(labels, preds):
        expected[true, pred] += 1
    assert report.confusion.tolist() == expected.tolist() and expected.sum() == len(data.datasets["val"])
    support = expected.sum(1)
    assert report.table["images"] == support.tolist()
    for k in range(model.num_classes):
        assert report.table["accuracy"][k] == pytest.approx(expected[k, k] / support[k])


def test_classification_and_segmentation_tables_by_hand() -> None:
    cm = torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 0]])  # rows truth; class 2 never seen nor predicted
    cls = classification_report(cm, ["a", "b", "c"], "val")
    assert cls.table["accuracy"][:2] == [5 / 6, 2 / 4] and cls.table["precision"][:2] == [5 / 7, 2 / 3]
    assert np.isnan(cls.table["accuracy"][2]) and np.isnan(cls.table["precision"][2])
    seg = segmentation_report(cm, ["bg", "x", "y"], "val")
    assert seg.table["iou"][:2] == [5 / (6 + 7 - 5), 2 / (4 + 3 - 2)] and seg.table["pixels"] == [6, 4, 0]


def test_detection_pr_curves_equal_pycocotools_precision_array(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data = json.loads(GT.read_text())
    gt = COCO(str(GT))
    ev = COCOeval(gt, gt.loadRes(str(RESULTS)), "bbox")
    ev.evaluate(), ev.accumulate()
    reference = ev.eval["precision"]  # [T, R, K, A, M]

    cats = sorted(gt_data["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    mapping = {k: c["id"] for k, c in enumerate(cats)}
    details = evaluate_coco(GT, RESULTS, details=True)["details"]
    report = detection_report(details, gt_data, names, mapping, "val")
    for k, cat in enumerate(cats):
        column = list(ev.params.catIds).index(cat["id"])
        np.testing.assert_allclose(report.pr_precision[k], reference[0, :, column, 0, 2], atol=1e-6)
        valid = reference[:, :, column, 0, 2]
        valid = valid[valid > -1]
        assert report.table["ap"][k] == (pytest.approx(valid.mean(), abs=1e-6) if valid.size else pytest.approx(np.nan,
                                                                                                                nan_ok=True))
    np.testing.assert_allclose(report.pr_recall, ev.params.recThrs)
    person = names.index("person")
    assert report.table["instances"][person] == sum(1 for a in gt_data["annotations"]
                                                    if a["category_id"] == mapping[person] and not a["iscrowd"])
    files = {p.name for p in write_report_files(report, tmp_path)}
    assert files == {"val_per_class.csv", "val_per_class.png", "val_pr_curves.png"}
    rows = (tmp_path / "val_per_class.csv").read_text().splitlines()
    assert rows[0] == "class,instances,ap,ap50,ap75" and len(rows) == len(names) + 1
