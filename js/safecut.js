// SafeCut front-end: after a SafeCut node runs, show its result on the canvas (caption, verdict with
// colour, P(unsafe), device actually used, time taken, how many images the gate settled by keywords).
// Plain extension API (app.registerExtension + onExecuted), no build step.
import { app } from "../../scripts/app.js";

const COLORS = { SAFE: "#2e7d32", UNSAFE: "#b71c1c", MIXED: "#8d6e00" };
const WIDGET = "safecut_result";

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

// Turns the node's `ui` payload into display lines. Exported on window for the browser test.
export function formatResult(ui) {
  const lines = [];
  const verdicts = ui.verdict || [];
  if (verdicts.length) {
    const safe = verdicts.filter((v) => v === "SAFE").length;
    lines.push(`verdict: ${safe} SAFE / ${verdicts.length - safe} UNSAFE`);
  }
  if (ui.settled_by_keywords !== undefined) lines.push(`settled by keywords: ${first(ui.settled_by_keywords)}`);
  if (ui.p_unsafe && ui.p_unsafe.length) {
    lines.push("P(unsafe): " + ui.p_unsafe.map((p) => (p === null ? "n/a" : Number(p).toFixed(3))).join(", "));
  }
  if (ui.caption && ui.caption.length) {
    ui.caption.slice(0, 8).forEach((c, i) => lines.push(`#${i + 1}: ${c}`));
    if (ui.caption.length > 8) lines.push(`… ${ui.caption.length - 8} more`);
  }
  if (ui.safecut && ui.safecut.length) {
    const s = ui.safecut[0] || {};
    lines.push(`saved ${s.saved} of ${s.images}` + (s.not_saved ? ` (${s.not_saved} not saved)` : ""));
    if (s.report) lines.push(`report: ${s.report}`);
  }
  if (ui.device !== undefined) lines.push(`device: ${distinct(ui.device)}`);
  if (ui.seconds !== undefined) lines.push(`time: ${total(ui.seconds).toFixed(2)} s`);
  if (ui.text && ui.text.length && !lines.length) lines.push(...ui.text.map(String));
  return lines.join("\n");
}

function verdictColor(ui) {
  const v = ui.verdict || [];
  if (!v.length) return null;
  if (v.every((x) => x === "SAFE")) return COLORS.SAFE;
  if (v.every((x) => x === "UNSAFE")) return COLORS.UNSAFE;
  return COLORS.MIXED;
}

// The read-only result box: a multi-line DOM textarea (a canvas "text" widget shows one line only, which
// cut the verdict, captions and device off). Never serialized: not in widgets_values, not in the prompt.
function resultWidget(node) {
  let w = node.widgets && node.widgets.find((x) => x.name === WIDGET);
  if (w) return w;
  if (typeof node.addDOMWidget === "function") {
    const el = document.createElement("textarea");
    el.className = "comfy-multiline-input safecut-result";
    el.readOnly = true;
    el.spellcheck = false;
    el.style.opacity = 0.9;
    w = node.addDOMWidget(WIDGET, "safecut_result", el, {
      serialize: false,
      hideOnZoom: false,
      getValue: () => el.value,
      setValue: (v) => {
        el.value = v;
      },
      getMinHeight: () => 18 + 15 * Math.min(Math.max(el.value.split("\n").length, 2), 10),
    });
    w.inputEl = el;
  } else {
    w = node.addWidget("text", WIDGET, "", () => {}, { multiline: true, serialize: false });
  }
  w.serialize = false; // never saved into widgets_values: saved workflows keep their positions
  return w;
}

function showResult(node, ui) {
  const text = formatResult(ui || {});
  node.safecutResult = text;
  if (!text) return;
  const w = resultWidget(node);
  w.value = text;
  if (w.inputEl) w.inputEl.value = text;
  const color = verdictColor(ui || {});
  if (color) {
    node.bgcolor = color;
  }
  node.setSize([Math.max(node.size[0], 280), node.computeSize()[1]]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "SafeCut.results",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name || !nodeData.name.startsWith("SafeCut")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted ? onExecuted.apply(this, arguments) : undefined;
      try {
        showResult(this, message);
      } catch (e) {
        console.error("SafeCut: could not show the result", e);
      }
      return r;
    };
  },
});

window.safecutFormatResult = formatResult;
