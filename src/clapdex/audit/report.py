"""A self-contained HTML audit report: charts (matplotlib, Agg) embedded as base64 PNG, plus tables.

The page needs nothing but itself: no scripts, no fonts, no CDN; it opens offline in any browser.
Sections: summary, top concepts by share of audio time (bar chart + prevalence table), fidelity
histogram (+ the lowest fidelity segments), damaged, silent and clipped audio (when there is any),
concepts over time for the longest files (a heat-map per file, clock-time axis), co-occurrence
heatmap of the top concepts (+ the strongest pairs).
The layout fills the window's width; wide charts scale to it.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from clapdex.audit.cooccurrence import all_pairs, cooccurrence_counts
from clapdex.audit.queries import file_profile, flagged, poorly_explained
from clapdex.audit.stats import corpus_totals, prevalence
from clapdex.errors import ClapdexError
from clapdex.printable import one_line

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #222; }
h1 { margin-bottom: .2rem; } .meta { color: #666; margin-top: 0; overflow-wrap: anywhere; }
section { margin: 2.2rem 0; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
img { max-width: 100%; height: auto; display: block; margin: .8rem 0; }
img.wide { width: 100%; }
.pair { display: flex; flex-wrap: wrap; gap: 0 2.5rem; align-items: flex-start; }
.pair > * { flex: 1 1 32rem; min-width: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; margin: .8rem 0; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #eee; text-align: left; }
td { overflow-wrap: anywhere; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { background: #f5f7fa; border-radius: 6px; padding: .7rem 1.1rem; }
.card b { display: block; font-size: 1.4rem; } .empty { color: #888; font-style: italic; }
"""

def _figure_to_img(figure, alt: str, wide: bool = True) -> str:
    """Wide charts fill the page's width (drawn at 150 dpi so they stay sharp up to ~1800 px)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    css = ' class="wide"' if wide else ""
    return f'<img{css} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict], columns: list[tuple[str, str]], caption: str = "") -> str:
    if not rows:
        return '<p class="empty">nothing to show</p>'

    def cell(value) -> str:
        if isinstance(value, float):
            return f'<td class="num">{value:.2f}</td>'  # as in the CLI tables
        if isinstance(value, int):
            return f'<td class="num">{value}</td>'
        if isinstance(value, list):  # concepts, strongest first
            value = ", ".join(f"{item['concept']} {item['weight']:.2f}" for item in value)
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = "\n".join("<tr>" + "".join(cell(r[k]) for k, _ in columns) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{body}\n'
            "</tbody></table></div>")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    # Names are text, never TeX: "$x$" in a file or concept name would otherwise be parsed as math
    # (and a lone "$" raises).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


LABEL_CHARS = 48  # longest name drawn in a chart (a 2,000-character label cost 0.8 GB to render)


def _label(name: str) -> str:
    """A file or concept name as a chart label: on one line, at most LABEL_CHARS characters."""
    text = one_line(name)
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def clock_ticks(duration: float, most: int = 10) -> tuple[list[float], list[str]]:
    """Tick positions (s) on whole clock steps, and their labels: mm:ss, or h:mm:ss when the
    axis passes an hour ("00:30", "1:15:00")."""
    step = next((s for s in _TICK_STEPS if duration / s <= most), _TICK_STEPS[-1])
    positions = [float(t) for t in range(0, int(duration) + 1, step)]
    hours = duration >= 3600

    def clock(t: float) -> str:
        t = int(round(t))
        h, m, sec = t // 3600, t // 60 % 60, t % 60
        return f"{h}:{m:02d}:{sec:02d}" if hours else f"{t // 60:02d}:{sec:02d}"

    return positions, [clock(t) for t in positions]


# ---- charts --------------------------------------------------------------------------------------

def top_concepts_figure(rows):
    """Bars of the share of indexed audio time each concept is active in, largest at the top:
    ordered by the measure they are sized by (rows come from prevalence(sort="time"))."""
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: r.time_share)  # barh draws bottom up: largest at the top
    figure, axis = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))  # beside its table
    # Positions, not names: two long names cut to the same label must stay two bars.
    axis.barh(range(len(rows)), [100 * r.time_share for r in rows], color="#3b7dd8")
    axis.set_yticks(range(len(rows)), [_label(r.concept) for r in rows])
    for i, r in enumerate(rows):
        axis.text(100 * r.time_share, i, f" {r.files} file{'' if r.files == 1 else 's'}",
                  va="center", fontsize=8, color="#444")
    axis.set_xlabel("share of indexed audio time the concept is active in (%)")
    axis.set_title("Top concepts, by share of audio time")
    axis.margins(x=0.15)
    return figure


def top_concepts_chart(rows) -> str:
    return _figure_to_img(top_concepts_figure(rows), "bar chart of the top concepts")


def fidelity_histogram(concept_fidelity: np.ndarray, fidelity: np.ndarray, below: float) -> str:
    """Concept fidelity (what the flag uses) filled; reconstruction fidelity as an outline."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(12, 3.2))
    low = min(0.0, float(concept_fidelity.min(initial=0)), float(fidelity.min(initial=0)))
    axis.hist(concept_fidelity, bins=40, range=(low, 1.0), color="#59a14f",
              label="concept fidelity cos(Cw, z)")
    axis.hist(fidelity, bins=40, range=(low, 1.0), histtype="step", color="#4e79a7",
              label="reconstruction fidelity cos(r, â)")
    axis.axvline(below, color="#e15759", linestyle="--", label=f"poorly explained (< {below})")
    axis.set_xlabel("fidelity")
    axis.set_ylabel("segments")
    axis.set_title("Fidelity of the concept decompositions")
    axis.legend(loc="upper left")
    return _figure_to_img(figure, "histogram of segment fidelity")


def file_timeline_figure(profile, n_concepts: int = 8):
    """A heat-map of one file: its strongest concepts as rows (strongest on top), time as columns
    (one per window, from the file's start to its end, clock-time ticks), colour = weight."""
    plt = _pyplot()
    totals: dict[str, float] = {}
    for segment in profile.segments:
        for name, weight in segment.concepts:
            totals[name] = totals.get(name, 0.0) + weight
    names = sorted(totals, key=lambda n: (-totals[n], n))[:n_concepts]
    segments = profile.segments
    weights = np.array([[dict(s.concepts).get(name, 0.0) for s in segments] for name in names],
                       dtype=np.float64).reshape(len(names), len(segments))
    # Windows overlap (hop < window): each column runs from midway after the previous window's
    # centre to midway before the next one's, the first from the file's start, the last to its end.
    centres = np.array([(s.start + s.end) / 2 for s in segments], dtype=np.float64)
    end = max([s.end for s in segments] + [profile.duration or 0.0])
    edges = np.concatenate([[min([s.start for s in segments] + [0.0])],
                            (centres[1:] + centres[:-1]) / 2, [end]])
    figure, axis = plt.subplots(figsize=(12, 0.3 * len(names) + 1.6))
    mesh = axis.pcolormesh(edges, np.arange(len(names) + 1), weights, cmap="viridis",
                           vmin=0.0, vmax=max(float(weights.max(initial=0.0)), 1e-6))
    axis.set_yticks(np.arange(len(names)) + 0.5, [_label(n) for n in names], fontsize=8)
    axis.invert_yaxis()  # strongest concept on top
    positions, labels = clock_ticks(end - edges[0])
    axis.set_xticks([edges[0] + p for p in positions], labels, fontsize=8)
    axis.set_xlim(edges[0], end)
    axis.set_xlabel("time in file")
    axis.set_title(_label(Path(profile.path).name), fontsize=10)
    figure.colorbar(mesh, ax=axis, label="concept weight", pad=0.01, fraction=0.03)
    return figure


def file_timeline_chart(profile, n_concepts: int = 8) -> str:
    return _figure_to_img(file_timeline_figure(profile, n_concepts),
                          f"concepts over time in {Path(profile.path).name}")


def cooccurrence_heatmap(names: list[str], counts: np.ndarray, n_segments: int) -> str:
    plt = _pyplot()
    sizes = np.diag(counts).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = counts * n_segments / np.outer(sizes, sizes)
        log_lift = np.log2(np.where(counts > 0, lift, np.nan))
    np.fill_diagonal(log_lift, np.nan)
    limit = max(1.0, float(np.nanmax(np.abs(log_lift))) if np.isfinite(log_lift).any() else 1.0)
    size = 0.38 * len(names) + 2.5
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(log_lift, cmap="RdBu_r", vmin=-limit, vmax=limit)
    labels = [_label(name) for name in names]
    axis.set_xticks(range(len(names)), labels, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), labels, fontsize=8)
    figure.colorbar(image, ax=axis, label="log2 lift (0 = chance)", shrink=0.8)
    axis.set_title("Co-occurrence of the top concepts (same segment)")
    return _figure_to_img(figure, "co-occurrence heatmap of the top concepts", wide=False)


# ---- the page ------------------------------------------------------------------------------------

def _longest_files(store, n: int) -> list[str]:
    """Paths of the n files whose segments reach furthest (ties by stored path), from the
    memory-mapped search files: a join over the segments table reads every embedding (4 s at 1M
    segments)."""
    from clapdex.storage.derived import open_state

    state = open_state(store)
    paths = state.json("files")["paths"]
    length = np.full(len(paths), -np.inf)
    np.maximum.at(length, np.asarray(state.array("file_index")), np.asarray(state.array("ends")))
    with_segments = np.flatnonzero(length > -np.inf)
    longest = sorted(with_segments, key=lambda i: (-length[i], paths[i]))[:n]
    return [store.roots.from_db(paths[i]) for i in longest]  # files.json holds the stored form


def _fidelities(store) -> tuple[np.ndarray, np.ndarray]:
    """(concept fidelity, reconstruction fidelity) of every segment, from the memory-mapped
    search files (storage/derived.py): a scan of the segments table reads every embedding."""
    from clapdex.storage.derived import open_state

    state = open_state(store)
    return (np.asarray(state.array("concept_fidelity"), dtype=np.float64),
            np.asarray(state.array("fidelity"), dtype=np.float64))


def build_report(store, top: int = 20, n_files: int = 3, below: float = 0.5) -> tuple[str, dict]:
    """(HTML text, summary dict)."""
    totals = corpus_totals(store)
    top_rows = prevalence(store, top=top, sort="time")  # as the bars: one measure
    sections: list[str] = []

    cards = [("files", totals.files), ("segments", totals.segments),
             ("hours indexed", f"{totals.indexed_seconds / 3600:.2f}"),
             ("active concepts", len(prevalence(store)))]
    sections.append('<section><div class="cards">' + "".join(
        f'<div class="card"><b>{html.escape(str(v))}</b>{html.escape(k)}</div>' for k, v in cards)
        + "</div></section>")

    prevalence_rows = [dict(r.to_row(), time_pct=100 * r.time_share) for r in top_rows]
    sections.append("<section><h2>Top concepts</h2><div class=\"pair\"><div>"
                    + (top_concepts_chart(top_rows) if top_rows else "") + "</div><div>"
                    + _table(prevalence_rows, [("concept", "concept"), ("time_pct", "time %"),
                                               ("files", "files"), ("segments", "segments"),
                                               ("mean_weight", "mean weight"),
                                               ("max_weight", "max weight")])
                    + "</div></div></section>")

    concept_fidelity, fidelity = _fidelities(store)
    n_low, low_rows = poorly_explained(store, below=below, limit=20)
    if n_low:
        low_part = (f"<p>{n_low} of {len(fidelity)} segments have concept fidelity below "
                    f"{below}: the vocabulary describes them poorly. The lowest:</p>"
                    + _table([r.to_row() for r in low_rows],
                             [("concept_fidelity", "concept fidelity"),
                              ("fidelity", "reconstruction fidelity"), ("path", "file"),
                              ("start", "start (s)"), ("end", "end (s)"),
                              ("concepts", "closest concepts")]))
    else:  # not "0 of N ... The lowest:" over an empty table
        low_part = f"<p>No segment has concept fidelity below {below}.</p>"
    sections.append("<section><h2>Fidelity</h2>"
                    + (fidelity_histogram(concept_fidelity, fidelity, below) if len(fidelity)
                       else "")
                    + low_part + "</section>")

    flags = store.flag_counts()
    damage = _damage_section(store, flags)
    if damage:
        sections.append(damage)

    timelines = [file_timeline_chart(file_profile(store, path, top=8))
                 for path in _longest_files(store, n_files)]
    if timelines:
        sections.append("<section><h2>Concepts over time (longest files)</h2>"
                        + "".join(timelines) + "</section>")

    if len(top_rows) >= 2:
        ids = [r.concept_id for r in top_rows]
        counts = cooccurrence_counts(store)  # counted once for the heatmap and the pairs
        heatmap = cooccurrence_heatmap([r.concept for r in top_rows], counts[np.ix_(ids, ids)],
                                       totals.segments)
        pairs = all_pairs(store, min_count=3, limit=25, counts=counts)
        sections.append("<section><h2>Co-occurrence</h2><div class=\"pair\"><div>" + heatmap
                        + "</div><div><p>Pairs found together in the same segment more often than chance "
                          "(lift = observed / expected, at least 3 segments):</p>"
                        + _table([p.to_row() for p in pairs],
                                 [("concept_a", "concept"), ("concept_b", "with"),
                                  ("count", "together"), ("lift", "lift")])
                        + "</div></div></section>")

    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    settings = store.settings
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>clapdex audit report</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>clapdex audit report</h1><p class=\"meta\">{html.escape(str(store.root))} · "
            f"vocabulary {html.escape(settings.vocabulary_name)} · {created}</p>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    summary = {"files": totals.files, "segments": totals.segments,
               "indexed_seconds": totals.indexed_seconds, "charts": page.count("<img "),
               "concepts": len(top_rows), "flags": flags}
    return page, summary


def _damage_section(store, flags: dict, limit: int = 20) -> str:
    """Truncated files (with their warnings) and silent / clipped segments, when there are any."""
    if not (flags["truncated"] or flags["silent"] or flags["clipped"]):
        return ""
    parts = [f"<p>{flags['truncated']} file(s) indexed truncated (with what decoded), "
             f"{flags['silent']} segment(s) silent (no concepts; left out of the fidelity "
             f"listing above), {flags['clipped']} segment(s) clipped.</p>"]
    for flag, title, columns in (
            ("truncated", "Truncated files", [("path", "file"), ("warning", "what decoded")]),
            ("silent", "Silent segments", [("path", "file"), ("start", "start (s)"),
                                           ("end", "end (s)"), ("level_db", "level (dBFS)")]),
            ("clipped", "Clipped segments", [("path", "file"), ("start", "start (s)"),
                                             ("end", "end (s)"), ("clipped_pct", "clipped %"),
                                             ("concepts", "concepts")])):
        if not flags[flag]:
            continue
        total, _files, rows = flagged(store, flag, limit=limit)
        records = [dict(r.to_row(), clipped_pct=100 * (getattr(r, "clipped_fraction", 0) or 0))
                   for r in rows]
        shown = f" (the first {len(rows)})" if len(rows) < total else ""
        parts.append(f"<h3>{title}{shown}</h3>" + _table(records, columns))
    return "<section><h2>Damaged, silent and clipped audio</h2>" + "".join(parts) + "</section>"


def write_report(store, path: str | Path, top: int = 20, n_files: int = 3,
                 below: float = 0.5) -> dict:
    page, summary = build_report(store, top=top, n_files=n_files, below=below)
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as error:
        raise ClapdexError(f"cannot write {path}: {error.strerror}") from None
    summary["path"] = str(path)
    return summary
