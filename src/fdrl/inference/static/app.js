// fdrl serve page: send photos or webcam frames to POST v1/predict and draw what comes back.
// Plain DOM code, no build step; every text from the server goes through textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const results = $("results");
let liveTimer = null;

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function predict(blob, name) {
  const body = new FormData();
  body.append("files", blob, name);
  const resp = await fetch("v1/predict", { method: "POST", body });
  const data = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

function barRow(parent, name, width, value, cls) {
  const track = el("span", { class: "track" });
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, width)) * 100}%`;
  track.append(fill);
  const row = [el("span", { class: "name" }, name), track, el("span", { class: "value" }, value)];
  for (const r of row) { if (cls) r.classList.add(cls); parent.append(r); }
}

function faceCard(face, classes, k) {
  const li = el("li", { class: "face", "data-face-index": String(face.face_index) });
  li.append(el("div", { class: "face-label", "data-label": face.label },
               `#${k + 1} ${face.label} ${face.confidence.toFixed(2)}`));
  const bars = el("div", { class: "bars probs" });
  for (const c of classes) {
    const p = face.probabilities[c];
    barRow(bars, c, p, p.toFixed(2), c === face.label ? "top" : null);
  }
  li.append(bars);
  if (face.alpha && face.alpha.length) {
    const alpha = el("div", { class: "bars alpha" });
    alpha.append(el("h3", {}, "latent-feature weights α"));
    const top = Math.max(...face.alpha);
    face.alpha.forEach((a, j) => barRow(alpha, `α${j + 1}`, top > 0 ? a / top : 0, a.toPrecision(3)));
    li.append(alpha);
  }
  return li;
}

function placeBoxes(stage, img, faces) {
  const W = img.naturalWidth, H = img.naturalHeight;
  faces.forEach((f, k) => {
    const [x, y, w, h] = f.box;
    const box = el("div", { class: "box" });
    Object.assign(box.style, { left: `${100 * x / W}%`, top: `${100 * y / H}%`,
                               width: `${100 * w / W}%`, height: `${100 * h / H}%` });
    if (y < 0.06 * H) box.classList.add("low");  // no room above: label goes under the box
    box.append(el("span", { class: "box-label" }, `#${k + 1} ${f.label} ${f.confidence.toFixed(2)}`));
    stage.append(box);
  });
}

function statusText(s) {
  if (s.status === "ok") return `${s.faces} face${s.faces === 1 ? "" : "s"}`;
  if (s.status === "no_face") return "no face found";
  if (s.status === "whole_image") return "no face found: the whole image read as one face";
  return s.status;
}

function render(data, url, replace = null) {
  for (const s of data.images) {
    const faces = data.faces.filter((f) => f.image_id === s.image_id);
    const art = el("article", { class: "result", "data-image-id": s.image_id });
    const left = el("div");
    left.append(el("h2", {}, s.image_id),
                el("span", { class: s.status.startsWith("unreadable") ? "status bad" : "status" }, statusText(s)));
    if (!s.status.startsWith("unreadable")) {
      const stage = el("div", { class: "stage" });
      const img = el("img", { alt: s.image_id });
      img.addEventListener("load", () => placeBoxes(stage, img, faces), { once: true });
      img.src = url;
      stage.append(img);
      left.append(el("br"), stage);
    }
    const list = el("ol", { class: "faces" });
    faces.forEach((f, k) => list.append(faceCard(f, data.classes, k)));
    art.append(left, list);
    if (replace && replace.isConnected) replace.replaceWith(art); else results.prepend(art);
    return art;
  }
  return null;
}

async function handleFiles(files) {
  const list = Array.from(files);
  for (const [i, file] of list.entries()) {
    say(`analysing ${file.name} (${i + 1}/${list.length})…`);
    try {
      render(await predict(file, file.name), URL.createObjectURL(file));
    } catch (err) {
      say(`${file.name}: ${err.message}`, true);
      continue;
    }
    say(`done: ${i + 1} of ${list.length}`);
  }
}

// ---- drag and drop, file picker ------------------------------------------------------------------------
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => handleFiles(e.dataTransfer.files));
$("files").addEventListener("change", (e) => { handleFiles(e.target.files); e.target.value = ""; });

// ---- webcam --------------------------------------------------------------------------------------------
let camCard = null;

async function snapshot() {
  const video = $("video");
  if (!video.videoWidth) return;
  const canvas = el("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", 0.9));
  try {
    camCard = render(await predict(blob, "webcam.jpg"), URL.createObjectURL(blob), camCard);
    say("");
  } catch (err) {
    say(`webcam: ${err.message}`, true);
  }
}

async function liveLoop() {
  if (!$("cam-live").checked) { liveTimer = null; return; }
  await snapshot();
  liveTimer = setTimeout(liveLoop, 250);
}

$("cam-start").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("this browser gives no camera access here (it needs http://127.0.0.1 or https)", true);
    return;
  }
  try {
    $("video").srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    say(`webcam: ${err.message}`, true);
    return;
  }
  $("video").hidden = false;
  $("cam-snap").disabled = false;
  $("cam-live").disabled = false;
  $("cam-start").disabled = true;
});
$("cam-snap").addEventListener("click", () => { camCard = null; snapshot(); });
$("cam-live").addEventListener("change", () => {
  if ($("cam-live").checked && !liveTimer) { camCard = null; liveLoop(); }  // one card, refreshed per frame
});

// ---- model information ---------------------------------------------------------------------------------
fetch("health").then((r) => r.json()).then((h) => {
  $("model-info").textContent = `model ${h.model} · ${h.detector} face detector · ${h.classes.length} classes`;
}).catch(() => say("the server does not answer /health", true));
