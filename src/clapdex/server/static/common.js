// Shared by the pages: the API client, DOM building (text only: nothing from the index is ever
// parsed as HTML), number and time formatting, the player, and the concept autocomplete.
"use strict";

const CX = (() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || sessionStorage.getItem("clapdex-token") || "";
  if (params.get("token")) sessionStorage.setItem("clapdex-token", token);

  function url(path, query) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(query || {})) {
      if (value === undefined || value === null || value === "") continue;
      for (const v of Array.isArray(value) ? value : [value]) search.append(key, v);
    }
    if (token) search.set("token", token);
    const text = search.toString();
    return text ? `${path}?${text}` : path;
  }

  async function api(path, query, options) {
    let response;
    try {
      response = await fetch(url(path, query), options);
    } catch (error) {
      throw Object.assign(new Error("the clapdex server does not answer (is it still running?)"),
                          {body: {}});
    }
    let body;
    try { body = await response.json(); } catch (_) { body = {}; }
    if (!response.ok) {
      throw Object.assign(new Error(body.error || `request failed (HTTP ${response.status})`),
                          {body, status: response.status});
    }
    return body;
  }

  // el("a", {href: "/x", class: "y", onclick: f}, "text", child, ...): strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = tag.startsWith("svg:")
      ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
      : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.setAttribute("class", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node, ...children) { node.replaceChildren(); node.append(...children.flat().filter(Boolean)); return node; }

  const MINUS = "\u2212";
  const num = (x, digits = 2) => (x < 0 ? MINUS : "") + Math.abs(x).toFixed(digits);
  const signed = (x) => (x < 0 ? `${MINUS} ` : "+ ") + Math.abs(x).toFixed(2);

  function clock(seconds, tenths) {
    const units = tenths ? Math.round(seconds * 10) : Math.round(seconds);
    const whole = tenths ? Math.floor(units / 10) : units;
    const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    const mmss = `${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}` +
                 (tenths ? `.${units % 10}` : "");
    return h ? `${h}:${mmss}` : mmss;
  }

  function range(start, end) {  // as the CLI shows it: start down, end up; tenths under 2 s
    const tenths = end - start < 2;
    const k = tenths ? 10 : 1;
    return `${clock(Math.floor(start * k + 1e-6) / k, tenths)}\u2013${clock(Math.ceil(end * k - 1e-6) / k, tenths)}`;
  }

  let statusPromise = null;
  const status = () => (statusPromise = statusPromise || api("/api/status"));

  function playable(path, info) {
    const dot = path.lastIndexOf(".");
    return dot >= 0 && info.server.playable_extensions.includes(path.slice(dot).toLowerCase());
  }

  function showError(box, error) {
    clear(box, error ? el("p", {class: "error", role: "alert"}, error.message || String(error)) : null);
  }

  function fileLink(fileId, path, extra) {
    return el("a", {class: "path", href: url("/file", {id: fileId, ...(extra || {})})}, path);
  }

  // ---- the player ------------------------------------------------------------------------
  // One <audio> per clip. A browser-playable file is streamed whole (range requests: seeking
  // works in long files) and started at the segment; playback stops at the segment's end unless
  // "play the rest" was asked for. Other formats get the segment decoded to WAV by the server.
  let current = null;

  class Clip {
    constructor(holder, clip) {
      this.clip = clip;  // {file_id, segment_id, start, end, path}
      this.holder = holder;
      this.audio = null;
      this.rest = false;
    }

    async ensure() {
      if (this.audio) return this.audio;
      const info = await status();
      const whole = playable(this.clip.path, info);
      this.offset = whole ? 0 : this.clip.start;  // a segment WAV starts at the segment
      const src = whole ? url(`/api/files/${this.clip.file_id}/audio`)
                        : url(`/api/segments/${this.clip.segment_id}/audio`);
      const audio = el("audio", {controls: true, preload: "metadata", class: "player",
                                 "data-segment-start": this.clip.start,
                                 "data-segment-end": this.clip.end});
      this.whole = whole;
      audio.addEventListener("timeupdate", () => {
        if (!this.rest && audio.currentTime + this.offset >= this.clip.end - 0.02) {
          audio.pause();
        }
      });
      audio.addEventListener("error", () => this.explainFailure(src));
      audio.src = src;
      this.holder.append(audio);
      this.audio = audio;
      return audio;
    }

    async explainFailure(src) {
      let message = "this audio cannot be played";
      try {
        const response = await fetch(src, {headers: {Range: "bytes=0-0"}});
        if (!response.ok) message = (await response.json()).error || message;
      } catch (_) { /* keep the generic message */ }
      this.holder.append(el("p", {class: "error", role: "alert"}, message));
    }

    async seekTo(seconds) {
      const audio = await this.ensure();
      if (audio.readyState < 1) {
        await new Promise((resolve) => audio.addEventListener("loadedmetadata", resolve, {once: true}));
      }
      audio.currentTime = Math.max(seconds - this.offset, 0);
    }

    async play(rest) {
      if (current && current !== this) current.pause();
      current = this;
      this.rest = Boolean(rest) && this.whole;
      const audio = await this.ensure();
      const position = audio.currentTime + this.offset;
      if (!rest || position < this.clip.start || position >= this.clip.end - 0.05) {
        await this.seekTo(rest && position > this.clip.start ? position : this.clip.start);
      }
      try { await audio.play(); } catch (_) { /* the error event explains */ }
    }

    pause() { if (this.audio) this.audio.pause(); }

    toggle() {
      if (this.audio && !this.audio.paused) this.pause();
      else this.play(false);
    }
  }

  function player(holder, clip) {
    const c = new Clip(holder, clip);
    const rest = el("button", {type: "button", class: "rest", onclick: () => c.play(true),
                               title: "Keep playing past the segment"}, "Play the rest");
    const buttons = el("span", {class: "buttons"},
      el("button", {type: "button", class: "play", onclick: () => c.play(false),
                    title: "Play the matched segment (space)"}, "\u25B6 Play segment"), rest);
    status().then((info) => {
      if (!playable(clip.path, info)) {
        rest.disabled = true;
        rest.title = "This format is played one segment at a time (decoded on the server)";
      }
    });
    return {clip: c, buttons};
  }

  // ---- concept autocomplete (a native <datalist>, filled from /api/vocabulary) -------------
  function autocomplete(input) {
    const list = el("datalist", {id: `${input.id}-names`});
    input.setAttribute("list", list.id);
    input.after(list);
    let pending = 0;
    input.addEventListener("input", async () => {
      const ask = ++pending;
      try {
        const found = await api("/api/vocabulary", {q: input.value, limit: 30});
        if (ask === pending) clear(list, found.concepts.map((name) => el("option", {value: name})));
      } catch (_) { /* autocomplete is a convenience */ }
    });
  }

  // ---- header -----------------------------------------------------------------------------
  async function header(active) {
    const nav = document.getElementById("nav");
    const links = [["/", "Search"], ["/audit", "Audit"]].map(([href, label]) =>
      el("a", {href: url(href), class: label === active ? "active" : null}, label));
    clear(nav, el("a", {class: "brand", href: url("/")}, "clapdex"), ...links,
          el("span", {class: "status", id: "index-status"}));
    try {
      const info = await status();
      clear(document.getElementById("index-status"),
            `${info.counts.files} files \u00B7 ${info.counts.segments} segments \u00B7 ${info.counts.concepts} concepts`);
    } catch (error) {
      clear(document.getElementById("index-status"), error.message);
    }
  }

  return {api, url, el, clear, num, signed, range, clock, status, playable, showError, fileLink,
          player, autocomplete, header, MINUS};
})();
