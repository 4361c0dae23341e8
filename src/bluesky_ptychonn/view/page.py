"""The browser view's page: HTML, CSS and a small script, no external resources.

The script opens ``events`` (Server-Sent Events, the token passed on from the page's own
address), fills the numbers, and swaps a panel's image only when its version changed. The
uncertainty panel is shown only while the results carry an uncertainty. The page says that the
view is decimated (at most ``max_rate_hz`` updates a second, the newest wins) and how many
result batches arrived since the last update.
"""

from __future__ import annotations

import html

__all__ = ["page_html"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 12px; background: #111; color: #ddd; }
 h1 { font-size: 18px; margin: 0 0 6px 0; }
 .note { color: #9a9; font-size: 12px; margin-bottom: 8px; }
 .grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; }
 .panel { background: #000; border: 1px solid #333; padding: 4px; }
 .panel h2 { font-size: 13px; margin: 2px 0 4px 0; font-weight: 600; color: #ccc; }
 .panel img { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; image-rendering: pixelated;
              background: #000; display: block; }
 .panel .caption { font-size: 12px; color: #999; min-height: 1.2em; }
 .empty img { visibility: hidden; }
 table { border-collapse: collapse; font-size: 12px; width: 100%; }
 td { padding: 1px 6px; border-bottom: 1px solid #222; vertical-align: top; }
 td:first-child { color: #999; white-space: nowrap; }
 .side { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; margin-top: 10px; }
 .box { background: #181818; border: 1px solid #333; padding: 6px; }
 .box h2 { font-size: 13px; margin: 0 0 4px 0; }
 #status.running { color: #6d6; } #status.finished { color: #aaa; } #status.lost { color: #e66; }
</style></head>
<body>
<h1>__TITLE__ <span id="status">connecting</span></h1>
<div class="note" id="decimation">Images and numbers update at most __RATE__ times a second;
 the newest wins (what arrives in between is not shown).</div>
<div class="grid">
 <div class="panel empty" id="panel-frame"><h2>detector frame (log counts)</h2>
  <img alt="detector frame"><div class="caption"></div></div>
 <div class="panel empty" id="panel-phase"><h2>inferred phase of that frame (rad)</h2>
  <img alt="inferred phase"><div class="caption"></div></div>
 <div class="panel empty" id="panel-mosaic"><h2>live mosaic of this scan (phase)</h2>
  <img alt="live mosaic"><div class="caption"></div></div>
 <div class="panel empty" id="panel-composite"><h2>accumulated image, all scans (phase)</h2>
  <img alt="accumulated image"><div class="caption"></div></div>
 <div class="panel empty" id="panel-uncertainty" hidden><h2>phase uncertainty mosaic (rad)</h2>
  <img alt="uncertainty mosaic"><div class="caption"></div></div>
 <div class="box"><h2>pipeline</h2><table id="stats"></table></div>
</div>
<div class="side">
 <div class="box"><h2>run</h2><table id="metadata"></table></div>
 <div class="box"><h2>continual learning</h2><table id="continual"></table></div>
</div>
<script>
const token = new URLSearchParams(location.search).get("token");
const suffix = token ? "token=" + encodeURIComponent(token) : "";
const shown = {};
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function fill(id, rows) {
  const table = document.getElementById(id);
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    for (const text of [k, fmt(v)]) {
      const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
    }
    return tr;
  }));
}
function update(state) {
  document.body.dataset.version = state.version;
  const run = state.run || {};
  const status = document.getElementById("status");
  status.textContent = (run.state || "idle") + (run.uid ? " · run " + run.uid.slice(0, 8) : "");
  status.className = run.state || "";
  const d = state.decimation;
  document.getElementById("decimation").textContent =
    "Decimated view: at most " + d.max_rate_hz + " updates a second, the newest wins; since " +
    "the last update " + d.results_since_last_update + " result batches and " +
    d.frames_since_last_update + " detector frames arrived (not all are drawn).";
  for (const name of ["frame", "phase", "mosaic", "composite", "uncertainty"]) {
    const panel = document.getElementById("panel-" + name);
    const info = (state.panels || {})[name];
    if (name === "uncertainty") panel.hidden = !info;
    if (!info) { panel.classList.add("empty"); continue; }
    panel.classList.remove("empty");
    if (shown[name] !== info.version) {
      shown[name] = info.version;
      panel.querySelector("img").src = "panel/" + name + ".png?v=" + info.version +
        (suffix ? "&" + suffix : "");
    }
  }
  const caption = (name, text) =>
    document.querySelector("#panel-" + name + " .caption").textContent = text;
  caption("frame", state.frame_id >= 0 ? "frame " + state.frame_id : "");
  caption("phase", state.phase_frame_id >= 0 ? "frame " + state.phase_frame_id : "");
  caption("mosaic", state.mosaic_frames + " patches");
  caption("composite", state.accumulated_runs + " finished scans");
  const s = state.stats || {};
  fill("stats", [
    ["rate (frames/s)", s.rate_fps], ["latency p50 / p99 (ms)",
      fmt(s.latency_p50_ms) + " / " + fmt(s.latency_p99_ms)],
    ["queue (frames)", s.queue_depth], ["frames received", s.frames_received],
    ["frames inferred", s.frames_inferred], ["frames stitched", s.frames_stitched],
    ["frames rejected", s.frames_rejected], ["frames dropped", s.frames_dropped],
    ["model version", s.model_version], ["numbers from", s.source]]);
  fill("metadata", Object.entries(state.metadata || {}).concat([["events", run.events],
    ["exit status", run.exit_status]]));
  const c = state.continual || {};
  fill("continual", Object.keys(c).length ? Object.entries(c) : [["state", "not connected"]]);
}
function connect() {
  const source = new EventSource("events" + (suffix ? "?" + suffix : ""));
  source.onmessage = (event) => update(JSON.parse(event.data));
  source.onerror = () => {
    const status = document.getElementById("status");
    status.textContent = "connection lost, retrying"; status.className = "lost";
  };
}
connect();
</script>
</body></html>
"""


def page_html(*, title: str = "", max_rate_hz: float = 5.0) -> str:
    """The page, titled ``title`` (escaped)."""
    name = html.escape(title or "bluesky-ptychonn live view")
    return _PAGE.replace("__TITLE__", name).replace("__RATE__", f"{max_rate_hz:g}")
