// The Database tab of `poolbench ui` inside Locust's web UI (see poolbench/ui/webtab.py).
// Locust's React UI shows the tab and an empty panel; this script draws into the panel while
// the tab is open: connections per engine and state (a stacked chart and a table), the
// server's free slots, PostgreSQL's PSS and the app's USS, and the model's ceiling. It asks
// /poolbench/db.json once a second for the points after the last one it has.
(() => {
  "use strict";
  const REFRESH_MS = 1000;
  const WINDOW_S = 300; // the charts show the last five minutes
  const KEEP = 1200;
  const STATES = ["active", "idle", "idle in transaction"];
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  const SVG = "http://www.w3.org/2000/svg";

  const feed = { header: null, points: [], markers: [], seq: -1, cost: null };
  let panel = null;
  let timer = null;
  let busy = false; // one request at a time: a slow answer must not double the points

  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const svgEl = (tag, attrs = {}) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const mib = (bytes) => (bytes == null ? "–" : `${(bytes / 1048576).toFixed(0)} MiB`);
  const num = (v, digits = 0) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
  const tabOpen = () => new URLSearchParams(window.location.search).get("tab") === "database";

  // ------------------------------------------------------------------ data

  async function refresh() {
    const started = performance.now();
    const response = await fetch(`/poolbench/db.json?since=${feed.seq}`, { cache: "no-store" });
    const text = await response.text();
    const timing = /dur=([0-9.]+)/.exec(response.headers.get("Server-Timing") || "");
    const data = JSON.parse(text);
    if (data.header) feed.header = data.header;
    for (const item of [...data.points, ...data.markers]) feed.seq = Math.max(feed.seq, item.seq);
    feed.points.push(...data.points);
    feed.markers.push(...data.markers);
    if (feed.points.length > KEEP) feed.points.splice(0, feed.points.length - KEEP);
    feed.cost = {
      serverMs: timing ? Number(timing[1]) : null,
      bytes: new TextEncoder().encode(text).length,
      roundTripMs: performance.now() - started,
    };
  }

  function engineNames() {
    const names = new Set((feed.header?.engines || []).map((e) => e.name));
    for (const p of feed.points.slice(-KEEP)) for (const name of Object.keys(p.engines)) names.add(name);
    return [...names].sort();
  }

  const engineTotal = (p, name) =>
    Object.values(p.engines[name] || {}).reduce((a, b) => a + b, 0);
  const engineActive = (p, name) => (p.engines[name] || {}).active || 0;

  // ------------------------------------------------------------------ chart

  function niceStep(max) {
    const raw = max / 4;
    const mag = 10 ** Math.floor(Math.log10(raw || 1));
    return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || mag * 10;
  }

  // A time chart: stacked areas, lines, horizontal reference lines and vertical markers.
  function chart({ title, points, stacks = [], lines = [], hlines = [], unit = "", note = "" }) {
    const W = 980, H = 250, L = 56, R = 230, T = 24, B = 24;
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "pb-chart" });
    const label = svgEl("text", { x: L, y: 14, "font-weight": "bold" });
    label.textContent = title;
    svg.append(label);
    if (!points.length) return svg;
    const t1 = points[points.length - 1].ts;
    const t0 = Math.max(points[0].ts, t1 - WINDOW_S);
    const shown = points.filter((p) => p.ts >= t0);
    const tops = shown.map((p) => stacks.reduce((a, s) => a + (s.value(p) || 0), 0));
    const values = [...tops, ...lines.flatMap((l) => shown.map(l.value)), ...hlines.map((h) => h.value)];
    const ymax = Math.max(1, ...values.filter((v) => v != null && !Number.isNaN(v))) * 1.08;
    const x = (ts) => L + ((ts - t0) / Math.max(1, t1 - t0)) * (W - L - R);
    const y = (v) => H - B - (v / ymax) * (H - T - B);
    const step = niceStep(ymax);
    for (let v = 0; v <= ymax; v += step) {
      svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "currentColor", "stroke-opacity": 0.15 }));
      const tick = svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11 });
      tick.textContent = `${v}${unit}`;
      svg.append(tick);
    }
    const span = svgEl("text", { x: W - R, y: H - 6, "text-anchor": "end", "font-size": 11 });
    span.textContent = `last ${Math.round(t1 - t0)} s`;
    svg.append(span);
    let below = shown.map(() => 0);
    let row = 0;
    for (const s of stacks) {
      const above = shown.map((p, k) => below[k] + (s.value(p) || 0));
      const upper = shown.map((p, k) => `${x(p.ts)},${y(above[k])}`);
      const lower = shown.map((p, k) => `${x(p.ts)},${y(below[k])}`).reverse();
      svg.append(svgEl("polygon", { points: [...upper, ...lower].join(" "), fill: s.color, "fill-opacity": s.opacity ?? 0.75 }));
      if (s.legend !== false) legend(svg, W - R + 8, T + 14 * row++, s.color, s.name);
      below = above;
    }
    for (const l of lines) {
      const pts = shown.filter((p) => l.value(p) != null).map((p) => `${x(p.ts)},${y(l.value(p))}`);
      svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: l.color, "stroke-width": 2 }));
      legend(svg, W - R + 8, T + 14 * row++, l.color, l.name);
    }
    if (note) {
      const text = svgEl("text", { x: W - R + 8, y: T + 14 * row + 12, "font-size": 11, "fill-opacity": 0.7 });
      text.textContent = note;
      svg.append(text);
    }
    for (const h of hlines) {
      svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(h.value), y2: y(h.value), stroke: h.color, "stroke-width": 2, "stroke-dasharray": h.dash || "6 4" }));
      const text = svgEl("text", { x: L + 4, y: y(h.value) - 4, fill: h.color, "font-size": 11 });
      text.textContent = `${h.name}: ${h.value}${unit}`;
      svg.append(text);
    }
    for (const m of feed.markers.filter((m) => m.ts >= t0 && m.what === "started")) {
      svg.append(svgEl("line", { x1: x(m.ts), x2: x(m.ts), y1: T, y2: H - B, stroke: "currentColor", "stroke-opacity": 0.4, "stroke-dasharray": "2 3" }));
      const text = svgEl("text", { x: x(m.ts) + 3, y: H - B - 4, "font-size": 10, "fill-opacity": 0.7 });
      text.textContent = m.phase === "load" ? "test started" : "test stopped";
      svg.append(text);
    }
    return svg;
  }

  function legend(svg, x0, y0, color, name) {
    svg.append(svgEl("rect", { x: x0, y: y0, width: 10, height: 10, fill: color }));
    const text = svgEl("text", { x: x0 + 14, y: y0 + 9, "font-size": 11 });
    text.textContent = name.length > 34 ? `…${name.slice(-33)}` : name;
    svg.append(text);
  }

  // ------------------------------------------------------------------ panel

  function tiles(last) {
    const h = feed.header || {};
    const box = el("div", { class: "pb-tiles" });
    const tile = (name, value, note = "") => {
      const t = el("div", { class: "pb-tile", "data-tile": name });
      t.append(el("div", { class: "pb-tile-name" }, name), el("div", { class: "pb-tile-value" }, value));
      if (note) t.append(el("div", { class: "pb-tile-note" }, note));
      box.append(t);
    };
    tile("connections", num(last?.total), `peak ${num(last?.peak)}`);
    tile("model ceiling", num(h.ceiling), h.ceiling_formula || "engines unknown");
    tile("free slots", num(last?.slots_left), `of max_connections ${num(last?.max_connections)}`);
    tile("PostgreSQL PSS", mib(last?.pg_pss), "all server processes");
    tile("app USS", mib(last?.app_uss), "all app processes");
    tile("users", num(last?.users), `${num(last?.rps, 1)} req/s`);
    return box;
  }

  function table(last, names) {
    const tbl = el("table", { id: "poolbench-db-table", class: "pb-table" });
    const head = el("tr");
    for (const c of ["engine (application_name)", ...STATES, "other", "total", "ceiling"]) head.append(el("th", {}, c));
    tbl.append(head);
    const perEngine = Object.fromEntries((feed.header?.engines || []).map((e) => [e.name, e]));
    const workers = feed.header?.workers || 1;
    const sums = { total: 0 };
    for (const name of names) {
      const counts = last?.engines[name] || {};
      const row = el("tr", { "data-engine": name });
      row.append(el("td", {}, name));
      let other = 0;
      for (const [state, n] of Object.entries(counts)) if (!STATES.includes(state)) other += n;
      for (const state of STATES) {
        row.append(el("td", { class: state.replaceAll(" ", "-") }, String(counts[state] || 0)));
        sums[state] = (sums[state] || 0) + (counts[state] || 0);
      }
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      const e = perEngine[name];
      row.append(el("td", { class: "other" }, String(other)), el("td", { class: "total" }, String(total)),
        el("td", { class: "ceiling" }, e ? String(workers * (e.pool_size + e.max_overflow)) : "–"));
      sums.other = (sums.other || 0) + other;
      sums.total += total;
      tbl.append(row);
    }
    const foot = el("tr", { class: "pb-sum" });
    foot.append(el("td", {}, "all engines"));
    for (const k of [...STATES, "other", "total"]) foot.append(el("td", {}, String(sums[k] || 0)));
    foot.append(el("td", {}, num(feed.header?.ceiling)));
    tbl.append(foot);
    return tbl;
  }

  // What the pool probe sees inside the app: per engine, over all workers.
  function pools(last) {
    const rows = last?.pools || [];
    if (!rows.length) return [];
    const tbl = el("table", { id: "poolbench-pools-table", class: "pb-table" });
    const head = el("tr");
    for (const c of ["inside the pools: engine (site)", "application_name", "checked out", "ceiling", "waiting"]) head.append(el("th", {}, c));
    tbl.append(head);
    for (const p of rows) {
      const row = el("tr", { "data-site": p.site });
      const full = p.ceiling != null && p.out >= p.ceiling;
      row.append(el("td", {}, p.site), el("td", {}, p.name || "–"),
        el("td", { class: full ? "pb-full" : "" }, String(p.out)),
        el("td", {}, p.ceiling == null ? `${p.pool_class}: none` : String(p.ceiling)),
        el("td", { class: "waiting" }, String(p.waiting)));
      tbl.append(row);
    }
    return [tbl];
  }

  function render() {
    if (!panel) return;
    const h = feed.header;
    const last = feed.points[feed.points.length - 1];
    const names = engineNames();
    const colors = Object.fromEntries(names.map((n, i) => [n, PALETTE[i % PALETTE.length]]));
    const body = el("div");
    body.append(el("h3", {}, h ? `Database: ${h.variant} (${h.experiment}), ${h.workers} worker(s), ${names.length} engine(s)` : "Database: waiting for the first sample…"));
    body.append(tiles(last));
    const hlines = [];
    if (h?.ceiling != null) hlines.push({ name: "model ceiling", value: h.ceiling, color: "#d62728" });
    if (last?.max_connections != null) hlines.push({ name: "max_connections", value: last.max_connections, color: "#7f7f7f", dash: "2 3" });
    body.append(chart({
      title: "connections per engine",
      points: feed.points,
      stacks: names.flatMap((n) => [
        { name: n, color: colors[n], opacity: 0.95, value: (p) => engineActive(p, n) },
        { name: n, color: colors[n], opacity: 0.4, legend: false, value: (p) => engineTotal(p, n) - engineActive(p, n) },
      ]),
      hlines,
      note: "dark: active, light: idle and other states",
    }));
    body.append(table(last, names));
    body.append(...pools(last));
    body.append(chart({
      title: "memory (MiB)",
      points: feed.points,
      lines: [
        { name: "PostgreSQL PSS", color: "#4e79a7", value: (p) => (p.pg_pss == null ? null : p.pg_pss / 1048576) },
        { name: "app USS", color: "#f28e2b", value: (p) => (p.app_uss == null ? null : p.app_uss / 1048576) },
      ],
    }));
    const c = feed.cost;
    body.append(el("div", { class: "pb-cost", id: "poolbench-db-cost" }, c
      ? `refreshed every ${REFRESH_MS / 1000} s; last refresh: ${num(c.serverMs, 2)} ms in Locust's process, ${c.bytes} B, ${num(c.roundTripMs, 1)} ms round trip`
      : ""));
    if (last) {
      body.append(el("div", { class: "pb-cost" }, `collector (in poolbench's process): ${num(last.sample_ms, 1)} ms per connection sample, ${num(last.sweep_ms, 1)} ms per process sweep`));
    }
    panel.replaceChildren(body);
  }

  const STYLE = `
    #poolbench-db { padding: 0 8px 16px; }
    #poolbench-db h3 { margin: 4px 0 12px; font-weight: 500; }
    .pb-tiles { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 12px; }
    .pb-tile { border: 1px solid rgba(127,127,127,.35); border-radius: 6px; padding: 8px 12px; min-width: 130px; }
    .pb-tile-name, .pb-tile-note { font-size: 12px; opacity: .7; }
    .pb-tile-value { font-size: 24px; }
    .pb-chart { max-width: 1100px; display: block; margin: 8px 0; font-family: inherit; fill: currentColor; }
    .pb-table { border-collapse: collapse; margin: 8px 0 16px; }
    .pb-table td.pb-full { color: #d62728; font-weight: 600; }
    .pb-table th, .pb-table td { border-bottom: 1px solid rgba(127,127,127,.3); padding: 4px 10px; text-align: right; }
    .pb-table th:first-child, .pb-table td:first-child { text-align: left; }
    .pb-sum td { font-weight: bold; }
    .pb-cost { font-size: 12px; opacity: .7; }`;

  // ------------------------------------------------------------------ mounting

  function mount() {
    const tabs = document.querySelector(".MuiTabs-root");
    if (!tabs || !tabs.parentElement) return false;
    panel = el("div", { id: "poolbench-db" });
    tabs.parentElement.after(panel);
    return true;
  }

  async function tick() {
    if (busy) return;
    busy = true;
    try {
      await refresh();
    } catch (error) {
      feed.cost = null;
    } finally {
      busy = false;
    }
    render();
  }

  function watchTab() {
    const open = tabOpen();
    if (open && (!panel || !panel.isConnected)) {
      clearInterval(timer);
      if (mount()) {
        render();
        tick();
        timer = setInterval(tick, REFRESH_MS);
      }
    } else if (!open && panel) {
      clearInterval(timer);
      panel.remove();
      panel = null;
    }
  }

  document.head.append(el("style", {}, STYLE));
  setInterval(watchTab, 200);
})();
