"""What the exported file says about itself: where size and normalisation come from, what goes in and out."""

from __future__ import annotations

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.export import metadata
from lit_vision.export.wrappers import export_spec
from tests.export.helpers import CLASS_NAMES, classifier, detector, segmenter

FACTS = {"dynamic": {"batch": True, "height": False, "width": False}, "exporter": "torch.jit.trace",
         "size_multiple": 1}


def test_normalisation_comes_from_the_data_then_the_backbone_then_imagenet() -> None:
    task = classifier()
    task.input_normalization = lambda: None  # type: ignore[method-assign] # a backbone without a preference
    assert metadata.normalization(task, {}) == (IMAGENET_MEAN, IMAGENET_STD, "ImageNet (lit_vision.constants)")
    task.input_normalization = lambda: ([0.5] * 3, [0.5] * 3)  # type: ignore[method-assign] # e.g. a timm ViT's
    assert metadata.normalization(task, {"mean": None, "std": None}) == ((0.5,) * 3, (0.5,) * 3,
                                                                          "the backbone's pretrained config")
    mean, std, source = metadata.normalization(task, {"mean": [0.5] * 3, "std": [0.2] * 3})
    assert (mean, std, source) == ((0.5,) * 3, (0.2,) * 3, "the DataModule's mean/std")
    task.data_info.extra["normalize"] = ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))  # what a DataModule may say
    assert metadata.normalization(task, {"mean": [0.5] * 3, "std": [0.2] * 3})[2] == "DataInfo.extra['normalize']"


def test_input_size_comes_from_the_command_the_task_the_data_then_a_default() -> None:
    det, clf = detector("fcos", image_size=96), classifier()
    assert metadata.input_size(det, "detection", {"image_size": 64}, [80, 120]) == ((80, 120), "--image_size")
    assert metadata.input_size(det, "detection", {"image_size": 64}, None) == ((96, 96), "the task's image_size")
    assert metadata.input_size(clf, "classification", {"image_size": 64}, None)[0] == (64, 64)
    assert metadata.input_size(clf, "classification", {}, [72]) == ((72, 72), "--image_size")
    assert metadata.input_size(clf, "segmentation", {}, None)[0] == (512, 512)


def test_metadata_of_each_task() -> None:
    clf = classifier()
    spec = export_spec(clf.model, "classification", IMAGENET_MEAN, IMAGENET_STD)
    meta = metadata.build(clf, spec, (64, 64), FACTS, fmt="torchscript", data={}, size_source="x",
                          normalization_source="y", checkpoint=None)
    assert meta["input_shape"] == ["batch", 3, 64, 64] and meta["class_names"] == CLASS_NAMES
    assert meta["outputs"][0]["shape"] == ["batch", 3] and "softmax" in meta["postprocessing"]
    assert meta["exporter"] == "torch.jit.trace" and "box_format" not in meta and meta["size_multiple"] == 1
    assert meta["task_class"] == "lit_vision.tasks.classification.ImageClassifier"

    seg = segmenter("unet", inference="slide", window_size=64)
    spec = export_spec(seg.model, "segmentation", IMAGENET_MEAN, IMAGENET_STD, normalize_inside=True)
    meta = metadata.build(seg, spec, (64, 64), FACTS, fmt="onnx", data={}, size_source="x", normalization_source="y",
                          checkpoint="best.ckpt")
    assert meta["architecture"] == "unet" and meta["normalization_inside"] and "the model normalises" in \
        meta["preprocessing"]
    assert "sliding windows" in meta["notes"][0] and meta["outputs"][0]["shape"][2:] == ["height", "width"]

    det = detector("faster_rcnn")
    spec = export_spec(det.model, "detection", IMAGENET_MEAN, IMAGENET_STD)
    facts = FACTS | {"dynamic": {"batch": False, "height": True, "width": True}}
    meta = metadata.build(det, spec, (128, 128), facts, fmt="onnx", data={}, size_source="x",
                          normalization_source="y", checkpoint=None)
    assert meta["input_shape"] == [1, 3, "height", "width"] and meta["input_range"] == "[0, 1]"
    assert meta["box_format"].startswith("xyxy") and meta["score_thresh"] == 0.0 and "batch 1" in meta["notes"][0]
    assert [o["name"] for o in meta["outputs"]] == meta["output_names"] == ["boxes", "scores", "labels", "batch_index"]


def test_reading_metadata_of_a_file_without_it_names_the_file(tmp_path) -> None:  # noqa: ANN001
    import zipfile

    import pytest

    from lit_vision.export.formats import ExportFormatError, read_metadata

    plain = tmp_path / "model.pt"
    with zipfile.ZipFile(plain, "w") as archive:  # a TorchScript / .pt2-like archive of someone else's
        archive.writestr("model/data.pkl", b"")
    with pytest.raises(ExportFormatError, match=f"{plain} has no lit_vision metadata"):
        read_metadata(plain)
    text = tmp_path / "notes.torchscript.pt"
    text.write_text("not a model")
    with pytest.raises(ExportFormatError, match=f"{text} is neither ONNX"):
        read_metadata(text)
