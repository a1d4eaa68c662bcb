// lenet serve's page: draw (or upload, or pick a test error), send the picture to
// /api/predict, and draw what comes back: the probabilities, the input the network
// saw, and every layer's output. No libraries, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const INK_WIDTH = 18; // on a 280 px pad: strokes about as thick as MNIST's after scaling
const ACTIVATIONS = new Set(["sigmoid", "tanh", "scaled-tanh", "relu", "leaky-relu"]);

const state = {
  models: [],
  model: null, // the selected model's info
  strokes: [], // each a list of [x, y]
  drawing: null,
  background: null, // {image, blob}: an uploaded photo or a picked test image
  changedAt: 0,
  dirty: false,
  inflight: 0, // requests on their way
  sent: 0, // requests sent
  shown: 0, // the request whose answer is on screen
  timer: null,
  layerViews: [], // what renderLayers repaints
  galleries: 0, // gallery requests made (only the latest is shown)
  sentAt: -Infinity,
  note: "", // said under the pad while no warning is: which test image is shown
};
// For tests and the curious: how many updates were drawn, and how long each took from
// the change (a stroke, an upload) to the drawn result, in ms.
window.lenetStats = { updates: 0, latencies: [], phases: [], errors: 0, idle: () => true };

// Nothing waiting to be sent and nothing in flight: the view shows the latest picture.
window.lenetStats.idle = () => !state.inflight && !state.dirty && !state.timer;

// ---------------------------------------------------------------- models
async function loadModels() {
  const answer = await (await fetch("/api/models")).json();
  state.models = answer.models;
  const select = $("model");
  select.innerHTML = "";
  for (const m of state.models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.id}: ${m.architecture}, ${m.dataset || "dataset unknown"}${accuracyText(m)}`;
    select.appendChild(option);
  }
  select.value = answer.default;
  selectModel(answer.default);
}

function accuracyText(m) {
  return m.test_accuracy == null ? "" : `, test accuracy ${(100 * m.test_accuracy).toFixed(2)} %`;
}

function selectModel(id) {
  state.model = state.models.find((m) => m.id === id);
  state.shown = state.sent; // answers on their way are the old model's
  const m = state.model;
  $("model-info").textContent =
    `${m.source === "shipped" ? "shipped model" : "checkpoint"}; architecture ${m.architecture}, ` +
    `${m.parameters.toLocaleString("en")} parameters, ${m.input_size}×${m.input_size} input; ` +
    `trained on ${m.dataset || "an unknown dataset"}${accuracyText(m)}`;
  changed();
  loadGallery();
}

// ---------------------------------------------------------------- drawing
function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (state.background) {
    const { image } = state.background;
    const s = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * s, h = image.height * s;
    ctx.imageSmoothingEnabled = !state.background.pixelated;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  for (const stroke of state.strokes) drawStroke(stroke);
}

function drawStroke(points) {
  ctx.strokeStyle = "#111";
  ctx.fillStyle = "#111";
  ctx.lineWidth = INK_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (points.length === 1) {
    ctx.beginPath();
    ctx.arc(points[0][0], points[0][1], INK_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function padPoint(e) {
  const r = pad.getBoundingClientRect();
  return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
}

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  if (!e.isPrimary) return; // one finger draws; a second does not join its stroke
  pad.setPointerCapture(e.pointerId);
  state.drawing = [padPoint(e)];
  state.strokes.push(state.drawing);
  redraw();
  changed();
});
pad.addEventListener("pointermove", (e) => {
  if (!state.drawing || !e.isPrimary) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) state.drawing.push(padPoint(ev));
  redraw();
  changed();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    state.drawing = null;
  });
}

$("clear").addEventListener("click", () => {
  state.strokes = [];
  state.background = null;
  redraw();
  changed();
});
$("undo").addEventListener("click", () => {
  if (state.strokes.length) state.strokes.pop();
  else state.background = null;
  redraw();
  changed();
});
$("upload").addEventListener("change", (e) => {
  if (e.target.files.length) usePicture(e.target.files[0]);
  e.target.value = "";
});
pad.addEventListener("dragover", (e) => {
  e.preventDefault();
  pad.classList.add("dropping");
});
// A file dropped beside the pad would make the browser leave the page for it.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", (e) => {
  e.preventDefault();
  pad.classList.remove("dropping");
  if (e.dataTransfer.files.length) usePicture(e.dataTransfer.files[0]);
});

// A picture (a file, or a test image as PNG) becomes the pad's background and is sent as
// it is: the server prepares it exactly as `lenet predict` does.
async function usePicture(blob, pixelated = false, note = "") {
  let image = null;
  try {
    image = await createImageBitmap(blob);
  } catch (_) {
    // Not something the browser can show: send it anyway, the server says what is wrong.
  }
  state.strokes = [];
  state.background = image ? { image, blob, pixelated } : null;
  redraw();
  changed(image ? null : blob, note);
}

// ---------------------------------------------------------------- talking to the server
// A change is sent at once (after a few ms that gather a burst of pointer events), with up
// to MAX_IN_FLIGHT requests on their way and at most one every MIN_GAP ms (under the
// server's rate limit); an answer older than the one on screen is dropped. So the view
// follows the pen: a change waits for a free slot, not for the request before it.
const MIN_GAP = 25;
const MAX_IN_FLIGHT = 2;
function changed(rawBlob = null, note = "") {
  state.note = note;
  state.changedAt = performance.now();
  state.dirty = true;
  state.raw = rawBlob;
  if (!state.timer) state.timer = setTimeout(send, 5);
}

// The pad as an 8-bit greyscale BMP, built here: a PNG from canvas.toBlob is encoded off
// the main thread and took 50-700 ms in headless Chromium while the pen moved; this takes
// about a millisecond. Grey is the luma of the pad's colours (as lenet's own to_gray).
function padBmp() {
  const { width: w, height: h } = pad;
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const row = (w + 3) & ~3;
  const offset = 14 + 40 + 256 * 4;
  const bytes = new Uint8Array(offset + row * h);
  const view = new DataView(bytes.buffer);
  bytes[0] = 0x42; // "BM"
  bytes[1] = 0x4d;
  view.setUint32(2, bytes.length, true);
  view.setUint32(10, offset, true);
  view.setUint32(14, 40, true); // BITMAPINFOHEADER
  view.setInt32(18, w, true);
  view.setInt32(22, h, true); // positive: rows bottom-up
  view.setUint16(26, 1, true);
  view.setUint16(28, 8, true); // bits per pixel, with a palette
  view.setUint32(34, row * h, true);
  view.setUint32(46, 256, true); // palette entries
  for (let i = 0; i < 256; i++) {
    bytes.set([i, i, i, 0], 54 + 4 * i);
  }
  for (let y = 0; y < h; y++) {
    const out = offset + (h - 1 - y) * row;
    for (let x = 0; x < w; x++) {
      const p = 4 * (y * w + x);
      bytes[out + x] = Math.round(0.299 * rgba[p] + 0.587 * rgba[p + 1] + 0.114 * rgba[p + 2]);
    }
  }
  return new Blob([bytes], { type: "image/bmp" });
}

async function send() {
  state.timer = null;
  if (state.inflight >= MAX_IN_FLIGHT || !state.model) return;
  const wait = state.sentAt + MIN_GAP - performance.now();
  if (wait > 0) {
    state.timer = setTimeout(send, wait);
    return;
  }
  state.dirty = false;
  const stamp = state.changedAt;
  let body;
  if (state.raw) body = state.raw;
  else if (!state.strokes.length && !state.background) {
    state.shown = ++state.sent; // nothing in flight may paint over the empty pad
    showEmpty();
    return;
  } else if (!state.strokes.length && state.background.blob) body = state.background.blob;
  else body = padBmp();
  const seq = ++state.sent;
  state.inflight += 1;
  const sentAt = (state.sentAt = performance.now());
  try {
    const url = `/api/predict?top=10&model=${encodeURIComponent(state.model.id)}`;
    const response = await fetch(url, { method: "POST", body });
    const answer = await response.json();
    // A later picture's answer is already on screen, or this one is another model's.
    if (seq < state.shown || answer.model && answer.model !== state.model.id) return;
    state.shown = seq;
    if (response.status === 429) {
      // Over the server's rate limit: send the latest picture again when it says.
      const wait = 1000 * Number(response.headers.get("Retry-After") || 1);
      state.dirty = true;
      setTimeout(() => state.dirty && !state.timer && (state.timer = setTimeout(send, 0)), wait);
    }
    if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
    const answered = performance.now();
    render(answer);
    const done = performance.now();
    const latency = done - stamp;
    window.lenetStats.updates += 1;
    window.lenetStats.latencies.push(latency);
    // Where the time went: waiting for a slot and making the picture, the round trip to
    // the server, drawing the answer.
    window.lenetStats.phases.push([sentAt - stamp, answered - sentAt, done - answered]);
    $("latency").textContent = `updated ${latency.toFixed(0)} ms after the last change`;
  } catch (err) {
    window.lenetStats.errors += 1;
    showMessage(err.message, "error");
  } finally {
    state.inflight -= 1;
    if (state.dirty && !state.timer) state.timer = setTimeout(send, 0);
  }
}

function showMessage(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

function showEmpty() {
  $("probs").innerHTML = "";
  $("layers").replaceChildren();
  $("layers").dataset.key = "";
  $("latency").textContent = "";
  const input = $("input").getContext("2d");
  input.clearRect(0, 0, $("input").width, $("input").height);
  showMessage("Draw a digit on the pad.", "");
}

// ---------------------------------------------------------------- drawing the answer
function bytesOf(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function floatsOf(b64) {
  return new Float32Array(bytesOf(b64).buffer);
}

// Paint values mapped [lo, hi] → [0, 255] into a canvas as grey, as `maps` maps of w×h
// laid out `cols` to a row with a one-pixel (transparent) gap.
function paintMaps(canvas, values, w, h, maps, cols, lo, hi) {
  const rows = Math.ceil(maps / cols);
  const width = cols * (w + 1) - 1, height = rows * (h + 1) - 1;
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const g = canvas.getContext("2d");
  const img = g.createImageData(width, height);
  const span = hi > lo ? hi - lo : 1;
  for (let k = 0; k < maps; k++) {
    const ox = (k % cols) * (w + 1), oy = Math.floor(k / cols) * (h + 1);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = Math.round((255 * (values[k * w * h + y * w + x] - lo)) / span);
        const p = 4 * ((oy + y) * width + ox + x);
        img.data[p] = img.data[p + 1] = img.data[p + 2] = v;
        img.data[p + 3] = 255;
      }
    }
  }
  g.putImageData(img, 0, 0);
}

// A new canvas of one w×h picture, drawn `scale` times larger, pixels kept sharp.
function greyCanvas(values, w, h, lo, hi, scale) {
  const c = document.createElement("canvas");
  paintMaps(c, values, w, h, 1, 1, lo, hi);
  c.style.width = `${w * scale}px`;
  c.style.height = `${h * scale}px`;
  return c;
}

// One bar per unit: up for positive, down (red) for negative values.
function paintBars(c, values) {
  const n = values.length;
  const bar = n > 100 ? 3 : n > 40 ? 4 : 8;
  if (c.width !== n * bar) c.width = n * bar;
  c.height = 48;
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  let top = 0, neg = false;
  for (const v of values) {
    top = Math.max(top, Math.abs(v));
    neg = neg || v < 0;
  }
  const base = neg ? c.height / 2 : c.height;
  const reach = neg ? c.height / 2 : c.height;
  for (let i = 0; i < n; i++) {
    const v = top > 0 ? values[i] / top : 0;
    g.fillStyle = v >= 0 ? "#1d232a" : "#c0392b";
    const h = Math.abs(v) * reach;
    g.fillRect(i * bar, v >= 0 ? base - h : base, bar - 1, h);
  }
}

function render(answer) {
  const m = state.model;
  const warnings = answer.warnings || [];
  showMessage(warnings.length ? warnings.join("; ") : state.note, warnings.length ? "warn" : "");
  renderProbabilities(answer.predictions);
  renderInput(answer);
  renderLayers(answer.layers || [], answer.distances);
  document.body.dataset.predicted = answer.predictions[0].class;
  document.body.dataset.model = answer.model;
}

function renderProbabilities(predictions) {
  const probs = $("probs");
  probs.innerHTML = "";
  predictions.slice(0, 5).forEach((p, k) => {
    const row = document.createElement("div");
    row.className = k === 0 ? "row top" : "row";
    row.dataset.class = p.class;
    const name = document.createElement("span");
    name.textContent = p.name;
    const track = document.createElement("div");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p.probability).toFixed(1)}%`;
    track.appendChild(bar);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * p.probability).toFixed(1)} %`;
    row.append(name, track, pct);
    probs.appendChild(row);
  });
}

function renderInput(answer) {
  const side = answer.input.size;
  const canvas = $("input");
  canvas.width = canvas.height = side;
  const g = canvas.getContext("2d");
  const bytes = bytesOf(answer.input.pixels);
  const img = g.createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = bytes[i];
    img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  const how = answer.preprocess === "none" ? "taken as it is" : `${answer.preprocess} preprocessing`;
  $("input-caption").textContent =
    `what the network sees: ${side}×${side}, ${how}${answer.inverted ? ", inverted" : ""} ` +
    `(from ${answer.size[0]}×${answer.size[1]})`;
}

// Layers in display groups: a layer with its activation is one group (the activated
// output shown); Flatten is only a reshape and is left out.
function groupsOf(layers) {
  const groups = [];
  for (const layer of layers) {
    if (layer.kind === "flatten") continue;
    const last = groups[groups.length - 1];
    if (ACTIVATIONS.has(layer.kind) && last && !last.activated) {
      last.values = floatsOf(layer.data);
      last.min = layer.min;
      last.max = layer.max;
      last.title += ` → ${layer.module}`;
      last.activated = true;
      continue;
    }
    groups.push({
      kind: layer.kind,
      title: `${layer.index}: ${layer.module}`,
      shape: layer.shape,
      values: floatsOf(layer.data),
      min: layer.min,
      max: layer.max,
      activated: ACTIVATIONS.has(layer.kind),
    });
  }
  return groups;
}

// The layer views are built once per model (and layout), then repainted in place on
// every answer: rebuilding ~60 canvases per answer cost the browser ~100 ms of layout and
// paint per stroke on this 2-core machine.
function renderLayers(layers, distances) {
  const box = $("layers");
  const groups = groupsOf(layers);
  const key = `${state.model.id}:${layers.length}:${box.clientWidth}`;
  if (box.dataset.key !== key) buildLayerViews(box, groups, key);
  groups.forEach((group, gi) => {
    const view = state.layerViews[gi];
    view.range.textContent = `${group.shape.join("×")}, ${group.min.toFixed(2)} … ${group.max.toFixed(2)}`;
    if (view.kind === "maps") {
      const [c, h, w] = group.shape;
      paintMaps(view.canvas, group.values, w, h, c, view.cols, group.min, group.max);
    } else if (view.kind === "rbf") {
      paintRbf(view, distances || Array.from(group.values, (v) => -v));
    } else {
      paintBars(view.canvas, group.values);
      if (view.picture) {
        const b = state.model.bitmaps;
        paintMaps(view.picture, group.values, b.width, b.height, 1, 1, -1.7159, 1.7159);
      }
    }
  });
}

function buildLayerViews(box, groups, key) {
  box.replaceChildren();
  box.dataset.key = key;
  const bitmaps = state.model.bitmaps;
  const width = box.clientWidth || 640;
  state.layerViews = groups.map((group, gi) => {
    const div = document.createElement("div");
    div.className = "layer";
    div.dataset.kind = group.kind;
    const h3 = document.createElement("h3");
    h3.textContent = `${group.title} `;
    const range = document.createElement("small");
    h3.appendChild(range);
    div.appendChild(h3);
    const holder = document.createElement("div");
    holder.className = "maps";
    div.appendChild(holder);
    box.appendChild(div);
    const [c, h, w] = group.shape;
    if (group.kind === "rbf" && bitmaps) {
      holder.className = "rbf";
      return { kind: "rbf", range, cells: buildRbf(holder, bitmaps) };
    }
    if (group.shape.length === 3 && h * w > 1) {
      // Every map of a layer in one canvas, on one scale, so that maps can be compared.
      const scale = Math.max(2, Math.floor(64 / h));
      const fit = Math.max(1, Math.min(c, Math.floor((width + scale) / ((w + 1) * scale))));
      const cols = Math.ceil(c / Math.ceil(c / fit)); // rows as even as can be
      const canvas = document.createElement("canvas");
      canvas.dataset.maps = c;
      const rows = Math.ceil(c / cols);
      canvas.style.width = `${(cols * (w + 1) - 1) * scale}px`;
      canvas.style.height = `${(rows * (h + 1) - 1) * scale}px`;
      holder.appendChild(canvas);
      return { kind: "maps", range, canvas, cols };
    }
    const canvas = document.createElement("canvas");
    canvas.className = "bars";
    holder.appendChild(canvas);
    // F6 of LeNet-5: its 84 units are read as a 7×12 picture against the RBF bitmaps.
    const next = groups[gi + 1];
    let picture = null;
    if (next && next.kind === "rbf" && bitmaps && group.values.length === bitmaps.width * bitmaps.height) {
      picture = greyCanvas(new Float32Array(bitmaps.width * bitmaps.height), bitmaps.width, bitmaps.height, -1, 1, 5);
      holder.appendChild(picture);
    }
    return { kind: "bars", range, canvas, picture };
  });
}

function buildRbf(box, bitmaps) {
  return bitmaps.values.map((bitmap, k) => {
    const cell = document.createElement("div");
    cell.className = "cell";
    cell.appendChild(greyCanvas(bitmap, bitmaps.width, bitmaps.height, -1, 1, 4));
    const label = document.createElement("span");
    cell.appendChild(label);
    box.appendChild(cell);
    return { cell, label, name: state.model.classes[k] };
  });
}

function paintRbf(view, distances) {
  const best = distances.indexOf(Math.min(...distances));
  view.cells.forEach((c, k) => {
    c.cell.className = k === best ? "cell best" : "cell";
    c.label.textContent = `${c.name}: ${distances[k].toFixed(1)}`;
  });
}

// ---------------------------------------------------------------- the errors gallery
async function loadGallery() {
  const id = state.model.id;
  const asked = ++state.galleries;
  const gallery = $("gallery");
  gallery.innerHTML = "";
  $("errors-info").textContent = "Classifying the test set…";
  let response, answer;
  try {
    response = await fetch(`/api/errors?limit=200&model=${encodeURIComponent(id)}`);
    answer = await response.json();
  } catch (err) {
    if (asked === state.galleries) $("errors-info").textContent = `No errors gallery: ${err.message}`;
    return;
  }
  if (asked !== state.galleries) return; // another model was picked meanwhile
  if (!response.ok) {
    $("errors-info").textContent = `No errors gallery: ${answer.error}`;
    return;
  }
  const g = answer.gallery;
  const names = state.model.classes;
  $("errors-info").textContent =
    `${g.errors} of ${g.total.toLocaleString("en")} ${g.dataset} test images are wrong ` +
    `(accuracy ${(100 * g.accuracy).toFixed(2)} %)${g.items.length < g.errors ? `; the first ${g.items.length}` : ""}. ` +
    "Click one to look at it above.";
  for (const item of g.items) {
    const div = document.createElement("div");
    div.className = "item";
    div.dataset.index = item.index;
    div.dataset.predicted = item.predicted;
    div.title = `test image ${item.index}: a ${names[item.label]}, read as ${names[item.predicted]} ` +
      `(${(100 * item.probability).toFixed(1)} %)`;
    const pixels = bytesOf(item.pixels);
    div.appendChild(greyCanvas(pixels, 28, 28, 0, 255, 2));
    const caption = document.createElement("div");
    caption.innerHTML = `<span class="was">${short(names[item.label])}</span> → ${short(names[item.predicted])}` +
      `<br>${(100 * item.probability).toFixed(0)} %`;
    div.appendChild(caption);
    div.addEventListener("click", () => pickTestImage(pixels, item));
    gallery.appendChild(div);
  }
}

function short(name) {
  return name.length > 8 ? name.slice(0, 7) + "." : name;
}

// A test image goes to the server as a 28×28 PNG: taken as it is, as in the dataset.
function pickTestImage(pixels, item) {
  const c = greyCanvas(pixels, 28, 28, 0, 255, 1);
  c.toBlob((blob) => {
    usePicture(blob, true, `test image ${item.index}: a ${state.model.classes[item.label]}`);
  }, "image/png");
}

$("model").addEventListener("change", (e) => selectModel(e.target.value));
redraw();
loadModels().catch((err) => showMessage(`cannot reach the server: ${err.message}`, "error"));
