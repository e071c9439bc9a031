/* Representation dynamics: the epoch × epoch neighbour-overlap heatmap, per-sample fingerprint
   and confidence heatmaps, and the neighbour view (a sample's k nearest neighbours at every
   epoch, with the softmax entropy of each; images where the inputs are images). A click on any
   heatmap cell opens the neighbour view. */
window.dashboardRepresentations = function (DATA, lib) {
  'use strict';
  const { el, fmt, plot, panel } = lib;
  const p = panel('representations', DATA.titles.representations);
  if (!p) return;
  const { body, data } = p;
  const n = data.sample_ids.length;
  const label = (i) => (data.labels ? data.labels[i] : null);
  const sampleName = (i) => `#${data.sample_ids[i]}` + (label(i) != null ? ` (class ${label(i)})` : '');
  body.append(el('p', {
    text: `${n} probe samples` + (data.samples_total > n ? ` of ${data.samples_total}` : '') +
      `, k = ${data.k} nearest neighbours; confidence = softmax entropy of ${data.confidence_layer}` +
      (data.max_entropy ? ` (0 certain, ${data.max_entropy.toFixed(2)} uniform)` : '') +
      '. Click a heatmap cell to see a sample\'s neighbours at every epoch.',
  }));
  const select = el('select', { id: 'repr-layer' });
  for (const name of data.layers) select.append(el('option', { value: name, text: name }));
  if (data.layers.length > 1) select.value = data.layers[data.layers.length - 2]; // the last hidden layer
  const overlapDiv = el('div', { class: 'chart', id: 'overlap-heatmap' });
  const fingerDiv = el('div', { class: 'chart', id: 'fingerprint-heatmap' });
  const confDiv = el('div', { class: 'chart', id: 'confidence-heatmap' });
  const pairDiv = el('div', { class: 'chart', id: 'pair-overlap' });
  const view = el('div', { id: 'neighbour-view', hidden: '' });
  const sampleInput = el('input', { type: 'number', min: 0, max: n - 1, value: 0, id: 'sample-input', style: 'width:5em' });
  body.append(
    el('div', { class: 'controls' }, el('label', { text: 'layer: ' }, select),
      el('label', { text: ' sample (row): ' }, sampleInput),
      el('button', { type: 'button', text: 'show neighbours', onclick: () => openSample(+sampleInput.value, []) })),
    el('div', { class: 'row' }, overlapDiv, pairDiv), el('div', { class: 'row' }, fingerDiv, confDiv), view);

  const confEpochs = Object.keys(data.confidence).map(Number).sort((a, b) => a - b);
  const confidence = (i, epoch) => { const c = data.confidence[String(epoch)]; return c ? c[i] : null; };
  const layer = () => data.per_layer[select.value];
  const overlapOf = (i, ea, eb) => {
    const a = layer().neighbours[String(ea)][i], b = new Set(layer().neighbours[String(eb)][i]);
    return a.filter((j) => b.has(j)).length / a.length;
  };

  // Images: one small canvas per sample, drawn from the embedded uint8 pixels.
  let pixels = null;
  if (data.images) pixels = Uint8Array.from(atob(data.images.data), (c) => c.charCodeAt(0));
  function image(i, big) {
    if (!pixels) return null;
    const { channels: c, height: h, width: w } = data.images;
    const canvas = el('canvas', { width: w, height: h, title: sampleName(i) });
    const ctx = canvas.getContext('2d');
    const img = ctx.createImageData(w, h);
    const off = i * h * w * c;
    for (let q = 0; q < h * w; q++) {
      const r = pixels[off + q * c], g = pixels[off + q * c + (c > 1 ? 1 : 0)], b = pixels[off + q * c + (c > 1 ? 2 : 0)];
      img.data.set([r, g, b, 255], q * 4);
    }
    ctx.putImageData(img, 0, 0);
    if (big) canvas.classList.add('big');
    return canvas;
  }

  function openSample(i, picked) {
    if (!(i >= 0 && i < n)) return;
    sampleInput.value = i;
    const L = layer();
    view.hidden = false;
    view.replaceChildren(el('h3', { text: `${sampleName(i)}: nearest neighbours in ${select.value} at each epoch` }));
    const head = el('div', { class: 'controls' }, el('span', { class: 'nb self' }, image(i, true), el('span', { text: sampleName(i) })));
    view.append(head);
    const tbody = el('tbody');
    let previous = null;
    for (const epoch of L.epochs) {
      const nbs = L.neighbours[String(epoch)][i];
      const before = previous ? new Set(previous) : null;
      const chips = nbs.map((j) => {
        const chip = el('span', { class: 'nb' + (before && before.has(j) ? ' same' : ''), title: `${sampleName(j)}, entropy ${fmt(confidence(j, epoch))}` },
          image(j), el('span', { text: `#${data.sample_ids[j]}` + (label(j) != null ? `·${label(j)}` : '') }));
        chip.addEventListener('click', () => openSample(j, picked));
        return chip;
      });
      const same = before ? nbs.filter((j) => before.has(j)).length / nbs.length : null;
      const tr = el('tr', { class: 'neighbour-row' + (picked.includes(epoch) ? ' picked' : ''), 'data-epoch': epoch },
        el('td', { text: String(epoch) }), el('td', { text: fmt(confidence(i, epoch)) }),
        el('td', { text: same == null ? '–' : fmt(same, 2) }), el('td', {}, ...chips));
      tbody.append(tr);
      previous = nbs;
    }
    view.append(el('div', { class: 'table-wrap' }, el('table', { id: 'neighbour-table' },
      el('thead', {}, el('tr', {}, ...['epoch', 'entropy', 'overlap with previous', `k = ${data.k} neighbours (green: kept)`].map((h) => el('th', { text: h })))),
      tbody)));
    view.dataset.sample = String(i);
    view.scrollIntoView({ block: 'nearest' });
  }

  function pairView(ea, eb) {
    const values = Array.from({ length: n }, (_, i) => overlapOf(i, ea, eb));
    plot(pairDiv, [{ type: 'bar', x: values.map((_, i) => i), y: values, text: values.map((_, i) => sampleName(i)), textposition: 'none',
      hovertemplate: '%{text}: overlap %{y:.2f}<extra></extra>' }],
    { title: { text: `per-sample neighbour overlap, epoch ${ea} vs ${eb} (click a bar)` }, xaxis: { title: 'sample' },
      yaxis: { range: [0, 1.05] } }, (pt) => openSample(pt.x, [ea, eb]));
    let worst = 0;
    values.forEach((v, i) => { if (v < values[worst]) worst = i; });
    return worst;
  }

  function draw() {
    const L = layer();
    plot(overlapDiv, [{ type: 'heatmap', x: L.epochs, y: L.epochs, z: L.overlap, zmin: 0, zmax: 1, colorscale: 'Viridis',
      hovertemplate: 'epoch %{y} vs %{x}<br>mean kNN overlap %{z:.3f}<extra></extra>' }],
    { title: { text: `${select.value}: mean neighbour overlap, epoch × epoch` }, xaxis: { title: 'epoch' }, yaxis: { title: 'epoch' } },
    (pt) => openSample(pairView(pt.y, pt.x), [pt.y, pt.x]));
    const rows = Array.from({ length: n }, (_, i) => i);
    plot(fingerDiv, [{ type: 'heatmap', x: L.fingerprint_epochs, y: rows, z: rows.map((i) => L.fingerprint.map((r) => r[i])),
      zmin: 0, zmax: 1, colorscale: 'Viridis', text: rows.map((i) => L.fingerprint_epochs.map(() => sampleName(i))),
      hovertemplate: '%{text}, epoch %{x}<br>overlap with the previous epoch %{z:.2f}<extra></extra>' }],
    { title: { text: 'fingerprint: sample × epoch overlap with the previous epoch' }, xaxis: { title: 'epoch' }, yaxis: { title: 'sample' } },
    (pt) => openSample(pt.y, [pt.x]));
    if (L.epochs.length > 1) pairView(L.epochs[L.epochs.length - 2], L.epochs[L.epochs.length - 1]);
    else pairDiv.replaceChildren(el('p', { class: 'note', text: 'one recorded epoch: no overlap between epochs' }));
  }
  plot(confDiv, [{ type: 'heatmap', x: confEpochs, y: Array.from({ length: n }, (_, i) => i),
    z: Array.from({ length: n }, (_, i) => confEpochs.map((e) => confidence(i, e))), colorscale: 'Cividis', reversescale: true,
    text: Array.from({ length: n }, (_, i) => confEpochs.map(() => sampleName(i))),
    hovertemplate: '%{text}, epoch %{x}<br>entropy %{z:.3f}<extra></extra>' }],
  { title: { text: `confidence: softmax entropy of ${data.confidence_layer}` }, xaxis: { title: 'epoch' }, yaxis: { title: 'sample' } },
  (pt) => openSample(pt.y, [pt.x]));
  select.addEventListener('change', () => { draw(); if (!view.hidden) openSample(+sampleInput.value, []); });
  draw();
};

/* All pairs of layers: linear CKA and mean |cross-correlation| between every two layers' outputs
   on the probe set, at the chosen epoch. */
window.dashboardSimilarity = function (DATA, lib) {
  'use strict';
  const { el, plot, panel } = lib;
  const p = panel('similarity', DATA.titles.similarity);
  if (!p) return;
  const { body, data } = p;
  const select = el('select', { id: 'similarity-epoch' });
  data.epochs.forEach((e, i) => select.append(el('option', { value: i, text: `epoch ${e}` })));
  select.value = String(data.epochs.length - 1);
  const cka = el('div', { class: 'chart', id: 'cka-grid' });
  const corr = el('div', { class: 'chart', id: 'correlation-grid' });
  body.append(el('div', { class: 'controls' }, el('label', { text: 'epoch: ' }, select)), el('div', { class: 'row' }, cka, corr));
  const draw = () => {
    const i = +select.value, names = data.layers[i];
    for (const [div, z, what] of [[cka, data.cka[i], 'linear CKA'], [corr, data.correlation[i], 'mean |cross-correlation|']]) {
      plot(div, [{ type: 'heatmap', x: names, y: names, z, zmin: 0, zmax: 1, colorscale: 'Viridis',
        hovertemplate: `%{y} × %{x}<br>${what} %{z:.3f}<extra></extra>` }],
      { title: { text: `${what}, epoch ${data.epochs[i]}` }, xaxis: { type: 'category' },
        yaxis: { type: 'category', autorange: 'reversed' }, margin: { l: 90, r: 20, t: 30, b: 70 } });
    }
  };
  select.addEventListener('change', draw);
  draw();
};
window.dashboard.start();
