// lenet serve's page in Debian's headless Chromium, driven by Playwright
// (playwright-core from npm, which downloads no browser): draw strokes, upload a photo,
// click a gallery item, switch models, and keep a screenshot. Run by tests/serve_page.rs:
//
//   node tests/page/page.mjs URL OUT_DIR PHOTO EXPECTED_DIGIT
//
// Prints one JSON line of what it measured; exits non-zero on the first failed check.
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, outDir, photo, photoDigit] = process.argv.slice(2);
const executablePath = process.env.LENET_CHROMIUM || "/usr/bin/chromium";

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

// As root in CI Chromium needs --no-sandbox; the rest keep it off the (closed) network.
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync"];
const browser = await chromium.launch({ executablePath, args });
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // The browser logs the non-image's 415 answer (asked for below); anything else is a problem.
  const expected = /Failed to load resource: .* status of 415/;
  page.on("console", (m) => m.type() === "error" && !expected.test(m.text()) && problems.push(`console error: ${m.text()}`));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0);
  const model = await page.$eval("#model", (s) => s.value);
  check(model === "mnist-lenet5", `the default model is mnist-lenet5, not ${model}`);

  const updates = () => page.evaluate(() => window.lenetStats.updates);
  // Wait until the page has drawn an answer to the latest change (and sent nothing since).
  async function settled(after) {
    for (;;) {
      await page.waitForFunction((n) => window.lenetStats.updates > n && window.lenetStats.idle(), after, { timeout: 10000 });
      // Still idle a moment later, with no update since: nothing was on its way.
      const seen = await updates();
      await page.waitForTimeout(100);
      if ((await updates()) === seen && (await page.evaluate(() => window.lenetStats.idle()))) return;
    }
  }
  const predicted = () => page.evaluate(() => document.body.dataset.predicted);

  // 1. Draw: strokes on the pad, in pad coordinates (280×280), as a mouse would.
  const box = await page.locator("#pad").boundingBox();
  async function stroke(points) {
    await page.mouse.move(box.x + points[0][0], box.y + points[0][1]);
    await page.mouse.down();
    for (const [x, y] of points.slice(1)) await page.mouse.move(box.x + x, box.y + y, { steps: 8 });
    await page.mouse.up();
  }
  let before = await updates();
  await stroke([[140, 50], [142, 140], [144, 230]]);
  await settled(before);
  check((await predicted()) === "1", `a vertical stroke reads as 1, not ${await predicted()}`);
  const rows = await page.locator("#probs .row").count();
  check(rows === 5, `five probability bars, not ${rows}`);
  const maps = await page.$$eval("#layers canvas[data-maps]", (cs) => cs.reduce((n, c) => n + Number(c.dataset.maps), 0));
  const layers = await page.locator("#layers .layer").count();
  // LeNet-5: C1 (6 maps), S2 (6), C3 (16), S4 (16), C5, F6 (bars and its 7×12 picture), RBF (10 bitmaps).
  check(layers === 7, `LeNet-5 shows 7 layer groups, not ${layers}`);
  check(maps === 6 + 6 + 16 + 16, `every feature map is drawn (${maps} maps)`);
  // The maps are painted: C1's canvas is not all one grey.
  const c1 = await page.$eval("#layers canvas[data-maps]", (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const levels = new Set();
    for (let i = 0; i < d.length; i += 4) if (d[i + 3]) levels.add(d[i]);
    return levels.size;
  });
  check(c1 > 50, `C1's maps show the stroke (${c1} grey levels)`);
  check((await page.locator(".rbf .cell").count()) === 10, "the ten RBF bitmaps with their distances");
  check((await page.locator(".rbf .cell.best").textContent()).startsWith("1:"), "the closest bitmap is the 1");

  // Undo, then a 7: a bar and a diagonal.
  before = await updates();
  await page.click("#undo");
  await stroke([[70, 60], [210, 60], [130, 235]]);
  await settled(before);
  check((await predicted()) === "7", `a drawn 7 reads as 7, not ${await predicted()}`);
  const drawLatencies = await page.evaluate(() => window.lenetStats.latencies.slice());
  const drawPhases = await page.evaluate(() => window.lenetStats.phases.slice());

  // The time from one short stroke to its drawn answer, with nothing else in flight
  // (while the pen moves, a change also waits for the request before it to return).
  const single = [];
  const singlePhases = [];
  for (let k = 0; k < 10; k++) {
    before = await updates();
    const n = (await page.evaluate(() => window.lenetStats.latencies.length));
    await stroke([[60 + 15 * k, 120], [62 + 15 * k, 150]]);
    await settled(before);
    single.push(...(await page.evaluate((n) => window.lenetStats.latencies.slice(n), n)));
    singlePhases.push(...(await page.evaluate((n) => window.lenetStats.phases.slice(n), n)));
  }
  single.sort((a, b) => a - b);

  // 2. Upload one of the repository's photographs.
  before = await updates();
  await page.setInputFiles("#upload", photo);
  await settled(before);
  check((await predicted()) === photoDigit, `the photo reads as ${photoDigit}, not ${await predicted()}`);
  const caption = await page.textContent("#input-caption");
  check(caption.includes("32×32") && caption.includes("mnist preprocessing"), `input caption: ${caption}`);

  // A file that is no picture: the server's message on the page, and the page still works.
  const errorsBefore = await page.evaluate(() => window.lenetStats.errors);
  const notAPicture = `${outDir}/not-a-picture.png`;
  writeFileSync(notAPicture, "this is text, whatever its name says");
  await page.setInputFiles("#upload", notAPicture);
  await page.waitForFunction((n) => window.lenetStats.errors > n && window.lenetStats.idle(), errorsBefore);
  const message = await page.textContent("#message.error");
  check(message.includes("not an image: lenet reads PNG, JPEG and BMP files"), `the message for a non-image: ${message}`);

  // 3. The errors gallery: click an item, and the Think view shows that test image read
  // as the gallery says.
  await page.waitForSelector("#gallery .item", { timeout: 30000 });
  const items = await page.locator("#gallery .item").count();
  const info = await page.textContent("#errors-info");
  check(/\d+ of 10,000 mnist test images are wrong/.test(info), `gallery info: ${info}`);
  const item = page.locator("#gallery .item").nth(2);
  const itemPredicted = await item.getAttribute("data-predicted");
  before = await updates();
  await item.click();
  await settled(before);
  check((await predicted()) === itemPredicted, `the clicked test image reads as ${itemPredicted}, not ${await predicted()}`);
  check((await page.textContent("#input-caption")).includes("taken as it is"), "a test image is taken as it is");
  check((await page.textContent("#message")).startsWith("test image "), "the message says which test image, not the error");
  await page.screenshot({ path: `${outDir}/serve-page.png`, fullPage: true });

  // 4. Another model: the page says what it is and reads the picture again with it.
  before = await updates();
  await page.selectOption("#model", "fashion-mnist-relu");
  await settled(before);
  const modelInfo = await page.textContent("#model-info");
  check(modelInfo.includes("relu") && modelInfo.includes("fashion-mnist") && modelInfo.includes("91.33 %"), `model info: ${modelInfo}`);
  check((await page.evaluate(() => document.body.dataset.model)) === "fashion-mnist-relu", "the answer comes from the new model");
  check((await page.locator(".rbf .cell").count()) === 0, "no RBF bitmaps for a linear output");
  await page.waitForFunction(() => /fashion-mnist test images/.test(document.querySelector("#errors-info").textContent), null, { timeout: 30000 });
  await page.screenshot({ path: `${outDir}/serve-page-fashion.png`, fullPage: true });

  check(problems.length === 0, problems.join("; "));
  const errors = await page.evaluate(() => window.lenetStats.errors);
  check(errors === 1, `one request failed (the non-image), not ${errors}`);
  const sorted = drawLatencies.slice().sort((a, b) => a - b);
  console.log(JSON.stringify({
    gallery_items: items,
    draw_updates: drawLatencies.length,
    draw_latency_ms_median: sorted[Math.floor(sorted.length / 2)],
    draw_latency_ms_max: sorted[sorted.length - 1],
    stroke_latency_ms_median: single[Math.floor(single.length / 2)],
    stroke_latency_ms_max: single[single.length - 1],
    stroke_phases_ms: singlePhases.map((p) => p.map((v) => Math.round(v))),
    draw_phases_ms: drawPhases.map((p) => p.map((v) => Math.round(v))),
  }));
} finally {
  await browser.close();
}
