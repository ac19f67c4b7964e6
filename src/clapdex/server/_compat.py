"""TEMPORARY: records by id and the vocabulary, which clapdex.Index does not offer yet (the api
developer adds file_info / files / segment / concept_names); then this module goes."""

from __future__ import annotations

import os

from sqlalchemy import func, select

from clapdex.errors import QueryError
from clapdex.storage.schema import FileRow, SegmentRow


class FileNotFound(QueryError):
    """No file (or segment) with that id in the index."""


class Records:
    def __init__(self, index):
        self.index = index

    @property
    def store(self):
        return self.index.store

    def concept_names(self) -> list[str]:
        return self.store.concept_names()

    def report_html(self, top=20, n_files=3) -> str:
        from clapdex.audit.report import build_report
        return build_report(self.store, top=top, n_files=n_files)[0]

    def file_record(self, file_id: int) -> dict:
        with self.store.session() as session:
            row = session.get(FileRow, int(file_id))
            if row is None:
                raise FileNotFound(f"no file with id {file_id} in the index")
            n_segments = session.scalar(select(func.count()).select_from(SegmentRow)
                                        .where(SegmentRow.file_id == row.id))
            return _file_dict(row, n_segments)

    def files(self, status=None, offset=0, limit=50) -> tuple[int, list[dict]]:
        with self.store.session() as session:
            where = [] if status is None else [FileRow.status == status]
            total = session.scalar(select(func.count()).select_from(FileRow).where(*where))
            rows = session.scalars(select(FileRow).where(*where).order_by(FileRow.path)
                                   .offset(offset).limit(limit)).all()
            return int(total or 0), [_file_dict(r, None) for r in rows]

    def segment_record(self, segment_id: int) -> dict:
        with self.store.session() as session:
            row = session.execute(select(SegmentRow.id, SegmentRow.file_id, SegmentRow.start,
                                         SegmentRow.end).where(SegmentRow.id == int(segment_id))
                                  ).first()
        if row is None:
            raise FileNotFound(f"no segment with id {segment_id} in the index")
        return {"segment_id": int(row.id), "file_id": int(row.file_id), "start": float(row.start),
                "end": float(row.end)}

    def segment_ids(self, file_id: int) -> list[int]:
        """The file's segment ids in the order of file()'s segments (start, then id)."""
        with self.store.session() as session:
            return [int(i) for i in session.scalars(
                select(SegmentRow.id).where(SegmentRow.file_id == int(file_id))
                .order_by(SegmentRow.start, SegmentRow.id))]


def _file_dict(row, n_segments) -> dict:
    return {"file_id": int(row.id), "path": row.path, "status": row.status, "error": row.error,
            "duration": row.duration, "sample_rate": row.sample_rate, "channels": row.channels,
            "size": row.size, "segments": n_segments, "on_disk": os.path.isfile(row.path)}
