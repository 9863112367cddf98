// Drives ComfyUI's real frontend in headless Chromium (playwright-core) for tests/test_frontend.py.
//
//   node drive_workflow.js CONFIG.json      (NODE_PATH must let require('playwright-core') resolve)
//
// CONFIG: {url, chromium, workflow (path of a UI-format workflow), widgets {class: {widget: value}},
//          screenshot_dir, name, timeout_ms, run (bool), closeups [class ids], result_path}
// Loads the page, opens the workflow with app.loadGraphData, records whether the frontend reports missing
// nodes, sets the given widget values (tiny models, input folder), queues it with app.queuePrompt (the
// Run button's path), waits for execution_success / execution_error, then reads each node's SafeCut result
// (node.safecutResult and the result widget added by js/safecut.js) and takes screenshots.
// Writes a JSON report to result_path; exits non-zero only when the driver itself failed.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const report = { name: cfg.name, console_errors: [], page_errors: [], screenshots: [], timings: {} };
const t0 = Date.now();
const mark = (k) => (report.timings[k] = (Date.now() - t0) / 1000);

function save() {
  fs.writeFileSync(cfg.result_path, JSON.stringify(report, null, 1));
}

async function waitForApp(page) {
  await page.waitForFunction(
    () => window.app && window.app.graph && window.LiteGraph && window.app.api && window.app.vueAppReady,
    null, { timeout: cfg.timeout_ms });
}

// Screen rectangle of a graph node (canvas coordinates -> page pixels).
async function nodeClip(page, nodeId) {
  return await page.evaluate((id) => {
    const app = window.app;
    const node = app.graph._nodes.find((n) => String(n.id) === String(id));
    const ds = app.canvas.ds;
    const rect = app.canvas.canvas.getBoundingClientRect();
    const titleH = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
    const x = (node.pos[0] + ds.offset[0]) * ds.scale + rect.left;
    const y = (node.pos[1] - titleH + ds.offset[1]) * ds.scale + rect.top;
    return { x: Math.max(x - 10, 0), y: Math.max(y - 10, 0), width: node.size[0] * ds.scale + 20,
             height: (node.size[1] + titleH) * ds.scale + 20 };
  }, nodeId);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1920, height: 1200 } });
    page.setDefaultTimeout(cfg.timeout_ms);
    page.on("console", (m) => {
      if (m.type() === "error") report.console_errors.push(m.text().slice(0, 500));
    });
    page.on("pageerror", (e) => report.page_errors.push(String(e.message).slice(0, 500)));

    // First visit: mark the tutorial done (else the template browser covers the canvas), hide the minimap.
    await page.goto(cfg.url, { waitUntil: "domcontentloaded" });
    await waitForApp(page);
    await page.evaluate(async () => {
      await fetch("/api/settings", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ "Comfy.TutorialCompleted": true, "Comfy.Minimap.Visible": false }) });
    });
    await page.reload({ waitUntil: "domcontentloaded" });
    await waitForApp(page);
    await page.waitForTimeout(1000);
    mark("page_ready_s");

    const wf = JSON.parse(fs.readFileSync(cfg.workflow, "utf8"));
    report.extension_loaded = await page.evaluate(() => typeof window.safecutFormatResult === "function");
    report.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
    const loaded = await page.evaluate(async ({ wf, widgets }) => {
      const app = window.app;
      const types = [...new Set(wf.nodes.map((n) => n.type))];
      const unregistered = types.filter((t) => !window.LiteGraph.registered_node_types[t]);
      await app.loadGraphData(wf);
      await new Promise((r) => setTimeout(r, 1500)); // the missing-nodes notice is shown asynchronously
      // the missing-nodes dialog: its heading AND its list of node types (the whole dialog's text)
      // (frontend 1.27: a dialog; newer ones: a toast naming the node type)
      const sel = ".p-dialog, [role=dialog], [role=alertdialog], .p-toast-message, [role=alert], [role=status]";
      const dialogs = [...document.querySelectorAll(sel)].map((d) => d.innerText || "");
      const notice = dialogs.find((t) => /missing/i.test(t)) || null;
      const set = [];
      for (const node of app.graph._nodes) {
        for (const [name, value] of Object.entries(widgets[node.type] || {})) {
          const w = (node.widgets || []).find((x) => x.name === name);
          if (!w) throw new Error(`node ${node.id} (${node.type}) has no widget '${name}'`);
          w.value = value;
          set.push(`${node.id}.${name}=${value}`);
        }
      }
      const nodes = app.graph._nodes.map((n) => ({ id: String(n.id), type: n.type,
        widgets_values: (n.widgets || []).filter((w) => w.serialize !== false).length,
        size: [n.size[0], n.size[1]] }));
      return { types, unregistered, notice: notice || null, set, nodes };
    }, { wf, widgets: cfg.widgets || {} });
    Object.assign(report, loaded);
    mark("workflow_loaded_s");
    await page.waitForTimeout(500);
    report.opened = await page.evaluate(() => {
      const app = window.app;
      const ds = app.canvas.ds;
      const rect = app.canvas.canvas.getBoundingClientRect();
      const titleH = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
      const outside = [];
      for (const n of app.graph._nodes) {  // screen box of each node vs the visible canvas
        const x0 = (n.pos[0] + ds.offset[0]) * ds.scale, y0 = (n.pos[1] - titleH + ds.offset[1]) * ds.scale;
        const x1 = x0 + n.size[0] * ds.scale, y1 = y0 + (n.size[1] + titleH) * ds.scale;
        if (x0 < 0 || y0 < 0 || x1 > rect.width || y1 > rect.height) outside.push(`${n.id} ${n.type}`);
      }
      const note = app.graph._nodes.find((n) => /Note/.test(n.type));
      const el = note && (note.widgets || []).map((w) => w.element || w.inputEl).find(Boolean);
      let noteText = null, noteVisible = false;
      if (el) {
        const r = el.getBoundingClientRect();
        const st = window.getComputedStyle(el);
        noteVisible = r.width > 50 && r.height > 50 && st.display !== "none" && st.visibility !== "hidden";
        noteText = (el.innerText || el.value || "").trim();
      }
      return { scale: ds.scale, offset: [ds.offset[0], ds.offset[1]], canvas: [rect.width, rect.height], outside, note_visible: noteVisible,
               note_text: noteText };
    });
    report.opened_ds = { scale: report.opened.scale, offset: report.opened.offset };
    await page.screenshot({ path: path.join(cfg.screenshot_dir, `${cfg.name}_loaded.png`) });
    report.screenshots.push(path.join(cfg.screenshot_dir, `${cfg.name}_loaded.png`));
    if (!cfg.run) {
      save();
      return;
    }

    const run = await page.evaluate(async (timeoutMs) => {
      const app = window.app;
      const executed = [];
      const done = new Promise((resolve) => {
        app.api.addEventListener("executed", (e) => executed.push(String(e.detail.node ?? e.detail.display_node)));
        app.api.addEventListener("execution_success", (e) => resolve({ status: "success", detail: e.detail }));
        app.api.addEventListener("execution_error", (e) => resolve({ status: "error", detail: e.detail }));
        app.api.addEventListener("execution_interrupted", (e) => resolve({ status: "interrupted", detail: e.detail }));
      });
      const prompt = await app.graphToPrompt();
      const leaked = Object.entries(prompt.output).filter(([, n]) => "safecut_result" in (n.inputs || {}))
        .map(([id]) => id);
      let answer = null;  // the server's answer to the POST /prompt that app.queuePrompt makes
      const post = app.api.queuePrompt.bind(app.api);
      app.api.queuePrompt = async (...args) => (answer = await post(...args));
      const before = app.graph._nodes.map((n) => [String(n.id), n.size[1], n.computeSize()[1]]);
      await app.queuePrompt(0, 1);
      app.api.queuePrompt = post;
      const queued = answer ? { prompt_id: answer.prompt_id || null,
                                node_errors: Object.keys(answer.node_errors || {}) } : null;
      const timeout = new Promise((r) => setTimeout(() => r({ status: "timeout" }), timeoutMs));
      const result = await Promise.race([done, timeout]);
      await new Promise((r) => setTimeout(r, 500)); // let onExecuted of the last node draw
      return { queued, leaked_into_prompt: leaked, executed, heights_before: before, ...result };
    }, cfg.timeout_ms);
    report.run = run;
    mark("run_finished_s");
    // A node's image previews: node.imgs (drawn on the canvas), else the frontend's preview store (newer
    // frontends), else DOM <img> elements of /view URLs. They load asynchronously: give Save Cutout's up to 15 s.
    await page.evaluate(() => {
      window.__safecutPreviews = (n) => {
        const app = window.app;
        let srcs = (n.imgs || []).map((i) => i.src || "");
        const store = app.nodePreviewImages && app.nodePreviewImages[String(n.id)];
        if (!srcs.length && Array.isArray(store)) srcs = store.map(String);
        if (!srcs.length && n.type === "SafeCutSaveCutout") {
          srcs = [...document.images].filter((i) => /\/view\?/.test(i.src) && i.complete).map((i) => i.src);
        }
        return srcs;
      };
    });
    await page.waitForFunction(() => window.app.graph._nodes.filter((n) => n.type === "SafeCutSaveCutout")
      .every((n) => {
        const saved = Number(((n.safecutResult || "").match(/^saved (\d+)/) || [0, 0])[1]);
        return window.__safecutPreviews(n).length >= saved;
      }), null, { timeout: 15000 }).catch(() => {});

    report.results = await page.evaluate(() => {
      const app = window.app;
      const saved = app.graph.serialize();
      return app.graph._nodes.map((n) => {
        const w = (n.widgets || []).find((x) => x.name === "safecut_result");
        const el = w && (w.element || w.inputEl);
        const head = el && el.querySelector && el.querySelector(".safecut-head");
        const body = el && el.querySelector && el.querySelector(".safecut-body");
        const shown = (e) => {
          if (!e) return false;
          const r = e.getBoundingClientRect();
          const style = window.getComputedStyle(e);
          return r.width > 20 && r.height > 10 && style.display !== "none" && style.visibility !== "hidden"
            && Number(style.opacity) > 0.1;
        };
        const scale = app.canvas.ds.scale;
        const multiline = (n.widgets || []).filter((x) => x.name !== "safecut_result" && x.element
                                                           && x.element.tagName === "TEXTAREA")
          .map((x) => ({ name: x.name, height: x.element.getBoundingClientRect().height / scale }));
        const domText = head ? [head.textContent.trim(), body.value].filter(Boolean).join("\n")
          : (el ? el.value : null);
        const sn = saved.nodes.find((x) => String(x.id) === String(n.id));
        const srcs = window.__safecutPreviews(n);
        return { id: String(n.id), type: n.type, title: n.title, result: n.safecutResult ?? null,
                 widget_value: w ? w.value : null, dom_visible: shown(body || el), head_visible: shown(head),
                 head_text: head ? head.textContent : null, dom_text: domText,
                 min_height: n.computeSize()[1], multiline,
                 previews: srcs.length, preview_srcs: srcs,
                 saved_widgets_values: sn && sn.widgets_values ? sn.widgets_values.length : null,
                 bgcolor: n.bgcolor || null, pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]] };
      });
    });

    // Screenshots: the whole graph (fit to view), then close-ups of the nodes that show results.
    await page.evaluate((ds) => {
      const c = window.app.canvas;
      c.ds.scale = ds.scale;
      c.ds.offset[0] = ds.offset[0];
      c.ds.offset[1] = ds.offset[1];
      c.setDirty(true, true);
    }, report.opened_ds);
    await page.waitForTimeout(800);
    const full = path.join(cfg.screenshot_dir, `${cfg.name}.png`);
    await page.screenshot({ path: full });
    report.screenshots.push(full);
    for (const r of report.results) {
      if (!r.result || !(cfg.closeups || []).includes(r.type)) continue;
      await page.evaluate((id) => {
        const app = window.app;
        const node = app.graph._nodes.find((n) => String(n.id) === String(id));
        const ds = app.canvas.ds;
        const rect = app.canvas.canvas.getBoundingClientRect();
        // the whole node in the shot, its title below the chrome that newer frontends float over the canvas
        // (1.49: tab bar and "Graph" breadcrumb over its top ~90 px)
        const top = 140;
        ds.scale = Math.min(1.25, (rect.height - top - 20) / (node.size[1] + 40));
        ds.offset[0] = -node.pos[0] + 60 / ds.scale;
        ds.offset[1] = -node.pos[1] + top / ds.scale;
        app.canvas.setDirty(true, true);
        app.canvas.draw(true, true);
      }, r.id);
      await page.waitForTimeout(500);
      const clip = await nodeClip(page, r.id);
      const file = path.join(cfg.screenshot_dir, `${cfg.name}_node${r.id}_${r.type}.png`);
      await page.screenshot({ path: file, clip });
      report.screenshots.push(file);
    }
    mark("screenshots_s");
    save();
  } finally {
    await browser.close();
  }
})().catch((e) => {
  report.driver_error = String(e && e.stack ? e.stack : e);
  try {
    save();
  } catch (_) {
    /* ignore */
  }
  console.error(report.driver_error);
  process.exit(2);
});
