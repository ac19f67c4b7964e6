// The audit page: expressions (errors shown at their position), prevalence (sortable, charted),
// co-occurrence, poorly explained clips, failed files, the HTML report. Lists page.
"use strict";

(() => {
  const {api, el, clear, num, range, fileLink, showError} = CX;
  const $ = (id) => document.getElementById(id);
  const PAGE = 25;
  CX.header("Audit");
  $("report-link").href = CX.url("/api/report");

  function pager(box, offset, shown, total, go) {
    clear(box,
      el("button", {type: "button", class: "prev", disabled: offset === 0, onclick: () => go(Math.max(0, offset - PAGE))}, "\u2190 Previous"),
      el("span", {}, total ? `${offset + 1}\u2013${offset + shown} of ${total}` : "none"),
      el("button", {type: "button", class: "next", disabled: offset + shown >= total, onclick: () => go(offset + PAGE)}, "Next \u2192"));
  }

  function table(headers, rows) {
    return el("table", {class: "table"},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
  }

  // A segment row's file link and player.
  function segmentCells(row, holder) {
    const link = fileLink(row.file_id, row.path, {segment: row.segment_id});
    const {buttons} = CX.player(holder, row);
    buttons.lastChild.remove();  // "play the rest" lives on the file page
    return [link, range(row.start, row.end), buttons];
  }

  // ---- expression ----------------------------------------------------------------------
  let exprOffset = 0;
  async function runExpression(offset) {
    exprOffset = offset;
    const expression = $("expr").value;
    showError($("expr-error"), null);
    history.replaceState(null, "", CX.url("/audit", {expression}));
    try {
      const data = await api("/api/audit", {expression, offset, limit: PAGE});
      const holder = el("div", {class: "audio"});
      clear($("expr-result"),
        el("p", {class: "count"}, `${data.segments} segment${data.segments === 1 ? "" : "s"} in ${data.files} file${data.files === 1 ? "" : "s"} match`),
        table(["file", "time", "", "score", "concepts"], data.matches.map((m) => [
          ...segmentCells(m, holder), num(m.score),
          m.concepts.map((c) => `${c.concept} ${num(c.weight)}`).join(", ")])),
        holder, el("div", {class: "pager"}));
      pager($("expr-result").lastChild, offset, data.matches.length, data.segments, runExpression);
    } catch (error) {
      clear($("expr-result"));
      const box = $("expr-error");
      showError(box, error);
      if (error.body && Number.isInteger(error.body.position)) {
        const text = error.body.text, at = error.body.position;
        box.append(el("pre", {class: "caret"}, el("span", {}, text.slice(0, at)),
                      el("mark", {}, text.slice(at, at + 1) || " "), el("span", {}, text.slice(at + 1)),
                      "\n", " ".repeat(at), "^"));
      }
    }
  }
  $("expr-form").addEventListener("submit", (e) => { e.preventDefault(); runExpression(0); });

  // ---- prevalence ----------------------------------------------------------------------
  let sort = "files";
  async function prevalence(offset) {
    try {
      const data = await api("/api/concepts", {sort, offset, limit: PAGE});
      const key = {files: "files", segments: "segments", time: "time_share", weight: "mean_weight"}[sort];
      const top = Math.max(1e-9, ...data.rows.map((r) => r[key]));
      clear($("prevalence-chart"), data.rows.slice(0, 12).map((r) => {
        const fill = el("span", {class: "fill"});
        fill.style.width = `${(r[key] / top) * 100}%`;
        const value = key === "time_share" ? `${(100 * r[key]).toFixed(1)}%` : key === "mean_weight" ? num(r[key]) : r[key];
        return el("div", {class: "hbar"}, el("span", {class: "name"}, r.concept), el("span", {class: "track"}, fill), el("span", {class: "value"}, value));
      }));
      clear($("prevalence").tBodies[0], data.rows.map((r) => el("tr", {},
        el("td", {}, r.concept), el("td", {}, r.files), el("td", {}, r.segments),
        el("td", {}, (100 * r.time_share).toFixed(1)), el("td", {}, num(r.mean_weight)), el("td", {}, num(r.max_weight)))));
      document.querySelectorAll("#prevalence [data-sort]").forEach((b) => b.classList.toggle("active", b.dataset.sort === sort));
      pager($("prevalence-pager"), offset, data.rows.length, data.total, prevalence);
    } catch (error) { showError($("prevalence-pager"), error); }
  }
  document.querySelectorAll("#prevalence [data-sort]").forEach((b) =>
    b.addEventListener("click", () => { sort = b.dataset.sort; prevalence(0); }));

  // ---- co-occurrence -------------------------------------------------------------------
  async function cooccurrence() {
    showError($("co-error"), null);
    try {
      const data = await api("/api/cooccurrence", {concept: $("co-concept").value.trim(), min_count: $("co-min").value, limit: 50});
      clear($("co-result"), data.pairs.length
        ? table(["concept", "with", "together", "n a", "n b", "lift"], data.pairs.map((p) =>
            [p.concept_a, p.concept_b, p.count, p.count_a, p.count_b, num(p.lift)]))
        : el("p", {class: "muted"}, "No pair occurs together more than chance that often."));
    } catch (error) { clear($("co-result")); showError($("co-error"), error); }
  }
  $("co-form").addEventListener("submit", (e) => { e.preventDefault(); cooccurrence(); });
  CX.autocomplete($("co-concept"));

  // ---- poorly explained ----------------------------------------------------------------
  async function poorly(offset) {
    showError($("poor-error"), null);
    try {
      const data = await api("/api/poorly-explained", {below: $("poor-below").value, offset, limit: PAGE});
      const holder = el("div", {class: "audio"});
      clear($("poor-result"),
        el("p", {class: "count"}, `${data.total} segment${data.total === 1 ? "" : "s"} with concept fidelity below ${data.below}`),
        table(["file", "time", "", "concept fidelity", "closest concepts"], data.rows.map((r) => [
          ...segmentCells(r, holder), num(r.concept_fidelity), r.concepts.map((c) => `${c.concept} ${num(c.weight)}`).join(", ") || "(none)"])),
        holder, el("div", {class: "pager"}));
      pager($("poor-result").lastChild, offset, data.rows.length, data.total, poorly);
    } catch (error) { clear($("poor-result")); showError($("poor-error"), error); }
  }
  $("poor-form").addEventListener("submit", (e) => { e.preventDefault(); poorly(0); });

  // ---- failed files ---------------------------------------------------------------------
  async function failed(offset) {
    try {
      const data = await api("/api/files", {status: "error", offset, limit: PAGE});
      clear($("failed"), data.total
        ? [table(["file", "why"], data.files.map((f) => [fileLink(f.id, f.path), f.error || "(no reason recorded)"])), el("div", {class: "pager"})]
        : [el("p", {class: "muted"}, "None: every file was indexed.")]);
      if (data.total) pager($("failed").lastChild, offset, data.files.length, data.total, failed);
    } catch (error) { showError($("failed"), error); }
  }

  const initial = new URLSearchParams(location.search).get("expression");
  if (initial) { $("expr").value = initial; runExpression(0); }
  prevalence(0);
  poorly(0);
  failed(0);
})();
