"""TEMPORARY: the operations the app needs, over today's internals, until `clapdex.Index` (issue 16)
lands on main with a method per verb. The app calls only these names; when the Index lands this
module goes and the app is given the Index itself."""

from __future__ import annotations

import os

from sqlalchemy import func, select

from clapdex.api import ClapdexIndex
from clapdex.errors import QueryError
from clapdex.storage.schema import FileRow, SegmentRow


class FileNotFound(QueryError):
    """No file (or segment) with that id in the index."""


class IndexFacade:
    def __init__(self, index: ClapdexIndex):
        self._index = index
        self.store = index.store

    @property
    def path(self):
        return self._index.path

    def search(self, **options):
        return self._index.search(**options)

    def similar(self, audio, **options):
        return self._index.similar(audio, **options)

    def concept_names(self) -> list[str]:
        return self.store.concept_names()

    def concepts(self, top=None, sort="files"):
        from clapdex.audit.stats import prevalence
        return prevalence(self.store, top=top, sort=sort)

    def audit(self, expression, limit=100):
        from clapdex.audit.queries import audit
        return audit(self.store, expression, limit=limit)

    def cooccurrence(self, concept=None, min_count=3, limit=50):
        from clapdex.audit.cooccurrence import all_pairs, partners
        if concept:
            return partners(self.store, concept, min_count=min_count, limit=limit)
        return all_pairs(self.store, min_count=min_count, limit=limit)

    def poorly_explained(self, below=0.5, limit=50):
        from clapdex.audit.queries import poorly_explained
        return poorly_explained(self.store, below=below, limit=limit)

    def file(self, name, top=5):
        from clapdex.audit.queries import file_profile
        return file_profile(self.store, name, top=top)

    def report(self, **options) -> str:
        from clapdex.audit.report import build_report
        return build_report(self.store, **options)[0]

    def status(self) -> dict:
        settings = self.store.settings
        return {"path": str(self.path), **self.store.counts(),
                "vocabulary": settings.vocabulary_name, "model": settings.encoder_fingerprint,
                "window_seconds": settings.window_seconds, "hop_seconds": settings.hop_seconds,
                "lambda": settings.lam, "max_concepts": settings.max_concepts}

    # ---- records by id (for audio serving and the file page) ------------------------------

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

    def close(self):
        self._index.close()


def _file_dict(row, n_segments) -> dict:
    return {"file_id": int(row.id), "path": row.path, "status": row.status, "error": row.error,
            "duration": row.duration, "sample_rate": row.sample_rate, "channels": row.channels,
            "size": row.size, "segments": n_segments, "on_disk": os.path.isfile(row.path)}
