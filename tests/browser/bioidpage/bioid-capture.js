// A stand-in for BioID's hosted capture page (BWS-GUI uui.php + bws.capture.js), written for the
// tests from the behaviour described in shared/docs/bioid-capture-page.md, so that this server
// is tested against what that page really does with a head-movement challenge:
//
// * the camera's 3:4 centre crop, mirrored, is the upload (a PNG data URL, sent raw with
//   jQuery's form content type and a Bearer token);
// * every 50 ms a 120×160 green-plane copy of the crop's centre 3/4 is compared with a template
//   of the last upload (its centre ¼ × ⅜) by a cross-correlation without mean removal; a photo
//   is taken when the best match moved more than `threshold` % of the largest measurable shift;
// * the first tick after START uploads at once; after each upload the next direction is shown
//   and capturing pauses 1 s; the tag is never reset between tries;
// * a refused first photo starts the next try (next challenge) without a server call; a refused
//   later photo calls the task with what was uploaded; a failed task retries with the next
//   challenge while tries are left; a try is given up 30 s after START;
// * at the end it redirects to return_url?access_token=…[&error=…]&state=….
//
// Test instrumentation, not in BioID's page: the person in front of the fake camera "presses
// START" for try k when the camera shows frame number startFrames[k] (the frame's barcode, see
// tests/browser/fakecam.py), and every event is logged to the console as "bioid: ...".

"use strict";

const params = new URLSearchParams(location.search);
const api = params.get("api"); // e.g. http://127.0.0.1:8080/extension/
const token = params.get("access_token");
const returnUrl = params.get("return_url");
const state = params.get("state") || "";
const threshold = Number(params.get("threshold") || 25);
const startFrames = (params.get("start_frames") || "0").split(",").map(Number);

const TICK_MS = 50;
const PAUSE_MS = 1000;
const ACTIVITY_MS = 30000;
const MOTION_HEIGHT = 160;
const BAR = { bits: 10, px: 12, y: 462 }; // the fake camera's frame-number barcode

function log(...parts) { console.log("bioid:", ...parts); }

// -- the token, as uui.php reads it -----------------------------------------------------------

function claimsOf(jwt) {
  const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
}

const claims = claimsOf(token);
const flags = Number(claims.task);
const task = { 0x00: "verify", 0x10: "identify", 0x20: "enroll", 0x80: "livenessdetection" }[flags & 0xf0];
const executions = (flags & 0x0f) || 3;
const challengeResponse = Boolean(flags & 0x200);
const challenges = claims.challenge ? JSON.parse(claims.challenge) : [];
const recordings = challengeResponse && challenges.length ? challenges[0].length + 1 : 2;

// -- the capture module ---------------------------------------------------------------------

const video = document.getElementById("video");
const copy = document.createElement("canvas");
const motion = document.createElement("canvas");
const probe = document.createElement("canvas");
let uploaded = 0, uploading = 0, captured = 0, capturing = false;
let tag = "any";
let tags = [];
let template = null;
let activityTimer = null;
let currentExecution = 0;
let waitingForStart = true;
let inTry = false; // between START and the task's call
let finished = false;

function frameNumber() {
  const ctx = probe.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, probe.width, probe.height);
  const row = ctx.getImageData(0, BAR.y + BAR.px / 2, BAR.bits * BAR.px + 8, 1).data;
  let number = 0;
  for (let bit = 0; bit < BAR.bits; bit++) {
    const x = 8 + bit * BAR.px + BAR.px / 2;
    if (row[4 * x] > 128) number |= 1 << bit;
  }
  return number;
}

function initializeCanvases() {
  const aspect = Math.min(video.videoWidth / video.videoHeight, 3 / 4);
  copy.height = video.videoHeight;
  copy.width = copy.height * aspect;
  motion.height = MOTION_HEIGHT;
  motion.width = motion.height * aspect;
  probe.width = video.videoWidth;
  probe.height = video.videoHeight;
  const ctx = copy.getContext("2d", { willReadFrequently: true });
  ctx.translate(copy.width, 0); // mirrored, as the page's default
  ctx.scale(-1, 1);
  setInterval(processFrame, TICK_MS);
}

function createTemplate(image) {
  const t = { centerX: image.width / 2, centerY: image.height / 2, width: image.width / 4,
    height: image.height / 4 + image.height / 8 };
  t.x = t.centerX - t.width / 2;
  t.y = t.centerY - t.height / 2;
  t.buffer = new Uint8ClampedArray(t.width * t.height);
  let k = 0;
  for (let y = t.y; y < t.y + t.height; y++) {
    for (let x = t.x; x < t.x + t.width; x++) t.buffer[k++] = image.data[4 * (y * image.width + x) + 1];
  }
  return t;
}

function movement(image, t) {
  const searchW = image.width / 4, searchH = image.height / 4;
  let best = 0, bestX = 0, bestY = 0;
  for (let y = t.centerY - searchH; y <= t.centerY + searchH - t.height; y++) {
    for (let x = t.centerX - searchW; x <= t.centerX + searchW - t.width; x++) {
      let product = 0, energy = 0, k = 0;
      for (let ty = 0; ty < t.height; ty++) {
        let i = 4 * ((y + ty) * image.width + x) + 1;
        for (let tx = 0; tx < t.width; tx++, i += 4) {
          const pixel = image.data[i];
          product += t.buffer[k++] * pixel;
          energy += pixel * pixel;
        }
      }
      const score = energy > 0 ? product * product / energy : 0;
      if (score > best) { best = score; bestX = x; bestY = y; }
    }
  }
  const shift = Math.hypot(bestX - t.x, bestY - t.y);
  const largest = Math.hypot(searchW - t.width / 2, searchH - t.height / 2);
  return Math.min(100, shift / largest * 100);
}

function processFrame() {
  if (finished || video.readyState < 2) return;
  const frame = frameNumber();
  if (waitingForStart && frame >= startFrames[Math.min(currentExecution, startFrames.length - 1)]) {
    waitingForStart = false;
    startRecording(frame);
  }
  const cutoff = video.videoWidth - video.videoHeight * (copy.width / copy.height);
  copy.getContext("2d").drawImage(video, cutoff / 2, 0, video.videoWidth - cutoff, video.videoHeight,
    0, 0, copy.width, copy.height);
  if (!capturing || uploaded >= recordings) return;
  const mctx = motion.getContext("2d", { willReadFrequently: true });
  mctx.drawImage(copy, copy.width / 8, copy.height / 8, copy.width - copy.width / 4, copy.height - copy.height / 4,
    0, 0, motion.width, motion.height);
  const image = mctx.getImageData(0, 0, motion.width, motion.height);
  const moved = template ? movement(image, template) : 100;
  if (moved > threshold && uploaded + uploading < recordings) {
    upload(frame, moved);
    template = createTemplate(image);
  }
}

function startRecording(frame) {
  recording(false);
  tags = challengeResponse && challenges.length > currentExecution ? challenges[currentExecution] : [];
  log("start", JSON.stringify({ try: currentExecution + 1, frame, challenge: tags }));
  recording(true);
  inTry = true;
  armActivityTimer();
}

function armActivityTimer() {
  clearTimeout(activityTimer);
  activityTimer = setTimeout(() => {
    if (!inTry || finished) return;
    if (uploading > 0) { armActivityTimer(); return; }
    recording(false);
    done("Activity time is over!");
  }, ACTIVITY_MS);
}

function recording(capture) {
  uploaded = 0;
  uploading = 0;
  captured = 0;
  template = null;
  capturing = capture;
}

function setTag() {
  if (challengeResponse) {
    const current = uploaded + uploading;
    tag = current > 0 && current < recordings && tags.length >= current ? tags[current - 1] : "any";
  }
  log("cue", JSON.stringify({ tag, frame: frameNumber() }));
  if (capturing) {
    capturing = false;
    setTimeout(() => { if (template !== null && !finished) capturing = true; }, PAUSE_MS);
  }
}

async function upload(frame, moved) {
  captured++;
  uploading++;
  const dataURL = copy.toDataURL();
  const index = captured;
  log("upload", JSON.stringify({ index, tag, frame, movement: Math.round(moved) }));
  const request = fetch(`${api}upload?tag=${tag}&index=${index}&trait=FACE`, {
    method: "POST", body: dataURL,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8" },
  });
  if (uploaded + uploading < recordings) setTag();
  let data;
  try {
    const reply = await request;
    if (!reply.ok) throw new Error(reply.statusText || String(reply.status));
    data = await reply.json();
  } catch (error) {
    log("upload failed", String(error));
    recording(false);
    done(String(error.message || error));
    return;
  }
  uploading--;
  log("uploaded", JSON.stringify({ index, accepted: data.Accepted, error: data.Error || null }));
  if (data.Accepted) {
    uploaded++;
    if (uploaded >= recordings && uploading === 0) performTask();
  } else if (uploaded < 1) {
    done("NoFaceFound", true);
  } else {
    capturing = false;
    performTask();
  }
}

async function performTask() {
  inTry = false;
  log("task", task);
  let data;
  try {
    const reply = await fetch(`${api}${task}`, { headers: { "Authorization": `Bearer ${token}` } });
    if (!reply.ok) throw new Error(reply.statusText || String(reply.status));
    data = await reply.json();
  } catch (error) {
    recording(false);
    done(String(error.message || error));
    return;
  }
  log("result", JSON.stringify(data));
  if (data.Success) {
    recording(false);
    done();
  } else {
    const error = data.Error || "NotRecognized";
    recording(false);
    done(error, error !== "NoTemplateAvailable");
  }
}

function done(error, retry) {
  recording(false); // uui.php's done callback stops the recording first
  inTry = false;
  clearTimeout(activityTimer);
  currentExecution++;
  if (error !== undefined && retry && currentExecution < executions) {
    log("retry", JSON.stringify({ error, next: currentExecution + 1 }));
    waitingForStart = true; // the user reads the message, presses OK and then START
    return;
  }
  finished = true;
  let url = `${returnUrl}?access_token=${token}`;
  if (error !== undefined) url += `&error=${encodeURIComponent(error)}`;
  url += `&state=${encodeURIComponent(state)}`;
  log("redirect", url);
  window.location.replace(url);
}

navigator.mediaDevices.getUserMedia({ audio: false, video: { facingMode: "user", height: { min: 480 } } })
  .then((stream) => {
    video.srcObject = stream;
    video.onloadedmetadata = () => { video.play(); initializeCanvases(); log("camera", video.videoWidth, video.videoHeight); };
  })
  .catch((error) => log("camera failed", String(error)));
