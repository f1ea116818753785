/* The rlm trace viewer: reads the run's events from the page's JSON block
 * (docs/trace.md) and shows the call tree, each turn's reply, code and
 * output, the sub-calls, a timeline and search. Model text is only ever set
 * as text (textContent, text nodes): HTML or script a model wrote is shown,
 * never run. Long parts are built when opened, so a trace of thousands of
 * sub-calls opens at once. */
(function () {
  "use strict";

  var PAGE = 100;            /* sub-call rows built per "show more" */
  var TEXT_SHOWN = 6000;     /* characters of a long text before "show all" */
  var MAX_HITS = 200;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function $(id) { return document.getElementById(id); }
  function num(n) { return n === null || n === undefined ? "?" : Number(n).toLocaleString("en-US"); }
  function secs(s) { return typeof s === "number" ? (s < 10 ? s.toFixed(2) : s.toFixed(1)) + "s" : ""; }
  function cost(c, unknown) { return unknown ? "cost unknown" : "$" + c.toFixed(4); }
  function tokens(n) {
    return n >= 1e6 ? (n / 1e6).toFixed(1) + "M tok" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k tok" : num(n) + " tok";
  }

  /* ---- the model: nodes, questions, turns --------------------------------- */

  var data, events, nodes = {}, order = [];

  function getNode(id, parent) {
    var n = nodes[id];
    if (!n) {
      n = nodes[id] = { id: id, parent: parent || null, depth: id.split(".").length, children: [],
        questions: [], turns: {}, turnOrder: [], q: 0, start: null, end: null, tokens: 0,
        cost: 0, costUnknown: false, subCalls: 0, failed: 0, notices: [], first: null, last: null };
      order.push(id);
      if (parent && nodes[parent] && nodes[parent].children.indexOf(id) < 0) nodes[parent].children.push(id);
    }
    return n;
  }

  function getTurn(n, turn) {
    var key = n.q + ":" + (turn || 0);
    var t = n.turns[key];
    if (!t) {
      t = n.turns[key] = { key: key, q: n.q, turn: turn || 0, request: null, reply: null, blocks: [],
        batches: [], children: [], notices: [], final: null };
      n.turnOrder.push(key);
    }
    return t;
  }

  function addUsage(n, e) {
    var u = e.usage || {};
    if (u.prompt_tokens > 0) n.tokens += u.prompt_tokens;
    if (u.completion_tokens > 0) n.tokens += u.completion_tokens;
    if (typeof e.cost_usd === "number") n.cost += e.cost_usd; else n.costUnknown = true;
  }

  function build() {
    for (var i = 0; i < events.length; i++) {
      var e = events[i];
      if (!e || typeof e !== "object") continue;
      var id = typeof e.node === "string" ? e.node : "0";
      var n = getNode(id, typeof e.parent === "string" ? e.parent : null);
      if (n.first === null) n.first = e.t;
      n.last = e.t;
      var t;
      switch (e.type) {
        case "question":
          n.q++;
          n.questions.push({ i: i, text: e.question });
          if (n.start === null) n.start = e.t;
          break;
        case "child_start":
          n.startEvent = i;
          if (nodes[e.parent]) getTurn(nodes[e.parent], e.turn).children.push(id);
          break;
        case "child_end":
          n.endEvent = i;
          break;
        case "root_request":
          getTurn(n, e.turn).request = i;
          break;
        case "root_reply":
          getTurn(n, e.turn).reply = i;
          addUsage(n, e);
          break;
        case "code":
          getTurn(n, e.turn).blocks.push(i);
          break;
        case "batch_start":
          t = getTurn(n, e.turn);
          n.open = { start: i, end: null, calls: [], size: e.batch || 0, turn: t };
          t.batches.push(n.open);
          break;
        case "sub_call":
          t = getTurn(n, e.turn);
          if (!n.open || n.open.turn !== t || (n.open.size && n.open.calls.length >= n.open.size) ||
              (!n.open.start && e.index === 0)) {
            /* A trace written before batch_start existed: the calls say it. */
            n.open = { start: null, end: null, calls: [], size: e.batch || 0, turn: t };
            t.batches.push(n.open);
          }
          n.open.calls.push(i);
          n.subCalls++;
          if (e.error) n.failed++;
          addUsage(n, e);
          break;
        case "batch_end":
          if (n.open) n.open.end = i;
          break;
        case "final_answer":
          getTurn(n, e.turn).final = i;
          n.final = i;
          break;
        case "run_end":
          n.end = i;
          break;
        case "budget_exhausted": case "turns_exhausted": case "compaction": case "compaction_failed":
        case "cancelled": case "error": case "warning": case "session_replay":
          if (e.turn) getTurn(n, e.turn).notices.push(i); else n.notices.push(i);
          break;
      }
    }
    if (!nodes["0"]) getNode("0", null);
  }

  /* Totals of a node and its descendants. */
  function subtree(id) {
    var n = nodes[id], s = { tokens: n.tokens, cost: n.cost, unknown: n.costUnknown, calls: n.subCalls };
    n.children.forEach(function (c) {
      var k = subtree(c);
      s.tokens += k.tokens; s.cost += k.cost; s.unknown = s.unknown || k.unknown; s.calls += k.calls;
    });
    return s;
  }

  function nodeSeconds(n) {
    var end = n.end !== undefined && n.end !== null ? events[n.end] : null;
    if (end && typeof end.elapsed === "number") return end.elapsed;
    if (n.endEvent !== undefined) return events[n.endEvent].seconds;
    return n.first !== null ? n.last - n.first : null;
  }

  /* ---- text helpers ------------------------------------------------------------ */

  var KEYWORDS = /^(False|None|True|and|as|assert|break|class|continue|def|del|elif|else|except|finally|for|from|global|if|import|in|is|lambda|nonlocal|not|or|pass|raise|return|try|while|with|yield)$/;
  /* The REPL's names come from the sandbox's policy table at build time
   * (cmake/embed_assets.cmake); print is Python's. */
  var REPL = /^(print|@REPL_NAMES@)$/;
  var TOKEN = /("""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|#[^\n]*|\b\d[\w.]*|[A-Za-z_]\w*)/g;

  /* Python code as spans: every piece is a text node. */
  function codeBlock(code) {
    var pre = el("pre", "code");
    var last = 0, m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(code)) !== null) {
      if (m.index > last) pre.appendChild(document.createTextNode(code.slice(last, m.index)));
      var w = m[0], c = null, ch = w.charAt(0);
      if (ch === "#") c = "com";
      else if (ch === '"' || ch === "'") c = "str";
      else if (/\d/.test(ch)) c = "num";
      else if (KEYWORDS.test(w)) c = "kw";
      else if (REPL.test(w)) c = "repl";
      if (c) pre.appendChild(el("span", c, w)); else pre.appendChild(document.createTextNode(w));
      last = m.index + w.length;
      if (w.length === 0) TOKEN.lastIndex++;
    }
    if (last < code.length) pre.appendChild(document.createTextNode(code.slice(last)));
    return pre;
  }

  /* A long text shows its start; the rest is built when asked for. */
  function longText(text, cls) {
    var pre = el("pre", cls || "text");
    text = text === null || text === undefined ? "" : String(text);
    if (text.length <= TEXT_SHOWN) { pre.textContent = text; return pre; }
    pre.textContent = text.slice(0, TEXT_SHOWN);
    var wrap = el("div");
    var more = el("button", "more", "show all " + num(text.length) + " characters");
    more.type = "button";
    more.addEventListener("click", function () { pre.textContent = text; more.remove(); });
    wrap.appendChild(pre);
    wrap.appendChild(more);
    return wrap;
  }

  function part(label, child) {
    var d = el("div", "part");
    d.appendChild(el("div", "label", label));
    if (child) d.appendChild(child);
    return d;
  }

  /* ---- the tree ---------------------------------------------------------------- */

  var selected = null;

  function treeRow(id, list) {
    var n = nodes[id], s = subtree(id);
    var row = el("div", "node" + (id === selected ? " selected" : ""));
    row.dataset.node = id;
    row.style.paddingLeft = (10 + 16 * (n.depth - 1)) + "px";
    var end = n.end !== null ? events[n.end] : null;
    var status = end ? end.status : n.endEvent !== undefined ? events[n.endEvent].status : "unfinished";
    var name = id === "0" ? "root" : "child " + id;
    row.appendChild(el("span", status === "ok" ? "ok" : "bad", "● "));
    row.appendChild(el("span", "", name + " "));
    row.appendChild(el("span", "stats", [n.turnOrder.length + " turns", num(s.calls) + " sub-calls",
      tokens(s.tokens), cost(s.cost, s.unknown), secs(nodeSeconds(n))].join(" · ")));
    row.title = status;
    row.addEventListener("click", function () { select(id); });
    list.appendChild(row);
    n.turnOrder.forEach(function (k) {
      var t = n.turns[k];
      t.batches.forEach(function (b, bi) {
        var failed = b.calls.filter(function (i) { return events[i].error; }).length;
        var r = el("div", "batch", "× " + num(b.calls.length) + " sub-calls, turn " + t.turn +
          (failed ? " (" + failed + " failed)" : ""));
        r.style.paddingLeft = (26 + 16 * (n.depth - 1)) + "px";
        r.addEventListener("click", function () { select(id); openBatch(id, k, bi); });
        list.appendChild(r);
      });
    });
    n.children.forEach(function (c) { treeRow(c, list); });
  }

  function renderTree() {
    var tree = $("tree");
    tree.textContent = "";
    var roots = order.filter(function (id) { return !nodes[id].parent || !nodes[nodes[id].parent]; });
    roots.forEach(function (id) { treeRow(id, tree); });
  }

  /* ---- the detail of one node ------------------------------------------------ */

  function subCallRows(tbody, b, from) {
    var to = Math.min(b.calls.length, from + PAGE);
    for (var k = from; k < to; k++) {
      var i = b.calls[k], e = events[i];
      var tr = el("tr", e.error ? "failed" : "");
      tr.dataset.ev = i;
      tr.appendChild(el("td", "", e.index !== undefined ? e.index : k));
      tr.appendChild(el("td", "t", e.prompt));
      tr.appendChild(el("td", "t", e.reply));
      tr.appendChild(el("td", "", [secs(e.seconds), e.attempts > 1 ? e.attempts + " attempts" : "",
        e.error ? e.error : "", e.cached ? "cached" : ""].filter(Boolean).join(" ")));
      tbody.appendChild(tr);
    }
    return to;
  }

  function batchDetails(b, key) {
    var d = el("details", "batch-details");
    d.dataset.batch = key;
    var failed = 0, retried = 0, last = 0;
    b.calls.forEach(function (i) {
      var e = events[i];
      if (e.error) failed++;
      if (e.attempts > 1) retried += e.attempts - 1;
      if (e.seconds > last) last = e.seconds;
    });
    var end = b.end !== null ? events[b.end] : null;
    var kind = b.calls.length ? events[b.calls[0]].kind : b.start !== null ? events[b.start].kind : "llm_query";
    d.appendChild(el("summary", "", num(b.calls.length) + " " + kind + " sub-calls: " +
      (b.calls.length - failed) + " ok" + (failed ? ", " + failed + " failed" : "") +
      (retried ? ", " + retried + " retried" : "") + " · " + secs(end ? end.seconds : last) +
      (end || b.calls.length >= b.size ? "" : " · unfinished")));
    var built = false;
    d.addEventListener("toggle", function () {
      if (!d.open || built) return;
      built = true;
      var table = el("table", "subcalls");
      var head = el("tr");
      ["#", "prompt", "reply", ""].forEach(function (h) { head.appendChild(el("th", "", h)); });
      table.appendChild(head);
      var tbody = el("tbody");
      table.appendChild(tbody);
      d.appendChild(table);
      var shown = subCallRows(tbody, b, 0);
      if (shown < b.calls.length) {
        var more = el("button", "more");
        more.type = "button";
        var label = function () { more.textContent = "show " + Math.min(PAGE, b.calls.length - shown) + " more of " + num(b.calls.length - shown); };
        label();
        more.addEventListener("click", function () {
          shown = subCallRows(tbody, b, shown);
          if (shown >= b.calls.length) more.remove(); else label();
        });
        d.appendChild(more);
        d.moreButton = more;
      }
    });
    return d;
  }

  function noticeText(e) {
    switch (e.type) {
      case "budget_exhausted": return "budget " + e.budget + " ran out: " + (e.message || "");
      case "turns_exhausted": return "turn limit reached (" + e.max_iterations + ")";
      case "compaction": return "history compacted: " + e.messages + " messages dropped";
      case "error": return "error in " + e.where + ": " + e.message;
      case "cancelled": return "cancelled";
      default: return e.type + ": " + (e.message || e.error || "");
    }
  }

  function renderTurn(n, t) {
    var box = el("div", "turn");
    box.dataset.turn = t.key;
    var reply = t.reply !== null ? events[t.reply] : null;
    var head = el("div", "head", t.turn ? "Turn " + t.turn : "Before the first turn");
    if (reply) {
      var u = reply.usage || {};
      head.appendChild(el("span", "stats", [reply.model || (t.request !== null ? events[t.request].model : ""),
        secs(reply.seconds), u.prompt_tokens >= 0 ? num(u.prompt_tokens) + "+" + num(u.completion_tokens) + " tokens" +
          (u.cached_tokens > 0 ? " (" + num(u.cached_tokens) + " cached)" : "") : "",
        typeof reply.cost_usd === "number" ? "$" + reply.cost_usd.toFixed(4) : "",
        reply.error ? "error: " + (reply.error_message || reply.error) : ""].filter(Boolean).join(" · ")));
    }
    box.appendChild(head);
    if (reply) {
      var r = part("reply", longText(reply.content));
      r.dataset.ev = t.reply;
      box.appendChild(r);
      if (reply.reasoning) {
        var det = el("details");
        det.appendChild(el("summary", "", "reasoning (" + num(reply.reasoning.length) + " characters)"));
        det.addEventListener("toggle", function () {
          if (det.open && det.childNodes.length === 1) det.appendChild(longText(reply.reasoning));
        }, { once: false });
        box.appendChild(part("", det));
      }
    } else if (t.request !== null) {
      box.appendChild(part("reply", el("div", "bad", "no reply recorded (the run ended while waiting)")));
    }
    t.blocks.forEach(function (i) {
      var e = events[i];
      var p = part("code · block " + e.block + " · " + secs(e.seconds) + (e.calls ? " · " + e.calls + " calls" : "") +
        (e.raised ? " · raised" : "") + (e.timed_out ? " · timed out" : ""), codeBlock(e.code || ""));
      p.dataset.ev = i;
      p.appendChild(el("div", "label", "output" + (e.output_chars > (e.output || "").length ? " (cut from " + num(e.output_chars) + " characters)" : "")));
      p.appendChild(longText(e.output || "", "output" + (e.raised ? " raised" : "")));
      box.appendChild(p);
    });
    t.batches.forEach(function (b, bi) { box.appendChild(part("", batchDetails(b, t.key + "/" + bi))); });
    t.children.forEach(function (cid) {
      var c = nodes[cid], start = c.startEvent !== undefined ? events[c.startEvent] : {};
      var end = c.endEvent !== undefined ? events[c.endEvent] : null;
      var p = part("child RLM " + cid + (end ? " · " + end.status + " · " + secs(end.seconds) : " · unfinished"));
      var link = el("span", "child-link", "open child " + cid);
      link.addEventListener("click", function () { select(cid); });
      p.appendChild(link);
      p.appendChild(longText(start.prompt || ""));
      if (end) { p.appendChild(el("div", "label", "returned")); p.appendChild(longText(end.answer)); }
      box.appendChild(p);
    });
    t.notices.forEach(function (i) { var p = part("", el("div", "bad", noticeText(events[i]))); p.dataset.ev = i; box.appendChild(p); });
    if (t.final !== null) {
      var f = events[t.final];
      var p = part("final answer · " + f.how, longText(f.answer));
      p.dataset.ev = t.final;
      box.appendChild(p);
    }
    return box;
  }

  function renderDetail() {
    var n = nodes[selected], d = $("detail");
    d.textContent = "";
    var title = el("h2", "", selected === "0" ? "Root RLM" : "Child RLM " + selected);
    d.appendChild(title);
    if (n.startEvent !== undefined) d.appendChild(part("asked by " + n.parent, longText(events[n.startEvent].prompt)));
    n.notices.forEach(function (i) { var p = part("", el("div", "bad", noticeText(events[i]))); p.dataset.ev = i; d.appendChild(p); });
    var q = 0;
    n.turnOrder.forEach(function (k) {
      var t = n.turns[k];
      if (t.q !== q && n.questions[t.q - 1]) {
        q = t.q;
        var qe = part("question " + q, longText(n.questions[q - 1].text));
        qe.dataset.ev = n.questions[q - 1].i;
        d.appendChild(qe);
      }
      d.appendChild(renderTurn(n, t));
    });
    if (n.end !== null) {
      var e = events[n.end];
      d.appendChild(part("ended: " + e.status + (e.stopped_by ? " (stopped by " + e.stopped_by + ")" : "") +
        (e.error ? " · " + e.error : "")));
    } else {
      d.appendChild(part("", el("div", "bad", "this RLM has no run_end: the trace stops while it was running")));
    }
  }

  function select(id) {
    if (!nodes[id]) return;
    selected = id;
    Array.prototype.forEach.call(document.querySelectorAll(".tree .node"), function (r) {
      r.classList.toggle("selected", r.dataset.node === id);
    });
    renderDetail();
  }

  function flash(target) {
    if (!target) return;
    target.scrollIntoView({ block: "center" });
    target.classList.add("flash");
    setTimeout(function () { target.classList.remove("flash"); }, 1500);
  }

  function openBatch(id, key, bi) {
    var d = document.querySelector('details[data-batch="' + key + "/" + bi + '"]');
    if (!d) return null;
    d.open = true;
    d.dispatchEvent(new Event("toggle"));
    flash(d);
    return d;
  }

  /* Shows event i: its node, its turn, its batch opened far enough. */
  function reveal(i) {
    var e = events[i];
    var id = typeof e.node === "string" && nodes[e.node] ? e.node : "0";
    if (selected !== id) select(id);
    var target = document.querySelector('[data-ev="' + i + '"]');
    if (!target && e.type === "sub_call") {
      var n = nodes[id];
      n.turnOrder.forEach(function (k) {
        n.turns[k].batches.forEach(function (b, bi) {
          var at = b.calls.indexOf(i);
          if (at < 0) return;
          var d = openBatch(id, k, bi);
          while (d && d.moreButton && d.moreButton.isConnected && !document.querySelector('[data-ev="' + i + '"]'))
            d.moreButton.click();
        });
      });
      target = document.querySelector('[data-ev="' + i + '"]');
    }
    flash(target);
  }

  /* ---- search ------------------------------------------------------------------ */

  var FIELDS = ["question", "content", "reasoning", "code", "output", "prompt", "reply", "answer", "message", "last_message"];
  var index = null;

  function buildIndex() {
    index = [];
    for (var i = 0; i < events.length; i++) {
      var e = events[i];
      for (var f = 0; f < FIELDS.length; f++) {
        var v = e[FIELDS[f]];
        if (typeof v === "string" && v) index.push({ i: i, field: FIELDS[f], text: v, low: v.toLowerCase() });
      }
    }
  }

  function search(query) {
    var box = $("search-results"), count = $("search-count");
    box.textContent = "";
    query = query.trim();
    if (!query) { box.hidden = true; count.textContent = ""; return; }
    if (!index) buildIndex();
    var q = query.toLowerCase(), hits = 0;
    for (var k = 0; k < index.length; k++) {
      var it = index[k], at = it.low.indexOf(q);
      if (at < 0) continue;
      hits++;
      if (hits > MAX_HITS) continue;
      var e = events[it.i];
      var row = el("div", "hit");
      row.appendChild(el("span", "muted", (e.node || "0") + " · " + (e.turn ? "turn " + e.turn + " · " : "") + e.type + "." + it.field + ": "));
      var from = Math.max(0, at - 60);
      row.appendChild(document.createTextNode((from ? "…" : "") + it.text.slice(from, at)));
      row.appendChild(el("mark", "", it.text.slice(at, at + query.length)));
      row.appendChild(document.createTextNode(it.text.slice(at + query.length, at + query.length + 120)));
      (function (i) { row.addEventListener("click", function () { reveal(i); }); })(it.i);
      box.appendChild(row);
    }
    box.hidden = false;
    count.textContent = hits ? num(hits) + " matches" + (hits > MAX_HITS ? " (first " + MAX_HITS + " shown)" : "") : "no match";
  }

  /* ---- timeline ---------------------------------------------------------------- */

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function renderTimeline() {
    var box = $("timeline");
    box.textContent = "";
    var end = 0;
    events.forEach(function (e) { if (typeof e.t === "number" && e.t > end) end = e.t; });
    var lanes = order.slice(0, 40), W = 1000, LANE = 16, LABEL = 90, CURVE = 60;
    var H = lanes.length * LANE + CURVE + 30;
    var s = svg("svg", { viewBox: "0 0 " + (W + LABEL) + " " + H, role: "img" });
    var x = function (t) { return LABEL + (end > 0 ? (t / end) * W : 0); };
    var pending = [];   /* [time, +1/-1] for sub-calls sent and back */
    lanes.forEach(function (id, li) {
      var n = nodes[id], y = li * LANE + 2;
      var label = svg("text", { x: 0, y: y + 11, "class": "lane-label" });
      label.textContent = id === "0" ? "root" : id;
      s.appendChild(label);
      var bar = function (a, b, cls, title) {
        if (typeof a !== "number" || typeof b !== "number") return;
        var r = svg("rect", { x: x(a), y: y, width: Math.max(1, x(b) - x(a)), height: LANE - 4, "class": cls });
        var tt = svg("title", {});
        tt.textContent = title;
        r.appendChild(tt);
        s.appendChild(r);
      };
      n.turnOrder.forEach(function (k) {
        var t = n.turns[k];
        if (t.request !== null && t.reply !== null)
          bar(events[t.request].t, events[t.reply].t, "turn", "turn " + t.turn + ": waiting for the root model");
        t.blocks.forEach(function (i) {
          var e = events[i];
          bar(e.t - (e.seconds || 0) - (e.call_seconds || 0), e.t, "code", "turn " + t.turn + " block " + e.block);
        });
        t.batches.forEach(function (b) {
          var last = 0;
          b.calls.forEach(function (i) { if (events[i].seconds > last) last = events[i].seconds; });
          var t0 = b.start !== null ? events[b.start].t : b.calls.length ? events[b.calls[0]].t - last : null;
          var t1 = b.end !== null ? events[b.end].t : b.calls.length ? events[b.calls[0]].t : t0;
          bar(t0, t1, "batch", num(b.calls.length) + " sub-calls");
          if (t0 === null) return;
          b.calls.forEach(function (i) { pending.push([t0, 1]); pending.push([t0 + (events[i].seconds || 0), -1]); });
        });
      });
    });
    /* Sub-calls sent and not yet back, over time. */
    pending.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    var level = 0, peak = 0, pts = [];
    pending.forEach(function (p) { level += p[1]; if (level > peak) peak = level; });
    level = 0;
    var base = lanes.length * LANE + CURVE + 10;
    pending.forEach(function (p) {
      var y0 = base - (peak ? (level / peak) * CURVE : 0);
      level += p[1];
      var y1 = base - (peak ? (level / peak) * CURVE : 0);
      pts.push(x(p[0]).toFixed(1) + "," + y0.toFixed(1), x(p[0]).toFixed(1) + "," + y1.toFixed(1));
    });
    if (pts.length) s.appendChild(svg("polyline", { points: pts.join(" ") }));
    var cap = svg("text", { x: 0, y: base, "class": "lane-label" });
    cap.textContent = "pending ≤ " + peak;
    s.appendChild(cap);
    var axis = svg("text", { x: LABEL + W - 60, y: H - 2, "class": "lane-label" });
    axis.textContent = secs(end);
    s.appendChild(axis);
    box.appendChild(s);
    box.appendChild(el("div", "muted", "blue: waiting for a root reply · green: code running · amber: a batch of sub-calls · red line: sub-calls sent and not yet back" +
      (order.length > lanes.length ? " · first " + lanes.length + " of " + order.length + " RLMs" : "")));
  }

  /* ---- the page ------------------------------------------------------------------ */

  function renderHeader() {
    $("source").textContent = (data.source || "") + (data.format === "rlms" ? " (an rlms RLMLogger file)" : "");
    var root = nodes["0"];
    var q = root.questions.length ? root.questions[root.questions.length - 1].text : "(no question recorded)";
    $("question").textContent = q;
    var end = root.end !== null ? events[root.end] : null;
    var fin = root.final !== undefined ? events[root.final] : null;
    var answer = end && end.answer !== null && end.answer !== undefined ? end.answer : fin ? fin.answer : null;
    $("answer").textContent = answer === null ? "(no answer)" : answer;
    $("how").textContent = (end && end.how) || (fin && fin.how) ? "given by " + ((end && end.how) || fin.how) + " · " : "";
    var s = subtree("0"), totals = $("totals");
    [end ? "status: " + end.status + (end.stopped_by ? " (" + end.stopped_by + ")" : "") : "unfinished",
      (end ? end.iterations : root.turnOrder.length) + " root turns", num(s.calls) + " sub-calls",
      (order.length - 1) + " child RLMs", tokens(s.tokens), cost(s.cost, s.unknown),
      secs(end ? end.elapsed : root.last)].forEach(function (t) { totals.appendChild(el("span", "", t)); });
    var notes = $("notes");
    (data.notes || []).forEach(function (nt) { notes.appendChild(el("div", nt.level === "error" ? "bad" : "", nt.text)); });
    if (!end) notes.appendChild(el("div", "bad", "The run has no run_end: it was stopped or is still running; this is what it did up to then."));
  }

  function main() {
    try {
      data = JSON.parse($("trace-data").textContent);
    } catch (err) {
      $("notes").appendChild(el("div", "bad", "The page's data cannot be read: " + err.message));
      return;
    }
    events = Array.isArray(data.events) ? data.events : [];
    build();
    renderHeader();
    renderTree();
    select("0");
    var timer = null;
    $("search").addEventListener("input", function (ev) {
      clearTimeout(timer);
      var v = ev.target.value;
      timer = setTimeout(function () { search(v); }, 150);
    });
    $("show-timeline").addEventListener("click", function () {
      var t = $("timeline");
      if (t.hidden && !t.firstChild) renderTimeline();
      t.hidden = !t.hidden;
    });
    document.body.dataset.ready = "1";
    window.rlmViewerReady = performance.now();
  }

  main();
})();
