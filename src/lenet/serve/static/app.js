// lenet serve: draw on the canvas, and the page asks POST /api/predict?details=true while you draw.
//
// The drawing is sent as a PNG, so the server gives it exactly the preprocessing of `lenet predict`
// (crop, longest side 20 px, centre of mass): a digit drawn anywhere and at any size on the 280x280 pad
// becomes the MNIST-style 28x28 the network was trained on. At most one request is in flight; changes
// made meanwhile are sent when it returns, so the answer follows the pen without flooding the server.
"use strict";

(() => {
  const INK_WIDTH = 20;       // px on the 280 px pad; after scaling to 20 px this is MNIST's ~2 px stroke
  const THROTTLE_MS = 100;    // at most ~10 live predictions per second while drawing

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const clearButton = document.getElementById("clear");
  const modelSelect = document.getElementById("model");
  const predictionEl = document.getElementById("prediction");
  const confidenceEl = document.getElementById("confidence");
  const modelUsedEl = document.getElementById("model-used");
  const statusEl = document.getElementById("status");
  const barsEl = document.getElementById("bars");
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  const mapsEl = document.getElementById("maps");

  let blank = true;
  let drawing = false;
  let last = null;
  let version = 0;        // bumps with every change to the drawing (the test waits for its answer)
  let epoch = 0;          // bumps on Clear: answers to requests from before are dropped
  let inFlight = false;
  let timer = null;
  let lastSent = 0;
  let models = [];

  // ---- bars -------------------------------------------------------------------------------------------
  const bars = [];
  for (let d = 0; d <= 9; d++) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="label">${d}</span><span class="track"><span class="fill"></span></span>` +
                   `<span class="pct">–</span>`;
    barsEl.appendChild(li);
    bars.push({ li, fill: li.querySelector(".fill"), pct: li.querySelector(".pct") });
  }

  // ---- colour map for feature maps (an inferno-like ramp: dark = quiet, yellow = strong) ------------------
  const STOPS = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                 [250, 193, 39], [252, 255, 164]];
  const LUT = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (STOPS.length - 1);
    const k = Math.min(Math.floor(t), STOPS.length - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) LUT[i * 3 + c] = STOPS[k][c] + (STOPS[k + 1][c] - STOPS[k][c]) * f;
  }

  // ---- drawing ----------------------------------------------------------------------------------------
  function resetPad() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineWidth = INK_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
  }

  function bump() {
    version += 1;
    pad.dataset.version = String(version);
  }

  function point(e) {
    const r = pad.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * pad.width) / r.width, y: ((e.clientY - r.top) * pad.height) / r.height };
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, INK_WIDTH / 2, 0, Math.PI * 2);
    ctx.fill();
  }

  function lineTo(p) {
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  }

  // Pointer events cover mouse, pen and touch alike.
  pad.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    // Keep the stroke when the pointer leaves the pad mid-line (not possible for every pointer: ignore).
    try { pad.setPointerCapture(e.pointerId); } catch (_) { /* keep drawing without capture */ }
    drawing = true;
    blank = false;
    last = point(e);
    dot(last);
    bump();
    schedule(false);
  });

  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    e.preventDefault();
    // A fast pen delivers several positions per frame; use them all for a smooth stroke.
    const events = (e.getCoalescedEvents && e.getCoalescedEvents().length) ? e.getCoalescedEvents() : [e];
    for (const ev of events) lineTo(point(ev));
    bump();
    schedule(false);
  });

  function endStroke(e) {
    if (!drawing) return;
    drawing = false;
    if (pad.hasPointerCapture(e.pointerId)) pad.releasePointerCapture(e.pointerId);
    bump();
    schedule(true);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function clearAll() {
    resetPad();
    blank = true;
    epoch += 1;
    bump();
    clearTimeout(timer);
    timer = null;
    showIdle();
  }
  clearButton.addEventListener("click", clearAll);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" || (e.key === "Backspace" && e.target === document.body)) clearAll();
  });

  // ---- talking to the server --------------------------------------------------------------------------
  function schedule(now) {
    if (blank || inFlight) return;          // a returning request re-sends if the drawing moved on
    const wait = now ? 0 : Math.max(0, THROTTLE_MS - (performance.now() - lastSent));
    clearTimeout(timer);
    timer = setTimeout(send, wait);
  }

  function padBlob() {
    return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  }

  async function send() {
    timer = null;
    if (blank || inFlight) return;
    inFlight = true;
    lastSent = performance.now();
    const sentVersion = version;
    const sentEpoch = epoch;
    try {
      const form = new FormData();
      form.append("image", await padBlob(), "digit.png");
      if (modelSelect.value) form.append("model", modelSelect.value);
      const res = await fetch("/api/predict?details=true", { method: "POST", body: form });
      const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
      if (sentEpoch === epoch) {
        if (res.ok) render(data);
        else showError(data.error || `HTTP ${res.status}`);
        predictionEl.dataset.version = String(sentVersion);
      }
    } catch (err) {
      if (sentEpoch === epoch) {
        showError(`cannot reach the server (${err.message})`);
        predictionEl.dataset.version = String(sentVersion);
      }
    } finally {
      inFlight = false;
      if (!blank && version !== sentVersion) schedule(!drawing);
    }
  }

  // ---- showing the answer -----------------------------------------------------------------------------
  function showIdle() {
    predictionEl.textContent = "?";
    predictionEl.classList.add("idle");
    predictionEl.dataset.version = String(version);
    confidenceEl.textContent = "Draw a digit";
    modelUsedEl.textContent = "";
    statusEl.textContent = "";
    statusEl.classList.remove("error");
    for (const b of bars) {
      b.fill.style.width = "0";
      b.pct.textContent = "–";
      b.li.classList.remove("best");
    }
    seenCtx.fillStyle = "#000";
    seenCtx.fillRect(0, 0, 28, 28);
    mapsEl.innerHTML = '<p class="empty">The maps appear when you draw.</p>';
    mapsEl.dataset.key = "";
  }

  function showError(message) {
    statusEl.textContent = message;
    statusEl.classList.add("error");
  }

  function render(data) {
    const probs = data.probabilities;
    predictionEl.textContent = String(data.prediction);
    predictionEl.classList.remove("idle");
    confidenceEl.textContent = `${(probs[data.prediction] * 100).toFixed(1)}% sure it is a ${data.prediction}`;
    modelUsedEl.textContent = `read by ${data.model}`;
    statusEl.textContent = "";
    statusEl.classList.remove("error");
    probs.forEach((p, d) => {
      bars[d].fill.style.width = `${(p * 100).toFixed(1)}%`;
      bars[d].pct.textContent = p >= 0.0005 ? `${(p * 100).toFixed(1)}%` : "0%";
      bars[d].li.classList.toggle("best", d === data.prediction);
    });
    if (data.input) paintGrey(seenCtx, data.input, 28, 28);
    if (data.feature_maps) renderMaps(data.feature_maps);
  }

  function paintGrey(c, values, w, h) {
    const img = c.createImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const v = values[i];
      img.data[i * 4] = img.data[i * 4 + 1] = img.data[i * 4 + 2] = v;
      img.data[i * 4 + 3] = 255;
    }
    c.putImageData(img, 0, 0);
  }

  function renderMaps(layers) {
    // Reuse the canvases while the network (and so the layer shapes) stays the same.
    const key = layers.map((l) => `${l.layer}:${l.channels}x${l.height}x${l.width}`).join(",");
    if (mapsEl.dataset.key !== key) {
      mapsEl.innerHTML = "";
      for (const l of layers) {
        const section = document.createElement("div");
        section.className = "map-layer";
        const title = document.createElement("h3");
        title.textContent = l.layer;
        const info = document.createElement("span");
        info.textContent = `${l.channels} maps · ${l.height}×${l.width}`;
        title.appendChild(info);
        const grid = document.createElement("div");
        grid.className = "map-grid";
        const size = Math.round(Math.min(96, Math.max(44, l.width * 3.5)));
        for (let c = 0; c < l.channels; c++) {
          const cv = document.createElement("canvas");
          cv.width = l.width;
          cv.height = l.height;
          cv.style.width = cv.style.height = `${size}px`;
          cv.title = `${l.layer} map ${c + 1}`;
          grid.appendChild(cv);
        }
        section.append(title, grid);
        mapsEl.appendChild(section);
      }
      mapsEl.dataset.key = key;
    }
    layers.forEach((l, i) => {
      const bytes = Uint8Array.from(atob(l.data), (ch) => ch.charCodeAt(0));
      const canvases = mapsEl.children[i].querySelectorAll("canvas");
      const n = l.height * l.width;
      canvases.forEach((cv, c) => {
        const cctx = cv.getContext("2d");
        const img = cctx.createImageData(l.width, l.height);
        for (let j = 0; j < n; j++) {
          const v = bytes[c * n + j];
          img.data[j * 4] = LUT[v * 3];
          img.data[j * 4 + 1] = LUT[v * 3 + 1];
          img.data[j * 4 + 2] = LUT[v * 3 + 2];
          img.data[j * 4 + 3] = 255;
        }
        cctx.putImageData(img, 0, 0);
      });
    });
  }

  // ---- model picker -----------------------------------------------------------------------------------
  async function loadModels() {
    try {
      const res = await fetch("/api/models");
      const data = await res.json();
      modelSelect.innerHTML = "";
      for (const m of data.models) {
        const opt = document.createElement("option");
        opt.value = m.name;
        const acc = m.test_accuracy == null ? "accuracy not recorded" : `${m.test_accuracy.toFixed(2)}% test accuracy`;
        opt.textContent = m.available ? `${m.name} — ${acc}` : `${m.name} — no weights on this server`;
        opt.disabled = !m.available;
        opt.title = m.description;
        opt.selected = m.name === data.default;
        modelSelect.appendChild(opt);
      }
      models = data.models;
      describeModel();
    } catch (err) {
      showError(`cannot list the networks (${err.message})`);
    }
  }
  function describeModel() {
    const m = models.find((x) => x.name === modelSelect.value);
    document.getElementById("about-name").textContent = m ? `Network: ${m.name}` : "";
    document.getElementById("about-text").textContent = m ? m.description : "";
  }
  modelSelect.addEventListener("change", () => {
    describeModel();
    if (!blank) {
      bump();
      schedule(true);
    }
  });

  resetPad();
  showIdle();
  loadModels();
})();
