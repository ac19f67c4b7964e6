// The file page: a file's record, its failure if it could not be indexed, its concepts over time
// (a chart and a table of segments, each playable) and similar files.
"use strict";

(async () => {
  const {api, el, clear, num, range, fileLink, showError} = CX;
  const $ = (id) => document.getElementById(id);
  CX.header("");
  const params = new URLSearchParams(location.search);
  try {
    let fileId = params.get("id");
    let focusSegment = params.get("segment");
    if (!fileId && focusSegment) fileId = (await api(`/api/segments/${encodeURIComponent(focusSegment)}`)).file_id;
    if (!fileId || !/^\d+$/.test(fileId)) throw new Error("no file given: open a file from a search or audit result");
    const file = await api(`/api/files/${fileId}`, {top: 8});
    document.title = `clapdex · ${file.path.split("/").pop()}`;
    head(file);
    if (file.status === "indexed") {
      timeline(file, focusSegment);
      similar(file);
    }
  } catch (error) {
    showError($("error"), error);
  }

  // A segment's flags (docs/indexing.md "Damaged, silent and clipped audio"), as the CLI's show.
  function flagText(s) {
    const parts = [];
    if ((s.flags || []).includes("silent"))
      parts.push(s.level_db != null && s.level_db > -120 ? `silent (${Math.round(s.level_db)} dBFS), no concepts` : "silent (digital silence), no concepts");
    if ((s.flags || []).includes("clipped")) parts.push(`clipped (${(100 * (s.clipped_fraction || 0)).toFixed(1)}%)`);
    return parts.join(", ");
  }

  function head(file) {
    const facts = [file.status === "indexed" ? `${file.segments} segments` : `status: ${file.status}`];
    if (file.duration != null) facts.push(`${CX.clock(file.duration, false)} long`);
    if (file.sample_rate) facts.push(`${file.sample_rate} Hz`);
    if (file.channels) facts.push(`${file.channels} channel${file.channels === 1 ? "" : "s"}`);
    clear($("file-head"),
      el("h1", {class: "path"}, file.path),
      el("p", {class: "muted"}, facts.join(" \u00B7 ")),
      file.error ? el("p", {class: "failure", role: "alert"}, `Could not be indexed: ${file.error}`) : null,
      file.warning ? el("p", {class: "failure", role: "alert"}, `Truncated, indexed as decoded: ${file.warning}`) : null,
      !file.on_disk ? el("p", {class: "error", role: "alert"},
        "File missing: it is no longer on disk (moved or deleted since it was indexed). Its concepts are still in the index; it cannot be played.") : null);
  }

  function timeline(file, focusSegment) {
    $("timeline-panel").hidden = false;
    const low = file.low_fidelity_below;
    const segments = file.profile;
    const totals = new Map();
    for (const s of segments) for (const c of s.concepts) totals.set(c.concept, (totals.get(c.concept) || 0) + c.weight);
    const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([name]) => name);
    const duration = Math.max(file.duration || 0, ...segments.map((s) => s.end), 1e-9);
    const maxWeight = Math.max(1e-9, ...segments.flatMap((s) => s.concepts.map((c) => c.weight)));
    // A grid: one row per concept, each segment a cell placed at its time, darker = more weight.
    const rowHeight = 22, labelWidth = 150, width = 800;
    const svg = el("svg:svg", {viewBox: `0 0 ${width} ${top.length * rowHeight + 24}`, class: "chart",
                               role: "img", "aria-label": "concepts over time"});
    top.forEach((name, row) => {
      svg.append(el("svg:text", {x: labelWidth - 6, y: row * rowHeight + 15, "text-anchor": "end", class: "label"}, name.length > 22 ? `${name.slice(0, 21)}\u2026` : name));
      for (const s of segments) {
        const weight = (s.concepts.find((c) => c.concept === name) || {}).weight || 0;
        if (!weight) continue;
        const x = labelWidth + (s.start / duration) * (width - labelWidth);
        const w = Math.max(((s.end - s.start) / duration) * (width - labelWidth), 1);
        svg.append(el("svg:rect", {x, y: row * rowHeight + 2, width: w, height: rowHeight - 4, class: "cell",
                                   "fill-opacity": (0.15 + 0.85 * weight / maxWeight).toFixed(3)},
                      el("svg:title", {}, `${name} ${num(weight)} at ${range(s.start, s.end)}`)));
      }
    });
    svg.append(el("svg:text", {x: labelWidth, y: top.length * rowHeight + 18, class: "axis"}, "0:00"),
               el("svg:text", {x: width, y: top.length * rowHeight + 18, "text-anchor": "end", class: "axis"}, CX.clock(duration, false)));
    clear($("timeline"), top.length ? svg : el("p", {class: "muted"}, "No concept is active in this file."));

    const body = $("segments").tBodies[0];
    const audioHolder = el("div", {class: "audio"});
    $("timeline").after(audioHolder);
    clear(body, segments.map((s, i) => {
      const clip = {file_id: file.id, segment_id: s.segment_id, start: s.start, end: s.end, path: file.path};
      const {clip: player, buttons} = CX.player(audioHolder, clip);
      const row = el("tr", {"data-start": s.start},
        el("td", {}, range(s.start, s.end)),
        el("td", {class: s.concept_fidelity < low ? "lowcell" : null, title: `reconstruction fidelity ${num(s.fidelity)}`},
           num(s.concept_fidelity), s.concept_fidelity < low ? " (concepts explain it poorly)" : ""),
        el("td", {}, [flagText(s), s.concepts.map((c) => `${c.concept} ${num(c.weight)}`).join(", ")]
          .filter(Boolean).join(" \u00B7 ") || "(no concept)"),
        el("td", {}, file.on_disk ? buttons : null));
      if (focusSegment && String(s.segment_id) === focusSegment) row.classList.add("selected");
      return row;
    }));
  }

  async function similar(file) {
    try {
      const others = (await api("/api/similar", {file_id: file.id, k: 8})).results;  // not itself
      $("similar-panel").hidden = false;
      clear($("similar"), others.length ? others.map((r) => el("li", {},
        fileLink(r.file_id, r.path, {segment: r.segment_id}), " ",
        el("span", {class: "muted"}, `${range(r.start, r.end)} \u00B7 score ${num(r.score)}`)))
        : [el("li", {class: "muted"}, "no other file")]);
    } catch (error) {
      $("similar-panel").hidden = false;
      showError($("similar"), error);
    }
  }
})();
