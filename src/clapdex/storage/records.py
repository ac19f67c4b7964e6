"""Files and segments of an index by id (what a web page links to), as plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from clapdex.errors import NotFoundError
from clapdex.storage.schema import FileRow, SegmentRow


@dataclass
class FileRecord:
    id: int
    path: str
    status: str                 # "indexed" | "error"
    error: str | None
    duration: float | None      # seconds
    sample_rate: int | None     # of the source file
    channels: int | None
    size: int                   # bytes, when it was indexed
    segments: int
    warning: str | None = None  # indexed truncated: "header says 12.0 s, decoded 6.0 s"


@dataclass
class SegmentRecord:
    segment_id: int
    file_id: int
    path: str
    start: float
    end: float


def _file_columns():
    segments = (select(func.count(SegmentRow.id)).where(SegmentRow.file_id == FileRow.id)
                .correlate(FileRow).scalar_subquery())
    return (FileRow.id, FileRow.path, FileRow.status, FileRow.error, FileRow.duration,
            FileRow.sample_rate, FileRow.channels, FileRow.size, segments, FileRow.warning)


def file_record(store, file_id: int) -> FileRecord:
    """The file with this id (NotFoundError when there is none)."""
    with store.session() as session:
        row = session.execute(select(*_file_columns()).where(FileRow.id == int(file_id))).first()
    if row is None:
        raise NotFoundError(f"no file with id {file_id} in this index")
    return FileRecord(*row)


def file_records(store, status: str | None = None, offset: int = 0,
                 limit: int | None = None) -> list[FileRecord]:
    """Files in id order, optionally only those with `status` ("indexed" or "error")."""
    statement = select(*_file_columns()).order_by(FileRow.id).offset(max(int(offset), 0))
    if status is not None:
        statement = statement.where(FileRow.status == status)
    if limit is not None:
        statement = statement.limit(int(limit))
    with store.session() as session:
        return [FileRecord(*row) for row in session.execute(statement)]


def segment_record(store, segment_id: int) -> SegmentRecord:
    """The segment with this id (NotFoundError when there is none)."""
    statement = (select(SegmentRow.id, SegmentRow.file_id, FileRow.path, SegmentRow.start,
                        SegmentRow.end)
                 .join(FileRow, FileRow.id == SegmentRow.file_id)
                 .where(SegmentRow.id == int(segment_id)))
    with store.session() as session:
        row = session.execute(statement).first()
    if row is None:
        raise NotFoundError(f"no segment with id {segment_id} in this index")
    return SegmentRecord(*row)


def level_flags(silent: bool | None, clipped: bool | None) -> list[str] | None:
    """A segment's level flags ("silent", "clipped"), or None when it was never measured
    (indexed before schema 5, or imported embeddings)."""
    if silent is None and clipped is None:
        return None
    return [name for name, on in (("silent", silent), ("clipped", clipped)) if on]


def segment_flags(store, segment_ids: list[int]) -> dict[int, list[str] | None]:
    """level_flags of these segments (one query), by segment id."""
    if not segment_ids:
        return {}
    with store.session() as session:
        rows = session.execute(select(SegmentRow.id, SegmentRow.silent, SegmentRow.clipped)
                               .where(SegmentRow.id.in_(segment_ids)))
        return {int(id_): level_flags(silent, clipped) for id_, silent, clipped in rows}
