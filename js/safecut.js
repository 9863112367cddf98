// SafeCut front-end: after a SafeCut node runs, show its result on the canvas (caption, verdict with
// colour, P(unsafe), device actually used, time taken, how many images the gate settled by keywords).
// Plain extension API (app.registerExtension + onExecuted), no build step.
import { app } from "../../scripts/app.js";

const COLORS = { SAFE: "#2e7d32", UNSAFE: "#b71c1c", MIXED: "#8d6e00" };
const WIDGET = "safecut_result";

function first(v) {
  return Array.isArray(v) ? v[0] : v;
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
  if (ui.device !== undefined) lines.push(`device: ${first(ui.device)}`);
  if (ui.seconds !== undefined) lines.push(`time: ${Number(first(ui.seconds)).toFixed(2)} s`);
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

function showResult(node, ui) {
  const text = formatResult(ui || {});
  let w = node.widgets && node.widgets.find((x) => x.name === WIDGET);
  if (!w) {
    w = node.addWidget("text", WIDGET, "", () => {}, { multiline: true, serialize: false });
    w.serialize = false; // never saved into widgets_values: saved workflows keep their positions
    if (w.inputEl) {
      w.inputEl.readOnly = true;
      w.inputEl.style.opacity = 0.85;
    }
  }
  w.value = text;
  if (w.inputEl) w.inputEl.value = text;
  node.safecutResult = text;
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
