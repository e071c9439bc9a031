/* The run dashboard: reads the embedded JSON and draws every panel with Plotly (inlined).
   Panels without data show a note naming the missing file. When every chart is drawn,
   window.dashboard = {ready: true, renderMs} and <body data-ready="1">. */
(function () {
  'use strict';
  const DATA = JSON.parse(document.getElementById('dashboard-data').textContent);
  const TOP = 12; // large models: the top layers by change first, a button shows all
  const D = (window.dashboard = { ready: false, data: DATA, errors: [], timings: {} });
  const pending = [];
  const deferred = []; // charts asked for before their element was attached: drawn right after

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }
  const fmt = (v, d = 3) => (v == null ? '–' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(d)) : String(v));
  const arrow = (a, b, d) => `${fmt(a, d)} → ${fmt(b, d)}`;

  function plot(div, traces, layout, onClick) {
    if (!div.isConnected) { deferred.push(() => plot(div, traces, layout, onClick)); return null; }
    const base = {
      margin: { l: 60, r: 20, t: 30, b: 45 }, hovermode: 'closest', font: { size: 11 },
      legend: { orientation: 'v' }, paper_bgcolor: '#fff', plot_bgcolor: '#fff',
    };
    const p = Plotly.react(div, traces, Object.assign(base, layout || {}),
      { displaylogo: false, responsive: true });
    pending.push(p);
    if (onClick && !div.dataset.clickBound) {
      div.dataset.clickBound = '1';
      p.then(() => div.on('plotly_click', (ev) => { if (ev && ev.points && ev.points.length) onClick(ev.points[0]); }));
    }
    return p;
  }

  function panel(id, title) {
    const body = el('div', { class: 'body' });
    const sec = el('section', { class: 'panel', id: 'panel-' + id }, el('h2', { text: title }), body);
    document.getElementById('panels').append(sec);
    const data = DATA.panels[id];
    const link = el('a', { href: '#panel-' + id, text: title });
    document.getElementById('nav').append(link);
    if (!data || data.note) {
      link.classList.add('missing');
      body.append(el('p', { class: 'note', text: data ? data.note : 'no data' }));
      return null;
    }
    return { body, data };
  }

  // "Top layers by change, with a way to see all": draw(names) for the shown layers.
  function topLayers(body, ranked, draw, what) {
    if (ranked.length <= TOP) { draw(ranked); return; }
    let all = false;
    const button = el('button', { type: 'button' });
    const label = () => { button.textContent = all ? `show the top ${TOP} ${what}` : `show all ${ranked.length} ${what}`; };
    button.addEventListener('click', () => { all = !all; label(); draw(all ? ranked : ranked.slice(0, TOP)); });
    label();
    body.append(el('div', { class: 'controls' }, el('span', { text: `${ranked.length} ${what}, ranked by change: ` }), button));
    draw(ranked.slice(0, TOP));
  }

  function rankBySpread(series) {
    const spread = (v) => { const f = v.filter((x) => x != null); return f.length ? Math.max(...f) - Math.min(...f) : -1; };
    return Object.keys(series).sort((a, b) => spread(series[b]) - spread(series[a]));
  }

  // --- surgery timeline -----------------------------------------------------------------
  function timeline() {
    const p = panel('timeline', DATA.titles.timeline);
    if (!p) return;
    const { body, data } = p;
    const rows = [];
    for (const ev of data.events) ev.actions.forEach((a, i) => rows.push({ ev, a, first: i === 0 }));
    body.append(el('p', { text: `${data.events.length} surgeries, ${data.actions} actions (green: trial accepted, red: rolled back)` }));
    const div = el('div', { class: 'chart', id: 'timeline-chart' });
    body.append(div);
    const colour = (t) => (t === 'rolled_back' ? '#c62828' : t === 'accepted' ? '#2e7d32' : '#1565c0');
    const symbols = { prune: 'x', fold: 'diamond', merge: 'diamond', expand: 'triangle-up', grow: 'triangle-up' };
    const hover = (r) => [
      `surgery ${r.ev.event}, epoch ${fmt(r.ev.epoch)}`, `${r.a.kind} ${r.a.layer} (${r.a.policy}: ${r.a.reason})`,
      `units ${arrow(r.a.width_before, r.a.width_after)}`, `params ${arrow(r.a.params_before, r.a.params_after)}`,
      `output change ${fmt(r.a.max_output_change_eval ?? r.a.max_output_change)}`, `trial ${r.a.trial || '–'}`,
    ].join('<br>');
    const rank = {}; // surgeries of one epoch side by side
    for (const ev of data.events) { const k = String(ev.epoch); rank[ev.event] = (rank[k] = (rank[k] ?? -1) + 1); }
    plot(div, [{
      type: 'scatter', mode: 'markers', x: rows.map((r) => (r.ev.epoch ?? 0) + 0.12 * rank[r.ev.event]), y: rows.map((r) => r.a.layer),
      text: rows.map(hover), hoverinfo: 'text',
      marker: { size: 12, color: rows.map((r) => colour(r.a.trial)), symbol: rows.map((r) => symbols[r.a.kind] || 'circle') },
    }], { xaxis: { title: 'epoch' }, yaxis: { type: 'category', title: 'layer' } });
    const metricNames = [...new Set(data.events.flatMap((e) => Object.keys(e.before || {})))].filter((m) => m !== 'parameters').slice(0, 3);
    const head = ['#', 'epoch', 'layer', 'kind', 'units', 'params (Δ)', 'output change', 'trial', 'held-out loss',
      ...metricNames.map((m) => `${m} (epoch → next)`), 'note'];
    const tbody = el('tbody');
    for (const r of rows) {
      const a = r.a, ev = r.ev;
      const cells = [ev.event, fmt(ev.epoch), a.layer, a.kind, arrow(a.width_before, a.width_after),
        `${arrow(a.params_before, a.params_after)} (${a.params_delta >= 0 ? '+' : ''}${a.params_delta})`,
        fmt(a.max_output_change_eval ?? a.max_output_change), a.trial ? a.trial.replace('_', ' ') : '–',
        arrow(ev.trial_loss_before, ev.trial_loss_after, 4),
        ...metricNames.map((m) => arrow((ev.before || {})[m], (ev.after || {})[m], 3)), a.note || ''];
      const tr = el('tr', { class: `surgery-row ${a.trial || ''} ${r.first ? 'event-start' : ''}`, 'data-event': ev.event });
      cells.forEach((c, i) => tr.append(el('td', { class: i === 7 ? 'trial' : '', text: String(c) })));
      tbody.append(tr);
    }
    body.append(el('div', { class: 'table-wrap' }, el('table', { id: 'timeline-table' },
      el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { text: h })))), tbody)));
  }

  // --- units per layer --------------------------------------------------------------------
  function units() {
    const p = panel('units', DATA.titles.units);
    if (!p) return;
    const { body, data } = p;
    body.append(el('p', { text: data.source === 'weights' ? 'at every weight snapshot (before and after each surgery included)' : 'per logged epoch' }));
    const div = el('div', { class: 'chart', id: 'units-chart' });
    const x = data.labels.map((_, i) => i);
    topLayers(body, rankBySpread(data.units), (names) => plot(div, names.map((n) => ({
      type: 'scatter', mode: 'lines+markers', line: { shape: 'hv' }, name: n, x, y: data.units[n], text: data.labels,
      hovertemplate: `${n}: %{y} units<br>%{text}<extra></extra>`,
    })), { xaxis: { title: data.source === 'weights' ? 'snapshot' : 'epoch' }, yaxis: { title: 'units' } }), 'layers');
    body.append(div);
  }

  // --- per-layer statistics and metrics ---------------------------------------------------
  function layerStats() {
    const p = panel('layer_stats', DATA.titles.layer_stats);
    if (!p) return;
    const { body, data } = p;
    const metrics = el('div', { class: 'chart', id: 'metrics-chart' });
    const names = Object.keys(data.metrics);
    plot(metrics, names.map((m) => ({
      type: 'scatter', mode: 'lines+markers', name: m, x: data.epochs, y: data.metrics[m],
      yaxis: m === 'parameters' ? 'y2' : 'y',
    })), { title: { text: 'metrics per epoch' }, xaxis: { title: 'epoch' },
      yaxis2: { overlaying: 'y', side: 'right', title: 'parameters', showgrid: false } });
    const select = el('select', { id: 'stat-select' });
    for (const [k, label] of Object.entries(data.stat_labels)) select.append(el('option', { value: k, text: label }));
    const div = el('div', { class: 'chart', id: 'layer-stats-chart' });
    const controls = el('div', { class: 'controls' }, el('label', { text: 'statistic: ' }, select));
    const holder = el('div');
    const draw = () => {
      const stat = data.stats[select.value];
      holder.replaceChildren();
      topLayers(holder, rankBySpread(stat), (shown) => plot(div, shown.map((n) => ({
        type: 'scatter', mode: 'lines+markers', name: n, x: data.epochs, y: stat[n],
        hovertemplate: `${n}, epoch %{x}: %{y:.4g}<extra></extra>`,
      })), { xaxis: { title: 'epoch' }, yaxis: { title: data.stat_labels[select.value] } }), 'layers');
    };
    select.addEventListener('change', draw);
    body.append(el('div', { class: 'row' }, metrics, el('div', {}, controls, holder, div)));
    draw();
  }

  // --- weight change ----------------------------------------------------------------------
  function weights() {
    const p = panel('weights', DATA.titles.weights);
    if (!p) return;
    const { body, data } = p;
    if (!data.epochs.length) { body.append(el('p', { class: 'note', text: `${data.snapshots} snapshot(s): weight change needs two epochs` })); return; }
    body.append(el('p', { text: 'relative change ‖Δw‖ / ‖w‖ of each layer from one epoch to the next (units matched by neuron ID)' }));
    const heat = el('div', { class: 'chart tall', id: 'weight-heatmap' });
    const total = el('div', { class: 'chart', id: 'weight-total' });
    plot(total, [{ type: 'scatter', mode: 'lines+markers', name: 'whole model', x: data.epochs, y: data.total }],
      { title: { text: 'whole model' }, xaxis: { title: 'epoch' }, yaxis: { title: 'relative change' } });
    const holder = el('div');
    topLayers(holder, data.layers, (names) => plot(heat, [{
      type: 'heatmap', x: data.epochs, y: names, z: names.map((n) => data.relative[n]), colorscale: 'Viridis',
      hovertemplate: 'layer %{y}, epoch %{x}<br>relative change %{z:.4g}<extra></extra>', colorbar: { title: { text: 'rel.' } },
    }], { title: { text: 'layer × epoch' }, xaxis: { title: 'epoch' }, yaxis: { type: 'category', autorange: 'reversed' },
      margin: { l: 110, r: 20, t: 30, b: 45 } }), 'layers');
    body.append(el('div', { class: 'row' }, el('div', {}, holder, heat), total));
  }

  // --- gradient dynamics; moving averages (the same layout: a column, model and parameters) --
  function stepPanel(id, prefix) {
    const p = panel(id, DATA.titles[id]);
    if (!p) return;
    const { body, data } = p;
    body.append(el('p', { text: `${data.recorded_steps} recorded steps` + (data.recorded_steps > data.steps.length ? ` (${data.steps.length} shown)` : '') +
      (data.beta != null ? `; EMA β = ${data.beta}, near zero: |g| < ${data.eps}` : '') }));
    const select = el('select', { id: `${prefix}-select` });
    for (const [k, label] of Object.entries(data.labels)) select.append(el('option', { value: k, text: `${k}: ${label}` }));
    const model = el('div', { class: 'chart', id: `${prefix}-model` });
    const heat = el('div', { class: 'chart tall', id: `${prefix}-heatmap` });
    const holder = el('div');
    const draw = () => {
      const col = data.columns[select.value];
      plot(model, [{ type: 'scatter', mode: 'lines', name: 'whole model', x: data.steps, y: col['*'] }],
        { title: { text: `whole model: ${select.value}` }, xaxis: { title: 'step' } });
      holder.replaceChildren();
      topLayers(holder, data.parameters, (names) => plot(heat, [{
        type: 'heatmap', x: data.steps, y: names, z: names.map((n) => col[n]), colorscale: 'Viridis',
        hovertemplate: '%{y}, step %{x}<br>' + select.value + ' %{z:.4g}<extra></extra>',
      }], { title: { text: `parameter × step: ${select.value}` }, xaxis: { title: 'step' },
        yaxis: { type: 'category', autorange: 'reversed' }, margin: { l: 130, r: 20, t: 30, b: 45 } }), 'parameters');
    };
    select.addEventListener('change', draw);
    body.append(el('div', { class: 'controls' }, el('label', { text: 'column: ' }, select)),
      el('div', { class: 'row' }, model, el('div', {}, holder, heat)));
    draw();
  }
  const gradients = () => stepPanel('gradients', 'gradient');
  const moving = () => stepPanel('moving', 'moving');

  D.lib = { el, fmt, plot, panel, topLayers, pending, TOP };

  async function loadLibrary() {
    if (window.Plotly) return;
    const node = document.getElementById('plotly-gz');
    if (!node) throw new Error('the chart library is not embedded');
    if (typeof DecompressionStream === 'undefined') {
      throw new Error('this browser cannot decompress the embedded chart library; write the page with --no-compress');
    }
    const bytes = Uint8Array.from(atob(node.textContent.trim()), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    const script = document.createElement('script');
    script.textContent = await new Response(stream).text();
    D.timings.unpacked = performance.now();
    document.head.append(script);
  }

  async function main() {
    D.timings.start = performance.now();
    const info = document.getElementById('run-info');
    info.textContent = `run folder ${DATA.run} · written ${DATA.created} · charts: ${DATA.library || 'plotly.js'} (inlined)`;
    try {
      await loadLibrary();
      D.timings.library = performance.now();
      document.getElementById('loading').remove();
      for (const draw of [timeline, units, layerStats, weights, gradients, moving, window.dashboardRepresentations, window.dashboardSimilarity]) {
        if (draw) draw(DATA, D.lib);
        while (deferred.length) deferred.shift()();
      }
      D.timings.drawn = performance.now();
      await Promise.all(pending);
    } catch (err) {
      D.errors.push(String(err));
      document.getElementById('panels').prepend(el('p', { class: 'note', text: `dashboard error: ${err}` }));
      throw err;
    } finally {
      D.renderMs = performance.now();
      D.ready = true;
      document.body.dataset.ready = '1';
    }
  }
  D.start = main;
})();
