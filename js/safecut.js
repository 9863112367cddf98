// SafeCut front-end: after a SafeCut node runs, show what happened on the canvas: device actually used and time
// (a header line that never scrolls away), per image verdict / decided_by / P(unsafe) / reason, captions, what
// was saved. The Keyword Gate also fills in the Llama node, whose captions it classified (lazy input).
// Plain extension API (app.registerExtension + onExecuted), no build step.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const COLORS = { SAFE: "#2e7d32", UNSAFE: "#b71c1c", MIXED: "#8d6e00" };
const WIDGET = "safecut_result";
const LINE_PX = 15;
const MAX_LINES = 8; // more scrolls inside the box

function first(v) {
  return Array.isArray(v) ? v[0] : v;
}

// A list run (Load Image Batch in list mode) sends one value per image: show each distinct value once.
function distinct(v) {
  return [...new Set((Array.isArray(v) ? v : [v]).map(String))].join(", ");
}

// Total of the per-run timings (one entry per image in a list run).
function total(v) {
  return (Array.isArray(v) ? v : [v]).reduce((a, b) => a + Number(b || 0), 0);
}

function rowLine(r) {
  const name = r.name ? ` ${r.name}` : "";
  const parts = [r.by ? `by ${r.by}` : ""];
  if (r.p_unsafe !== null && r.p_unsafe !== undefined) parts.push(`P(unsafe) ${Number(r.p_unsafe).toFixed(3)}`);
  if (r.categories && r.categories.length) parts.push(r.categories.join(", "));
  if (r.reason) parts.push(r.reason);
  return `#${r.n}${name}: ${r.verdict || "?"} ` + parts.filter(Boolean).join(" · ");
}

// Device and time: the first line, shown above the scrolling part.
export function formatHeader(ui) {
  const head = [];
  if (ui.device !== undefined) head.push(`device: ${distinct(ui.device)}`);
  if (ui.seconds !== undefined) head.push(`time: ${total(ui.seconds).toFixed(2)} s`);
  return head.join(" · ");
}

// Everything else, one line per fact / image.
export function formatBody(ui) {
  const lines = [];
  const verdicts = ui.verdict || [];
  if (ui.from_gate) lines.push(`${first(ui.model) || "classifier"}: ${ui.rows.length} caption(s) from the gate`);
  if (verdicts.length) {
    const safe = verdicts.filter((v) => v === "SAFE").length;
    lines.push(`verdict: ${safe} SAFE / ${verdicts.length - safe} UNSAFE`);
  }
  if (ui.settled_by_keywords !== undefined) {
    lines.push(`settled by keywords: ${first(ui.settled_by_keywords)} of ${verdicts.length}`);
  }
  if (ui.rows && ui.rows.length) {
    ui.rows.forEach((r) => lines.push(rowLine(r)));
  } else if (ui.p_unsafe && ui.p_unsafe.length) {
    lines.push("P(unsafe): " + ui.p_unsafe.map((p) => (p === null ? "n/a" : Number(p).toFixed(3))).join(", "));
  }
  if (ui.caption && ui.caption.length) ui.caption.forEach((c, i) => lines.push(`#${i + 1}: ${c}`));
  if (ui.safecut && ui.safecut.length) {
    const s = ui.safecut[0] || {};
    lines.push(`saved ${s.saved} of ${s.images}` + (s.not_saved ? ` (${s.not_saved} not saved)` : ""));
    if (s.report) lines.push(`report: ${s.report}`);
  }
  if (ui.text && ui.text.length && !lines.length) lines.push(...ui.text.map(String));
  return lines.join("\n");
}

// The whole text (header + body). Exported on window for the browser test.
export function formatResult(ui) {
  return [formatHeader(ui), formatBody(ui)].filter(Boolean).join("\n");
}

function verdictColor(ui) {
  const v = ui.verdict || (ui.rows || []).map((r) => r.verdict);
  if (!v.length) return null;
  if (v.every((x) => x === "SAFE")) return COLORS.SAFE;
  if (v.every((x) => x === "UNSAFE")) return COLORS.UNSAFE;
  return COLORS.MIXED;
}

// Header + up to MAX_LINES wrapped lines of body (12px monospace: ~7.3 px per character); more scrolls.
function boxHeight(body, width) {
  const perLine = Math.max(20, Math.floor((width - 50) / 7.3));
  const lines = body.split("\n").reduce((n, l) => n + Math.max(1, Math.ceil(l.length / perLine)), 0);
  return 26 + 34 + LINE_PX * Math.min(Math.max(lines, 2), MAX_LINES);  // head, paddings, widget margins
}

// The read-only result box: a fixed header (device, time) over a scrolling multi-line text. A DOM widget (a
// canvas "text" widget shows one line only). Never serialized: not in widgets_values, not in the prompt.
function resultWidget(node) {
  let w = node.widgets && node.widgets.find((x) => x.name === WIDGET);
  if (w) return w;
  if (typeof node.addDOMWidget !== "function") {
    w = node.addWidget("text", WIDGET, "", () => {}, { multiline: true, serialize: false });
    w.serialize = false;
    return w;
  }
  const el = document.createElement("div");
  el.className = "safecut-result";
  el.style.cssText = "display:flex;flex-direction:column;box-sizing:border-box;overflow:hidden;";
  const head = document.createElement("div");
  head.className = "safecut-head";
  head.style.cssText = "font:12px monospace;line-height:18px;padding:2px 6px;white-space:nowrap;overflow:hidden;" +
    "text-overflow:ellipsis;color:var(--input-text,#ddd);background:rgba(0,0,0,0.35);border-radius:4px 4px 0 0;";
  const body = document.createElement("textarea");
  body.className = "comfy-multiline-input safecut-body";
  body.readOnly = true;
  body.spellcheck = false;
  body.style.cssText = `flex:1;min-height:0;resize:none;font:12px monospace;line-height:${LINE_PX}px;` +
    "overflow-y:auto;white-space:pre-wrap;word-break:break-word;opacity:0.92;";
  el.append(head, body);
  let text = "";
  w = node.addDOMWidget(WIDGET, "safecut_result", el, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => text,
    setValue: (v) => {
      text = v;
    },
    // fixed height: the node's other multiline widgets keep their room, long text scrolls in the box
    getMinHeight: () => node.safecutBoxH || 60,
    getMaxHeight: () => node.safecutBoxH || 60,
  });
  w.serialize = false; // never saved into widgets_values: saved workflows keep their positions
  w.safecutHead = head;
  w.safecutBody = body;
  return w;
}

function showResult(node, ui) {
  ui = ui || {};
  const header = formatHeader(ui);
  const body = formatBody(ui);
  const text = [header, body].filter(Boolean).join("\n");
  node.safecutResult = text;
  if (!text) return;
  const before = [node.size[0], node.size[1]];
  const w = resultWidget(node);
  node.safecutBoxH = boxHeight(body, Math.max(before[0], 320));
  w.value = text;
  if (w.safecutHead) {
    w.safecutHead.textContent = header || " ";
    w.safecutBody.value = body;
  }
  const color = verdictColor(ui);
  if (color) node.bgcolor = color;
  // Never shrink (the gate's keyword lists keep their lines); grow only when the widgets need more room
  // (the shipped workflows leave room for the box, so their nodes keep their size and do not overlap).
  const min = node.computeSize();
  node.setSize([Math.max(before[0], min[0], 320), Math.max(before[1], min[1])]);
  node.setDirtyCanvas(true, true);
}

// The gate classified the undecided captions with the classifier it got from the Llama node: show the results
// there (the Llama node itself only handed out the classifier), or say that it was not needed.
function showClassifierResults(gate, ui) {
  const slot = gate.findInputSlot ? gate.findInputSlot("classifier") : -1;
  const llama = slot >= 0 && gate.getInputNode ? gate.getInputNode(slot) : null;
  if (!llama) return;
  const c = first(ui.classifier);
  if (c) {
    showResult(llama, { from_gate: true, model: [c.model], rows: c.rows, device: [c.device], seconds: [c.seconds] });
  } else {
    showResult(llama, { text: ["not needed: the gate settled every caption without the LLM (model not loaded)"] });
    llama.bgcolor = undefined;
  }
}

// Node search by what people type ("rembg", "nsfw", "llama guard"): frontends whose search reads a node
// definition's search_aliases find SafeCut by its nodes' SEARCH_ALIASES. Newer ComfyUI servers send them in
// /object_info; 0.3.64 does not, so the pack serves them (nodes/comfy_hooks.py) and they are filled in here,
// before the frontend registers the definitions and builds its search index.
async function addSearchAliases(defs) {
  const missing = Object.keys(defs).filter((n) => n.startsWith("SafeCut") && !(defs[n].search_aliases || []).length);
  if (!missing.length) return;
  try {
    const res = await api.fetchApi("/safecut/search_aliases");
    if (!res.ok) return;
    const aliases = await res.json();
    for (const n of missing) if (aliases[n] && aliases[n].length) defs[n].search_aliases = aliases[n];
  } catch (e) {
    console.warn("SafeCut: search aliases unavailable", e);
  }
}

app.registerExtension({
  name: "SafeCut.results",
  addCustomNodeDefs: addSearchAliases,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name || !nodeData.name.startsWith("SafeCut")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted ? onExecuted.apply(this, arguments) : undefined;
      try {
        showResult(this, message);
        if (nodeData.name === "SafeCutKeywordGate") showClassifierResults(this, message || {});
      } catch (e) {
        console.error("SafeCut: could not show the result", e);
      }
      return r;
    };
  },
});

window.safecutFormatResult = formatResult;
