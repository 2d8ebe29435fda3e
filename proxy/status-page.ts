/*
 * The status page every proxy serves at `/ui` on its admin port (common/admin-server.ts):
 * one HTML page with a small inline script, no framework, that every second reads
 *
 *   /ui/status.json  the cluster as `dfs status` shows it (ClusterStatus, proxy/main.ts)
 *   /metrics         this proxy's counters, for the live op rate and latency
 *
 * and redraws: the leader, epoch and sequence ID; each node with its role, state, applied
 * sequence ID, lag, reads and full-sync progress; ops per second and mean latency over the
 * last second, from dfs_proxy_requests_total and dfs_proxy_request_duration_seconds (the
 * same counters Prometheus scrapes, so the page and a dashboard agree). The rate is this
 * proxy's own traffic: each proxy counts what it answered.
 *
 * The JSON holds no file names or contents, only what `dfs status` prints; node URLs are
 * left out. When a fetch fails the page says so and keeps the last figures, greyed.
 */
import type { AdminPage } from '../common/admin-server';
import type { ClusterStatus } from '../common/api';

/** The pages, by path, for serveAdmin. */
export function statusPages(clusterStatus: () => Promise<ClusterStatus>): Record<string, AdminPage> {
  return {
    '/ui': { contentType: 'text/html; charset=utf-8', body: async () => STATUS_HTML },
    '/ui/status.json': {
      contentType: 'application/json',
      body: async () => {
        const status = await clusterStatus();
        return JSON.stringify({ ...status, membership: status.membership ? { epoch: status.membership.epoch, primary: status.membership.primary, inSync: status.membership.inSync } : null, nodes: status.nodes.map(({ url: _url, ...node }) => node) });
      },
    },
  };
}

const STATUS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dfs status</title>
<style>
  :root { color-scheme: light; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #59636e; }
  body { font: 15px/1.45 system-ui, sans-serif; margin: 24px 32px; color: #1f2328; background: #f6f8fa; }
  h1 { font-size: 22px; margin: 0 0 16px; }
  .cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 20px; }
  .card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 16px; min-width: 130px; }
  .card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  .card .value { font-size: 22px; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; border-radius: 8px; min-width: 760px; }
  th, td { padding: 8px 14px; text-align: left; border-bottom: 1px solid #eaeef2; }
  th { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state { font-weight: 600; }
  .state-in-sync { color: var(--ok); } .state-syncing, .state-joining { color: var(--warn); }
  .state-down, .state-full { color: var(--bad); }
  #error { color: var(--bad); margin: 12px 0; min-height: 1.4em; }
  .stale { opacity: .5; }
  footer { color: var(--muted); font-size: 12px; margin-top: 12px; }
</style>
</head>
<body>
<h1>dfs cluster</h1>
<div id="main">
  <div class="cards">
    <div class="card"><div class="label">Leader proxy</div><div class="value" id="leader">…</div></div>
    <div class="card"><div class="label">Epoch</div><div class="value" id="epoch">…</div></div>
    <div class="card"><div class="label">Sequence ID</div><div class="value" id="seq">…</div></div>
    <div class="card"><div class="label">Primary</div><div class="value" id="primary">…</div></div>
    <div class="card"><div class="label">Ops/s (this proxy)</div><div class="value" id="rate">…</div></div>
    <div class="card"><div class="label">Mean latency</div><div class="value" id="latency">…</div></div>
  </div>
  <table>
    <thead><tr><th>Node</th><th>Role</th><th>State</th><th>Applied seq</th><th>Lag (ops)</th><th>Reads</th><th>Sync</th></tr></thead>
    <tbody id="nodes"></tbody>
  </table>
</div>
<div id="error"></div>
<footer>Refreshed every second · applied sequence IDs and lag are as of each node's last heartbeat (one a second) · <span id="updated">never</span></footer>
<script>
"use strict";
let last = null;
const el = (id) => document.getElementById(id);
function text(node, value) { node.textContent = value; }
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i === 0 ? 0 : 1) + " " + units[i];
}
/** Sums every sample of a metric family (all label sets) in the text format. */
function total(metricsText, name) {
  let sum = 0;
  for (const line of metricsText.split("\\n")) {
    if (line.startsWith(name + "{") || line.startsWith(name + " ")) {
      const value = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (Number.isFinite(value)) sum += value;
    }
  }
  return sum;
}
function opsOnly(metricsText, name) {
  // Only the client API's ops and reads, not the page's own scrapes and probes.
  let sum = 0;
  for (const line of metricsText.split("\\n")) {
    if (!line.startsWith(name + "{")) continue;
    if (/api="(metrics|healthz|readyz|cluster|unmatched)"/.test(line)) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) sum += value;
  }
  return sum;
}
function render(status) {
  text(el("leader"), status.leader ?? "none");
  text(el("epoch"), String(status.epoch));
  text(el("seq"), String(status.seq));
  text(el("primary"), status.membership ? status.membership.primary : "none");
  const rows = [];
  for (const n of status.nodes) {
    const tr = document.createElement("tr");
    tr.dataset.node = n.id;
    const cells = [
      n.id,
      n.role,
      n.state + (n.confirming ? " (confirming)" : ""),
      n.appliedSeq === null ? "–" : String(n.appliedSeq),
      n.lag === null ? "–" : String(n.lag),
      String(n.reads ?? 0),
    ];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (i >= 3) td.className = "num";
      if (i === 2) { td.className = "state state-" + n.state; td.dataset.state = n.state; }
      tr.appendChild(td);
    });
    const sync = document.createElement("td");
    if (n.sync) {
      // The totals are the source's count of its held brick (absent from an older node).
      const s = n.sync;
      const fraction = s.totalBytes > 0 ? s.bytes / s.totalBytes : s.totalEntries > 0 ? s.entries / s.totalEntries : null;
      const share = fraction === null ? "" : Math.floor(100 * fraction) + "% ";
      const of = (done, total, show) => show(done) + (total === null || total === undefined ? "" : " of " + show(total));
      sync.textContent = "copying from " + s.source + ": " + share + of(s.bytes, s.totalBytes, bytes) + ", " + of(s.entries, s.totalEntries, String) + " entries" + (s.bytesPerSecond ? ", " + bytes(Math.round(s.bytesPerSecond)) + "/s" : "");
    } else {
      sync.textContent = "–";
    }
    tr.appendChild(sync);
    rows.push(tr);
  }
  el("nodes").replaceChildren(...rows);
}
async function refresh() {
  try {
    const [statusRes, metricsRes] = await Promise.all([fetch("/ui/status.json", { cache: "no-store" }), fetch("/metrics", { cache: "no-store" })]);
    if (!statusRes.ok) throw new Error("status: HTTP " + statusRes.status);
    if (!metricsRes.ok) throw new Error("metrics: HTTP " + metricsRes.status);
    const status = await statusRes.json();
    const metricsText = await metricsRes.text();
    render(status);
    const now = { atMs: Date.now(), count: opsOnly(metricsText, "dfs_proxy_requests_total"),
      seconds: opsOnly(metricsText, "dfs_proxy_request_duration_seconds_sum"), answered: opsOnly(metricsText, "dfs_proxy_request_duration_seconds_count") };
    if (last) {
      const dt = (now.atMs - last.atMs) / 1000;
      const ops = now.count - last.count;
      text(el("rate"), dt > 0 ? (ops / dt).toFixed(1) : "…");
      const answered = now.answered - last.answered;
      text(el("latency"), answered > 0 ? ((1000 * (now.seconds - last.seconds)) / answered).toFixed(2) + " ms" : "–");
    }
    last = now;
    text(el("error"), "");
    el("main").classList.remove("stale");
    text(el("updated"), "updated " + new Date().toLocaleTimeString());
  } catch (err) {
    text(el("error"), "Cannot reach this proxy: " + err.message + " (showing the last figures)");
    el("main").classList.add("stale");
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
`;
