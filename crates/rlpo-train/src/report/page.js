// rlpo report renderer: reads the JSON in #report-data and draws the headline, the panels (SVG),
// the coverage curve, the sample browser and the recipe. No network, no libraries.
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('report-data').textContent);
  const NS = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];
  const SMOOTH_WEIGHT = 0.6;
  const W = 460, H = 236, L = 62, R = 14, T = 12, B = 40;

  function el(tag, attrs, parent, text) {
    const svgTags = ['svg', 'g', 'path', 'line', 'text', 'circle', 'rect'];
    const e = svgTags.includes(tag) ? document.createElementNS(NS, tag) : document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // Numbers: 3 significant digits, exponent for tiny/huge magnitudes.
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return '-';
    const a = Math.abs(v);
    if (a === 0) return '0';
    if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
    if (a >= 100) return v.toFixed(0);
    return String(Number(v.toPrecision(3)));
  }

  // A tick label: as many decimals as the tick step needs, so neighbours never print the same.
  function tickFmt(v, step) {
    if (Math.abs(v) < step * 1e-6) return '0';
    const dec = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    if (dec > 5 || Math.abs(v) >= 1e6) {
      const digits = Math.floor(Math.log10(Math.abs(v))) - Math.floor(Math.log10(step) + 1e-9);
      return v.toExponential(Math.min(6, Math.max(1, digits)));
    }
    return v.toFixed(dec);
  }

  // A change: "±0" when it is rounding noise.
  function deltaFmt(d, scale) {
    return Math.abs(d) <= 1e-9 * Math.max(Math.abs(scale), 1e-12) ? '\u00b10' : (d > 0 ? '+' : '') + fmt(d);
  }

  function seconds(s) {
    if (!isFinite(s)) return '-';
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 120) return s.toFixed(0) + ' s';
    if (s < 7200) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }

  // "Nice" tick step (1, 2, 5 x 10^n) for about `n` intervals.
  function niceStep(range, n) {
    const raw = range / n, p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
  }

  // Debiased exponential moving average (TensorBoard's smoothing).
  function ema(vals) {
    let last = 0, n = 0;
    return vals.map(v => { n += 1; last = last * SMOOTH_WEIGHT + (1 - SMOOTH_WEIGHT) * v; return last / (1 - Math.pow(SMOOTH_WEIGHT, n)); });
  }

  // The logged points of a metric: [[step, value], ...].
  function points(key) {
    const vals = D.metrics[key] || [];
    const out = [];
    D.steps.forEach((s, i) => { const v = vals[i]; if (v !== null && v !== undefined && isFinite(v)) out.push([s, v]); });
    return out;
  }

  // Y range with nice bounds; never below 0 for data that is never negative.
  function domain(lo, hi) {
    const nonNeg = lo >= 0;
    if (!(hi > lo)) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
    if (nonNeg && lo < 0) lo = 0;
    const step = niceStep(hi - lo, 4);
    return { lo: Math.floor(lo / step + 1e-9) * step, hi: Math.ceil(hi / step - 1e-9) * step, step: step };
  }

  const tip = document.getElementById('tip');

  // One chart: `series` = [{key, label, pts: [[x, y]], color}], `xlabel`, `unit`, `xlog2`.
  function chart(parent, series, opt) {
    const pw = W - L - R, ph = H - T - B;
    const all = series.flatMap(s => s.pts);
    const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
    let xlo = Math.min(...xs), xhi = Math.max(...xs);
    if (!(xhi > xlo)) { xlo -= 1; xhi += 1; }
    const tx = opt.xlog2 ? (x => Math.log2(x)) : (x => x);
    const y = domain(Math.min(...ys), Math.max(...ys));
    const X = x => L + (tx(x) - tx(xlo)) / (tx(xhi) - tx(xlo)) * pw;
    const Y = v => T + ph - (v - y.lo) / (y.hi - y.lo) * ph;
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' }, parent);
    const g = el('g', {
      class: 'plot', 'data-xmin': xlo, 'data-xmax': xhi, 'data-ymin': y.lo, 'data-ymax': y.hi,
      'data-left': L, 'data-top': T, 'data-width': pw, 'data-height': ph, 'data-xscale': opt.xlog2 ? 'log2' : 'linear',
    }, svg);
    for (let v = y.lo; v <= y.hi + y.step * 1e-6; v += y.step) {
      el('line', { class: 'grid-line', x1: L, x2: L + pw, y1: Y(v), y2: Y(v) }, g);
      el('text', { x: L - 6, y: Y(v) + 4, 'text-anchor': 'end' }, g, tickFmt(v, y.step));
    }
    let xticks;
    if (opt.xlog2) {
      xticks = [];
      for (let k = 1; k <= xhi; k *= 2) xticks.push(k);
    } else {
      const st = Math.max(1, niceStep(xhi - xlo, 6));
      xticks = [];
      for (let v = Math.ceil(xlo / st) * st; v <= xhi; v += st) xticks.push(v);
    }
    for (const v of xticks) {
      el('line', { class: 'axis', x1: X(v), x2: X(v), y1: T + ph, y2: T + ph + 4 }, g);
      el('text', { x: X(v), y: T + ph + 16, 'text-anchor': 'middle' }, g, String(v));
    }
    el('line', { class: 'axis', x1: L, x2: L + pw, y1: T + ph, y2: T + ph }, g);
    el('line', { class: 'axis', x1: L, x2: L, y1: T, y2: T + ph }, g);
    el('text', { class: 'axis-title', x: L + pw / 2, y: H - 4, 'text-anchor': 'middle' }, g, opt.xlabel);
    el('text', { class: 'axis-title', transform: `translate(13 ${T + ph / 2}) rotate(-90)`, 'text-anchor': 'middle' }, g, opt.unit);
    const path = pts => pts.map((p, i) => (i ? 'L' : 'M') + X(p[0]).toFixed(2) + ' ' + Y(p[1]).toFixed(2)).join(' ');
    for (const s of series) {
      if (!s.pts.length) continue;
      const raw = el('path', { class: 'raw', d: path(s.pts), stroke: s.color, 'data-metric': s.key }, g);
      if (opt.smooth && s.pts.length >= 3) {
        const sm = ema(s.pts.map(p => p[1]));
        el('path', { class: 'smooth', d: path(s.pts.map((p, i) => [p[0], sm[i]])), stroke: s.color, 'data-metric': s.key }, g);
      } else {
        raw.setAttribute('style', 'opacity:.9;stroke-width:1.6');
      }
      if (s.pts.length <= (opt.smooth ? 60 : 200)) {
        for (const p of s.pts) el('circle', { class: 'pt', cx: X(p[0]).toFixed(2), cy: Y(p[1]).toFixed(2), r: opt.smooth ? 1.8 : 3, fill: s.color }, g);
      }
    }
    // Hover: nearest x, every series' value there.
    const cursor = el('line', { class: 'cursor', y1: T, y2: T + ph, visibility: 'hidden' }, g);
    const allX = Array.from(new Set(xs)).sort((a, b) => a - b);
    svg.addEventListener('mousemove', ev => {
      const box = svg.getBoundingClientRect();
      const px = (ev.clientX - box.left) / box.width * W;
      let best = allX[0];
      for (const x of allX) if (Math.abs(X(x) - px) < Math.abs(X(best) - px)) best = x;
      cursor.setAttribute('x1', X(best)); cursor.setAttribute('x2', X(best)); cursor.setAttribute('visibility', 'visible');
      const rows = series.map(s => { const p = s.pts.find(q => q[0] === best); return p ? `<span style="color:${s.color}">&#9632;</span> ${s.label}: ${fmt(p[1])}` : null; }).filter(Boolean);
      tip.innerHTML = `${opt.xlabel} ${fmt(best)}<br>` + rows.join('<br>');
      tip.hidden = false;
      tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 12) + 'px';
    });
    svg.addEventListener('mouseleave', () => { cursor.setAttribute('visibility', 'hidden'); tip.hidden = true; });
    return svg;
  }

  function panelBox(id, title, series) {
    const box = el('div', { class: 'panel', id: 'panel-' + id }, document.getElementById('panels'));
    const h = el('h3', {}, box);
    el('span', {}, h, title);
    const legend = el('div', { class: 'legend' }, box);
    if (series.length === 1 && series[0].pts.length) {
      const pts = series[0].pts, last = pts[pts.length - 1];
      el('span', { class: 'last' }, h, `last ${fmt(last[1])} at step ${last[0]}`);
    } else {
      for (const s of series) { const sp = el('span', {}, legend); el('i', { style: 'background:' + s.color }, sp); sp.appendChild(document.createTextNode(s.label)); }
    }
    return box;
  }

  function drawPanels() {
    for (const p of D.panels) {
      const series = p.series.map((s, i) => ({ key: s.key, label: s.label, pts: points(s.key), color: PALETTE[i % PALETTE.length] }));
      const box = panelBox(p.id, p.title, series);
      chart(box, series, { xlabel: 'step', unit: p.unit, smooth: p.smooth });
    }
    if (D.coverage.length) {
      const series = D.coverage.map((c, i) => ({
        key: 'coverage@' + c.step, label: 'step ' + c.step,
        pts: (c.coverage || []).map((v, k) => [k + 1, v]).filter(p => p[1] !== null), color: PALETTE[i % PALETTE.length],
      }));
      const box = panelBox('coverage', 'Held-out coverage: pass@k vs k', series);
      chart(box, series, { xlabel: 'k (samples per problem, log scale)', unit: 'pass@k', smooth: false, xlog2: true });
    }
    document.getElementById('left-out').textContent = D.left_out.length ? 'Not shown: ' + D.left_out.join('; ') + '.' : '';
  }

  function card(label, first, last, unit, higherIsBetter, note) {
    const c = el('div', { class: 'card' }, document.getElementById('cards'));
    el('div', { class: 'label' }, c, label);
    const v = el('div', { class: 'value' }, c);
    if (first === null || first === undefined) { v.textContent = fmt(last) + (unit ? ' ' + unit : ''); }
    else {
      v.appendChild(document.createTextNode(fmt(first)));
      el('span', { class: 'arrow' }, v, '\u2192');
      v.appendChild(document.createTextNode(fmt(last) + (unit ? ' ' + unit : '')));
      const d = last - first;
      const good = higherIsBetter === null ? '' : ((d >= 0) === higherIsBetter ? 'up' : 'down');
      el('div', { class: 'delta ' + good }, c, deltaFmt(d, Math.max(Math.abs(first), Math.abs(last))) + (note ? ' \u00b7 ' + note : ''));
    }
    return c;
  }

  function drawHeader() {
    const h = D.headline, r = D.run;
    document.getElementById('subtitle').textContent = [r.algorithm, r.model ? 'model ' + r.model : null, r.dir].filter(Boolean).join(' \u00b7 ');
    const done = h.steps_done === null ? 0 : h.steps_done;
    const parts = [`${done}${h.total_steps ? ' of ' + h.total_steps : ''} steps in ${seconds(h.seconds)}`];
    const pr = h.pass_rate;
    if (pr.first !== null) parts.push(`the training pass rate went from ${fmt(pr.first)} to ${fmt(pr.last)} (mean of the first and last ${pr.window} steps)`);
    const ev = h.eval_pass1;
    if (ev.first !== null) parts.push(`held-out pass@1 from ${fmt(ev.first)} at step ${h.eval_steps[0]} to ${fmt(ev.last)} at step ${h.eval_steps[1]}`);
    const ln = h.length;
    if (ln.first !== null) parts.push(`responses from ${fmt(ln.first)} to ${fmt(ln.last)} tokens`);
    document.getElementById('story').textContent = parts[0] + (parts.length > 1 ? ': ' + parts.slice(1).join('; ') + '.' : '.');
    if (pr.first !== null) card('Pass rate (train)', pr.first, pr.last, '', true, `first vs last ${pr.window} steps`);
    if (h.reward.first !== null) card('Mean reward', h.reward.first, h.reward.last, '', true, `first vs last ${h.reward.window} steps`);
    if (ev.first !== null) card('Held-out pass@1', ev.first, ev.last, '', true, `step ${h.eval_steps[0]} vs ${h.eval_steps[1]}`);
    if (ln.first !== null) card('Response length', ln.first, ln.last, 'tok', null, 'mean tokens');
    card('Steps', null, done, h.total_steps ? `of ${h.total_steps}` : '', null).appendChild(el('div', { class: 'delta' }, null, 'wall time ' + seconds(h.seconds)));
    const w = document.getElementById('warnings');
    for (const m of D.warnings) el('div', { class: 'warn' }, w, m);
  }

  // Prompts are chat-templated: show the last turn, keep the whole text one click away.
  function shortPrompt(p) {
    const marks = ['<|im_start|>user', '<|start_header_id|>user<|end_header_id|>', '<|user|>'];
    let at = -1, len = 0;
    for (const m of marks) { const i = p.lastIndexOf(m); if (i > at) { at = i; len = m.length; } }
    let s = at >= 0 ? p.slice(at + len) : p;
    s = s.replace(/<\|im_end\|>[\s\S]*$/, '').replace(/<\|eot_id\|>[\s\S]*$/, '').trim();
    return s.length > 600 ? s.slice(0, 600) + ' \u2026' : s;
  }

  function drawSamples() {
    const root = document.getElementById('samples');
    const steps = Object.keys(D.samples).map(Number).sort((a, b) => a - b);
    if (!steps.length) { el('p', { class: 'muted' }, root, 'No samples recorded (rollouts.jsonl is written by rlpo train when metrics.text_samples > 0).'); return; }
    const ctl = el('div', { class: 'controls' }, root);
    const prev = el('button', { type: 'button' }, ctl, '\u25c0');
    const range = el('input', { type: 'range', min: 0, max: steps.length - 1, value: steps.length - 1, id: 'sample-step' }, ctl);
    const next = el('button', { type: 'button' }, ctl, '\u25b6');
    const label = el('span', {}, ctl);
    const list = el('div', { id: 'sample-list' }, root);
    function show(i) {
      const step = steps[i];
      range.value = i;
      const rows = D.samples[step];
      const rewards = rows.map(r => r.reward).filter(v => v !== null);
      const mean = rewards.length ? rewards.reduce((a, b) => a + b, 0) / rewards.length : NaN;
      label.textContent = `step ${step} (${i + 1} of ${steps.length} recorded) \u00b7 ${rows.length} responses \u00b7 mean reward ${fmt(mean)}`;
      list.textContent = '';
      let box = null, lastPrompt = null;
      for (const r of rows) {
        if (r.prompt !== lastPrompt) {
          box = el('div', { class: 'prompt' }, list);
          const q = el('div', { class: 'q', title: r.prompt }, box, shortPrompt(r.prompt));
          q.dataset.step = step;
          lastPrompt = r.prompt;
        }
        const row = el('div', { class: 'resp' + (r.kept ? '' : ' dropped') }, box);
        const meta = el('div', { class: 'meta' }, row);
        const rv = el('b', { class: r.reward > 0 ? 'pos' : 'neg' }, meta, 'reward ' + fmt(r.reward));
        rv.dataset.reward = r.reward;
        const adv = r.advantage === null ? '-' : (r.advantage > 0 ? '+' : '') + fmt(r.advantage);
        meta.appendChild(document.createTextNode(` \u00b7 adv ${adv} \u00b7 ${r.kept ? 'in the loss' : 'not in the loss'}`));
        const parts = Object.entries(r.parts || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(', ');
        if (parts) meta.appendChild(el('div', {}, null, parts));
        el('pre', {}, row, r.response);
      }
    }
    range.addEventListener('input', () => show(Number(range.value)));
    prev.addEventListener('click', () => show(Math.max(0, Number(range.value) - 1)));
    next.addEventListener('click', () => show(Math.min(steps.length - 1, Number(range.value) + 1)));
    show(steps.length - 1);
  }

  drawHeader();
  drawPanels();
  drawSamples();
  document.getElementById('recipe-text').textContent = D.recipe || '(no recipe.resolved.toml in the run directory)';
  if (!document.documentElement.hasAttribute('data-errors')) document.documentElement.setAttribute('data-errors', '[]');
  document.documentElement.setAttribute('data-rendered', 'ok');
})();
