/* circuit_trace static viewer: plain JS + SVG, no dependencies, works offline.
 *
 * Security rule: every string that comes from a graph or feature file reaches the page only through
 * textContent / setAttribute on elements made with createElement(NS); never innerHTML.
 *
 * Pruning runs here, in the browser, over the exported graph (which the exporter writes wider than
 * the default view): nodes by their cumulative influence share, edges by the SPEC edge score
 * Â'[t, s] * score'(t) recomputed on the visible nodes, then features left without inputs or
 * outputs (and errors without outputs) are dropped, as the Python pruning does.
 */
(function () {
  'use strict';

  var SVGNS = 'http://www.w3.org/2000/svg';
  var MAX_DRAWN = 2500;     // edges drawn, strongest |weight| first; the rest are counted, not drawn
  var TOP_EDGES = 10;       // inputs / outputs listed in the detail panel
  var CARD_EDGES = 3;       // ... and in the hover card
  var N_LABELS = 14;        // most influential features that get a text label
  var M = {l: 58, r: 14, t: 38, b: 58};  // the top band keeps the zoom buttons clear of the logit labels
  var KIND_COLOR = {feature: '#4c78a8', error: '#9a9a9a', embedding: '#54a24b', logit: '#f58518', supernode: '#6b46c1'};

  var state = {
    graphs: [], name: null, data: null, nodes: [], byId: {}, links: [], nLayers: 0, tokens: [],
    tN: 0.8, tE: 0.98, exportN: null, exportE: null, qParams: null, dirty: false,
    vis: {}, visLinks: [], drawn: [], xy: {}, units: {}, view: {k: 1, x: 0, y: 0}, hover: null, search: ''
  };

  // ---------- small DOM helpers (text only, never HTML) ----------
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
  function fmt(v) {
    if (v === null || v === undefined || typeof v !== 'number' || !isFinite(v)) return '—';
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e4)) ? v.toExponential(2) : String(Math.round(v * 1e4) / 1e4);
  }
  function short(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + '…' : s; }
  function setStatus(msg, isError) {
    var s = $('status');
    s.textContent = msg || '';
    s.className = 'status' + (isError ? ' error' : '');
  }
  function showError(msg) {
    var b = $('error-badge');
    b.textContent = msg || '';
    b.hidden = !msg;
  }
  function getJSON(url) {
    return fetch(url, {credentials: 'same-origin'}).then(function (r) {
      if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
      return r.text();
    }).then(function (txt) {
      try { return JSON.parse(txt); } catch (e) { throw new Error('not valid JSON (' + e.message + ')'); }
    });
  }
  function num(v) { return (typeof v === 'number' && isFinite(v)) ? v : null; }

  // ---------- graph model ----------
  function kindOf(ft) {
    ft = String(ft || '').toLowerCase();
    if (ft.indexOf('error') >= 0) return 'error';
    if (ft.indexOf('embed') >= 0) return 'embedding';
    if (ft.indexOf('logit') >= 0) return 'logit';
    return 'feature';
  }

  function layerCount(raw) {
    var maxLayer = -1, logitLayer = null;
    raw.forEach(function (n) {
      var k = kindOf(n.feature_type), l = parseInt(n.layer, 10);
      if (isNaN(l)) return;
      if (k === 'logit') logitLayer = Math.max(logitLayer === null ? l : logitLayer, l);
      else maxLayer = Math.max(maxLayer, l);
    });
    return Math.max(maxLayer + 1, logitLayer !== null ? logitLayer - 1 : 0);
  }

  function makeNode(n, idx, nLayers, tokens) {
    var kind = kindOf(n.feature_type), row;
    if (kind === 'embedding') row = 0;
    else if (kind === 'logit') row = nLayers + 1;
    else { row = parseInt(n.layer, 10); row = isNaN(row) ? 0 : row + 1; }
    var pos = parseInt(n.ctx_idx, 10); if (isNaN(pos)) pos = 0;
    return {
      id: String(n.node_id), kind: kind, layer: String(n.layer), row: row, pos: pos,
      label: typeof n.clerp === 'string' ? n.clerp : '', activation: num(n.activation),
      rank: num(n.influence), score: num(n.node_influence),
      feature: (typeof n.feature === 'number') ? n.feature : null,
      token: (pos >= 0 && pos < tokens.length) ? tokens[pos] : '', tokenProb: num(n.token_prob),
      labelScore: num(n.label_score), labelEvidence: n.label_evidence,
      qk: (n.qk_tracing_results && typeof n.qk_tracing_results === 'object') ? n.qk_tracing_results : null,
      always: kind === 'embedding' || kind === 'logit', idx: idx, ins: [], outs: []
    };
  }

  function buildModel(data) {
    if (!data || typeof data !== 'object' || !Array.isArray(data.nodes)) throw new Error('not a graph JSON (no "nodes" list)');
    var meta = (data.metadata && typeof data.metadata === 'object') ? data.metadata : {};
    var tokens = Array.isArray(meta.prompt_tokens) ? meta.prompt_tokens.map(String) : [];
    var nLayers = layerCount(data.nodes);
    var nodes = [], byId = {};
    data.nodes.forEach(function (n) {
      if (!n || typeof n !== 'object') return;
      var id = String(n.node_id);
      if (has(byId, id)) return;
      var node = makeNode(n, nodes.length, nLayers, tokens);
      byId[id] = node; nodes.push(node);
    });
    var links = [];
    (Array.isArray(data.links) ? data.links : []).forEach(function (l) {
      if (!l) return;
      var s = byId[String(l.source)], t = byId[String(l.target)], w = num(l.weight);
      if (!s || !t || w === null || s === t) return;
      links.push({s: s, t: t, w: w, score: num(l.score), es: 0});
    });
    // top rows first: the edge-score pass visits every target before its sources
    links.sort(function (a, b) { return b.t.row - a.t.row || Math.abs(b.w) - Math.abs(a.w); });
    var upward = links.every(function (e) { return e.s.row < e.t.row; });
    var ps = (meta.pruning_settings && typeof meta.pruning_settings === 'object') ? meta.pruning_settings : {};
    var qk = (data.qk_only_nodes && typeof data.qk_only_nodes === 'object') ? data.qk_only_nodes : {};
    return {meta: meta, tokens: tokens, nodes: nodes, byId: byId, links: links, nLayers: nLayers, ps: ps, qkOnly: qk, upward: upward};
  }

  // ---------- pruning in the browser ----------
  // Nodes: sorted by cumulative share, keep those below the threshold and the first to reach it
  // (find_threshold semantics: the node whose share crosses the threshold stays).
  function pruneNodes(tN) {
    var vis = {}, ranked = [];
    state.nodes.forEach(function (n) {
      if (n.always || n.rank === null) vis[n.id] = true; else ranked.push(n);
    });
    ranked.sort(function (a, b) { return a.rank - b.rank; });
    var all = state.exportN !== null && tN >= state.exportN - 1e-9, cut = null;
    ranked.forEach(function (n) {
      if (all || n.rank < tN - 1e-12) { vis[n.id] = true; return; }
      if (cut === null) cut = n.rank;
      if (n.rank <= cut + 1e-15) vis[n.id] = true;
    });
    return vis;
  }

  // SPEC edge score on the visible nodes: Â' = |A| row-normalised, score' = w + Σ_t Â'[t,s] score'(t).
  // Typed arrays indexed by node position: a 200k-link graph re-prunes in tens of milliseconds.
  function edgeScores(alive) {
    var N = state.nodes.length, rowSum = new Float64Array(N), score = new Float64Array(N), i, e;
    var useScores = state.nodes.every(function (n) { return n.always || n.score !== null; });
    if (!useScores) { for (i = 0; i < alive.length; i++) alive[i].es = Math.abs(alive[i].w); return; }
    for (i = 0; i < alive.length; i++) { e = alive[i]; rowSum[e.t.idx] += Math.abs(e.w); }
    var w = new Float64Array(N);
    state.nodes.forEach(function (n) { if (n.kind === 'logit') w[n.idx] = n.score !== null ? n.score : (n.tokenProb || 0); });
    // alive keeps state.links' order, which buildModel sorted by target row, top first: one pass is
    // exact when every link goes up a row; otherwise repeat until nothing changes
    for (var it = 0; it < 4 * (state.nLayers + 3); it++) {
      var next = new Float64Array(w);
      for (i = 0; i < alive.length; i++) {
        e = alive[i];
        var st = next[e.t.idx];
        if (st) next[e.s.idx] += Math.abs(e.w) / rowSum[e.t.idx] * st;
      }
      var changed = false;
      for (i = 0; i < N; i++) if (next[i] !== score[i]) { changed = true; break; }
      score = next;
      if (!changed || state.upward) break;
    }
    for (i = 0; i < alive.length; i++) { e = alive[i]; e.es = Math.abs(e.w) / rowSum[e.t.idx] * score[e.t.idx]; }
  }

  function edgeCut(alive, tE) {
    var s = new Float64Array(alive.length), total = 0, i;
    for (i = 0; i < alive.length; i++) { s[i] = alive[i].es; total += s[i]; }
    s.sort();  // ascending; walk from the top
    if (!(total > 0)) return 0;
    var acc = 0;
    for (i = s.length - 1; i >= 0; i--) { acc += s[i]; if (acc / total >= tE) return s[i]; }
    return s[0];
  }

  function prune() {
    var vis = pruneNodes(state.tN), N = state.nodes.length;
    var alive = state.links.filter(function (e) { return vis[e.s.id] && vis[e.t.id]; });
    var allEdges = state.exportE !== null && state.tE >= state.exportE - 1e-9;
    var kept = alive;
    if (!allEdges) {
      edgeScores(alive);
      var thr = edgeCut(alive, state.tE);
      kept = alive.filter(function (e) { return e.es >= thr; });
    }
    var allNodes = state.exportN !== null && state.tN >= state.exportN - 1e-9;
    while (!(allNodes && allEdges)) {  // drop nodes stranded by the cuts (features need an input and an output)
      var hasIn = new Uint8Array(N), hasOut = new Uint8Array(N), changed = false;
      kept.forEach(function (e) { hasIn[e.t.idx] = 1; hasOut[e.s.idx] = 1; });
      state.nodes.forEach(function (n) {
        if (!vis[n.id] || n.always) return;
        if (!hasOut[n.idx] || (n.kind === 'feature' && !hasIn[n.idx])) { delete vis[n.id]; changed = true; }
      });
      if (!changed) break;
      kept = kept.filter(function (e) { return vis[e.s.id] && vis[e.t.id]; });
    }
    kept = kept.slice().sort(function (a, b) { return Math.abs(b.w) - Math.abs(a.w); });
    state.vis = vis;
    state.visLinks = kept;  // strongest |weight| first
    state.nodes.forEach(function (n) { n.ins = []; n.outs = []; });
    kept.forEach(function (e) { e.t.ins.push(e); e.s.outs.push(e); });
  }

  // ---------- labels ----------
  function displayLabel(n) {
    if (n.label) return n.label;
    if (n.kind === 'embedding') return 'Emb: ' + JSON.stringify(n.token);
    if (n.kind === 'error') return 'Error L' + n.layer + ' @' + n.pos;
    return n.id;
  }
  function unitLabel(id) {
    var u = state.units[id];
    return u && u.kind === 'supernode' ? u.label : (state.byId[id] ? displayLabel(state.byId[id]) : id);
  }

  function normQParams(q) {
    q = (q && typeof q === 'object') ? q : {};
    var ids = state.byId;
    return {
      pinnedIds: Array.isArray(q.pinnedIds) ? q.pinnedIds.map(String).filter(function (i) { return ids[i]; }) : [],
      supernodes: Array.isArray(q.supernodes) ? q.supernodes.filter(function (g) {
        return Array.isArray(g) && g.length >= 2;
      }).map(function (g) { return g.map(String); }) : [],
      linkType: typeof q.linkType === 'string' ? q.linkType : 'both',
      clickedId: typeof q.clickedId === 'string' ? q.clickedId : '',
      sg_pos: typeof q.sg_pos === 'string' ? q.sg_pos : ''
    };
  }

  // ---------- graph list ----------
  function renderGraphList() {
    var ul = $('graph-list');
    clear(ul);
    if (!state.graphs.length) { ul.appendChild(el('li', 'muted', 'No graph JSON files in this directory.')); return; }
    state.graphs.forEach(function (g) {
      var li = el('li', (g.name === state.name ? 'active' : '') + (g.error ? ' broken' : ''));
      li.setAttribute('data-name', g.name);
      li.appendChild(el('span', 'name', g.slug || g.name));
      if (g.error) li.appendChild(el('span', 'badge', 'cannot read'));
      else {
        li.appendChild(el('span', 'sub', g.prompt));
        li.appendChild(el('span', 'sub', (g.scan ? g.scan + ' · ' : '') + g.n_nodes + ' nodes · ' + g.n_links + ' links'));
      }
      li.title = g.error ? g.file + ': ' + g.error : g.file;
      li.addEventListener('click', function () { selectGraph(g.name); });
      ul.appendChild(li);
    });
  }

  function selectGraph(name) {
    if (state.dirty && name !== state.name && !window.confirm('Discard unsaved qParams changes?')) return;
    location.hash = 'graph=' + encodeURIComponent(name);
    loadGraph(name);
  }

  function setSlider(id, outId, value, min, max, digits) {
    var s = $(id);
    s.min = String(min); s.max = String(max); s.value = String(value);
    $(outId).textContent = Number(value).toFixed(digits);
  }

  function applyThresholdSettings(m) {
    var ps = m.ps, t = num(m.meta.node_threshold);
    state.tN = t !== null ? t : (num(ps.node_threshold) !== null ? num(ps.node_threshold) : 1);
    state.tE = num(ps.edge_threshold) !== null ? num(ps.edge_threshold) : 1;
    state.exportN = num(ps.export_node_threshold) !== null ? num(ps.export_node_threshold) : state.tN;
    state.exportE = num(ps.export_edge_threshold) !== null ? num(ps.export_edge_threshold) : state.tE;
    setSlider('threshold', 'threshold-value', state.tN, 0.05, Math.max(state.exportN, state.tN), 2);
    setSlider('edge-threshold', 'edge-threshold-value', state.tE, 0.5, Math.max(state.exportE, state.tE), 3);
  }

  function loadGraph(name) {
    setStatus('loading…');
    showError('');
    var t0 = performance.now();
    return getJSON('/graphs/' + encodeURIComponent(name) + '.json').then(function (data) {
      timing.fetch = Math.round(performance.now() - t0);
      var m = timed('model', function () { return buildModel(data); });
      state.name = name; state.data = data;
      state.nodes = m.nodes; state.byId = m.byId; state.links = m.links; state.qkOnly = m.qkOnly; state.upward = m.upward;
      state.nLayers = m.nLayers; state.tokens = m.tokens; state.meta = m.meta;
      applyThresholdSettings(m);
      state.qParams = normQParams(data.qParams);
      state.dirty = false;
      $('save').disabled = true;
      $('graph-title').textContent = (m.meta.slug || name) + (m.meta.scan ? '  ·  ' + m.meta.scan : '');
      $('prompt').textContent = typeof m.meta.prompt === 'string' ? m.meta.prompt : '';
      renderGraphList();
      state.view = {k: 1, x: 0, y: 0};
      timed('prune', prune);
      renderAll();
      setStatus('');
      document.body.setAttribute('data-loaded', name);
    }).catch(function (err) {
      var msg = 'Could not open graph ' + JSON.stringify(name) + ': ' + String(err.message || err);
      showError(msg);
      setStatus('error', true);
      state.name = name; renderGraphList();
      document.body.setAttribute('data-loaded', name);
      document.body.setAttribute('data-load-error', name);
    });
  }

  // ---------- layout: fit to the panel ----------
  function panelSize() {
    var svg = $('graph'), r = svg.getBoundingClientRect();
    return {w: Math.max(320, r.width), h: Math.max(240, r.height)};
  }

  // Supernodes collapse their visible members into one unit; everything else is its own unit.
  function buildUnits() {
    var units = {}, memberOf = {};
    state.qParams.supernodes.forEach(function (g, gi) {
      var mem = g.slice(1).filter(function (id) { return state.vis[id] && !memberOf[id]; });
      if (!mem.length) return;
      var key = 'S' + gi;
      units[key] = {key: key, kind: 'supernode', label: g[0], members: mem};
      mem.forEach(function (id) { memberOf[id] = key; });
    });
    state.memberOf = memberOf;
    state.units = units;
  }

  function layout() {
    var size = panelSize(), P = Math.max(state.tokens.length, 1), R = state.nLayers + 2;
    state.nodes.forEach(function (n) { if (state.vis[n.id] && n.pos + 1 > P) P = n.pos + 1; });
    var cells = {}, need = [];
    for (var p = 0; p < P; p++) need.push(1);
    state.nodes.forEach(function (n) {
      if (!state.vis[n.id]) return;
      var k = n.row + ':' + n.pos;
      (cells[k] = cells[k] || []).push(n);
      need[n.pos] = Math.max(need[n.pos], cells[k].length);
    });
    var W = size.w - M.l - M.r, H = size.h - M.t - M.b, rowH = H / R;
    // columns share the width by how crowded they are (square root: a crowded cell wraps to lines)
    var wsum = 0, weights = need.map(function (c) { var w = Math.max(1, Math.sqrt(c) * 1.5); wsum += w; return w; });
    var x0 = M.l, colX = [], colW = [];
    weights.forEach(function (w) { var cw = W * w / wsum; colX.push(x0); colW.push(cw); x0 += cw; });
    var xy = {}, r = 7;
    Object.keys(cells).forEach(function (key) {
      var list = cells[key], n0 = list[0], cw = colW[n0.pos], cx = colX[n0.pos], g = cellGrid(list.length, cw, rowH);
      list.sort(function (a, b) { return (b.score || 0) - (a.score || 0) || (a.rank || 0) - (b.rank || 0); });
      var yTop = M.t + (R - 1 - n0.row) * rowH + (rowH - g.lines * g.lineH) / 2;
      list.forEach(function (n, i) {
        var line = Math.floor(i / g.perLine), j = i % g.perLine, inLine = Math.min(g.perLine, list.length - line * g.perLine);
        // odd lines shift by half a step so a wrapped cell reads as a staggered block, not a column
        var shift = (line % 2) * g.step / 2 * (inLine < g.perLine ? 0 : 1);
        xy[n.id] = {x: cx + cw / 2 + (j - (inLine - 1) / 2) * g.step + shift - (g.lines > 1 ? g.step / 4 : 0), y: yTop + g.lineH * (line + 0.5)};
      });
      r = Math.min(r, g.r);
    });
    state.layout = {P: P, R: R, rowH: rowH, colX: colX, colW: colW, size: size, radius: r};
    state.xy = xy;
    buildUnits();
    Object.keys(state.units).forEach(function (k) {
      var u = state.units[k], sx = 0, sy = 0;
      u.members.forEach(function (id) { sx += xy[id].x; sy += xy[id].y; });
      u.x = sx / u.members.length; u.y = sy / u.members.length;
    });
  }

  // Nodes of one layer x position cell: as many per line as fit at a comfortable spacing, wrapped
  // onto more lines when crowded (the row's height is there to be used), never overlapping.
  function cellGrid(count, cw, rowH) {
    var avail = Math.max(8, cw - 8), perLine = Math.max(1, Math.min(count, Math.floor(avail / 22)));
    var lines = Math.ceil(count / perLine), maxLines = Math.max(1, Math.floor(rowH * 0.9 / 14));
    if (lines > maxLines) { lines = maxLines; perLine = Math.ceil(count / lines); }
    perLine = Math.ceil(count / lines);
    var step = Math.min(26, avail / perLine), lineH = Math.min(26, rowH * 0.9 / lines);
    return {perLine: perLine, lines: lines, step: step, lineH: lineH, r: Math.max(2, Math.min(step, lineH) / 2 - 1.5)};
  }

  // screen coordinates of a node or unit under the current zoom / pan
  function S(p) { var v = state.view; return {x: p.x * v.k + v.x, y: p.y * v.k + v.y}; }
  function posOf(id) {
    var key = state.memberOf[id];
    return key ? S(state.units[key]) : S(state.xy[id]);
  }

  // ---------- drawing ----------
  function nodeShape(kind, r) {
    if (kind === 'feature') return sv('circle', {'class': 'shape', r: r});
    if (kind === 'error') return sv('rect', {'class': 'shape', x: -r, y: -r, width: 2 * r, height: 2 * r, transform: 'rotate(45)'});
    return sv('rect', {'class': 'shape', x: -r, y: -r, width: 2 * r, height: 2 * r, rx: 1.5});
  }

  function drawAxes(svg) {
    var L = state.layout, v = state.view, g = sv('g', {'class': 'axes'});
    for (var r = 0; r < L.R; r++) {
      var y = (M.t + (L.R - 1 - r + 0.5) * L.rowH) * v.k + v.y;
      g.appendChild(sv('line', {'class': 'gridline', x1: M.l, x2: L.size.w - M.r, y1: y + L.rowH * v.k / 2, y2: y + L.rowH * v.k / 2}));
    }
    svg.appendChild(g);
    // sticky axes: layer names keep to the left edge, tokens to the bottom edge
    var ax = sv('g', {'class': 'axis'});
    ax.appendChild(sv('rect', {'class': 'axis-bg', x: 0, y: 0, width: M.l - 4, height: L.size.h}));
    ax.appendChild(sv('rect', {'class': 'axis-bg', x: 0, y: L.size.h - M.b + 6, width: L.size.w, height: M.b}));
    for (r = 0; r < L.R; r++) {
      var yc = (M.t + (L.R - 1 - r + 0.5) * L.rowH) * v.k + v.y;
      if (yc < 4 || yc > L.size.h - M.b + 4) continue;
      var t = sv('text', {'class': 'axis-layer', x: 8, y: yc + 4});
      t.textContent = r === 0 ? 'Emb' : (r === L.R - 1 ? 'Logit' : 'L' + (r - 1));
      ax.appendChild(t);
    }
    var rotate = L.colW.some(function (w) { return w * v.k < 56; });
    for (var p = 0; p < L.P; p++) {
      var xc = (L.colX[p] + L.colW[p] / 2) * v.k + v.x;
      if (xc < M.l - 10 || xc > L.size.w) continue;
      var tt = sv('text', {'class': 'axis-token', x: xc, y: L.size.h - M.b + 22, 'text-anchor': rotate ? 'end' : 'middle'});
      if (rotate) tt.setAttribute('transform', 'rotate(-35 ' + xc.toFixed(1) + ' ' + (L.size.h - M.b + 22) + ')');
      tt.textContent = short(p < state.tokens.length ? state.tokens[p] : '', 14);
      var title = sv('title'); title.textContent = p + ': ' + JSON.stringify(p < state.tokens.length ? state.tokens[p] : '');
      tt.appendChild(title);
      ax.appendChild(tt);
    }
    return ax;
  }

  function drawEdges(svg) {
    var g = sv('g', {'class': 'edges'}), drawn = state.visLinks.slice(0, MAX_DRAWN), maxW = 0;
    drawn.forEach(function (e) { maxW = Math.max(maxW, Math.abs(e.w)); });
    drawn.forEach(function (e) {
      var a = posOf(e.s.id), b = posOf(e.t.id);
      if (state.memberOf[e.s.id] && state.memberOf[e.s.id] === state.memberOf[e.t.id]) return;
      var rel = Math.abs(e.w) / (maxW || 1);
      g.appendChild(sv('path', {
        'class': 'edge ' + (e.w >= 0 ? 'pos' : 'neg'), 'data-source': e.s.id, 'data-target': e.t.id,
        d: 'M' + a.x.toFixed(1) + ' ' + a.y.toFixed(1) + 'L' + b.x.toFixed(1) + ' ' + b.y.toFixed(1),
        'stroke-width': (0.35 + 3.2 * Math.sqrt(rel)).toFixed(2), 'stroke-opacity': (0.12 + 0.6 * Math.sqrt(rel)).toFixed(2)
      }));
    });
    state.drawn = drawn;
    svg.appendChild(g);
    svg.appendChild(sv('g', {'class': 'edges-hl', id: 'edges-hl'}));
  }

  function drawNodes(svg) {
    var g = sv('g', {'class': 'nodes'}), r = Math.max(2.5, Math.min(9, state.layout.radius * Math.sqrt(state.view.k)));
    var maxScore = 0;
    state.nodes.forEach(function (n) { if (state.vis[n.id] && n.kind === 'feature') maxScore = Math.max(maxScore, n.score || 0); });
    state.nodes.forEach(function (n) {
      if (!state.vis[n.id] || state.memberOf[n.id]) return;
      var p = S(state.xy[n.id]);
      var ng = sv('g', {'class': 'node kind-' + n.kind, 'data-node-id': n.id, transform: 'translate(' + p.x.toFixed(1) + ',' + p.y.toFixed(1) + ')'});
      var rr = n.kind === 'feature' && maxScore > 0 ? r * (0.65 + 0.35 * Math.sqrt((n.score || 0) / maxScore)) : (n.kind === 'error' ? r * 0.7 : r);
      ng.appendChild(nodeShape(n.kind, rr));
      g.appendChild(ng);
    });
    svg.appendChild(g);
  }

  function textWidth(s, px) { return s.length * px * 0.58 + 4; }

  function boxesOverlap(a, b, pad) {
    return a.x < b.x + b.w + pad && b.x < a.x + a.w + pad && a.y < b.y + b.h + pad && b.y < a.y + a.h + pad;
  }

  // Supernode glyphs: one rounded box with the label, pushed apart until no two overlap and kept
  // inside the plot area (a glyph centred on the last column would otherwise hang off the panel).
  function clampIntoPlot(b) {
    var v = state.view, L = state.layout;
    var left = M.l * v.k + v.x, right = (L.size.w - M.r) * v.k + v.x;
    var top = M.t * v.k + v.y, bottom = (L.size.h - M.b) * v.k + v.y;
    b.x = Math.max(left, Math.min(b.x, right - b.w));
    b.y = Math.max(top, Math.min(b.y, bottom - b.h));
  }

  // Push overlapping glyphs apart along the axis of least overlap (only vertically when `vertical`).
  function separateGlyphs(boxes, vertical) {
    for (var it = 0; it < 200; it++) {
      var moved = false;
      for (var i = 0; i < boxes.length; i++) for (var j = i + 1; j < boxes.length; j++) {
        var a = boxes[i], b = boxes[j];
        if (!boxesOverlap(a, b, 4)) continue;
        var ox = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x) + 4;
        var oy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y) + 4;
        if (vertical || oy < ox) { var sy = (a.y <= b.y ? 1 : -1) * oy / 2; a.y -= sy; b.y += sy; }
        else { var sx = (a.x <= b.x ? 1 : -1) * ox / 2; a.x -= sx; b.x += sx; }
        moved = true;
      }
      if (!moved) return;
    }
  }

  function placeSupernodes() {
    var boxes = Object.keys(state.units).map(function (k) {
      var u = state.units[k], p = S(u), text = short(u.label, 32) + ' (' + u.members.length + ')';
      var w = textWidth(text, 11) + 14, h = 22;
      return {u: u, text: text, x: p.x - w / 2, y: p.y - h / 2, w: w, h: h};
    });
    separateGlyphs(boxes, false);
    boxes.forEach(clampIntoPlot);
    separateGlyphs(boxes, true);  // clamping may have pushed two together against an edge
    // then step each glyph up or down, least first, off the nodes it would hide (within its row)
    var nr = state.layout.radius + 2, nodes = [];
    state.nodes.forEach(function (n) {
      if (!state.vis[n.id] || state.memberOf[n.id]) return;
      var p = S(state.xy[n.id]);
      nodes.push({x: p.x - nr, y: p.y - nr, w: 2 * nr, h: 2 * nr});
    });
    var reach = state.layout.rowH * state.view.k * 0.6;
    boxes.forEach(function (b, i) {
      function clearAt(dy) {
        var c = {x: b.x, y: b.y + dy, w: b.w, h: b.h}, inside = {x: c.x, y: c.y, w: c.w, h: c.h};
        clampIntoPlot(inside);
        return inside.y === c.y && nodes.every(function (o) { return !boxesOverlap(c, o, 1); }) &&
          boxes.every(function (o, j) { return j === i || !boxesOverlap(c, o, 4); });
      }
      if (clearAt(0)) return;
      for (var d = 4; d <= reach; d += 4) {
        if (clearAt(-d)) { b.y -= d; return; }
        if (clearAt(d)) { b.y += d; return; }
      }
    });
    var v = state.view;
    boxes.forEach(function (b) {  // glyph centre in world units, so edges meet the moved box
      b.u.x = (b.x + b.w / 2 - v.x) / v.k; b.u.y = (b.y + b.h / 2 - v.y) / v.k;
    });
    return boxes;
  }

  function drawSupernodes(svg, boxes) {
    var g = sv('g', {'class': 'supernodes'});
    boxes.forEach(function (b) {
      var sg = sv('g', {'class': 'supernode', 'data-supernode': b.u.label, 'data-unit': b.u.key,
        transform: 'translate(' + b.x.toFixed(1) + ',' + b.y.toFixed(1) + ')'});
      sg.appendChild(sv('rect', {'class': 'supernode-box', x: 0, y: 0, width: b.w.toFixed(1), height: b.h, rx: 8}));
      var t = sv('text', {'class': 'supernode-label', x: (b.w / 2).toFixed(1), y: 15, 'text-anchor': 'middle'});
      t.textContent = b.text;
      sg.appendChild(t);
      g.appendChild(sg);
    });
    svg.appendChild(g);
    return boxes.map(function (b) { return {x: b.x, y: b.y, w: b.w, h: b.h}; });
  }

  // Text labels: pinned, clicked and searched nodes always; then the most influential features
  // while they fit without overlapping.
  function drawLabels(svg, taken) {
    var q = state.qParams, want = [], seen = {};
    function add(id, force) { if (!seen[id] && state.vis[id] && !state.memberOf[id]) { seen[id] = true; want.push({id: id, force: force}); } }
    if (q.clickedId) add(q.clickedId, true);
    q.pinnedIds.forEach(function (id) { add(id, true); });
    state.nodes.filter(function (n) { return state.vis[n.id] && (n.kind === 'feature' || n.kind === 'logit'); })
      .sort(function (a, b) { return (b.score || 0) - (a.score || 0); })
      .slice(0, N_LABELS + 6).forEach(function (n) { add(n.id, false); });
    var g = sv('g', {'class': 'labels'}), placed = taken.slice(), count = 0, L = state.layout, nr = L.radius + 1;
    var nodeBoxes = [];  // unforced labels also keep off the nodes
    state.nodes.forEach(function (n) {
      if (!state.vis[n.id] || state.memberOf[n.id]) return;
      var p = S(state.xy[n.id]);
      nodeBoxes.push({x: p.x - nr, y: p.y - nr, w: 2 * nr, h: 2 * nr});
    });
    want.forEach(function (w) {
      if (!w.force && count >= N_LABELS) return;
      var n = state.byId[w.id], p = S(state.xy[w.id]), text = short(displayLabel(n), 30);
      var bw = textWidth(text, 11), bh = 14, opts = [[-bw / 2, -nr - 15], [nr + 2, -7], [-nr - 2 - bw, -7], [-bw / 2, nr + 1]];
      for (var i = 0; i < opts.length; i++) {
        var box = {x: p.x + opts[i][0], y: p.y + opts[i][1], w: bw, h: bh};
        var inside = box.x >= M.l && box.x + bw <= L.size.w - 2 && box.y >= 0 && box.y + bh <= L.size.h - M.b;
        var free = inside && placed.every(function (o) { return !boxesOverlap(box, o, 1); }) &&
          (w.force || nodeBoxes.every(function (o) { return !boxesOverlap(box, o, 0); }));
        if (free || (w.force && i === opts.length - 1)) {
          placed.push(box);
          var t = sv('text', {'class': 'node-label' + (w.force ? ' strong' : ''), 'data-node-id': w.id, x: box.x.toFixed(1), y: (box.y + 11).toFixed(1)});
          t.textContent = text;
          g.appendChild(t);
          if (!w.force) count++;
          break;
        }
      }
    });
    svg.appendChild(g);
  }

  var timing = window.__circuitTraceTiming = {};  // ms of the last load / prune / render, for tests
  function timed(name, f) {
    var t0 = performance.now(), out = f();
    timing[name] = Math.round(performance.now() - t0);
    return out;
  }

  function renderGraph() { timed('render', renderGraphNow); }
  function renderGraphNow() {
    var svg = $('graph');
    clear(svg);
    if (!state.data) return;
    layout();
    var boxes = placeSupernodes();
    svg.appendChild(sv('rect', {'class': 'bg', x: 0, y: 0, width: '100%', height: '100%'}));
    var axes = drawAxes(svg);
    drawEdges(svg);
    drawNodes(svg);
    var taken = drawSupernodes(svg, boxes);
    drawLabels(svg, taken);
    svg.appendChild(axes);
    var nE = state.visLinks.length, nV = Object.keys(state.vis).length;
    $('counts').textContent = nV + ' nodes · ' + nE + ' edges' + (nE > state.drawn.length ? ' (' + state.drawn.length + ' strongest drawn)' : '');
    svg.setAttribute('data-visible-nodes', String(nV));
    svg.setAttribute('data-visible-edges', String(nE));
    applyMarks();
  }

  var frame = null;
  function scheduleRender() {
    if (frame !== null) return;
    frame = window.requestAnimationFrame(function () { frame = null; renderGraph(); });
  }

  // ---------- marks, highlight, hover card ----------
  function focusId() { return state.hover || (state.qParams.clickedId && state.vis[state.qParams.clickedId] ? state.qParams.clickedId : ''); }

  function applyMarks() {
    var svg = $('graph'), q = state.qParams, pinned = {}, term = state.search.toLowerCase();
    q.pinnedIds.forEach(function (i) { pinned[i] = true; });
    Array.prototype.forEach.call(svg.querySelectorAll('g.node'), function (g) {
      var id = g.getAttribute('data-node-id'), n = state.byId[id];
      g.classList.toggle('pinned', !!pinned[id]);
      g.classList.toggle('clicked', id === q.clickedId);
      g.classList.toggle('match', !!term && matches(n, term));
    });
    svg.classList.toggle('searching', !!term);
    highlight(focusId());
  }

  function highlight(id) {
    var svg = $('graph'), hl = $('edges-hl');
    if (!hl) return;
    clear(hl);
    var member = {};
    if (id && state.units[id]) state.units[id].members.forEach(function (m) { member[m] = true; }); else if (id) member[id] = true;
    svg.classList.toggle('has-focus', !!id);
    var drawnSet = {};
    Array.prototype.forEach.call(svg.querySelectorAll('path.edge'), function (p) {
      var on = !!id && !!(member[p.getAttribute('data-source')] || member[p.getAttribute('data-target')]);
      p.classList.toggle('hl', on);
      if (on) drawnSet[p.getAttribute('data-source') + '\u0000' + p.getAttribute('data-target')] = true;
    });
    if (!id) return;
    var extra = 0;  // the focused node's edges that were thinned away are drawn on top
    state.visLinks.forEach(function (e) {
      if (extra >= 200 || !(member[e.s.id] || member[e.t.id]) || drawnSet[e.s.id + '\u0000' + e.t.id]) return;
      var a = posOf(e.s.id), b = posOf(e.t.id);
      hl.appendChild(sv('path', {'class': 'edge hl extra ' + (e.w >= 0 ? 'pos' : 'neg'), 'data-source': e.s.id, 'data-target': e.t.id,
        d: 'M' + a.x.toFixed(1) + ' ' + a.y.toFixed(1) + 'L' + b.x.toFixed(1) + ' ' + b.y.toFixed(1), 'stroke-width': 1.2}));
      extra++;
    });
  }

  function unitEdges(key, dir) {
    var u = state.units[key], list = [];
    if (!u) { var n = state.byId[key]; return n ? (dir === 'in' ? n.ins : n.outs) : []; }
    u.members.forEach(function (id) { list = list.concat(dir === 'in' ? state.byId[id].ins : state.byId[id].outs); });
    return list.sort(function (a, b) { return Math.abs(b.w) - Math.abs(a.w); });
  }

  function cardRow(tbl, k, v) { var tr = el('tr'); tr.appendChild(el('td', '', k)); tr.appendChild(el('td', '', v)); tbl.appendChild(tr); }

  function showCard(id, ev) {
    var card = $('hovercard'), n = state.byId[id], u = state.units[id];
    clear(card);
    if (u) {
      card.appendChild(el('div', 'card-title', u.label));
      card.appendChild(el('div', 'muted', 'supernode of ' + u.members.length + ' nodes'));
      u.members.slice(0, 8).forEach(function (m) { card.appendChild(el('div', 'card-sub', short(displayLabel(state.byId[m]), 50))); });
    } else {
      card.appendChild(el('div', 'card-title', displayLabel(n)));
      var t = el('table');
      cardRow(t, 'id', n.id);
      cardRow(t, 'layer', n.kind === 'embedding' ? 'embeddings' : (n.kind === 'logit' ? 'logits' : n.layer + ' (' + n.kind + ')'));
      cardRow(t, 'position', n.pos + ' ' + JSON.stringify(n.token));
      cardRow(t, 'activation', fmt(n.activation));
      cardRow(t, 'node influence', fmt(n.score));
      if (n.rank !== null) cardRow(t, 'influence rank', 'within the top ' + (n.rank * 100).toFixed(1) + '% of influence');
      if (n.labelScore !== null) cardRow(t, 'label agreement', fmt(n.labelScore));
      card.appendChild(t);
    }
    [['in', 'top inputs', '←'], ['out', 'top outputs', '→']].forEach(function (d) {
      var es = unitEdges(id, d[0]).slice(0, CARD_EDGES);
      if (!es.length) return;
      card.appendChild(el('div', 'card-h', d[1]));
      es.forEach(function (e) {
        var other = d[0] === 'in' ? e.s : e.t;
        card.appendChild(el('div', 'card-edge ' + (e.w >= 0 ? 'pos' : 'neg'), (e.w >= 0 ? '+' : '') + fmt(e.w) + ' ' + d[2] + ' ' + short(displayLabel(other), 40)));
      });
    });
    card.hidden = false;
    var wrap = $('graph-wrap').getBoundingClientRect(), x = ev.clientX - wrap.left + 14, y = ev.clientY - wrap.top + 14;
    if (x + 300 > wrap.width) x = Math.max(4, x - 330);
    if (y + card.offsetHeight > wrap.height) y = Math.max(4, y - 28 - card.offsetHeight);  // above the node
    card.style.left = x + 'px'; card.style.top = y + 'px';
  }

  function hideCard() { $('hovercard').hidden = true; }

  function targetId(ev) {
    var g = ev.target.closest ? ev.target.closest('g.node, g.supernode') : null;
    if (!g) return null;
    return g.getAttribute('data-node-id') || g.getAttribute('data-unit');
  }

  // ---------- zoom and pan ----------
  function zoomAt(factor, cx, cy) {
    var v = state.view, k = Math.max(0.3, Math.min(12, v.k * factor)), f = k / v.k;
    v.x = cx - (cx - v.x) * f; v.y = cy - (cy - v.y) * f; v.k = k;
    scheduleRender();
  }
  function fit() { state.view = {k: 1, x: 0, y: 0}; scheduleRender(); }

  function bindGraphEvents() {
    var svg = $('graph'), drag = null;
    svg.addEventListener('wheel', function (ev) {
      ev.preventDefault();
      var r = svg.getBoundingClientRect();
      zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
    }, {passive: false});
    svg.addEventListener('mousedown', function (ev) {
      if (ev.shiftKey) ev.preventDefault();  // no text selection on shift-click
      if (ev.button !== 0 || targetId(ev)) return;
      drag = {x: ev.clientX, y: ev.clientY, vx: state.view.x, vy: state.view.y, moved: false};
    });
    window.addEventListener('mousemove', function (ev) {
      if (!drag) return;
      var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      state.view.x = drag.vx + dx; state.view.y = drag.vy + dy;
      svg.classList.add('panning');
      scheduleRender();
    });
    window.addEventListener('mouseup', function () {
      if (drag && drag.moved) svg.setAttribute('data-panned', '1');
      setTimeout(function () { drag = null; svg.classList.remove('panning'); }, 0);
    });
    svg.addEventListener('mouseover', function (ev) {
      var id = targetId(ev);
      if (!id || drag) return;
      state.hover = id; highlight(id); showCard(id, ev);
    });
    svg.addEventListener('mouseout', function (ev) {
      var id = targetId(ev);
      if (!id) return;
      var to = ev.relatedTarget && ev.relatedTarget.closest ? ev.relatedTarget.closest('g.node, g.supernode') : null;
      if (to && (to.getAttribute('data-node-id') || to.getAttribute('data-unit')) === id) return;
      state.hover = null; hideCard(); highlight(focusId());
    });
    svg.addEventListener('click', function (ev) {
      var id = targetId(ev);
      if (drag && drag.moved) return;
      if (!id) { if (state.qParams.clickedId) { state.qParams.clickedId = ''; markDirty(); applyMarks(); renderDetails(); } return; }
      if (state.units[id]) { clickNode(state.units[id].members[0]); return; }
      if (ev.shiftKey) togglePin(id); else clickNode(id);
    });
    $('zoom-in').addEventListener('click', function () { var s = panelSize(); zoomAt(1.4, s.w / 2, s.h / 2); });
    $('zoom-out').addEventListener('click', function () { var s = panelSize(); zoomAt(1 / 1.4, s.w / 2, s.h / 2); });
    $('fit').addEventListener('click', fit);
    window.addEventListener('resize', function () { if (state.data) scheduleRender(); });
  }

  // ---------- search ----------
  function matches(n, term) {
    return !!n && (displayLabel(n).toLowerCase().indexOf(term) >= 0 || n.id.toLowerCase().indexOf(term) >= 0);
  }
  function onSearch() {
    state.search = $('search').value.trim();
    var term = state.search.toLowerCase(), ul = $('search-results');
    clear(ul);
    applyMarks();
    if (!term) { ul.hidden = true; return; }
    var hits = state.nodes.filter(function (n) { return matches(n, term); })
      .sort(function (a, b) { return (state.vis[b.id] ? 1 : 0) - (state.vis[a.id] ? 1 : 0) || (b.score || 0) - (a.score || 0); });
    hits.slice(0, 20).forEach(function (n) {
      var li = el('li', state.vis[n.id] ? '' : 'hidden-node');
      li.setAttribute('data-node-id', n.id);
      li.appendChild(el('span', 'lbl', short(displayLabel(n), 40)));
      li.appendChild(el('span', 'muted', ' ' + n.id + (state.vis[n.id] ? '' : ' (pruned at this threshold)')));
      li.addEventListener('mousedown', function (ev) { ev.preventDefault(); pickSearch(n.id); });
      ul.appendChild(li);
    });
    if (!hits.length) ul.appendChild(el('li', 'muted', 'no match'));
    ul.hidden = false;
  }
  function pickSearch(id) {
    $('search-results').hidden = true;
    clickNode(id);
    if (state.vis[id] && state.xy[id]) {  // bring it into view if zoomed away
      var p = S(state.xy[id]), s = panelSize();
      if (p.x < M.l || p.x > s.w || p.y < 0 || p.y > s.h - M.b) { state.view.x += s.w / 2 - p.x; state.view.y += s.h / 2 - p.y; scheduleRender(); }
    }
  }

  // ---------- interactions ----------
  function markDirty() { state.dirty = true; $('save').disabled = false; }

  function clickNode(id) {
    state.qParams.clickedId = id;
    markDirty();
    renderGraph();
    renderDetails();
  }

  function togglePin(id) {
    var p = state.qParams.pinnedIds, i = p.indexOf(id);
    if (i >= 0) {
      p.splice(i, 1);
      // a node that leaves the subgraph leaves its supernodes too
      state.qParams.supernodes = state.qParams.supernodes.map(function (g) {
        return g.filter(function (x, j) { return j === 0 || x !== id; });
      }).filter(function (g) { return g.length >= 2; });
    } else p.push(id);
    markDirty();
    renderGraph();
    renderSubgraph();
    renderDetails();
  }

  // ---------- detail panel ----------
  function edgeList(edges, dir) {
    var ul = el('ul', 'edge-list');
    edges.slice(0, TOP_EDGES).forEach(function (e) {
      var other = dir === 'in' ? e.s : e.t;
      var li = el('li');
      li.setAttribute('data-node-id', other.id);
      li.appendChild(el('span', 'w ' + (e.w >= 0 ? 'pos' : 'neg'), (e.w >= 0 ? '+' : '') + fmt(e.w)));
      li.appendChild(el('span', 'lbl', displayLabel(other)));
      li.title = other.id;
      li.addEventListener('click', function () { clickNode(other.id); });
      ul.appendChild(li);
    });
    if (!edges.length) ul.appendChild(el('li', 'muted', 'none at these thresholds'));
    return ul;
  }

  function evidenceText(ev) {
    if (ev === null || ev === undefined || ev === '') return '';
    if (typeof ev === 'string') return ev;
    if (Array.isArray(ev)) return ev.map(evidenceText).join('; ');
    if (typeof ev === 'object') return Object.keys(ev).map(function (k) { return k + ': ' + evidenceText(ev[k]); }).join(' · ');
    return String(ev);
  }

  // The lists of `label_evidence` (circuit_trace.dashboards.labels), in reading order:
  // key, row title, whether items name tokens (quoted, so spaces show), how values read.
  var EVIDENCE_ROWS = [
    ['activating_tokens', 'fires on', true, 'share'],
    ['context_concepts', 'contexts name', false, 'share'],
    ['top_logits', 'top logit effects', true, 'effect'],
    ['logit_concepts', 'logits name', false, 'share']
  ];

  function chips(list, isToken, how) {
    var d = el('div', 'chips');
    list.slice(0, 6).forEach(function (it) {
      var name = Array.isArray(it) ? it[0] : it, v = Array.isArray(it) ? num(it[1]) : null;
      var c = el('span', 'chip');
      c.appendChild(el('span', 'chip-name', name === null || name === undefined ? '(no concept)' : (isToken ? JSON.stringify(String(name)) : String(name))));
      if (v !== null) c.appendChild(el('span', 'chip-val ' + (v >= 0 ? 'pos' : 'neg'), how === 'share' ? Math.round(v * 100) + '%' : (v >= 0 ? '+' : '') + fmt(v)));
      d.appendChild(c);
    });
    return d;
  }

  function evidenceRow(t, title, content) {
    var row = el('div', 'ev-row');
    row.appendChild(el('div', 'ev-title', title));
    row.appendChild(content);
    t.appendChild(row);
  }

  function renderEvidence(ev) {
    var t = el('div', 'evidence'), known = { rule: 1, context_source: 1, top_contexts: 1 };
    if (typeof ev.rule === 'string') evidenceRow(t, 'why', el('span', 'rule', ev.rule));
    EVIDENCE_ROWS.forEach(function (r) {
      known[r[0]] = 1;
      if (!Array.isArray(ev[r[0]]) || !ev[r[0]].length) return;
      var title = r[1] + (r[0] === 'context_concepts' && typeof ev.context_source === 'string' ? ' (' + ev.context_source + ')' : '');
      evidenceRow(t, title, chips(ev[r[0]], r[2], r[3]));
    });
    if (Array.isArray(ev.top_contexts) && ev.top_contexts.length) {
      var ctx = el('div', 'contexts');
      ev.top_contexts.slice(0, 3).forEach(function (c) { ctx.appendChild(el('div', 'ctx', '…' + String(c))); });
      evidenceRow(t, 'top contexts', ctx);
    }
    Object.keys(ev).forEach(function (k) { if (!known[k]) t.appendChild(el('div', 'ev-other', k + ': ' + evidenceText(ev[k]))); });
    return t;
  }

  function renderLabelInfo(box, score, evidence) {
    if (score === null && !evidence) return;
    var d = el('div', 'label-info');
    var head = el('div', 'label-head');
    head.appendChild(el('span', 'heuristic', 'heuristic label'));
    if (score !== null) {
      head.appendChild(el('span', 'agreement', 'agreement ' + fmt(score)));
      var bar = el('span', 'meter'), fill = el('span', 'meter-fill');
      fill.style.width = Math.round(Math.max(0, Math.min(1, score)) * 100) + '%';
      bar.title = 'how far its evidence agrees with the label (0–1)';
      bar.appendChild(fill);
      head.appendChild(bar);
    }
    d.appendChild(head);
    d.appendChild(el('div', 'muted note', 'Made automatically from the evidence below: read it before trusting the label.'));
    if (evidence && typeof evidence === 'object' && !Array.isArray(evidence)) d.appendChild(renderEvidence(evidence));
    else if (evidence) d.appendChild(el('div', 'ev-other', evidenceText(evidence)));
    box.appendChild(d);
  }

  function renderQK(box, qk) {
    box.appendChild(el('h2', '', 'QK tracing'));
    function name(id) { id = String(id); if (state.byId[id]) return displayLabel(state.byId[id]); var o = state.qkOnly[id]; return o && typeof o.clerp === 'string' && o.clerp ? o.clerp : id; }
    [['pair_wise_contributors', 'pairs (q, k)'], ['top_q_marginal_contributors', 'query side'], ['top_k_marginal_contributors', 'key side']].forEach(function (f) {
      var list = Array.isArray(qk[f[0]]) ? qk[f[0]] : [];
      if (!list.length) return;
      box.appendChild(el('div', 'muted', f[1]));
      var ul = el('ul', 'edge-list');
      list.slice(0, 8).forEach(function (it) {
        if (!Array.isArray(it) || it.length < 2) return;
        var v = it[it.length - 1], li = el('li');
        li.appendChild(el('span', 'w ' + (v >= 0 ? 'pos' : 'neg'), fmt(num(v))));
        li.appendChild(el('span', 'lbl', it.slice(0, -1).map(name).join(' × ')));
        ul.appendChild(li);
      });
      box.appendChild(ul);
    });
  }

  function renderDetails() {
    var box = $('details');
    clear(box);
    var n = state.byId[state.qParams.clickedId];
    if (!n) { box.hidden = true; return; }
    box.hidden = false;
    box.setAttribute('data-node-id', n.id);
    box.appendChild(el('h3', 'detail-label', displayLabel(n)));
    var labelBox = el('div', 'node-label');  // the feature's details may fill in the evidence later
    box.appendChild(labelBox);
    renderLabelInfo(labelBox, n.labelScore, n.labelEvidence);
    var table = el('table');
    cardRow(table, 'node', n.id);
    cardRow(table, 'type', n.kind);
    cardRow(table, 'layer', n.kind === 'embedding' ? 'embeddings' : (n.kind === 'logit' ? 'logits' : n.layer));
    cardRow(table, 'position', n.pos + '  ' + JSON.stringify(n.token));
    if (n.feature !== null && n.kind === 'feature') cardRow(table, 'feature', String(n.feature));
    cardRow(table, 'activation', fmt(n.activation));
    cardRow(table, 'node influence', fmt(n.score));
    if (n.rank !== null) cardRow(table, 'influence rank', fmt(n.rank) + ' (cumulative share; lower = more important)');
    if (n.tokenProb !== null && n.kind === 'logit') cardRow(table, 'probability', fmt(n.tokenProb));
    if (!state.vis[n.id]) cardRow(table, 'shown', 'no: pruned at these thresholds');
    box.appendChild(table);
    var pinned = state.qParams.pinnedIds.indexOf(n.id) >= 0;
    var btn = el('button', 'pin-button', pinned ? 'Unpin from subgraph' : 'Pin to subgraph');
    btn.type = 'button';
    btn.id = 'pin-button';
    btn.addEventListener('click', function () { togglePin(n.id); });
    var r = el('div', 'row'); r.appendChild(btn); box.appendChild(r);
    box.appendChild(el('h2', '', 'Top inputs'));
    box.appendChild(edgeList(n.ins, 'in'));
    box.appendChild(el('h2', '', 'Top outputs'));
    box.appendChild(edgeList(n.outs, 'out'));
    if (n.qk) renderQK(box, n.qk);
    if (n.kind === 'feature' && n.feature !== null) {
      var ex = el('div', 'examples');
      box.appendChild(ex);
      loadFeature(n, ex, labelBox);
    }
  }

  function featureBase() {
    var fd = state.meta && state.meta.feature_details;
    var b = fd && typeof fd.feature_json_base_url === 'string' ? fd.feature_json_base_url : '';
    // only relative bases under features/ can be fetched from this server (CSP connect-src 'self')
    if (b && !/^[a-z][a-z0-9+.-]*:|^\/\//i.test(b)) {
      b = b.replace(/^\.?\/+/, '').replace(/\/+$/, '');
      if (b === 'features' || b.indexOf('features/') === 0) return '/' + b.split('/').map(encodeURIComponent).join('/');
    }
    return '/features';
  }

  function loadFeature(n, box, labelBox) {
    var url = featureBase() + '/' + encodeURIComponent(String(n.feature)) + '.json';
    box.appendChild(el('div', 'muted', 'loading feature details…'));
    getJSON(url).then(function (fd) {
      if (state.qParams.clickedId !== n.id) return;
      if (!fd || typeof fd !== 'object') throw new Error('empty');
      renderFeature(fd, box);
      var score = num(fd.label_score);
      if (!n.labelEvidence && (fd.label_evidence || score !== null)) {  // show the details' evidence under the title
        clear(labelBox);
        renderLabelInfo(labelBox, score !== null ? score : n.labelScore, fd.label_evidence);
      }
    }).catch(function () {
      if (state.qParams.clickedId !== n.id) return;
      clear(box);
      box.appendChild(el('div', 'no-details muted', 'no details for this feature'));
    });
  }

  function tokenLine(list) {
    return list.slice(0, 10).map(function (t) {
      if (Array.isArray(t)) return JSON.stringify(String(t[0])) + (typeof t[1] === 'number' ? ' ' + fmt(t[1]) : '');
      if (t && typeof t === 'object') return JSON.stringify(String(t.token !== undefined ? t.token : '')) + (typeof t.value === 'number' ? ' ' + fmt(t.value) : '');
      return JSON.stringify(String(t));
    }).join('  ');
  }

  function renderFeature(fd, box) {
    clear(box);
    if (typeof fd.label === 'string' && fd.label) box.appendChild(el('div', 'fd-label', 'label: ' + fd.label));
    if (typeof fd.transcoder_id === 'string') box.appendChild(el('div', 'muted', 'transcoder: ' + fd.transcoder_id));
    [['top_logits', 'Top logits'], ['bottom_logits', 'Bottom logits']].forEach(function (f) {
      if (!Array.isArray(fd[f[0]]) || !fd[f[0]].length) return;
      box.appendChild(el('h2', '', f[1]));
      box.appendChild(el('div', 'ex', tokenLine(fd[f[0]])));
    });
    (Array.isArray(fd.examples_quantiles) ? fd.examples_quantiles : []).slice(0, 4).forEach(function (q) {
      box.appendChild(el('h2', '', 'Examples: ' + String(q.quantile_name || '')));
      var exs = Array.isArray(q.examples) ? q.examples : [];
      var maxA = 0;
      exs.forEach(function (e) { (e.tokens_acts_list || []).forEach(function (a) { if (typeof a === 'number') maxA = Math.max(maxA, a); }); });
      exs.slice(0, 8).forEach(function (e) {
        var line = el('div', 'ex');
        var toks = Array.isArray(e.tokens) ? e.tokens : [], acts = Array.isArray(e.tokens_acts_list) ? e.tokens_acts_list : [];
        toks.forEach(function (t, i) {
          var span = el('span', 'tok', String(t));
          var a = typeof acts[i] === 'number' ? acts[i] : 0;
          if (a > 0 && maxA > 0) span.style.backgroundColor = 'rgba(245,133,24,' + Math.min(1, a / maxA).toFixed(3) + ')';
          span.title = 'activation ' + fmt(a);
          line.appendChild(span);
        });
        box.appendChild(line);
      });
    });
  }

  // ---------- subgraph ----------
  function renderSubgraph() {
    var q = state.qParams;
    $('pinned-count').textContent = q.pinnedIds.length ? '(' + q.pinnedIds.length + ' pinned)' : '';
    var ul = $('pinned-list');
    clear(ul);
    var inSuper = {};
    q.supernodes.forEach(function (g, gi) { g.slice(1).forEach(function (id) { inSuper[id] = gi; }); });
    q.pinnedIds.forEach(function (id) {
      var n = state.byId[id];
      if (!n) return;
      var li = el('li', 'pinned-item');
      li.setAttribute('data-node-id', id);
      var cb = el('input'); cb.type = 'checkbox'; cb.className = 'sn-check'; cb.value = id;
      li.appendChild(cb);
      var lbl = el('span', 'lbl', displayLabel(n)); lbl.title = id;
      lbl.addEventListener('click', function () { clickNode(id); });
      li.appendChild(lbl);
      if (inSuper[id] !== undefined) li.appendChild(el('span', 'muted', '[' + q.supernodes[inSuper[id]][0] + ']'));
      var b = el('button', '', '×'); b.type = 'button'; b.title = 'unpin';
      b.addEventListener('click', function () { togglePin(id); });
      li.appendChild(b);
      ul.appendChild(li);
    });
    var sl = $('supernode-list');
    clear(sl);
    q.supernodes.forEach(function (g, gi) {
      var li = el('li', 'supernode-item');
      li.appendChild(el('span', 'lbl', g[0] + ' (' + (g.length - 1) + ')'));
      var b = el('button', '', 'ungroup'); b.type = 'button';
      b.addEventListener('click', function () { q.supernodes.splice(gi, 1); markDirty(); renderSubgraph(); renderGraph(); });
      li.appendChild(b);
      sl.appendChild(li);
    });
    drawSubgraph();
  }

  function subgraphUnits() {
    var q = state.qParams, units = [], unitOf = {};
    q.supernodes.forEach(function (g, gi) {
      var mem = g.slice(1).filter(function (id) { return state.byId[id] && !unitOf[id]; });
      if (!mem.length) return;
      var rows = mem.map(function (id) { return state.byId[id].row; }), poss = mem.map(function (id) { return state.byId[id].pos; });
      var u = {key: 'S' + gi, label: g[0], row: Math.round(rows.reduce(function (a, b) { return a + b; }, 0) / rows.length),
        pos: Math.max.apply(null, poss), kind: 'supernode', members: mem};
      units.push(u); mem.forEach(function (id) { unitOf[id] = u; });
    });
    q.pinnedIds.forEach(function (id) {
      var n = state.byId[id];
      if (!n || unitOf[id]) return;
      var u = {key: id, label: displayLabel(n), row: n.row, pos: n.pos, kind: n.kind, members: [id]};
      units.push(u); unitOf[id] = u;
    });
    return {units: units, unitOf: unitOf};
  }

  function drawSubgraph() {
    var svg = $('subgraph'), su = subgraphUnits(), units = su.units, unitOf = su.unitOf;
    clear(svg);
    var W = 340, rowsUsed = {};
    units.forEach(function (u) { rowsUsed[u.row] = true; });
    var rowList = Object.keys(rowsUsed).map(Number).sort(function (a, b) { return b - a; });
    var H = Math.max(60, rowList.length * 64 + 16);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('height', H);
    var defs = sv('defs');
    ['pos', 'neg'].forEach(function (s) {
      var mk = sv('marker', {id: 'arrow-' + s, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse', markerUnits: 'userSpaceOnUse'});
      mk.appendChild(sv('path', {d: 'M0 0L10 5L0 10z', 'class': 'arrowhead ' + s}));
      defs.appendChild(mk);
    });
    svg.appendChild(defs);
    if (!units.length) {
      var t0 = sv('text', {x: 10, y: 34}); t0.textContent = 'Pin nodes to build a subgraph.'; svg.appendChild(t0);
      return;
    }
    var xy = {};
    rowList.forEach(function (r, ri) {
      var us = units.filter(function (u) { return u.row === r; }).sort(function (a, b) { return a.pos - b.pos; });
      us.forEach(function (u, i) { xy[u.key] = {x: (i + 0.5) * W / us.length, y: 24 + ri * 64}; });
    });
    var agg = {};  // summed weights between units, all exported links (the subgraph ignores thresholds)
    state.links.forEach(function (e) {
      var a = unitOf[e.s.id], b = unitOf[e.t.id];
      if (!a || !b || a === b) return;
      var k = a.key + '\u0000' + b.key;
      agg[k] = agg[k] || {a: a, b: b, w: 0};
      agg[k].w += e.w;
    });
    var maxW = 0;
    Object.keys(agg).forEach(function (k) { maxW = Math.max(maxW, Math.abs(agg[k].w)); });
    Object.keys(agg).forEach(function (k) {
      var e = agg[k], p = xy[e.a.key], r = xy[e.b.key], s = e.w >= 0 ? 'pos' : 'neg';
      var dx = r.x - p.x, dy = r.y - p.y, len = Math.sqrt(dx * dx + dy * dy) || 1, ux = dx / len, uy = dy / len;
      var x1 = p.x + ux * 12, y1 = p.y + uy * 12, x2 = r.x - ux * 13, y2 = r.y - uy * 13;
      svg.appendChild(sv('line', {'class': 'sg-edge edge ' + s, x1: x1, y1: y1, x2: x2, y2: y2, 'marker-end': 'url(#arrow-' + s + ')',
        'stroke-width': (0.8 + 3.2 * Math.abs(e.w) / (maxW || 1)).toFixed(2), 'stroke-opacity': 0.75,
        'data-source': e.a.key, 'data-target': e.b.key}));
      var wt = sv('text', {'class': 'sg-weight ' + s, x: ((x1 + x2) / 2 + 4).toFixed(1), y: ((y1 + y2) / 2).toFixed(1)});
      wt.textContent = (e.w >= 0 ? '+' : '') + fmt(e.w);
      svg.appendChild(wt);
    });
    units.forEach(function (u) {
      var p = xy[u.key];
      var g = sv('g', {'class': 'sg-node kind-' + u.kind, transform: 'translate(' + p.x.toFixed(1) + ',' + p.y.toFixed(1) + ')', 'data-unit': u.key});
      if (u.kind === 'supernode') g.appendChild(sv('rect', {'class': 'supernode-box', x: -40, y: -10, width: 80, height: 20, rx: 8}));
      else {
        var shape = nodeShape(u.kind, 6);
        shape.setAttribute('fill', KIND_COLOR[u.kind] || KIND_COLOR.feature);
        g.appendChild(shape);
      }
      var t = sv('text', {'class': 'sg-label', y: u.kind === 'supernode' ? 4 : 19, 'text-anchor': 'middle'});
      t.textContent = short(u.label, 24);
      g.appendChild(t);
      var title = sv('title'); title.textContent = u.label + (u.members.length > 1 ? ' (' + u.members.length + ' nodes)' : ''); g.appendChild(title);
      if (u.kind !== 'supernode') g.addEventListener('click', function () { clickNode(u.key); });
      svg.appendChild(g);
    });
  }

  function makeSupernode() {
    var checked = Array.prototype.map.call(document.querySelectorAll('#pinned-list input.sn-check:checked'), function (c) { return c.value; });
    var label = $('supernode-label').value.trim();
    if (!checked.length) { setStatus('check pinned nodes to group first', true); return; }
    if (!label) label = 'supernode ' + (state.qParams.supernodes.length + 1);
    // a node belongs to one supernode at a time
    state.qParams.supernodes = state.qParams.supernodes.map(function (g) {
      return g.filter(function (x, j) { return j === 0 || checked.indexOf(x) < 0; });
    }).filter(function (g) { return g.length >= 2; });
    state.qParams.supernodes.push([label].concat(checked));
    $('supernode-label').value = '';
    markDirty();
    renderSubgraph();
    renderGraph();
    setStatus('');
  }

  // ---------- save ----------
  function save() {
    if (!state.name) return;
    setStatus('saving…');
    fetch('/api/graphs/' + encodeURIComponent(state.name) + '/qparams', {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(state.qParams)
    }).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status)); return j; });
    }).then(function () {
      state.dirty = false; $('save').disabled = true; setStatus('saved');
      document.body.setAttribute('data-saved', String(Date.now()));
    }).catch(function (err) { setStatus('save failed: ' + (err.message || err), true); });
  }

  function renderAll() { renderGraph(); renderSubgraph(); renderDetails(); }

  // ---------- boot ----------
  function onThreshold() {
    state.tN = parseFloat($('threshold').value);
    state.tE = parseFloat($('edge-threshold').value);
    $('threshold-value').textContent = state.tN.toFixed(2);
    $('edge-threshold-value').textContent = state.tE.toFixed(3);
    if (!state.data) return;
    timed('prune', prune);
    scheduleRender();
    if (state.qParams.clickedId) renderDetails();
  }

  function init() {
    $('threshold').addEventListener('input', onThreshold);
    $('edge-threshold').addEventListener('input', onThreshold);
    $('save').addEventListener('click', save);
    $('make-supernode').addEventListener('click', makeSupernode);
    $('search').addEventListener('input', onSearch);
    $('search').addEventListener('keydown', function (ev) {
      var first = $('search-results').querySelector('li[data-node-id]');
      if (ev.key === 'Enter' && first) pickSearch(first.getAttribute('data-node-id'));
      if (ev.key === 'Escape') { this.value = ''; onSearch(); }
    });
    $('search').addEventListener('blur', function () { setTimeout(function () { $('search-results').hidden = true; }, 150); });
    bindGraphEvents();
    document.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape' && state.qParams && state.qParams.clickedId && ev.target === document.body) {
        state.qParams.clickedId = ''; applyMarks(); renderDetails();
      }
    });
    var m = /graph=([^&]+)/.exec(location.hash);
    var want = m ? decodeURIComponent(m[1]) : null;
    // a graph named in the URL loads at once, while the server lists the directory (which reads
    // every graph file: seconds for a directory of large graphs)
    if (want !== null) loadGraph(want);
    getJSON('/api/graphs').then(function (j) {
      state.graphs = Array.isArray(j.graphs) ? j.graphs : [];
      renderGraphList();
      if (want !== null) return null;
      var names = state.graphs.map(function (g) { return g.name; });
      var ok = state.graphs.filter(function (g) { return !g.error; });
      if (ok.length) return loadGraph(ok[0].name);
      if (names.length) return loadGraph(names[0]);
      document.body.setAttribute('data-loaded', '');
    }).catch(function (err) { setStatus(String(err.message || err), true); showError(String(err.message || err)); });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
