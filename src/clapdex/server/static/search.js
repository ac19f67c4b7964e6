// The search page: text, upload (query by example), more-like-this, concept steering, paging.
"use strict";

(() => {
  const {api, el, clear, num, signed, range, player, fileLink, showError} = CX;
  const $ = (id) => document.getElementById(id);
  const state = {text: "", concepts: [], mode: "hybrid", path: "", k: 10, offset: 0,
                 similar: null, upload: null};
  let cards = [];
  let selected = -1;

  // ---- state <-> URL (so a search can be bookmarked and the back button works) -------------
  function readUrl() {
    const p = new URLSearchParams(location.search);
    state.text = p.get("text") || "";
    state.concepts = p.getAll("concept");
    state.mode = p.get("mode") || "hybrid";
    state.path = p.get("path") || "";
    state.k = Number(p.get("k")) || 10;
    state.offset = Number(p.get("offset")) || 0;
    state.similar = p.get("similar");
    $("q").value = state.text;
    $("mode").value = state.mode;
    $("path").value = state.path;
    $("k").value = String(state.k);
    drawChips();
  }

  function writeUrl() {
    if (state.upload) return;  // an upload cannot be put in a URL
    const query = {text: state.text, concept: state.concepts, mode: state.mode === "hybrid" ? null : state.mode,
                   path: state.path, k: state.k === 10 ? null : state.k,
                   offset: state.offset || null, similar: state.similar};
    history.replaceState(null, "", CX.url("/", query));
  }

  // ---- steering chips -------------------------------------------------------------------
  function drawChips() {
    clear($("chips"), state.concepts.map((term, i) => {
      const negative = term.startsWith("-");
      const name = negative ? term.slice(1) : term;
      return el("span", {class: `chip ${negative ? "minus" : "plus"}`},
        el("button", {type: "button", class: "sign", title: "Flip the sign",
                      onclick: () => { state.concepts[i] = negative ? name : `-${name}`; run(0); }},
           negative ? CX.MINUS : "+"),
        el("span", {class: "name"}, name),
        el("button", {type: "button", class: "remove", title: "Remove", "aria-label": `Remove ${name}`,
                      onclick: () => { state.concepts.splice(i, 1); run(0); }}, "\u00D7"));
    }));
  }

  function addConcept(sign) {
    const name = $("concept").value.trim();
    if (!name) return;
    state.concepts.push(sign < 0 ? `-${name}` : name);
    $("concept").value = "";
    run(0);
  }

  // ---- the explanation bar --------------------------------------------------------------
  // Parts (top contributions, the rest summed, the baseline) drawn to scale: positive parts
  // from 0 to the right, negative parts back from there; the bar ends at the concept score.
  const SHOWN = 5;
  const PALETTE = 8;
  const colors = new Map();  // one colour per concept on the page, so the same concept matches
  const colorOf = (name) => {
    if (!colors.has(name)) colors.set(name, colors.size % PALETTE);
    return colors.get(name);
  };

  function parts(explanation) {
    const terms = explanation.contributions;
    const out = terms.slice(0, SHOWN).map((t) => ({label: t.concept, value: t.contribution, color: colorOf(t.concept)}));
    const rest = terms.slice(SHOWN);
    const restSum = rest.reduce((s, t) => s + t.contribution, 0);
    if (rest.length) out.push({label: `${rest.length} more`, value: restSum, color: "rest"});
    if (explanation.baseline !== 0) out.push({label: "baseline", value: explanation.baseline, color: "base"});
    return out;
  }

  function bar(result, scale) {
    const items = parts(result.explanation);
    const track = el("div", {class: "bar", role: "img",
                             "aria-label": `concept score ${num(result.concept)} as a sum of contributions`});
    let position = 0;
    const positive = items.filter((p) => p.value > 0);
    const negative = items.filter((p) => p.value < 0);
    for (const p of [...positive, ...negative]) {
      const width = Math.abs(p.value) / scale * 100;
      const left = p.value > 0 ? position : position - width;
      const part = el("div", {class: `part c-${p.color} ${p.value < 0 ? "neg" : "pos"}`,
                              title: `${p.label}: ${signed(p.value)}`},
                      el("span", {}, p.label));
      part.style.left = `${left}%`;
      part.style.width = `${width}%`;
      track.append(part);
      position = p.value > 0 ? position + width : left;
    }
    const marker = el("div", {class: "marker", title: `concept score ${num(result.concept)}`});
    marker.style.left = `${Math.max(position, 0)}%`;
    track.append(marker);
    return track;
  }

  function equation(result) {
    const items = parts(result.explanation);
    const line = el("div", {class: "equation"});
    items.forEach((p, i) => {
      const text = i === 0 ? num(p.value) : signed(p.value);
      line.append(el("span", {class: `term c-${p.color}`}, el("i", {class: "swatch"}), `${text} ${p.label}`), " ");
    });
    if (!items.length) line.append("0.00 ");
    line.append(el("b", {}, `= ${num(result.concept)} concept score`));
    return line;
  }

  // ---- results --------------------------------------------------------------------------
  function card(result, scale, results) {
    const x = result.explanation;
    const {clip, buttons} = player(null, result);
    const audioHolder = el("div", {class: "audio"});
    clip.holder = audioHolder;
    const own = x.concepts.slice(0, 6).map((c) => `${c.concept} ${num(c.weight)}`).join(", ");
    const more = x.concepts.length > 6 ? `, +${x.concepts.length - 6} more` : "";
    const li = el("li", {class: "result", tabindex: "0", "data-rank": result.rank,
                         "data-file-id": result.file_id, "data-segment-id": result.segment_id},
      el("div", {class: "head"},
        el("span", {class: "rank"}, `${result.rank}.`),
        fileLink(result.file_id, result.path),
        result.missing ? el("span", {class: "missing"}, "missing from disk") : null,
        (result.flags || []).length ? el("span", {class: "flag"}, result.flags.join(", ")) : null,
        el("span", {class: "range"}, range(result.start, result.end))),
      el("div", {class: "scores"},
        el("span", {class: "score"}, `score ${num(result.score)}`),
        el("span", {}, `dense ${num(result.dense)}`),
        el("span", {}, `concept ${num(result.concept)}`)),
      bar(result, scale),
      equation(result),
      el("div", {class: "own"}, el("span", {title: `reconstruction fidelity ${num(x.fidelity)}`},
        `concept fidelity ${num(x.concept_fidelity)} \u00B7 `), own || "no concepts", more),
      x.low_fidelity && !(result.flags || []).includes("silent") ? el("p", {class: "low"},
        `\u26A0 Low fidelity (concept fidelity ${num(x.concept_fidelity)}): the concepts explain this clip poorly, so read the explanation with care.`) : null,
      x.shared ? el("div", {class: "shared"}, "shared with the query: ",
        x.shared.map((s) => s.concept).join(", ") || "none") : null,
      el("div", {class: "actions"}, buttons,
        el("button", {type: "button", class: "similar",
                      onclick: () => { state.similar = String(result.file_id); state.upload = null; state.text = ""; $("q").value = ""; run(0); }},
           "More like this")),
      audioHolder);
    li.clip = clip;
    li.addEventListener("focus", () => select(cards.indexOf(li), false));
    return li;
  }

  function describe(data) {
    const q = data.query;
    const bits = [];
    if (q.kind === "audio") bits.push(`sounds like ${q.audio_file || state.upload?.name || q.audio}`);
    if (q.kind === "text") bits.push(`\u201C${q.text}\u201D`);
    if (q.steering.length) bits.push(`steered by ${q.steering.map((s) => `${s.weight < 0 ? CX.MINUS : "+"}${s.concept}`).join(" ")}`);
    bits.push(`${data.mode} ranking`);
    const info = [bits.join(" \u00B7 ")];
    if (q.query_concepts && q.query_concepts.length) {
      info.push(el("br"), `query concepts: ${q.query_concepts.slice(0, 6).map((c) => `${c.concept} ${num(c.weight)}`).join(", ")}`);
    }
    return info;
  }

  async function run(offset) {
    state.text = $("q").value.trim();
    state.mode = $("mode").value;
    state.path = $("path").value.trim();
    state.k = Number($("k").value);
    state.offset = offset;
    drawChips();
    writeUrl();
    showError($("error"), null);
    if (!state.text && !state.concepts.length && !state.similar && !state.upload) {
      clear($("results")); clear($("pager")); clear($("query-info"));
      return;
    }
    const options = {concept: state.concepts, mode: state.mode, path: state.path, k: state.k,
                     offset: state.offset};
    if (!state.text && !state.similar && !state.upload) options.mode = "concept";
    $("results").setAttribute("aria-busy", "true");
    try {
      let data;
      if (state.upload) {
        const form = new FormData();
        form.append("file", state.upload);
        for (const [key, value] of Object.entries(options)) {
          for (const v of Array.isArray(value) ? value : [value]) if (v !== "" && v !== null) form.append(key, v);
        }
        data = await api("/api/search/upload", {}, {method: "POST", body: form});
      } else if (state.similar) {
        data = await api("/api/similar", {...options, file_id: state.similar});
      } else {
        data = await api("/api/search", {...options, text: state.text});
      }
      show(data);
    } catch (error) {
      showError($("error"), error);
      clear($("results")); clear($("pager"));
    } finally {
      $("results").removeAttribute("aria-busy");
    }
  }

  function show(data) {
    clear($("query-info"), describe(data));
    const scale = Math.max(1e-9, ...data.results.map((r) => parts(r.explanation)
      .filter((p) => p.value > 0).reduce((s, p) => s + p.value, 0)));
    cards = data.results.map((r) => card(r, scale, data));
    clear($("results"), cards.length ? cards : [el("li", {class: "none"}, "no results")]);
    selected = -1;
    const page = Math.floor(state.offset / state.k) + 1;
    clear($("pager"),
      el("button", {type: "button", id: "prev", disabled: state.offset === 0,
                    onclick: () => run(Math.max(0, state.offset - state.k))}, "\u2190 Previous"),
      el("span", {}, `page ${page}`),
      el("button", {type: "button", id: "next", disabled: data.results.length < state.k,
                    onclick: () => run(state.offset + state.k)}, "Next \u2192"));
  }

  // ---- keyboard: arrows move between results, space plays/pauses ------------------------
  function select(i, focus = true) {
    if (i < 0 || i >= cards.length) return;
    cards.forEach((c, j) => c.classList.toggle("selected", j === i));
    selected = i;
    if (focus && document.activeElement !== cards[i]) cards[i].focus();
  }

  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName) ||
                   event.target.tagName === "BUTTON" && event.key === " ";
    if (typing || event.ctrlKey || event.metaKey || event.altKey || !cards.length) return;
    if (event.key === "ArrowDown") { select(Math.min(selected + 1, cards.length - 1)); event.preventDefault(); }
    else if (event.key === "ArrowUp") { select(Math.max(selected - 1, 0)); event.preventDefault(); }
    else if (event.key === " " && selected >= 0) { cards[selected].clip.toggle(); event.preventDefault(); }
  });

  // ---- wiring ---------------------------------------------------------------------------
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.similar = null;
    state.upload = null;
    $("upload").value = "";
    run(0);
  });
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    state.upload = file;
    state.similar = null;
    $("q").value = "";
    run(0);
  });
  $("add-plus").addEventListener("click", () => addConcept(1));
  $("add-minus").addEventListener("click", () => addConcept(-1));
  $("concept").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); addConcept(1); }
  });
  for (const id of ["mode", "k"]) $(id).addEventListener("change", () => run(0));
  CX.autocomplete($("concept"));
  CX.header("Search");
  readUrl();
  run(state.offset);
})();
