// Opens a SafeCut node's help page the way a user does, in ComfyUI's real frontend, for tests/test_frontend.py.
//
//   node node_help.js CONFIG.json      (NODE_PATH must let require('playwright-core') resolve)
//
// CONFIG: {url, chromium, node (class id), display (its display name), alias, alias_target (display name the
//          alias should find), screenshot_dir, name, timeout_ms, result_path}
// 1. Node library sidebar: types `alias` into its search box and records whether `alias_target` is listed.
// 2. Help: frontends with a help button on the library's node entries (1.27) get it clicked; newer ones show the
//    page in the properties panel's Info tab of the selected node, so the node is put on an empty canvas,
//    selected, and the panel opened. Records the panel's text and whether it overflows sideways.
// Writes a JSON report to result_path; exits non-zero only when the driver itself failed.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const report = { name: cfg.name, console_errors: [], page_errors: [], screenshots: [] };
const save = () => fs.writeFileSync(cfg.result_path, JSON.stringify(report, null, 1));
const appReady = () => window.app && window.app.graph && window.LiteGraph && window.app.vueAppReady;

async function shot(page, label, clip) {
  const p = path.join(cfg.screenshot_dir, `${cfg.name}_${label}.png`);
  await page.screenshot({ path: p, clip });
  report.screenshots.push(p);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: cfg.chromium, headless: true,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.setDefaultTimeout(cfg.timeout_ms);
    page.on("console", (m) => m.type() === "error" && report.console_errors.push(m.text().slice(0, 500)));
    page.on("pageerror", (e) => report.page_errors.push(String(e.message).slice(0, 500)));
    await page.goto(cfg.url, { waitUntil: "domcontentloaded" });
    await page.waitForFunction(appReady, null, { timeout: cfg.timeout_ms });
    await page.evaluate(async () => {   // first visit: no tutorial / template browser over the canvas
      await fetch("/api/settings", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ "Comfy.TutorialCompleted": true, "Comfy.Minimap.Visible": false }) });
    });
    await page.reload({ waitUntil: "domcontentloaded" });
    await page.waitForFunction(appReady, null, { timeout: cfg.timeout_ms });
    await page.waitForTimeout(1000);
    report.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
    report.def_aliases = await page.evaluate((cls) => {
      const t = window.LiteGraph.registered_node_types[cls];
      return (t && t.nodeData && t.nodeData.search_aliases) || null;
    }, cfg.alias_node);

    // an empty canvas with just this node (selected), so the screenshot shows the node beside its help
    await page.evaluate((cls) => {
      const app = window.app;
      app.graph.clear();
      const node = window.LiteGraph.createNode(cls);
      node.pos = [520, 120];
      app.graph.add(node);
      app.canvas.ds.offset = [0, 0];
      app.canvas.ds.scale = 1;
      app.canvas.selectNode(node);
      app.canvas.setDirty(true, true);
    }, cfg.node);

    // 1. the node library's search
    await page.click(".node-library-tab-button, [data-testid=node-library-tab-button]");
    const search = page.locator("input[placeholder*='Search']").first();
    await search.fill(cfg.alias);
    await page.waitForTimeout(1500);
    // how often the node is listed (an alias registered twice must not list it twice)
    report.alias_hits = await page.locator(`text="${cfg.alias_target}"`).count();
    report.alias_hit = report.alias_hits > 0;
    await shot(page, "alias_search");

    // 2. the help page
    await search.fill(cfg.display);
    await page.waitForTimeout(1500);
    const entry = page.locator(".p-tree-node-content, [role=treeitem]", { hasText: cfg.display }).first();
    await entry.hover();
    await page.waitForTimeout(300);
    const helpButton = entry.locator(".help-button");
    if (await helpButton.count()) {
      report.opened_via = "node library help button";
      await helpButton.click();
    } else {
      report.opened_via = "properties panel, Info tab";
      await page.click("button[aria-label='Toggle properties panel']");
      await page.locator("[role=tab]", { hasText: /^\s*Info\s*$/ }).first().click();
    }
    const help = page.locator(".node-help-content").first();
    await help.waitFor({ state: "visible" });
    await page.waitForFunction((title) => {
      const el = document.querySelector(".node-help-content");
      return el && el.innerText.includes(title) && el.innerText.includes("Errors and fixes");
    }, cfg.display, { timeout: cfg.timeout_ms });
    await page.waitForTimeout(500);
    report.help_text = await help.innerText();
    report.help_box = await help.evaluate((el) => {
      const r = el.getBoundingClientRect();
      // the scrolling container: the nearest ancestor that scrolls vertically
      let s = el;
      while (s && s !== document.body && !/(auto|scroll)/.test(getComputedStyle(s).overflowY)) s = s.parentElement;
      return { x: r.x, y: r.y, width: r.width, height: r.height, overflow_x: el.scrollWidth - el.clientWidth,
               scroller_overflow_x: s ? s.scrollWidth - s.clientWidth : null };
    });
    await shot(page, "help_panel");
  } catch (e) {
    report.driver_error = String(e && e.stack ? e.stack : e).slice(0, 3000);
  } finally {
    save();
    await browser.close();
  }
})().catch((e) => {
  report.driver_error = String(e);
  save();
  process.exit(1);
});
