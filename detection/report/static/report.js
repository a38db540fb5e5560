// The inspection report page: every decision is recomputed here from the stored detections.
// Rules: see rules.js. Everything that comes from a file is put into the page with
// textContent or setAttribute, never as HTML.
"use strict";
(function () {
  const D = window.REPORT_DATA;
  const SVG = "http://www.w3.org/2000/svg";
  const PAGE_SIZE = 48;
  const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46a0a0", "#f032e6",
    "#9a6324", "#800000", "#008080", "#000075", "#808000"];
  const { N, K, job, th, cls, score, off, gt, detOutcome, fails, border, top, detFails,
    recompute, wilson } = window.ReportRules(D);
  const state = { page: 0, list: [], baseline: null };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  const color = (c) => COLORS[c % COLORS.length];
  const fmt = (x, digits) => (x === null || x === undefined) ? "–" : Number(x).toFixed(digits);
  const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + " %";
  const imagePath = (i) => D.root + D.paths[i];

  function rateText(k, n) {
    const ci = wilson(k, n);
    return n ? pct(k / n) + " of " + n + " (95 %: " + pct(ci[0]) + "–" + pct(ci[1]) + ")" : "no images";
  }

  function renderHeader() {
    const m = D.meta;
    $("title").textContent = "Inspection report: " + m.job;
    document.title = "Inspection report: " + m.job;
    const info = $("job-info");
    const ck = m.checkpoint;
    const rows = [["output", m.output], ["checkpoint", ck.name + (ck.sha256 ? " (sha256 " + ck.sha256 + ")" : " (file not found)")],
      ["model", ck.model || "unknown"], ["date", m.date],
      ["thresholds", D.classes.map((c, k) => c + " " + job[k] + " (" + m.thresholdSources[c] + ")").join(", ")],
      ["report threshold", String(D.reportThreshold) + " (detections below it were not stored)"],
      ["borderline", "a detection at most " + D.band + " under its class threshold"]];
    if (gt) rows.push(["ground truth", gt.source + " (IoU " + gt.iou + ")"]);
    for (const [k, v] of rows) { info.appendChild(el("dt", {}, k)); info.appendChild(el("dd", {}, v)); }
    const notes = [];
    if (m.complete === false) notes.push("The job is not complete: " + m.missing + " inputs have no result yet.");
    if (m.badLines) notes.push(m.badLines + " unreadable result lines were left out (as in summary.json): " + m.badLinesShown.slice(0, 3).join("; "));
    $("job-note").hidden = notes.length === 0;
    $("job-note").textContent = notes.join(" ");
  }

  function renderThresholdTable() {
    const body = $("threshold-table").querySelector("tbody");
    const row = (name, testid, value, k) => {
      const tr = el("tr");
      const name_td = el("td");
      if (k >= 0) name_td.appendChild(el("span", { class: "swatch", style: "background:" + color(k) }));
      name_td.appendChild(document.createTextNode(name));
      tr.appendChild(name_td);
      const input = el("input", { type: "range", min: "0", max: "1", step: "0.001",
        "data-testid": testid, "aria-label": "threshold of " + name });
      input.value = String(value);
      const shown = el("td", { class: "num" }, fmt(value, 3));
      const slot = el("td"); slot.appendChild(input);
      tr.appendChild(slot); tr.appendChild(shown);
      tr.appendChild(el("td", { class: "num" }, k >= 0 ? job[k] : ""));
      tr.appendChild(el("td", {}, k >= 0 ? D.meta.thresholdSources[name] : "sets every class"));
      const failedCell = el("td", { class: "num", "data-testid": k >= 0 ? "failed-class-" + name : "failed-all" });
      tr.appendChild(failedCell);
      const prf = [];
      for (let q = 0; q < 3; q++) { const td = el("td", { class: "num gt-col" }); td.hidden = !gt; tr.appendChild(td); prf.push(td); }
      body.appendChild(tr);
      return { input, shown, failedCell, prf };
    };
    const controls = D.classes.map((name, k) => row(name, "threshold-" + name, job[k], k));
    const all = row("all classes", "threshold-all", K ? Math.min(...job) : 0.5, -1);
    controls.forEach((ctl, k) => ctl.input.addEventListener("input", () => {
      th[k] = parseFloat(ctl.input.value); update();
    }));
    all.input.addEventListener("input", () => {
      const v = parseFloat(all.input.value);
      controls.forEach((ctl, k) => { ctl.input.value = all.input.value; th[k] = v; });
      update();
    });
    $("reset-thresholds").addEventListener("click", () => {
      controls.forEach((ctl, k) => { th[k] = job[k]; ctl.input.value = String(job[k]); });
      update();
    });
    state.controls = controls; state.all = all;
  }

  function renderCounts(res) {
    const set = (id, v) => { document.querySelector('[data-testid="' + id + '"]').textContent = String(v); };
    set("count-inspected", D.counts.inspected);
    set("count-passed", res.passed);
    set("count-failed", res.failed);
    set("count-errors", D.counts.errors);
    if (gt) {
      const il = gt.imageLevel;
      set("count-escapes", res.escapes);
      set("count-false-rejects", res.falseRejects);
      $("escape-rate").textContent = rateText(res.escapes, il.defective_images);
      $("false-reject-rate").textContent = rateText(res.falseRejects, il.defect_free_images);
    }
    state.controls.forEach((ctl, k) => {
      ctl.shown.textContent = fmt(th[k], 3);
      ctl.failedCell.textContent = String(res.byClass[k]);
      ctl.input.setAttribute("data-value", String(th[k]));
      if (gt) {
        const tp = res.tp[k], fp = res.fp[k], fn = gt.numGt[k] - tp;
        ctl.prf[0].textContent = fmt(tp + fp ? tp / (tp + fp) : 0, 3);
        ctl.prf[1].textContent = fmt(tp + fn ? tp / (tp + fn) : 0, 3);
        ctl.prf[2].textContent = fmt(2 * tp + fp + fn ? 2 * tp / (2 * tp + fp + fn) : 0, 3);
      }
    });
    state.all.failedCell.textContent = String(res.failed);
    const low = D.classes.filter((c, k) => th[k] < D.reportThreshold);
    $("below-report").hidden = low.length === 0;
    $("below-report").textContent = low.length ? "Below the report threshold " + D.reportThreshold +
      " the job stored no detections: counts for " + low.join(", ") + " are lower bounds of what a rerun would fail." : "";
    $("threshold-args").textContent = D.classes.map((c, k) => "--threshold " + shellQuote(c + "=" + th[k])).join(" ");
  }
  function shellQuote(s) { return /^[\w.=+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }

  function renderDelta(res) {
    const b = state.baseline, parts = [];
    const said = (n, more, fewer) => n > 0 ? n + " " + more : n < 0 ? (-n) + " " + fewer : null;
    const dFail = res.failed - b.failed;
    if (dFail) parts.push((dFail > 0 ? "+" : "−") + Math.abs(dFail) + " rejected");
    if (gt) {
      const e = said(res.escapes - b.escapes, "more escapes", "fewer escapes");
      const f = said(res.falseRejects - b.falseRejects, "more false rejects", "fewer false rejects");
      if (e) parts.push(e); if (f) parts.push(f);
    }
    const moved = D.classes.some((c, k) => th[k] !== job[k]);
    $("delta").textContent = !moved ? "At the job's thresholds." :
      "Against the job's thresholds: " + (parts.length ? parts.join(", ") : "no decision changes") + ".";
  }

  function passesFilter(i, f) {
    const d = fails[i] ? "fail" : border[i] ? "borderline" : "pass";
    if (f.decision === "attention" ? d === "pass" : f.decision !== "all" && f.decision !== d) return false;
    if (f.cls >= 0) {
      let hit = false;
      for (let j = off[i]; j < off[i + 1] && !hit; j++) {
        if (cls[j] !== f.cls) continue;
        if (d === "fail") hit = detFails(j);
        else if (d === "borderline") hit = score[j] >= th[cls[j]] - D.band;
        else hit = true;
      }
      if (!hit) return false;
    }
    const s = Math.max(top[i], 0);
    if (s < f.min || s > f.max) return false;
    if (f.outcome) {
      const o = outcomeOf(i);
      if (o !== f.outcome) return false;
    }
    return true;
  }
  function outcomeOf(i) {
    if (!gt || gt.defective[i] < 0) return "unlabelled";
    if (gt.defective[i] === 1 && !fails[i]) return "escape";
    if (gt.defective[i] === 0 && fails[i]) return "false_reject";
    return "correct";
  }
  function currentFilter() {
    const num = (id, dflt) => { const v = parseFloat($(id).value); return Number.isFinite(v) ? v : dflt; };
    return { decision: $("filter-decision").value, cls: $("filter-class").value === "" ? -1 : parseInt($("filter-class").value, 10),
      min: num("filter-min", 0), max: num("filter-max", 1), outcome: gt ? $("filter-outcome").value : "" };
  }
  function filterList() {
    const f = currentFilter(), list = [];
    for (let i = 0; i < N; i++) if (passesFilter(i, f)) list.push(i);
    list.sort((a, b) => (top[b] - top[a]) || (a - b));
    state.list = list;
  }

  function boxesSvg(i, all) {
    const w = D.size[2 * i], h = D.size[2 * i + 1];
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const font = Math.max(w, h) / (all ? 40 : 12);
    for (let j = off[i]; j < off[i + 1]; j++) {
      const c = cls[j], f = detFails(j), b = score[j] >= th[c] - D.band;
      if (!all && !f && !b) continue;
      const x = D.box[4 * j], y = D.box[4 * j + 1], x2 = D.box[4 * j + 2], y2 = D.box[4 * j + 3];
      const r = document.createElementNS(SVG, "rect");
      const attrs = { x: x, y: y, width: Math.max(1, x2 - x), height: Math.max(1, y2 - y), fill: "none",
        stroke: color(c), "stroke-width": f ? 3 : 1.5, "vector-effect": "non-scaling-stroke" };
      if (!f) attrs["stroke-dasharray"] = "4 3";
      for (const [k, v] of Object.entries(attrs)) r.setAttribute(k, String(v));
      svg.appendChild(r);
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", String(x)); t.setAttribute("y", String(Math.max(font, y - font * 0.2)));
      t.setAttribute("fill", color(c)); t.setAttribute("font-size", String(font));
      t.setAttribute("stroke", "#fff"); t.setAttribute("stroke-width", String(font / 8)); t.setAttribute("paint-order", "stroke");
      t.textContent = (all ? D.classes[c] + " " : "") + score[j].toFixed(2);
      svg.appendChild(t);
    }
    return svg;
  }
  function frame(i, big) {
    const box = el("div", { class: big ? "frame big" : "frame" });
    const status = D.thumb[i];
    if (status === 1) {
      const img = el("img", { src: (big ? "full/" : "thumbs/") + i + ".jpg", alt: "", loading: "eager" });
      img.addEventListener("error", () => { img.remove(); box.prepend(el("div", { class: "placeholder" }, "image not found")); });
      box.appendChild(img);
    } else {
      box.appendChild(el("div", { class: "placeholder" }, status === 0 ? "source image unreadable" : "no thumbnail (beyond the report's image limit)"));
    }
    box.appendChild(boxesSvg(i, big));
    return box;
  }

  function renderGallery() {
    const gallery = $("gallery"), list = state.list;
    const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * PAGE_SIZE;
    const items = [];
    for (const i of list.slice(start, start + PAGE_SIZE)) {
      const d = fails[i] ? "fail" : border[i] ? "borderline" : "pass";
      const part = el("div", { class: "part " + d, "data-testid": "part", "data-image": imagePath(i), "data-index": i,
        "data-decision": d, tabindex: "0", role: "button" });
      part.appendChild(frame(i, false));
      const cap = el("div", { class: "caption" });
      cap.appendChild(el("span", { class: "badge " + d }, d));
      if (gt) { const o = outcomeOf(i); if (o === "escape" || o === "false_reject") cap.appendChild(el("span", { class: "badge " + o }, o.replace("_", " "))); }
      cap.appendChild(document.createTextNode(top[i] >= 0 ? top[i].toFixed(3) : "no detection"));
      cap.appendChild(el("span", { class: "name", title: imagePath(i) }, D.paths[i]));
      part.appendChild(cap);
      part.addEventListener("click", () => openViewer(i));
      part.addEventListener("keydown", (e) => { if (e.key === "Enter") openViewer(i); });
      items.push(part);
    }
    gallery.replaceChildren(...items);
    if (!items.length) gallery.appendChild(el("p", { class: "note", "data-testid": "gallery-empty" }, "No part matches these filters."));
    $("page-info").textContent = list.length ? (start + 1) + "–" + Math.min(list.length, start + PAGE_SIZE) + " of " + list.length + " parts" : "0 parts";
    $("page-prev").disabled = state.page === 0;
    $("page-next").disabled = state.page >= pages - 1;
    $("download-list").textContent = "Download list (" + list.length + " images)";
    gallery.setAttribute("data-count", String(list.length));
  }

  function loadRecord(i, done) {
    const k = Math.floor(i / D.chunk);
    const have = () => window.REPORT_RECORDS && window.REPORT_RECORDS[k];
    if (have()) { done(window.REPORT_RECORDS[k][i - k * D.chunk]); return; }
    const s = el("script", { src: "records/" + k + ".js" });
    s.addEventListener("load", () => done(have() ? window.REPORT_RECORDS[k][i - k * D.chunk] : null));
    s.addEventListener("error", () => done(null));
    document.body.appendChild(s);
  }
  function openViewer(i) {
    const dialog = $("viewer");
    dialog.setAttribute("data-index", String(i));
    dialog.removeAttribute("data-ready");
    $("viewer-title").textContent = imagePath(i);
    $("viewer-image").replaceWith(Object.assign(frame(i, true), { id: "viewer-image" }));
    const body = $("viewer-detections").querySelector("tbody");
    const rows = [];
    for (let j = off[i]; j < off[i + 1]; j++) {
      const tr = el("tr");
      const name = el("td"); name.appendChild(el("span", { class: "swatch", style: "background:" + color(cls[j]) }));
      name.appendChild(document.createTextNode(D.classes[cls[j]])); tr.appendChild(name);
      tr.appendChild(el("td", { class: "num" }, score[j]));
      tr.appendChild(el("td", {}, D.box.slice(4 * j, 4 * j + 4).join(", ")));
      tr.appendChild(el("td", {}, detFails(j) ? "fail" : "pass"));
      if (gt) tr.appendChild(el("td", {}, ["false positive", "true positive", "ignored (crowd)"][detOutcome[j]] || "unlabelled"));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $("viewer-record").textContent = "loading…";
    if (!dialog.open) dialog.showModal();
    loadRecord(i, (record) => {
      if (dialog.getAttribute("data-index") !== String(i)) return;
      $("viewer-record").textContent = record ? JSON.stringify(record, null, 2) : "record file not found";
      dialog.setAttribute("data-ready", "1");
    });
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type: type }));
    const a = el("a", { href: url, download: name });
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function renderLabels() {
    if (!gt) return;
    $("labels").hidden = false;
    for (const node of document.querySelectorAll(".gt, .gt-only, .gt-col")) node.hidden = false;
    const il = gt.imageLevel;
    $("labels-info").textContent = il.images + " inspected images are labelled: " + il.defective_images +
      " defective, " + il.defect_free_images + " defect-free. Per-class P/R/F1 (table above) count boxes matched at IoU " + gt.iou + ".";
    for (const name of D.plots) $("plots").appendChild(el("img", { src: name, alt: name }));
  }
  function renderErrors() {
    if (!D.errors.length) return;
    $("errors").hidden = false;
    const body = $("errors").querySelector("tbody");
    for (const [image, error] of D.errors) { const tr = el("tr"); tr.appendChild(el("td", {}, image)); tr.appendChild(el("td", {}, error)); body.appendChild(tr); }
    if (D.counts.errors > D.errors.length) { $("errors-more").hidden = false; $("errors-more").textContent = "… and " + (D.counts.errors - D.errors.length) + " more in errors.jsonl"; }
  }

  let renders = 0;
  function refresh(res) {
    filterList(); renderGallery();
    document.body.setAttribute("data-render", String(++renders));
    return res;
  }
  function update() {
    const res = recompute();
    renderCounts(res); renderDelta(res); refresh(res);
  }

  function main() {
    renderHeader();
    D.classes.forEach((c, k) => $("filter-class").appendChild(el("option", { value: k }, c)));
    renderThresholdTable();
    renderLabels();
    renderErrors();
    const res = recompute();
    state.baseline = res;
    renderCounts(res); renderDelta(res); refresh(res);
    for (const id of ["filter-decision", "filter-class", "filter-min", "filter-max", "filter-outcome"]) {
      $(id).addEventListener("input", () => { state.page = 0; refresh(); });
    }
    $("page-prev").addEventListener("click", () => { state.page--; refresh(); });
    $("page-next").addEventListener("click", () => { state.page++; refresh(); });
    $("viewer-close").addEventListener("click", () => $("viewer").close());
    $("download-thresholds").addEventListener("click", () => {
      const out = {}; D.classes.forEach((c, k) => { out[c] = th[k]; });
      download("thresholds.json", JSON.stringify(out, null, 2) + "\n", "application/json");
    });
    $("download-list").addEventListener("click", () => {
      download("selected-images.txt", state.list.map(imagePath).join("\n") + (state.list.length ? "\n" : ""), "text/plain");
    });
    // When the page became usable, for scripts/bench_report.py.
    document.body.setAttribute("data-ready-ms", performance.now().toFixed(1));
    document.body.setAttribute("data-ready", "1");
  }
  main();
})();
