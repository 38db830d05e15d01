// lenet serve, "Photo" mode: a photo of a written number goes to POST /api/read?details=true, and the page
// shows it scaled to fit with a box around each digit found, the 28x28 each digit became (what the network
// saw), the number read and, for the digit picked, its ten probabilities.
//
// The boxes come back in pixels of the image as the server decoded it (EXIF rotation applied); the browser
// shows an <img> with the same rotation, so a box is placed in percent of the answer's width and height.
// A photo too large for the server's limits is sent as a smaller copy; the page shows the original.
"use strict";

(() => {
  const MAX_UPLOAD_BYTES = 6 * 1024 * 1024;  // under the server's default 8 MiB body limit
  const MAX_PIXELS = 12_000_000;             // a 12 MP photo goes as it is; larger ones are scaled down
  const MAX_VIEW_HEIGHT = 520;               // px: the photo is scaled to fit the card and this height
  const SUBTITLES = {
    draw: "Draw one digit. The network answers while you draw.",
    photo: "Show it a photo of a written number: it reads every digit.",
  };

  const $ = (id) => document.getElementById(id);
  const card = $("photo-card");
  const drop = $("drop");
  const frame = $("photo-frame");
  const img = $("photo");
  const boxesEl = $("boxes");
  const numberEl = $("number");
  const infoEl = $("number-info");
  const modelEl = $("photo-model");
  const statusEl = $("photo-status");
  const digitsEl = $("digits");
  const titleEl = $("digit-title");
  const barsEl = $("digit-bars");
  const modelSelect = $("model");

  let version = 0;      // bumps with every photo (or network) sent; #number's data-version follows it
  let current = null;   // the photo last read: read again with another network when the picker changes
  let answer = null;    // the last answer: its size lays the photo out

  // ---- mode: Draw or Photo (#photo in the address opens Photo) ------------------------------------------
  function setMode(mode) {
    document.body.dataset.mode = mode;
    for (const tab of document.querySelectorAll(".modes [role=tab]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
    }
    $("sub").textContent = SUBTITLES[mode];
    history.replaceState(null, "", mode === "photo" ? "#photo" : location.pathname + location.search);
    if (mode === "photo") layout();
  }
  for (const tab of document.querySelectorAll(".modes [role=tab]")) {
    tab.addEventListener("click", () => setMode(tab.dataset.mode));
  }

  // ---- getting a photo: camera, file picker, drop, paste --------------------------------------------------
  for (const input of [$("camera"), $("photo-file")]) {
    input.addEventListener("change", () => {
      if (input.files && input.files[0]) readPhoto(input.files[0]);
      input.value = "";  // picking the same file again reads it again
    });
  }
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) readPhoto(file);
  });
  document.addEventListener("paste", (e) => {
    if (document.body.dataset.mode !== "photo" || !e.clipboardData) return;
    const file = Array.from(e.clipboardData.files).find((f) => f.type.startsWith("image/"));
    if (file) readPhoto(file);
  });
  modelSelect.addEventListener("change", () => {
    if (current) send(current);
  });

  function readPhoto(file) {
    setMode("photo");
    clearAnswer();
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(file);  // shown as it is: the boxes come in percent of its size
    drop.classList.remove("empty");
    send(file);
  }

  // A photo the browser cannot decode is sent as it is (the server says what is wrong with it); one over
  // MAX_PIXELS or MAX_UPLOAD_BYTES goes as a smaller JPEG, and so does one the server finds too large (413).
  async function send(file) {
    version += 1;
    const sent = version;
    card.dataset.version = String(sent);
    current = file;
    showPending();
    const bitmap = await createImageBitmap(file).catch(() => null);
    let pixels = bitmap ? bitmap.width * bitmap.height : 0;
    let reply;
    if (bitmap && (file.size > MAX_UPLOAD_BYTES || pixels > MAX_PIXELS)) {
      pixels = Math.min(pixels, MAX_PIXELS);
      reply = await post(await jpegCopy(bitmap, pixels), file.name);
    } else {
      reply = await post(file, file.name);
    }
    while (reply.status === 413 && bitmap && pixels > 250_000) {
      pixels /= 4;  // half the width and height
      reply = await post(await jpegCopy(bitmap, pixels), file.name);
    }
    if (bitmap) bitmap.close();
    if (sent !== version) return;  // a newer photo (or network) was sent meanwhile
    if (reply.ok) render(reply.data);
    else showError(reply.data.error || `HTTP ${reply.status}`);
    numberEl.dataset.version = String(sent);
  }

  function jpegCopy(bitmap, pixels) {
    const scale = Math.min(1, Math.sqrt(pixels / (bitmap.width * bitmap.height)));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  }

  async function post(blob, name) {
    try {
      const form = new FormData();
      form.append("image", blob, name || "photo");
      if (modelSelect.value) form.append("model", modelSelect.value);
      const res = await fetch("/api/read?details=true", { method: "POST", body: form });
      const data = await res.json().catch(() => ({}));
      return { ok: res.ok, status: res.status, data };
    } catch (err) {
      return { ok: false, status: 0, data: { error: `cannot reach the server (${err.message})` } };
    }
  }

  // ---- showing the answer ---------------------------------------------------------------------------------
  function showPending() {
    statusEl.textContent = "Reading…";
    statusEl.classList.remove("error");
  }

  function clearAnswer() {
    answer = null;
    numberEl.textContent = "?";
    numberEl.classList.add("idle");
    infoEl.textContent = "Reading the photo";
    modelEl.textContent = "";
    boxesEl.innerHTML = "";
    frame.dataset.boxes = "0";
    digitsEl.innerHTML = "";
    titleEl.textContent = "";
    barsEl.innerHTML = "";
  }

  function showError(message) {
    clearAnswer();
    infoEl.textContent = "Nothing read";
    statusEl.textContent = message;
    statusEl.classList.add("error");
  }

  function render(data) {
    answer = data;
    const n = data.digits.length;
    const surest = data.digits.map((d) => d.probabilities[d.prediction]);
    numberEl.textContent = data.number;
    numberEl.classList.remove("idle");
    numberEl.classList.toggle("long", data.number.length > 5);
    infoEl.textContent = `${n} digit${n === 1 ? "" : "s"} · the least sure at ${(Math.min(...surest) * 100).toFixed(1)}%`;
    modelEl.textContent = `read by ${data.model} · photo ${data.width}×${data.height}`;
    statusEl.textContent = "";
    statusEl.classList.remove("error");
    renderBoxes(data);
    renderDigits(data);
    pick(0);
    layout();
  }

  function renderBoxes(data) {
    boxesEl.innerHTML = "";
    data.digits.forEach((d, i) => {
      const [x, y, w, h] = d.box;
      const box = document.createElement("div");
      box.className = "box";
      box.style.left = `${(100 * x) / data.width}%`;
      box.style.top = `${(100 * y) / data.height}%`;
      box.style.width = `${(100 * w) / data.width}%`;
      box.style.height = `${(100 * h) / data.height}%`;
      box.title = `digit ${i + 1}: ${d.prediction}`;
      const label = document.createElement("span");
      label.textContent = String(d.prediction);
      box.appendChild(label);
      box.addEventListener("click", () => pick(i));
      boxesEl.appendChild(box);
    });
    frame.dataset.boxes = String(data.digits.length);
  }

  function renderDigits(data) {
    digitsEl.innerHTML = "";
    data.digits.forEach((d, i) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.title = `digit ${i + 1}: the 28×28 the network saw`;
      const cv = document.createElement("canvas");
      cv.width = cv.height = 28;
      if (d.input) paintGrey(cv.getContext("2d"), d.input);
      const read = document.createElement("span");
      read.className = "read";
      read.textContent = String(d.prediction);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = `${(d.probabilities[d.prediction] * 100).toFixed(1)}%`;
      button.append(cv, read, pct);
      button.addEventListener("click", () => pick(i));
      li.appendChild(button);
      digitsEl.appendChild(li);
    });
  }

  function paintGrey(c, values) {
    const image = c.createImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      image.data[i * 4] = image.data[i * 4 + 1] = image.data[i * 4 + 2] = values[i];
      image.data[i * 4 + 3] = 255;
    }
    c.putImageData(image, 0, 0);
  }

  // One digit's ten probabilities, and its box and tile highlighted.
  function pick(i) {
    if (!answer || !answer.digits[i]) return;
    const d = answer.digits[i];
    boxesEl.querySelectorAll(".box").forEach((b, k) => b.classList.toggle("picked", k === i));
    digitsEl.querySelectorAll("li").forEach((li, k) => li.classList.toggle("picked", k === i));
    titleEl.textContent = `Digit ${i + 1} of ${answer.digits.length}: how sure the network is of each reading`;
    barsEl.innerHTML = "";
    d.probabilities.forEach((p, k) => {
      const li = document.createElement("li");
      li.classList.toggle("best", k === d.prediction);
      li.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span>' +
                     '<span class="pct"></span>';
      li.querySelector(".label").textContent = String(k);
      li.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
      li.querySelector(".pct").textContent = p >= 0.0005 ? `${(p * 100).toFixed(1)}%` : "0%";
      barsEl.appendChild(li);
    });
  }

  // The photo scaled to fit the card's width and MAX_VIEW_HEIGHT, keeping its shape; the boxes follow in %.
  function layout() {
    const w = answer ? answer.width : img.naturalWidth;
    const h = answer ? answer.height : img.naturalHeight;
    if (!w || !h || !drop.clientWidth) return;
    const style = getComputedStyle(drop);
    const room = drop.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const scale = Math.min(room / w, MAX_VIEW_HEIGHT / h, 2);
    frame.style.width = `${Math.floor(w * scale)}px`;
    frame.style.height = `${Math.floor(h * scale)}px`;
  }
  img.addEventListener("load", layout);
  new ResizeObserver(layout).observe(drop);

  setMode(location.hash === "#photo" ? "photo" : "draw");
})();
