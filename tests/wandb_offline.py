"""Read back what an offline W&B run recorded: config, history, summary, artifacts and media files.

An offline run keeps everything in one transaction log, ``<save_dir>/wandb/offline-run-*/run-<id>.wandb``,
which ``wandb sync`` uploads later. wandb 0.31 no longer ships a Python reader for it (the writer lives in its
Go core), so the framing is read here: the LevelDB log format (https://github.com/google/leveldb/blob/main/doc/
log_format.md) behind a 7-byte ``:W&B`` header, each payload one ``wandb_internal_pb2.Record``, parsed with
wandb's own protobuf classes. Checksums are verified, so a format change fails loudly instead of reading junk.

    run = read_offline_run(tmp_path / "runs")
    run.config["trainer"]["precision"]; run.summary["val/acc1"]; run.artifacts[0]["aliases"]
    images = media_of(run.history, "val/predictions")      # [{"_type": "image-file", "path": ..., "boxes": ...}]
    run.boxes(images[0])["predictions"]["box_data"][0]["position"]
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OfflineRun", "expand_images", "isolate_wandb", "media_of", "read_offline_run", "read_records"]

_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_RECORD_HEADER = struct.Struct("<IHB")  # crc32 of type byte + data, length, type
_IDENT, _MAGIC = b":W&B", 0xBEE1
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
MEDIA_TYPES = ("image-file", "images/separated", "table-file")


def isolate_wandb(monkeypatch: Any, tmp_path: Path) -> Path:
    """Offline, without credentials, every W&B file under ``tmp_path``; returns the save dir to log into.

    ``WANDB_DATA_DIR`` is where offline artifacts (checkpoints, tables) are staged until ``wandb sync``: by
    default the user's ``~/.local/share/wandb``.
    """
    for name in ("WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name, sub in (("WANDB_DIR", "runs"), ("WANDB_DATA_DIR", "wandb-data"), ("WANDB_CACHE_DIR", "wandb-cache"),
                      ("WANDB_CONFIG_DIR", "wandb-config")):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(tmp_path / sub))
    return tmp_path / "runs"


def read_records(path: Path) -> list[Any]:
    """Every ``Record`` protobuf in a ``.wandb`` file, in the order they were written."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise ValueError(f"{path} is not a W&B transaction log (yet): {len(data)} bytes")
    ident, magic, _version = _HEADER.unpack_from(data, 0)
    if ident != _IDENT or magic != _MAGIC:
        raise ValueError(f"{path} is not a W&B transaction log (header {ident!r}, {magic:#x})")
    payloads: list[bytes] = []
    pending: bytes | None = None
    pos = _HEADER.size
    while pos + _RECORD_HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD_HEADER.size:  # a block's trailer: too short for a record header
            pos += left
            continue
        crc, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding (a file preallocated or still being written)
            pos += left
            continue
        chunk = data[pos + _RECORD_HEADER.size:pos + _RECORD_HEADER.size + length]
        pos += _RECORD_HEADER.size + length
        if len(chunk) < length:
            break  # the writer was cut off mid-record
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad checksum at byte {pos - length}")
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending += chunk
            if kind == _LAST:
                payloads.append(pending)
                pending = None
        else:
            raise ValueError(f"{path}: unexpected record type {kind} at byte {pos - length}")
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _decode(value_json: str) -> Any:
    return json.loads(value_json) if value_json else None


def _set(target: dict, item: Any) -> None:
    """Put one ``{key | nested_key, value_json}`` item into ``target`` (nested keys build nested dicts)."""
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        child = target.get(key)
        target[key] = child = child if isinstance(child, dict) else {}
        target = child
    target[keys[-1]] = _decode(item.value_json)


def _unwrap(value: Any) -> Any:
    """wandb's older config form ``{"value": v, "desc": ...}`` -> ``v``."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


@dataclass
class OfflineRun:
    """What one offline run recorded, merged the way the dashboard would show it after ``wandb sync``."""

    run_dir: Path
    files_dir: Path  # media land under ``files_dir / "media" / {"images", "table", "metadata/boxes2D"}``
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def file(self, relative: str) -> Path:
        """A media file named by a logged media dict (``path``, ``filenames[i]``), inside ``files_dir``."""
        return self.files_dir / relative

    def read_json(self, relative: str) -> Any:
        return json.loads(self.file(relative).read_text())

    def boxes(self, image: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The box groups of one image media dict: ``{group: {"box_data": [...], "class_labels": {...}}}``.

        wandb writes the boxes of an image to a side file (``media/metadata/boxes2D/*.json``); the history only
        names it.
        """
        return {group: self.read_json(ref["path"]) for group, ref in (image.get("boxes") or {}).items()}

    def table(self, media: dict[str, Any]) -> dict[str, Any]:
        """A logged table's ``{"columns": [...], "data": [[...], ...]}`` from its ``table-file`` dict."""
        return self.read_json(media["path"])

    def metric(self, key: str) -> list[Any]:
        """Every value logged for ``key``, in history order."""
        return [row[key] for row in self.history if key in row]


def media_of(history: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The media dicts logged under ``key`` (one per ``log`` call): ``_type`` ``"image-file"`` (with ``boxes``
    / ``masks``), ``"images/separated"`` (a list of images) or ``"table-file"``."""
    return [row[key] for row in history
            if isinstance(row.get(key), dict) and row[key].get("_type") in MEDIA_TYPES]


def expand_images(media: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``image-file``-like dict per image (``path``, ``caption``, ``boxes``, ``masks``), whether ``media``
    is a single image or an ``images/separated`` list."""
    if media.get("_type") == "image-file":
        return [media]
    if media.get("_type") != "images/separated":
        raise ValueError(f"not an image media dict: {media.get('_type')!r}")
    n = int(media["count"])
    out = []
    for i in range(n):
        out.append({
            "_type": "image-file", "path": media["filenames"][i],
            "caption": (media.get("captions") or [None] * n)[i],
            "boxes": (media.get("all_boxes") or [None] * n)[i] or {},
            "masks": (media.get("all_masks") or [None] * n)[i] or {},
        })
    return out


def _newest_run_file(save_dir: Path) -> Path:
    for base in (save_dir / "wandb", save_dir):
        files = [*base.glob("offline-run-*/run-*.wandb"), *base.glob("run-*/run-*.wandb"), *base.glob("run-*.wandb")]
        if files:
            return max(files, key=lambda p: (p.stat().st_mtime, p.parent.name))
    raise FileNotFoundError(f"no W&B run (wandb/offline-run-*/run-*.wandb) under {save_dir}")


def _finished_records(path: Path, wait_s: float) -> list[Any]:
    """The file's records once the run's ``exit`` record is in it (or after ``wait_s``: what is there).

    ``wandb.finish()`` can return before wandb's core process has written the transaction log out: seen with
    wandb 0.31 after a Lightning fit, the file was still empty when ``finish`` returned and complete ~1 s later.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            records = read_records(path)
        except (ValueError, struct.error):  # a header or record still being written
            if time.monotonic() >= deadline:
                raise
            records = None
        if records is not None and (any(r.WhichOneof("record_type") == "exit" for r in records)
                                    or time.monotonic() >= deadline):
            return records
        time.sleep(0.1)


def read_offline_run(save_dir: str | Path, wait_s: float = 30.0) -> OfflineRun:
    """The newest run under ``save_dir`` (the logger's ``save_dir``, its ``wandb/`` folder, or a run folder).

    Call ``wandb.finish()`` first: the final records (the last summary, artifacts logged at the end) are written
    when the run ends. Waits up to ``wait_s`` for the run's ``exit`` record (``wait_s=0``: a running run as far
    as it has been written).
    """
    path = _newest_run_file(Path(save_dir))
    run = OfflineRun(run_dir=path.parent, files_dir=path.parent / "files")
    for record in _finished_records(path, wait_s):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            for item in record.run.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, item)
            for item in record.config.remove:
                run.config.pop(item.key, None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item)
            for item in record.summary.remove:
                run.summary.pop(item.key or (list(item.nested_key) or [""])[0], None)
        elif kind == "artifact":
            art = record.artifact
            run.artifacts.append({
                "name": art.name, "type": art.type, "aliases": list(art.aliases), "digest": art.digest,
                "files": [entry.path for entry in art.manifest.contents],
                "local_paths": [entry.local_path for entry in art.manifest.contents],
                "metadata": _decode(art.metadata) if art.metadata else {},
            })
    run.config = {k: _unwrap(v) for k, v in run.config.items()}
    return run
