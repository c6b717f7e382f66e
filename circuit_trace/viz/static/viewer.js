/* circuit_trace static viewer: plain JS + SVG, no dependencies.
 *
 * Security rule: every string that comes from a graph or feature file reaches the page only through
 * textContent / setAttribute on elements made with createElement(NS); never innerHTML.
 */
(function () {
  'use strict';

  var SVGNS = 'http://www.w3.org/2000/svg';
  var MAX_EDGES = 3000;       // edges drawn in the main graph, largest |weight| first
  var TOP_EDGES = 10;         // inputs / outputs listed in the detail panel
  var ROW_H = 58, MARGIN_L = 64, MARGIN_T = 24, MARGIN_B = 70;

  var state = {
    graphs: [], name: null, data: null, nodes: [], byId: {}, links: [], ins: {}, outs: {},
    nLayers: 0, threshold: 0.8, graphThreshold: null, qParams: null, dirty: false, visible: {}, pos: {}
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
  function fmt(v) {
    if (v === null || v === undefined || typeof v !== 'number' || !isFinite(v)) return '—';
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e4)) ? v.toExponential(2) : String(Math.round(v * 1e4) / 1e4);
  }
  function setStatus(msg, isError) {
    var s = $('status');
    s.textContent = msg || '';
    s.className = 'status' + (isError ? ' error' : '');
  }
  function getJSON(url) {
    return fetch(url, {credentials: 'same-origin'}).then(function (r) {
      if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
      return r.json();
    });
  }

  // ---------- graph model ----------
  function kindOf(ft) {
    ft = String(ft || '').toLowerCase();
    if (ft.indexOf('error') >= 0) return 'error';
    if (ft.indexOf('embed') >= 0) return 'embedding';
    if (ft.indexOf('logit') >= 0) return 'logit';
    return 'feature';
  }
  function num(v) { return (typeof v === 'number' && isFinite(v)) ? v : null; }

  function buildModel(data) {
    var meta = data.metadata || {};
    var tokens = Array.isArray(meta.prompt_tokens) ? meta.prompt_tokens.map(String) : [];
    var raw = Array.isArray(data.nodes) ? data.nodes : [];
    var maxLayer = -1, logitLayer = null;
    raw.forEach(function (n) {
      var k = kindOf(n.feature_type), l = parseInt(n.layer, 10);
      if (isNaN(l)) return;
      if (k === 'logit') logitLayer = Math.max(logitLayer === null ? l : logitLayer, l);
      else maxLayer = Math.max(maxLayer, l);
    });
    var nLayers = Math.max(maxLayer + 1, logitLayer !== null ? logitLayer - 1 : 0);
    var nodes = [], byId = {};
    raw.forEach(function (n) {
      var id = String(n.node_id);
      if (Object.prototype.hasOwnProperty.call(byId, id)) return;
      var kind = kindOf(n.feature_type), row;
      if (kind === 'embedding') row = 0;
      else if (kind === 'logit') row = nLayers + 1;
      else { row = parseInt(n.layer, 10); row = isNaN(row) ? 0 : row + 1; }
      var pos = parseInt(n.ctx_idx, 10); if (isNaN(pos)) pos = 0;
      var node = {
        id: id, kind: kind, layer: String(n.layer), row: row, pos: pos,
        label: typeof n.clerp === 'string' ? n.clerp : '', activation: num(n.activation),
        influence: num(n.influence), feature: (typeof n.feature === 'number') ? n.feature : null,
        token: (pos >= 0 && pos < tokens.length) ? tokens[pos] : '', tokenProb: num(n.token_prob),
        always: kind === 'embedding' || kind === 'logit', idx: nodes.length
      };
      byId[id] = node; nodes.push(node);
    });
    var links = [], ins = {}, outs = {};
    (Array.isArray(data.links) ? data.links : []).forEach(function (l) {
      var s = byId[String(l.source)], t = byId[String(l.target)], w = num(l.weight);
      if (!s || !t || w === null || s === t) return;
      var e = {s: s, t: t, w: w};
      links.push(e);
      (ins[t.id] = ins[t.id] || []).push(e);
      (outs[s.id] = outs[s.id] || []).push(e);
    });
    links.sort(function (a, b) { return Math.abs(b.w) - Math.abs(a.w); });
    Object.keys(ins).forEach(function (k) { ins[k].sort(function (a, b) { return Math.abs(b.w) - Math.abs(a.w); }); });
    Object.keys(outs).forEach(function (k) { outs[k].sort(function (a, b) { return Math.abs(b.w) - Math.abs(a.w); }); });
    return {meta: meta, tokens: tokens, nodes: nodes, byId: byId, links: links, ins: ins, outs: outs, nLayers: nLayers};
  }

  // Dynamic pruning on the exported cumulative-influence rank. At or above the threshold the graph
  // was exported with, every exported node stays (the exporter already pruned it).
  function isVisible(n) {
    if (n.always || n.influence === null) return true;
    if (state.graphThreshold !== null && state.threshold >= state.graphThreshold - 1e-9) return true;
    return n.influence <= state.threshold + 1e-12;
  }
  function displayLabel(n) {
    if (n.label) return n.label;
    if (n.kind === 'embedding') return 'Emb: ' + JSON.stringify(n.token);
    if (n.kind === 'error') return 'Error L' + n.layer + ' @' + n.pos;
    return n.id;
  }

  function normQParams(q) {
    q = (q && typeof q === 'object') ? q : {};
    var ids = state.byId;
    var out = {
      pinnedIds: Array.isArray(q.pinnedIds) ? q.pinnedIds.map(String).filter(function (i) { return ids[i]; }) : [],
      supernodes: Array.isArray(q.supernodes) ? q.supernodes.filter(function (g) {
        return Array.isArray(g) && g.length >= 2;
      }).map(function (g) { return g.map(String); }) : [],
      linkType: typeof q.linkType === 'string' ? q.linkType : 'both',
      clickedId: typeof q.clickedId === 'string' ? q.clickedId : '',
      sg_pos: typeof q.sg_pos === 'string' ? q.sg_pos : ''
    };
    return out;
  }

  // ---------- graph list ----------
  function renderGraphList() {
    var ul = $('graph-list');
    clear(ul);
    if (!state.graphs.length) { ul.appendChild(el('li', 'muted', 'No graph JSON files in this directory.')); return; }
    state.graphs.forEach(function (g) {
      var li = el('li', g.name === state.name ? 'active' : '');
      li.setAttribute('data-name', g.name);
      li.appendChild(el('span', 'name', g.slug || g.name));
      li.appendChild(el('span', 'sub', g.prompt));
      li.appendChild(el('span', 'sub', (g.scan ? g.scan + ' · ' : '') + g.n_nodes + ' nodes · ' + g.n_links + ' links'));
      li.title = g.file;
      li.addEventListener('click', function () { selectGraph(g.name); });
      ul.appendChild(li);
    });
  }

  function selectGraph(name) {
    if (state.dirty && name !== state.name && !window.confirm('Discard unsaved qParams changes?')) return;
    location.hash = 'graph=' + encodeURIComponent(name);
    loadGraph(name);
  }

  function loadGraph(name) {
    setStatus('loading…');
    return getJSON('/graphs/' + encodeURIComponent(name) + '.json').then(function (data) {
      var m = buildModel(data);
      state.name = name; state.data = data;
      state.nodes = m.nodes; state.byId = m.byId; state.links = m.links; state.ins = m.ins; state.outs = m.outs;
      state.nLayers = m.nLayers; state.tokens = m.tokens; state.meta = m.meta;
      var t = num(m.meta.node_threshold);
      state.graphThreshold = t;
      state.threshold = t === null ? 1 : t;
      $('threshold').value = String(state.threshold);
      $('threshold-value').textContent = state.threshold.toFixed(2);
      state.qParams = normQParams(data.qParams);
      state.dirty = false;
      $('save').disabled = true;
      $('graph-title').textContent = (m.meta.slug || name) + (m.meta.scan ? '  ·  ' + m.meta.scan : '');
      $('prompt').textContent = typeof m.meta.prompt === 'string' ? m.meta.prompt : '';
      renderGraphList();
      renderAll();
      setStatus('');
      document.body.setAttribute('data-loaded', name);
    }).catch(function (err) { setStatus(String(err.message || err), true); });
  }

  // ---------- main graph ----------
  function layout(nodes, width) {
    var cells = {}, maxCell = 1;
    nodes.forEach(function (n) {
      var k = n.row + ':' + n.pos;
      (cells[k] = cells[k] || []).push(n);
    });
    Object.keys(cells).forEach(function (k) { maxCell = Math.max(maxCell, cells[k].length); });
    var P = Math.max(state.tokens.length, 1);
    nodes.forEach(function (n) { P = Math.max(P, n.pos + 1); });
    var colW = Math.max(96, Math.min(420, maxCell * 16));
    if (width) colW = Math.max(colW, (width - MARGIN_L - 10) / P);
    var rows = state.nLayers + 2;
    var H = MARGIN_T + rows * ROW_H + MARGIN_B, W = MARGIN_L + P * colW + 10;
    var pos = {};
    Object.keys(cells).forEach(function (k) {
      var members = cells[k];
      members.sort(function (a, b) { return (a.influence || 0) - (b.influence || 0) || (a.id < b.id ? -1 : 1); });
      var m = members.length, half = Math.min(0.42, 0.09 * (m - 1));
      members.forEach(function (n, i) {
        var off = m > 1 ? -half + 2 * half * i / (m - 1) : 0;
        pos[n.id] = {
          x: MARGIN_L + (n.pos + 0.5 + off) * colW,
          y: MARGIN_T + (rows - 1 - n.row + 0.5) * ROW_H
        };
      });
    });
    return {pos: pos, W: W, H: H, P: P, colW: colW, rows: rows};
  }

  function nodeShape(n, r) {
    if (n.kind === 'error') return sv('path', {'class': 'shape', d: 'M0,' + (-r * 1.3) + ' L' + (r * 1.3) + ',0 L0,' + (r * 1.3) + ' L' + (-r * 1.3) + ',0 Z'});
    if (n.kind === 'embedding' || n.kind === 'logit') return sv('rect', {'class': 'shape', x: -r, y: -r, width: 2 * r, height: 2 * r, rx: 1.5});
    return sv('circle', {'class': 'shape', r: r});
  }
  function nodeRadius(n) {
    if (n.always) return 7;
    var inf = n.influence === null ? 0.5 : Math.max(0, Math.min(1, n.influence));
    return 4 + 6 * (1 - inf);
  }

  function renderGraph() {
    var svg = $('graph');
    clear(svg);
    var vis = state.nodes.filter(isVisible);
    var visSet = {};
    vis.forEach(function (n) { visSet[n.id] = true; });
    state.visible = visSet;
    var avail = $('graph-scroll').clientWidth || 800;
    var L = layout(vis, avail);
    state.pos = L.pos;
    svg.setAttribute('width', L.W); svg.setAttribute('height', L.H);
    svg.setAttribute('viewBox', '0 0 ' + L.W + ' ' + L.H);

    var axes = sv('g', {'class': 'axes'});
    for (var r = 0; r < L.rows; r++) {
      var y = MARGIN_T + (L.rows - 1 - r + 0.5) * ROW_H;
      axes.appendChild(sv('line', {'class': 'gridline', x1: MARGIN_L, x2: L.W - 10, y1: y, y2: y}));
      var lab = sv('text', {x: 6, y: y + 4});
      lab.textContent = r === 0 ? 'Emb' : (r === L.rows - 1 ? 'Logit' : 'L' + (r - 1));
      axes.appendChild(lab);
    }
    for (var p = 0; p < L.P; p++) {
      var tx = sv('text', {'class': 'axis-token', x: MARGIN_L + (p + 0.5) * L.colW, y: L.H - MARGIN_B + 22, 'text-anchor': 'middle'});
      var tok = p < state.tokens.length ? state.tokens[p] : '';
      tx.textContent = JSON.stringify(tok.length > 16 ? tok.slice(0, 15) + '…' : tok);
      var tt = sv('title'); tt.textContent = p + ': ' + JSON.stringify(tok); tx.appendChild(tt);
      axes.appendChild(tx);
      var ix = sv('text', {x: MARGIN_L + (p + 0.5) * L.colW, y: L.H - MARGIN_B + 38, 'text-anchor': 'middle'});
      ix.textContent = String(p);
      axes.appendChild(ix);
    }
    svg.appendChild(axes);

    // supernode boxes
    var sgroup = sv('g', {'class': 'supernodes'});
    state.qParams.supernodes.forEach(function (g) {
      var pts = g.slice(1).map(function (id) { return L.pos[id]; }).filter(Boolean);
      if (!pts.length) return;
      var xs = pts.map(function (q) { return q.x; }), ys = pts.map(function (q) { return q.y; });
      var x0 = Math.min.apply(null, xs) - 14, x1 = Math.max.apply(null, xs) + 14;
      var y0 = Math.min.apply(null, ys) - 16, y1 = Math.max.apply(null, ys) + 16;
      sgroup.appendChild(sv('rect', {'class': 'supernode-box', x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 6}));
      var t = sv('text', {'class': 'supernode-label', x: x0 + 3, y: y0 - 3});
      t.textContent = g[0];
      sgroup.appendChild(t);
    });
    svg.appendChild(sgroup);

    // edges
    var eg = sv('g', {'class': 'edges'});
    var drawn = 0, maxW = 0;
    var shown = [];
    for (var i = 0; i < state.links.length && shown.length < MAX_EDGES; i++) {
      var e = state.links[i];
      if (visSet[e.s.id] && visSet[e.t.id]) shown.push(e);
    }
    shown.forEach(function (e) { maxW = Math.max(maxW, Math.abs(e.w)); });
    shown.slice().reverse().forEach(function (e) {
      var a = L.pos[e.s.id], b = L.pos[e.t.id];
      var midY = (a.y + b.y) / 2;
      var path = sv('path', {
        'class': 'edge ' + (e.w >= 0 ? 'pos' : 'neg'),
        d: 'M' + a.x + ',' + a.y + ' C' + a.x + ',' + midY + ' ' + b.x + ',' + midY + ' ' + b.x + ',' + b.y,
        'stroke-width': (0.4 + 3.6 * Math.sqrt(Math.abs(e.w) / (maxW || 1))).toFixed(2),
        'stroke-opacity': (0.25 + 0.6 * Math.abs(e.w) / (maxW || 1)).toFixed(2),
        'data-source': e.s.id, 'data-target': e.t.id
      });
      eg.appendChild(path);
      drawn++;
    });
    svg.appendChild(eg);

    // nodes
    var ng = sv('g', {'class': 'nodes'});
    vis.forEach(function (n) {
      var q = L.pos[n.id];
      var g = sv('g', {'class': 'node kind-' + n.kind, transform: 'translate(' + q.x.toFixed(2) + ',' + q.y.toFixed(2) + ')',
        'data-node-id': n.id, tabindex: 0, role: 'button'});
      g.appendChild(nodeShape(n, nodeRadius(n)));
      var title = sv('title');
      title.textContent = displayLabel(n) + '\n' + n.id + ' · act ' + fmt(n.activation) + ' · infl ' + fmt(n.influence);
      g.appendChild(title);
      g.addEventListener('click', function (ev) {
        if (ev.shiftKey) togglePin(n.id); else clickNode(n.id);
      });
      g.addEventListener('keydown', function (ev) { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); clickNode(n.id); } });
      ng.appendChild(g);
    });
    svg.appendChild(ng);
    svg.addEventListener('click', onBackgroundClick);
    $('counts').textContent = vis.length + ' nodes · ' + drawn + ' edges';
    applyMarks();
  }

  function onBackgroundClick(ev) {
    if (ev.target === $('graph') && state.qParams.clickedId) { state.qParams.clickedId = ''; markDirty(); applyMarks(); renderDetails(); }
  }

  function applyMarks() {
    var svg = $('graph'), q = state.qParams, pinned = {};
    q.pinnedIds.forEach(function (i) { pinned[i] = true; });
    Array.prototype.forEach.call(svg.querySelectorAll('g.node'), function (g) {
      var id = g.getAttribute('data-node-id');
      g.classList.toggle('pinned', !!pinned[id]);
      g.classList.toggle('clicked', id === q.clickedId);
    });
    var c = q.clickedId && state.visible[q.clickedId] ? q.clickedId : '';
    svg.classList.toggle('has-clicked', !!c);
    Array.prototype.forEach.call(svg.querySelectorAll('path.edge'), function (p) {
      p.classList.toggle('hl', !!c && (p.getAttribute('data-source') === c || p.getAttribute('data-target') === c));
    });
  }

  // ---------- interactions ----------
  function markDirty() { state.dirty = true; $('save').disabled = false; }

  function clickNode(id) {
    state.qParams.clickedId = id;
    markDirty();
    applyMarks();
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
    applyMarks();
    renderSubgraph();
    renderDetails();
    renderGraphSupernodes();
  }

  function renderGraphSupernodes() { renderGraph(); }

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
    if (!edges.length) ul.appendChild(el('li', 'muted', 'none'));
    return ul;
  }

  function renderDetails() {
    var box = $('details');
    clear(box);
    var n = state.byId[state.qParams.clickedId];
    if (!n) { box.hidden = true; return; }
    box.hidden = false;
    box.setAttribute('data-node-id', n.id);
    box.appendChild(el('h3', 'detail-label', displayLabel(n)));
    var table = el('table');
    function row(k, v) { var tr = el('tr'); tr.appendChild(el('td', '', k)); tr.appendChild(el('td', '', v)); table.appendChild(tr); }
    row('node', n.id);
    row('type', n.kind);
    row('layer', n.kind === 'embedding' ? 'embeddings' : (n.kind === 'logit' ? 'logits' : n.layer));
    row('position', n.pos + '  ' + JSON.stringify(n.token));
    if (n.feature !== null && n.kind === 'feature') row('feature', String(n.feature));
    row('activation', fmt(n.activation));
    row('influence', fmt(n.influence));
    if (n.tokenProb !== null) row('probability', fmt(n.tokenProb));
    box.appendChild(table);
    var pinned = state.qParams.pinnedIds.indexOf(n.id) >= 0;
    var btn = el('button', 'pin-button', pinned ? 'Unpin from subgraph' : 'Pin to subgraph');
    btn.type = 'button';
    btn.id = 'pin-button';
    btn.addEventListener('click', function () { togglePin(n.id); });
    var r = el('div', 'row'); r.appendChild(btn); box.appendChild(r);
    box.appendChild(el('h2', '', 'Top inputs'));
    box.appendChild(edgeList(state.ins[n.id] || [], 'in'));
    box.appendChild(el('h2', '', 'Top outputs'));
    box.appendChild(edgeList(state.outs[n.id] || [], 'out'));
    if (n.kind === 'feature' && n.feature !== null) {
      var ex = el('div', 'examples');
      box.appendChild(ex);
      loadFeature(n, ex);
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

  function loadFeature(n, box) {
    var url = featureBase() + '/' + encodeURIComponent(String(n.feature)) + '.json';
    fetch(url, {credentials: 'same-origin'}).then(function (r) {
      if (!r.ok) return null;
      return r.json();
    }).then(function (fd) {
      if (!fd || state.qParams.clickedId !== n.id) return;
      renderFeature(fd, box);
    }).catch(function () { /* no feature file: nothing to show */ });
  }

  function renderFeature(fd, box) {
    clear(box);
    if (Array.isArray(fd.top_logits) && fd.top_logits.length) {
      box.appendChild(el('h2', '', 'Top logits'));
      box.appendChild(el('div', 'ex', fd.top_logits.slice(0, 10).map(function (t) { return JSON.stringify(String(t)); }).join('  ')));
    }
    if (Array.isArray(fd.bottom_logits) && fd.bottom_logits.length) {
      box.appendChild(el('h2', '', 'Bottom logits'));
      box.appendChild(el('div', 'ex', fd.bottom_logits.slice(0, 10).map(function (t) { return JSON.stringify(String(t)); }).join('  ')));
    }
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
    drawSubgraph(inSuper);
  }

  function drawSubgraph(inSuper) {
    var svg = $('subgraph'), q = state.qParams;
    clear(svg);
    // units: each supernode collapses its members; other pinned nodes stand alone
    var units = [], unitOf = {};
    q.supernodes.forEach(function (g, gi) {
      var mem = g.slice(1).filter(function (id) { return state.byId[id]; });
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
    var W = 330, rowsUsed = {};
    units.forEach(function (u) { rowsUsed[u.row] = true; });
    var rowList = Object.keys(rowsUsed).map(Number).sort(function (a, b) { return b - a; });
    var H = Math.max(60, rowList.length * 52 + 20);
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('height', H);
    if (!units.length) {
      var t = sv('text', {x: 10, y: 34}); t.textContent = 'Pin nodes to build a subgraph.'; svg.appendChild(t);
      return;
    }
    var xy = {};
    rowList.forEach(function (r, ri) {
      var us = units.filter(function (u) { return u.row === r; }).sort(function (a, b) { return a.pos - b.pos; });
      us.forEach(function (u, i) { xy[u.key] = {x: (i + 0.5) * W / us.length, y: 20 + ri * 52 + 16}; });
    });
    // aggregated edges between units
    var agg = {};
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
      var e = agg[k], p = xy[e.a.key], r = xy[e.b.key];
      svg.appendChild(sv('line', {'class': 'edge ' + (e.w >= 0 ? 'pos' : 'neg'), x1: p.x, y1: p.y, x2: r.x, y2: r.y,
        'stroke-width': (0.6 + 3 * Math.abs(e.w) / (maxW || 1)).toFixed(2), 'stroke-opacity': 0.7}));
    });
    units.forEach(function (u) {
      var p = xy[u.key];
      var g = sv('g', {'class': 'sg-node kind-' + u.kind, transform: 'translate(' + p.x.toFixed(1) + ',' + p.y.toFixed(1) + ')',
        'data-unit': u.key});
      if (u.kind === 'supernode') g.appendChild(sv('rect', {'class': 'supernode-box', x: -34, y: -10, width: 68, height: 20, rx: 5}));
      else {
        var shape = nodeShape({kind: u.kind}, 6);
        shape.setAttribute('fill', {feature: '#4c78a8', error: '#8c8c8c', embedding: '#54a24b', logit: '#f58518'}[u.kind] || '#4c78a8');
        g.appendChild(shape);
      }
      var t = sv('text', {'class': 'sg-label', y: u.kind === 'supernode' ? 3 : 17, 'text-anchor': 'middle'});
      t.textContent = u.label.length > 26 ? u.label.slice(0, 25) + '…' : u.label;
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
  function init() {
    $('threshold').addEventListener('input', function () {
      state.threshold = parseFloat(this.value);
      $('threshold-value').textContent = state.threshold.toFixed(2);
      if (state.data) renderGraph();
    });
    $('save').addEventListener('click', save);
    $('make-supernode').addEventListener('click', makeSupernode);
    document.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape' && state.qParams && state.qParams.clickedId) { state.qParams.clickedId = ''; applyMarks(); renderDetails(); }
    });
    getJSON('/api/graphs').then(function (j) {
      state.graphs = Array.isArray(j.graphs) ? j.graphs : [];
      renderGraphList();
      var m = /graph=([^&]+)/.exec(location.hash);
      var want = m ? decodeURIComponent(m[1]) : null;
      var names = state.graphs.map(function (g) { return g.name; });
      if (want !== null && names.indexOf(want) >= 0) return loadGraph(want);
      if (names.length) return loadGraph(names[0]);
      document.body.setAttribute('data-loaded', '');
    }).catch(function (err) { setStatus(String(err.message || err), true); });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
