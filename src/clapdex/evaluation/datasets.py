"""Labeled evaluation data: which audio files, with which class label or captions.

Two layouts are read:
- a folder with one sub-folder per class (`DATA/dog/a.wav`, `DATA/siren/b.wav`, ...): the
  sub-folder name is the label; audio files are found recursively inside each class folder;
- a CSV file with a header row naming a path column and a label (or caption) column. The path column
  is `path` (or `file`, `filename`, `file_name`); the label column is `label` (or `class`,
  `category`), the caption column `caption` (or `text`). Relative paths are resolved against the CSV's
  own folder. For captions the same path may appear on several rows (Clotho has five per clip).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from clapdex.audio import AUDIO_EXTENSIONS
from clapdex.errors import DatasetError


PATH_COLUMNS = ("path", "file", "filename", "file_name")
LABEL_COLUMNS = ("label", "class", "category")
CAPTION_COLUMNS = ("caption", "text")


@dataclass(frozen=True)
class LabeledDataset:
    """Audio files with one class label each. `classes` is sorted; `targets[i]` indexes it."""

    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.labels)))

    @property
    def targets(self) -> list[int]:
        index = {name: i for i, name in enumerate(self.classes)}
        return [index[label] for label in self.labels]

    def subset(self, keep: list[int]) -> "LabeledDataset":
        return LabeledDataset(tuple(self.paths[i] for i in keep), tuple(self.labels[i] for i in keep))


@dataclass(frozen=True)
class CaptionDataset:
    """Distinct audio files and captions; `caption_file[j]` is the index in `paths` of caption j."""

    paths: tuple[Path, ...]
    captions: tuple[str, ...]
    caption_file: tuple[int, ...]


def load_labeled(data: str | os.PathLike) -> LabeledDataset:
    """A class-per-folder directory or a (path, label) CSV -> LabeledDataset (at least 2 classes)."""
    data = Path(data).expanduser()
    if data.is_dir():
        dataset = _from_folders(data)
    elif data.is_file():
        rows = _read_csv(data, LABEL_COLUMNS, "label")
        dataset = LabeledDataset(tuple(p for p, _ in rows), tuple(label for _, label in rows))
    else:
        raise DatasetError(f"{data}: no such folder or CSV file")
    if len(dataset.classes) < 2:
        raise DatasetError(f"{data}: needs at least 2 classes, found {len(dataset.classes)}")
    return dataset


def load_captions(data: str | os.PathLike) -> CaptionDataset:
    """A (path, caption) CSV -> CaptionDataset; files keep the order of their first appearance."""
    data = Path(data).expanduser()
    if not data.is_file():
        raise DatasetError(f"{data}: retrieval needs a CSV file with path and caption columns")
    rows = _read_csv(data, CAPTION_COLUMNS, "caption")
    file_index: dict[Path, int] = {}
    caption_file = []
    for path, _ in rows:
        caption_file.append(file_index.setdefault(path, len(file_index)))
    return CaptionDataset(tuple(file_index), tuple(c for _, c in rows), tuple(caption_file))


def _from_folders(root: Path) -> LabeledDataset:
    paths, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
                paths.append(path)
                labels.append(class_dir.name)
    if not paths:
        raise DatasetError(f"{root}: no audio files in class sub-folders (expected DATA/<class>/<file>)")
    return LabeledDataset(tuple(paths), tuple(labels))


def _read_csv(csv_path: Path, value_columns: tuple[str, ...], what: str) -> list[tuple[Path, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = {name.strip().lower(): name for name in (reader.fieldnames or [])}
            path_key = next((header[c] for c in PATH_COLUMNS if c in header), None)
            value_key = next((header[c] for c in value_columns if c in header), None)
            if path_key is None or value_key is None:
                raise DatasetError(
                    f"{csv_path}: needs a header with a path column ({'/'.join(PATH_COLUMNS)}) and a "
                    f"{what} column ({'/'.join(value_columns)}); found {list(header) or 'none'}")
            rows = []
            for line, record in enumerate(reader, start=2):
                raw_path = (record.get(path_key) or "").strip()
                value = (record.get(value_key) or "").strip()
                if not raw_path or not value:
                    raise DatasetError(f"{csv_path}:{line}: empty path or {what}")
                path = Path(raw_path).expanduser()
                rows.append((path if path.is_absolute() else csv_path.parent / path, value))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{csv_path}: cannot read CSV ({error})") from None
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    return rows
