// Dashboard charts: the last minutes of bitrate, packets/s, participants and packet loss, per
// room or per node, and each participant's connection quality. Fed by the dashboard's /stats
// refreshes (every 2 s): the history lives in this tab (sessionStorage, so a reload keeps it),
// the server keeps none. Drawn with uPlot, vendored in /static/vendor/uplot (window.uPlot).
import { $, h } from './ui.js';

const HISTORY_MS = 5 * 60 * 1000;
const STORE_KEY = 'roomcast.dashboard-history';
const SCOPE_KEY = 'roomcast.dashboard-chart-scope';
const COLORS = ['#4f9dff', '#3ecf8e', '#f5a524', '#e0568a', '#a78bfa', '#2dd4bf', '#f87171', '#facc15'];
const QUALITY_LEVELS = { lost: 0, poor: 1, good: 2, excellent: 3 };

const fmtBps = (v) => (v == null ? '–' : v >= 1e6 ? `${(v / 1e6).toFixed(2)} Mbps` : `${Math.round(v / 1000)} kbps`);
const axisBps = (v) => (v >= 1e6 ? `${+(v / 1e6).toFixed(1)} Mbps` : `${Math.round(v / 1000)} kbps`);
const fmtRate = (v) => (v == null ? '–' : `${Math.round(v)} /s`);
const fmtCount = (v) => (v == null ? '–' : String(Math.round(v)));
const fmtLoss = (v) => (v == null ? '–' : `${(v * 100).toFixed(1)} %`);

// What each chart shows, for a room (its entry in /stats) and for a node (figures summed from
// its rooms, packets from the node's own counters: received from publishers and forwarded).
const METRICS = [
  { id: 'bitrate', title: 'Bitrate (published)', fmt: fmtBps, axis: axisBps, room: (r) => r.bitrate_bps ?? 0 },
  { id: 'packets', title: 'Packets/s', fmt: fmtRate, room: (r) => r.packets_per_s ?? 0 },
  { id: 'participants', title: 'Participants', fmt: fmtCount, room: (r) => participantsOf(r) },
  { id: 'loss', title: 'Packet loss (worst track)', fmt: fmtLoss, room: (r) => r.loss ?? 0 },
];

const participantsOf = (room) => (room.participants_listed === false
  ? room.num_participants ?? 0
  : room.participants.length);

const charts = {
  samples: load(),
  scope: sessionStorage.getItem(SCOPE_KEY) || 'rooms',
  plots: new Map(), // metric id -> {plot, keys}
  sparks: new Map(), // participant sid -> {plot, el}
  resize: null,
};
window.dashboardCharts = charts; // for tests and the curious

function load() {
  try {
    const samples = JSON.parse(sessionStorage.getItem(STORE_KEY) || '[]');
    return Array.isArray(samples) ? samples : [];
  } catch {
    return [];
  }
}

function save() {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(charts.samples));
  } catch {
    // storage full: the charts still work for this page's lifetime
  }
}

// One sample per refresh: every figure by room name and by node id, qualities by participant.
function sampleOf(data, now) {
  const rooms = {};
  const nodes = {};
  const quality = {};
  for (const node of data.nodes || []) {
    nodes[node.id] = {
      bitrate: 0, participants: 0, loss: 0,
      packets_in: node.packets_in_per_s ?? 0, packets_out: node.packets_out_per_s ?? 0,
    };
  }
  for (const room of data.rooms || []) {
    const figures = {};
    for (const metric of METRICS) figures[metric.id] = metric.room(room);
    rooms[room.name] = figures;
    const node = nodes[room.node] || (nodes[room.node || 'this node'] = {
      bitrate: 0, participants: 0, loss: 0, packets_in: 0, packets_out: 0,
    });
    node.bitrate += figures.bitrate;
    node.participants += figures.participants;
    node.loss = Math.max(node.loss, figures.loss);
    for (const p of room.participants || []) {
      if (p.connection_quality) quality[p.sid] = QUALITY_LEVELS[p.connection_quality] ?? null;
    }
  }
  return { t: now / 1000, rooms, nodes, quality };
}

// uPlot's data for a metric: x values, then one aligned series per room (or node), null where
// that room did not exist yet or any more.
function seriesOf(metric) {
  const samples = charts.samples;
  const keys = [];
  const seen = new Set();
  const add = (key) => {
    if (!seen.has(key)) {
      seen.add(key);
      keys.push(key);
    }
  };
  for (const s of samples) {
    if (charts.scope === 'rooms') Object.keys(s.rooms).forEach((name) => add(name));
    else {
      for (const id of Object.keys(s.nodes)) {
        if (metric.id === 'packets') {
          add(`${id} in`);
          add(`${id} out`);
        } else add(id);
      }
    }
  }
  const valueOf = (s, key) => {
    if (charts.scope === 'rooms') return s.rooms[key]?.[metric.id] ?? null;
    if (metric.id === 'packets') {
      const [id, way] = key.split(/ (?=in$|out$)/);
      return s.nodes[id]?.[`packets_${way}`] ?? null;
    }
    return s.nodes[key]?.[metric.id] ?? null;
  };
  const data = [samples.map((s) => s.t), ...keys.map((key) => samples.map((s) => valueOf(s, key)))];
  return { keys, data };
}

const timeOf = (t) => (t == null ? '–' : new Date(t * 1000).toLocaleTimeString());

function lastOf(values) {
  for (let i = (values || []).length - 1; i >= 0; i--) if (values[i] != null) return values[i];
  return null;
}

function chartWidth(el) {
  return Math.max(240, Math.floor(el.clientWidth || 480));
}

function makePlot(metric, el, keys, data) {
  const opts = {
    width: chartWidth(el),
    height: 170,
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, metric.id === 'loss' ? 0.05 : 1)] } },
    axes: [
      { stroke: '#9aa3b5', grid: { stroke: '#262b38' }, ticks: { stroke: '#262b38' } },
      {
        stroke: '#9aa3b5', grid: { stroke: '#262b38' }, ticks: { stroke: '#262b38' }, size: 78,
        values: (u, splits) => splits.map((v) => (metric.axis || metric.fmt)(v)),
      },
    ],
    series: [
      { value: (u, v, si, idx) => timeOf(idx == null ? lastOf(u.data[0]) : v) },
      ...keys.map((key, i) => ({
        label: key,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        spanGaps: false,
        points: { show: false },
        // Without the cursor on the chart, the legend shows each series' latest value.
        value: (u, v, si, idx) => metric.fmt(idx == null ? lastOf(u.data[si]) : v),
      })),
    ],
  };
  return new window.uPlot(opts, data, el);
}

function drawCharts() {
  const empty = charts.samples.length < 2;
  $('#charts-empty').hidden = !empty;
  $('#charts-grid').hidden = empty;
  if (empty) return;
  for (const metric of METRICS) {
    const el = $(`#chart-${metric.id} .plot`);
    const { keys, data } = seriesOf(metric);
    const current = charts.plots.get(metric.id);
    let plot;
    if (current && current.keys.join('\n') === keys.join('\n')) {
      plot = current.plot;
      plot.setData(data);
    } else {
      if (current) current.plot.destroy();
      plot = makePlot(metric, el, keys, data);
      charts.plots.set(metric.id, { plot, keys });
    }
    $(`#chart-${metric.id} .now`).textContent = latestText(metric, keys, data);
  }
}

// The figure next to a chart's title: the latest total (loss: the worst), packets per node as
// received and forwarded.
function latestText(metric, keys, data) {
  const latest = (i) => data[i + 1][data[i + 1].length - 1];
  const sum = (filter) => keys.reduce((total, key, i) => total + (filter(key) ? latest(i) ?? 0 : 0), 0);
  if (metric.id === 'packets' && charts.scope === 'nodes') {
    return `${fmtRate(sum((k) => k.endsWith(' in')))} in · ${fmtRate(sum((k) => k.endsWith(' out')))} out`;
  }
  if (metric.id === 'loss') return metric.fmt(Math.max(0, ...keys.map((_, i) => latest(i) ?? 0)));
  return metric.fmt(sum(() => true));
}

// Each participant's connection quality: a chip (unknown until the server reports it, which
// this server does not yet do) and, once reported, a small step chart of the last minutes.
function drawQuality(data) {
  const live = new Set();
  for (const room of data.rooms || []) {
    for (const p of room.participants || []) {
      const block = document.querySelector(`.room[data-room="${CSS.escape(room.name)}"] .participant[data-identity="${CSS.escape(p.identity)}"]`);
      if (!block) continue;
      live.add(p.sid);
      let chip = block.querySelector('.p-quality');
      if (!chip) {
        chip = h('span', { class: 'chip p-quality' });
        block.querySelector('.p-head .p-state')?.after(chip);
      }
      const quality = p.connection_quality;
      chip.textContent = quality ? `quality: ${quality}` : 'quality –';
      chip.title = quality ? 'Connection quality reported by the server' : 'The server does not report connection quality yet';
      chip.className = `chip p-quality q-${quality || 'unknown'}`;
      chip.dataset.quality = quality || '';
      if (quality) drawSpark(block, p.sid);
    }
  }
  for (const [sid, spark] of charts.sparks) {
    if (!live.has(sid) || !spark.el.isConnected) {
      spark.plot.destroy();
      charts.sparks.delete(sid);
    }
  }
}

function drawSpark(block, sid) {
  const samples = charts.samples;
  const data = [samples.map((s) => s.t), samples.map((s) => s.quality?.[sid] ?? null)];
  let spark = charts.sparks.get(sid);
  if (spark && spark.el.isConnected) {
    spark.plot.setData(data);
    return;
  }
  const el = h('span', { class: 'p-quality-chart', title: 'Connection quality, last minutes (lost · poor · good · excellent)' });
  block.querySelector('.p-quality').after(el);
  const plot = new window.uPlot({
    width: 120,
    height: 26,
    legend: { show: false },
    cursor: { show: false },
    axes: [{ show: false }, { show: false }],
    scales: { x: { time: true }, y: { range: [0, 3] } },
    series: [{}, { stroke: '#3ecf8e', width: 2, paths: window.uPlot.paths.stepped({ align: 1 }), points: { show: false } }],
  }, data, el);
  charts.sparks.set(sid, { plot, el });
}

export function updateCharts(data) {
  if (!window.uPlot) return;
  const now = Date.now();
  charts.samples.push(sampleOf(data, now));
  const oldest = now / 1000 - HISTORY_MS / 1000;
  while (charts.samples.length && charts.samples[0].t < oldest) charts.samples.shift();
  save();
  drawCharts();
  drawQuality(data);
}

export function clearCharts() {
  charts.samples = [];
  sessionStorage.removeItem(STORE_KEY);
  for (const { plot } of charts.plots.values()) plot.destroy();
  for (const { plot } of charts.sparks.values()) plot.destroy();
  charts.plots.clear();
  charts.sparks.clear();
}

function setScope(scope) {
  charts.scope = scope;
  sessionStorage.setItem(SCOPE_KEY, scope);
  for (const button of document.querySelectorAll('#chart-scope button')) {
    button.setAttribute('aria-pressed', String(button.dataset.scope === scope));
  }
  for (const { plot } of charts.plots.values()) plot.destroy();
  charts.plots.clear();
  drawCharts();
}

export function initCharts() {
  const grid = $('#charts-grid');
  for (const metric of METRICS) {
    grid.append(h('figure', { class: 'chart', id: `chart-${metric.id}` },
      h('figcaption', {}, h('span', { class: 'title' }, metric.title), h('span', { class: 'now mono' }, '–')),
      h('div', { class: 'plot' })));
  }
  $('#chart-scope').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-scope]');
    if (button) setScope(button.dataset.scope);
  });
  setScope(charts.scope);
  charts.resize = new ResizeObserver(() => {
    for (const metric of METRICS) {
      const entry = charts.plots.get(metric.id);
      const el = $(`#chart-${metric.id} .plot`);
      if (entry && el.clientWidth) entry.plot.setSize({ width: chartWidth(el), height: 170 });
    }
  });
  charts.resize.observe(grid);
}
