// The page of `stn-gluon serve`: draw or drop a digit (a digit model), or upload or drop a photo (any other
// model), and see what the spatial transformer did. Plain JavaScript, no dependencies; it uses the server's
// public JSON API (docs/serving.md).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad"), ctx = pad.getContext("2d");
  const overlay = $("overlay"), octx = overlay.getContext("2d");
  const result = $("result"), errorBox = $("error"), labelOut = $("label"), confidence = $("confidence");
  const rectified = $("rectified"), bars = $("bars"), pen = $("pen"), cursor = $("cursor"), drop = $("drop");
  const photoCanvas = $("photo"), pctx = photoCanvas.getContext("2d"), photoPanel = $("photo-panel");
  const MAX_BARS = 10;       // more classes than this: the most probable ones only
  const API = "v1/predict?return_image=1&return_grid=1&return_input=1&invert=auto";
  const DEBOUNCE_MS = 250;   // a request once the drawing pauses this long...
  const MAX_WAIT_MS = 900;   // ...or at least this often while it goes on
  const OUTLINE = "#29b6f6";

  let classes = [...Array(10).keys()].map(String);
  let digits = true;         // a digit model: the pad; otherwise photos (GET /v1/model's "digits")
  let inputSize = [28, 28];  // the model's input, [W, H]
  let photo = null;          // the photo sent (an <img>), to draw the sampled region on
  let drawn = false;         // something drawn on the pad since it was cleared
  let upload = null;         // a file dropped or chosen: sent as it is until drawn over
  let timer = null, firstChange = 0, sent = 0, answered = 0;

  // ---- the server's token (stn-gluon serve --token): asked for once, on the first 401, kept for the tab ----
  const TOKEN_KEY = "stn-gluon-token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let asking = null;  // one question at a time, whatever the number of requests refused meanwhile

  function askToken() {
    if (!asking) {
      asking = Promise.resolve().then(() => {
        const given = window.prompt("This server needs its access token (the one given to stn-gluon serve):");
        if (given && given.trim()) {
          token = given.trim();
          sessionStorage.setItem(TOKEN_KEY, token);
        }
        asking = null;
      });
    }
    return asking;
  }

  async function call(url, init = {}) {  // fetch with the token; asks for it once when the server wants one
    let resp;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const sentWith = token;
      const headers = new Headers(init.headers || {});
      if (sentWith) headers.set("Authorization", `Bearer ${sentWith}`);
      resp = await fetch(url, { ...init, headers });
      if (resp.status !== 401) return resp;
      if (token === sentWith) {  // else another request was given a newer token meanwhile: retry with it
        if (attempt > 0) break;
        await askToken();
        if (token === sentWith) break;  // none given
      }
    }
    return resp;
  }

  // ---- the pad ----
  function blank() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
  }

  function ink() {
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Number(pen.value);
  }

  function dot(p) {
    ink();
    ctx.beginPath();
    ctx.arc(p[0], p[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function segment(a, b) {
    ink();
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  }

  function padPng() {  // the pad as PNG bytes (toDataURL: Chromium's toBlob may wait for an idle moment)
    const bytes = atob(pad.toDataURL("image/png").split(",")[1]);
    const out = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i += 1) out[i] = bytes.charCodeAt(i);
    return new Blob([out], { type: "image/png" });
  }

  function padPoint(ev) {  // CSS pixels -> the pad's own 280 x 280 pixels, whatever size it is shown at
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  }

  function changed() {
    drawn = true;
    upload = null;
    schedule();
  }

  function schedule() {
    const now = performance.now();
    if (timer === null) firstChange = now;
    clearTimeout(timer);
    const wait = Math.max(0, Math.min(DEBOUNCE_MS, firstChange + MAX_WAIT_MS - now));
    timer = setTimeout(send, wait);
    result.dataset.status = "pending";
  }

  let stroke = null;  // {id, last}: the pointer drawing now
  pad.addEventListener("pointerdown", (ev) => {
    if (ev.pointerType === "mouse" && ev.button !== 0) return;
    ev.preventDefault();  // no scrolling or text selection while drawing...
    pad.focus();          // ...but the keyboard follows the pen
    cursor.hidden = true;
    pad.setPointerCapture(ev.pointerId);
    stroke = { id: ev.pointerId, last: padPoint(ev) };
    dot(stroke.last);
    changed();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!stroke || ev.pointerId !== stroke.id) return;
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];
    for (const e of events.length ? events : [ev]) {
      const p = padPoint(e);
      segment(stroke.last, p);
      stroke.last = p;
    }
    changed();
  });
  const endStroke = (ev) => { if (stroke && ev.pointerId === stroke.id) stroke = null; };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  // keyboard: arrows move the pen (drawing while it is down), Space/Enter lifts or lowers it, Escape clears
  const kb = { x: pad.width / 2, y: pad.height / 2, down: false };
  function showCursor() {
    cursor.hidden = false;
    cursor.style.left = `${100 * kb.x / pad.width}%`;
    cursor.style.top = `${100 * kb.y / pad.height}%`;
    cursor.classList.toggle("down", kb.down);
  }
  pad.addEventListener("focus", () => { if (pad.matches(":focus-visible")) showCursor(); });
  pad.addEventListener("blur", () => { cursor.hidden = true; });
  pad.addEventListener("keydown", (ev) => {
    const step = ev.shiftKey ? 30 : 10;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (ev.key in moves) {
      const from = [kb.x, kb.y];
      kb.x = Math.min(pad.width, Math.max(0, kb.x + moves[ev.key][0]));
      kb.y = Math.min(pad.height, Math.max(0, kb.y + moves[ev.key][1]));
      if (kb.down) { segment(from, [kb.x, kb.y]); changed(); }
    } else if (ev.key === " " || ev.key === "Enter") {
      kb.down = !kb.down;
      if (kb.down) { dot([kb.x, kb.y]); changed(); }
    } else if (ev.key === "Escape") {
      clearAll();
    } else {
      return;
    }
    ev.preventDefault();
    showCursor();
  });

  // ---- files: chosen or dropped ----
  async function useFile(file) {
    if (!file) return;
    upload = file;
    drawn = false;
    blank();
    try {  // a preview on the pad; an unreadable file is the server's to refuse
      const bitmap = await createImageBitmap(file);
      const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
      const w = bitmap.width * s, h = bitmap.height * s;
      ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    } catch (err) { /* shown by the server's answer */ }
    clearTimeout(timer);
    timer = null;
    send();
  }
  $("file").addEventListener("change", (ev) => {
    useFile(ev.target.files[0]);
    ev.target.value = "";  // the same file chosen again is a new choice
  });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("dragover"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragover"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("dragover");
    useFile(ev.dataTransfer.files[0]);
  });

  // ---- photos (a model that is not a digit model): chosen or dropped, shown with the sampled region ----
  function openImage(file) {  // the file as an <img> (EXIF orientation applied, as the server does), or null
    return new Promise((resolve) => {
      const img = new Image(), url = URL.createObjectURL(file);
      img.onload = () => { URL.revokeObjectURL(url); resolve(img); };
      img.onerror = () => { URL.revokeObjectURL(url); resolve(null); };
      img.src = url;
    });
  }

  function showPhoto() {  // the photo alone, fitted to the view
    pctx.fillStyle = "#555";
    pctx.fillRect(0, 0, photoCanvas.width, photoCanvas.height);
    photoCanvas.dataset.outline = "0";
    photoCanvas.dataset.region = "";
    if (!photo) return;
    const s = Math.min(photoCanvas.width / photo.naturalWidth, photoCanvas.height / photo.naturalHeight);
    const w = photo.naturalWidth * s, h = photo.naturalHeight * s;
    pctx.drawImage(photo, (photoCanvas.width - w) / 2, (photoCanvas.height - h) / 2, w, h);
  }

  async function usePhoto(file) {
    if (!file) return;
    upload = file;
    photo = await openImage(file);  // an unreadable file is the server's to refuse
    $("drop-hint").hidden = photo !== null;
    showPhoto();
    clearTimeout(timer);
    timer = null;
    send();
  }
  $("photo-file").addEventListener("change", (ev) => {
    usePhoto(ev.target.files[0]);
    ev.target.value = "";
  });
  photoPanel.addEventListener("dragover", (ev) => { ev.preventDefault(); photoPanel.classList.add("dragover"); });
  photoPanel.addEventListener("dragleave", () => photoPanel.classList.remove("dragover"));
  photoPanel.addEventListener("drop", (ev) => {
    ev.preventDefault();
    photoPanel.classList.remove("dragover");
    usePhoto(ev.dataTransfer.files[0]);
  });

  // ---- the server ----
  async function send() {
    timer = null;
    const seq = ++sent;
    result.dataset.status = "busy";
    let body, headers = {};
    if (upload) {
      body = new FormData();
      body.append("file", upload, upload.name || "upload");
    } else if (drawn) {
      body = padPng();
      headers = { "Content-Type": "image/png" };
    } else {
      result.dataset.status = "idle";
      return;
    }
    let answer;
    try {
      const resp = await call(API, { method: "POST", body, headers });
      let doc = null;
      try { doc = await resp.json(); } catch (err) { /* not JSON */ }
      answer = resp.ok && doc ? { doc } :
        { error: (doc && doc.error) || `the server answered ${resp.status} ${resp.statusText}` };
    } catch (err) {
      answer = { error: `could not reach the server (${err.message})` };
    }
    if (seq !== sent) return;  // a newer drawing is on its way: this answer is stale
    await render(answer);
  }

  async function render(answer) {
    answered += 1;
    if (answer.error) {
      showError(answer.error);
      resetResults();
    } else {
      errorBox.hidden = true;
      await showPrediction(answer.doc.predictions[0]);
    }
    result.dataset.seq = String(answered);
    if (timer === null) result.dataset.status = answer.error ? "error" : "ok";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  async function showPrediction(p) {
    const name = p.class !== undefined ? String(p.class) : String(p.label);
    labelOut.textContent = name;
    const top = p.probabilities[p.label];
    const index = name === String(p.label) ? "" : `class ${p.label}, `;
    confidence.textContent = `(${index}${(100 * top).toFixed(1)} %` +
      `${p.inverted ? ", read as dark on light and inverted" : ""})`;
    drawBars(p.probabilities, p.label);
    await loaded(rectified, p.image);
    rectified.hidden = false;
    const input = await loaded(new Image(), p.input_image);
    drawOverlay(overlay, input, p.grid);
    if (!digits && photo) {  // the region in the photo's own pixels: input pixels scaled by photo / input
      const sx = photo.naturalWidth / inputSize[0], sy = photo.naturalHeight / inputSize[1];
      const scale = (points) => points.map(([x, y]) => [x * sx, y * sy]);
      drawOverlay(photoCanvas, photo, { outline: scale(p.grid.outline), lines: p.grid.lines.map(scale) });
    }
  }

  function loaded(img, base64png) {  // the image, once a base64 PNG from the server is loaded into it
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the server sent an unreadable image"));
      img.src = `data:image/png;base64,${base64png}`;
    });
  }

  function drawOverlay(canvas, input, grid) {
    // The view: the input and the sampled region both, so a region reaching past the image shows whole
    // (the margin, in grey, is outside the image: the STN sees its fill there), at most 3x the input each
    // way, centred; one scale for both axes.
    const g = canvas.getContext("2d");
    const w = input.naturalWidth, h = input.naturalHeight;
    const xs = grid.outline.map((p) => p[0]), ys = grid.outline.map((p) => p[1]);
    const span = (values, size) => [Math.max(-size, Math.min(0, ...values) - 0.5),
      Math.min(2 * size, Math.max(size, ...values) + 0.5)];
    const [lx, hx] = span(xs, w), [ly, hy] = span(ys, h);
    const s = Math.min(canvas.width / (hx - lx), canvas.height / (hy - ly));
    const ox = (canvas.width - (hx - lx) * s) / 2 - lx * s, oy = (canvas.height - (hy - ly) * s) / 2 - ly * s;
    const at = ([x, y]) => [ox + x * s, oy + y * s];
    g.fillStyle = "#555";
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.imageSmoothingEnabled = canvas !== overlay;  // the model's input: its pixels as they are
    g.drawImage(input, ox, oy, w * s, h * s);
    const trace = (points) => {
      g.beginPath();
      points.forEach((p, i) => (i ? g.lineTo(...at(p)) : g.moveTo(...at(p))));
    };
    g.strokeStyle = OUTLINE;
    g.lineWidth = 1;
    g.globalAlpha = 0.6;
    grid.lines.forEach((line) => { trace(line); g.stroke(); });
    g.globalAlpha = 1;
    g.lineWidth = 3;
    trace(grid.outline);
    g.closePath();
    g.stroke();
    canvas.dataset.outline = String(grid.outline.length);
    const r = (v) => Math.round(10 * v) / 10;  // the region's bounding box, in the image's pixels
    canvas.dataset.region = JSON.stringify([r(Math.min(...xs)), r(Math.min(...ys)), r(Math.max(...xs)),
      r(Math.max(...ys))]);
  }

  function drawBars(probabilities, best) {
    let shown = probabilities.map((p, k) => k);
    if (shown.length > MAX_BARS) {  // many classes: the most probable, in order
      shown = best < 0 ? shown.slice(0, MAX_BARS) :
        shown.sort((a, b) => probabilities[b] - probabilities[a]).slice(0, MAX_BARS);
    }
    bars.replaceChildren(...shown.map((k) => {
      const p = probabilities[k];
      const row = document.createElement("div");
      row.className = k === best ? "bar-row top" : "bar-row";
      row.setAttribute("role", "listitem");
      const pct = `${(100 * p).toFixed(1)} %`;
      row.setAttribute("aria-label", `${classes[k] ?? k}: ${pct}`);
      row.innerHTML = '<span class="cls"></span><div class="bar"><div class="fill"></div></div><span class="pct"></span>';
      row.querySelector(".cls").textContent = classes[k] ?? String(k);
      row.querySelector(".fill").style.width = `${(100 * p).toFixed(2)}%`;
      row.querySelector(".pct").textContent = pct;
      return row;
    }));
  }

  function resetResults() {
    labelOut.textContent = "\u2013";
    confidence.textContent = "";
    rectified.hidden = true;
    rectified.removeAttribute("src");
    octx.clearRect(0, 0, overlay.width, overlay.height);
    overlay.dataset.outline = "0";
    if (!digits) showPhoto();
    drawBars(classes.map(() => 0), -1);
  }

  function clearAll() {
    clearTimeout(timer);
    timer = null;
    sent += 1;  // answers still on their way are stale now
    drawn = false;
    upload = null;
    blank();
    errorBox.hidden = true;
    resetResults();
    result.dataset.status = "idle";
  }
  $("clear").addEventListener("click", clearAll);

  async function loadModel() {
    try {
      const resp = await call("v1/model");
      const info = await resp.json();
      if (!resp.ok) throw new Error(info.error || `${resp.status} ${resp.statusText}`);
      if (Array.isArray(info.classes) && info.classes.length) classes = info.classes.map(String);
      const [, c, h, w] = info.input_shape;
      inputSize = [w, h];
      if (info.digits === false) usePhotos(c);
      const name = info.pretrained ? `pretrained:${info.pretrained}` : info.model;
      $("model").textContent = `Model: ${name} (${info.transform || "no"} spatial transformer, ` +
        `input ${w}\u00d7${h}${c > 1 ? `\u00d7${c}` : ""}, ${info.backend}).`;
      if (digits && w > 56) {  // a large canvas (noisy128): its digits are MNIST-sized, anywhere on it
        document.querySelector(".guide").hidden = true;
        $("pad-help").textContent = `This model looks for a ${Math.round(28 * 280 / w)}-pixel digit anywhere ` +
          "on its canvas: draw it small, wherever you like, or drop an image on the square.";
      }
    } catch (err) {
      showError(`could not read the model's description (${err.message})`);
    }
    resetResults();
  }

  function usePhotos(channels) {  // a model that is not a digit model: photos instead of the pad
    digits = false;
    document.body.classList.add("photos");
    $("draw-panel").hidden = true;
    photoPanel.hidden = false;
    $("title").textContent = "Spatial transformer: classify an image";
    document.title = "stn-gluon: classify an image";
    $("photo-help").textContent = `Drop an image file on the square, or choose one. The model reads it ` +
      `${channels === 3 ? "in colour" : "in grey"} at ${inputSize[0]}\u00d7${inputSize[1]}; the outline shows the ` +
      "region its spatial transformer sampled.";
    showPhoto();
  }

  blank();
  loadModel();
})();
