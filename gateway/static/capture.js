// The BWS capture page ("unified user interface"), served at /uui?access_token=&return_url=&state=.
//
// 1. Read the task from the token's claims (decoded, not verified: the server verifies).
// 2. Open the camera and show a mirrored preview.
// 3. Per try: capture a still frontal frame (tag "any"), then for each challenge direction wait
//    for a head movement and capture its peak (tag = the direction); without a challenge, one
//    more frame after a small movement. Frames are mirrored, as BWS web clients send them, and
//    uploaded as JPEG data URLs right after each capture.
// 4. Run the token's task; retry while the token allows; redirect to return_url with
//    access_token, state and (on failure) error.
//
// Motion is measured on a small grey copy of the frame: the share of pixels in the centre that
// changed by more than PIXEL_DELTA grey levels against the last captured frame.

import { describe, SUCCESS } from "./messages.js";

const TICK_MS = 100; // how often the camera picture is sampled
const SMALL_W = 80, SMALL_H = 60; // the grey copy motion is measured on
const PIXEL_DELTA = 18; // a pixel "moved" when its grey level changed by more than this
const STILL = 0.01; // share of moved pixels below which two samples count as still
const MOVED = 0.06; // share of moved pixels against the last capture that counts as a head movement
const HOLD_TICKS = 3; // still samples in a row before the frontal capture
const PEAK_MS = 1200; // how long a movement is followed to capture its peak
const HINT_MS = 7000; // when to say "turn further" / "hold still"
const MAX_SIDE = 800; // larger camera pictures are scaled down before upload
const JPEG_QUALITY = 0.95;
const TASKS = { 0x00: "verify", 0x10: "identify", 0x20: "enroll", 0x80: "livenessdetection" };
const TITLES = {
  enroll: "Enroll your face", verify: "Verify it's you", identify: "Identify yourself",
  livenessdetection: "Liveness check",
};
const CAMERA_ERRORS = new Set([ // the ones messages.js has a sentence for
  "NotAllowedError", "SecurityError", "NotFoundError", "OverconstrainedError", "NotReadableError", "AbortError",
  "InsecureContext", "NoCameraApi",
]);
const ARROWS = { left: "←", right: "→", up: "↑", down: "↓" };
const TURN = {
  left: "Turn your head slowly to the left.", right: "Turn your head slowly to the right.",
  up: "Tilt your head slowly up.", down: "Tilt your head slowly down.",
};

const $ = (id) => document.getElementById(id);
const video = $("preview");
const params = new URLSearchParams(location.search);
const token = params.get("access_token") || "";
let uploadIndex = 0; // the running number of uploads (index=)
let finished = false;

class Stop extends Error {} // ends the capture loop (the page is finishing)

// -- the token ----------------------------------------------------------------------------

function decodeClaims(jwt) {
  const part = (jwt.split(".")[1] || "").replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function taskOf(claims) {
  const flags = Number(claims.task) | 0;
  return {
    action: TASKS[flags & 0xf0] || "verify",
    maxTries: flags & 0x0f || 3,
    challenge: Boolean(flags & 0x200) && claims.challenge ? JSON.parse(claims.challenge) : [],
  };
}

const directionsFor = (task, tryNo) => task.challenge.length ? task.challenge[Math.min(tryNo, task.challenge.length) - 1] : [];

// -- what the user sees ---------------------------------------------------------------------

function say(text) { // only changes are announced (aria-live), so never re-set the same text
  if ($("status").textContent !== text) $("status").textContent = text;
}

function problem(text) {
  $("problem").textContent = text || "";
  $("problem").hidden = !text;
}

function setPhase(phase) { document.body.dataset.phase = phase; }

function showArrow(direction) {
  const arrow = $("arrow");
  arrow.className = "arrow " + (direction || "");
  arrow.hidden = !direction || direction === "move";
}

function showSteps(steps, current) {
  const list = $("steps");
  list.replaceChildren(...steps.map((step, i) => {
    const item = document.createElement("li");
    item.className = i < current ? "done" : i === current ? "current" : "";
    if (i === current) item.setAttribute("aria-current", "step");
    const glyph = document.createElement("span");
    glyph.setAttribute("aria-hidden", "true");
    glyph.textContent = i < current ? "✓" : ARROWS[step.direction] || "●";
    const label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = step.label + (i < current ? " (done)" : "");
    item.append(glyph, label);
    return item;
  }));
  document.body.dataset.step = String(current);
}

function flash() {
  const element = $("flash");
  element.classList.remove("on");
  void element.offsetWidth; // restart the animation
  element.classList.add("on");
}

// -- the camera ---------------------------------------------------------------------------

async function openCamera() {
  if (!window.isSecureContext) throw Object.assign(new Error(), { name: "InsecureContext" });
  if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error(), { name: "NoCameraApi" });
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false, video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
  });
  video.srcObject = stream;
  await video.play();
  while (!video.videoWidth) await sleep(50);
}

function closeCamera() {
  video.srcObject?.getTracks().forEach((track) => track.stop());
  video.srcObject = null;
}

const frame = document.createElement("canvas"); // the current picture, mirrored, upload size
const small = document.createElement("canvas");
small.width = SMALL_W;
small.height = SMALL_H;
const smallContext = small.getContext("2d", { willReadFrequently: true });
smallContext.imageSmoothingQuality = "high";

/** Draw the camera picture mirrored into `frame`; return its small grey copy. */
function sample() {
  const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const w = Math.round(video.videoWidth * scale), h = Math.round(video.videoHeight * scale);
  if (frame.width !== w || frame.height !== h) Object.assign(frame, { width: w, height: h });
  const context = frame.getContext("2d");
  context.setTransform(-1, 0, 0, 1, w, 0); // mirror, like the preview and like BWS web clients
  context.drawImage(video, 0, 0, w, h);
  context.setTransform(1, 0, 0, 1, 0, 0);
  smallContext.drawImage(frame, 0, 0, SMALL_W, SMALL_H);
  const rgba = smallContext.getImageData(0, 0, SMALL_W, SMALL_H).data;
  const grey = new Uint8Array(SMALL_W * SMALL_H);
  for (let i = 0; i < grey.length; i++) grey[i] = (rgba[4 * i] * 77 + rgba[4 * i + 1] * 150 + rgba[4 * i + 2] * 29) >> 8;
  return grey;
}

/** The share of pixels in the centre (where the face is) that changed between two samples. */
function motion(a, b) {
  let moved = 0, count = 0;
  for (let y = Math.floor(SMALL_H * 0.05); y < Math.ceil(SMALL_H * 0.95); y++) {
    for (let x = Math.floor(SMALL_W * 0.15); x < Math.ceil(SMALL_W * 0.85); x++) {
      const i = y * SMALL_W + x;
      count++;
      if (Math.abs(a[i] - b[i]) > PIXEL_DELTA) moved++;
    }
  }
  return moved / count;
}

function keep(grey, score = 0) {
  const copy = document.createElement("canvas");
  Object.assign(copy, { width: frame.width, height: frame.height });
  copy.getContext("2d").drawImage(frame, 0, 0);
  return { canvas: copy, grey, score };
}

function sleep(ms) {
  return new Promise((resolve, reject) => setTimeout(() => (finished ? reject(new Stop()) : resolve()), ms));
}

/** The frontal frame: capture when the picture has been still for a moment. */
async function captureStill(hint) {
  const began = performance.now();
  let previous = sample(), still = 0;
  for (;;) {
    await sleep(TICK_MS);
    const grey = sample();
    still = motion(grey, previous) < STILL ? still + 1 : 0;
    previous = grey;
    if (still >= HOLD_TICKS) return keep(grey);
    if (performance.now() - began > HINT_MS) say(hint);
  }
}

/** A frame after a head movement: wait until the picture differs enough from `reference`,
 *  follow the movement until it stops or turns back, and keep its peak. */
async function captureMovement(reference, hint) {
  const began = performance.now();
  let grey, score;
  do {
    await sleep(TICK_MS);
    grey = sample();
    score = motion(grey, reference);
    if (performance.now() - began > HINT_MS) say(hint);
  } while (score < MOVED);
  let best = keep(grey, score), previous = grey, still = 0;
  const moving = performance.now();
  while (performance.now() - moving < PEAK_MS) {
    await sleep(TICK_MS);
    grey = sample();
    score = motion(grey, reference);
    if (score >= best.score) best = keep(grey, score);
    still = motion(grey, previous) < STILL ? still + 1 : 0;
    previous = grey;
    if (still >= 2 || score < best.score * 0.6) break;
  }
  return best;
}

// -- the API --------------------------------------------------------------------------------

/** Call the BWS API on this origin; retry network faults and 503; throw Stop codes for the rest. */
async function api(path, init = {}) {
  for (let attempt = 1; ; attempt++) {
    let reply;
    try {
      reply = await fetch(path, { ...init, headers: { ...init.headers, Authorization: `Bearer ${token}` } });
    } catch (error) {
      console.warn("network error", error);
    }
    if (reply?.ok) return reply.json();
    if (reply) console.warn(`${path.split("?")[0]}: HTTP ${reply.status}`, await reply.text());
    if (reply?.status === 401) throw fail("invalid_token");
    if (reply?.status === 403) throw fail("tries_exceeded");
    if ((reply && reply.status !== 503) || attempt >= 3) throw fail("server_error");
    await sleep(1500 * attempt);
  }
}

function fail(code) { return Object.assign(new Stop(code), { code }); }

async function upload(shot, tag) {
  const body = shot.canvas.toDataURL("image/jpeg", JPEG_QUALITY);
  const query = new URLSearchParams({ tag, index: String(uploadIndex++), trait: "Face" });
  return api(`extension/upload?${query}`, { method: "POST", headers: { "Content-Type": "text/plain" }, body });
}

// -- one try and the whole flow ---------------------------------------------------------------

function stepsFor(directions) {
  const steps = [{ tag: "any", direction: null, label: "Look straight at the camera" }];
  for (const direction of directions) steps.push({ tag: direction, direction, label: TURN[direction] });
  if (!directions.length) steps.push({ tag: "any", direction: "move", label: "Move your head slightly" });
  return steps;
}

async function captureTry(directions) {
  const steps = stepsFor(directions);
  let reference = null;
  for (let i = 0; i < steps.length;) {
    const step = steps[i];
    showSteps(steps, i);
    showArrow(step.direction);
    let shot;
    if (!reference) {
      say("Look straight at the camera and hold still.");
      shot = await captureStill("Hold still for a moment, with your face inside the oval.");
    } else if (step.direction === "move") {
      say("Now move your head slightly, for example nod a little.");
      shot = await captureMovement(reference, "Please move your head a little more, for example nod.");
    } else {
      say(TURN[step.direction]);
      shot = await captureMovement(reference, `${TURN[step.direction]} Please turn a little further.`);
    }
    flash();
    const reply = await upload(shot, step.tag);
    console.info(`step ${i} (${step.tag}): motion ${shot.score.toFixed(3)}, upload`, JSON.stringify(reply));
    if (!reply.Accepted) {
      problem(describe(reply.Error)); // retake this step
      await sleep(1500);
      continue;
    }
    problem("");
    reference = shot.grey;
    i++;
  }
  showSteps(steps, steps.length);
  showArrow(null);
}

async function run(task) {
  let tryNo = 1, busy = 0;
  for (;;) {
    $("attempt").textContent = task.maxTries > 1 ? `Attempt ${tryNo} of ${task.maxTries}` : "";
    setPhase("capturing");
    await captureTry(directionsFor(task, tryNo));
    setPhase("checking");
    say("Checking…");
    const result = await api(`extension/${task.action}`);
    console.info(`try ${tryNo}: ${task.action}`, JSON.stringify(result));
    if (result.Success) return null;
    const code = result.Error || "NotRecognized";
    if (code === "ExecutionOfJobTimedOut" && ++busy <= 3) {
      // the server gave the try back: repeat the same try (same challenge) after a pause
    } else if (code !== "NoTemplateAvailable" && tryNo < task.maxTries) {
      tryNo++;
    } else {
      return code;
    }
    setPhase("retrying");
    problem(describe(code)); // stays until the next try's first picture is accepted
    say("Let's try again.");
    await sleep(2500);
  }
}

/** Leave for return_url with access_token, state and error (null = success). Runs once. */
async function finish(code, action, delay = 1500) {
  if (finished) return;
  finished = true;
  closeCamera();
  showArrow(null);
  setPhase(code ? "failed" : "succeeded");
  if (code === "user_abort") delay = 0;
  else if (code) problem(describe(code));
  say(code ? "Returning to the app…" : `${SUCCESS[action] || "Done."} Returning to the app…`);
  const target = new URL(params.get("return_url"));
  target.searchParams.set("access_token", token);
  if (params.has("state")) target.searchParams.set("state", params.get("state"));
  if (code) target.searchParams.set("error", code);
  await new Promise((resolve) => setTimeout(resolve, delay));
  location.replace(target.href);
}

async function start(task) {
  problem("");
  $("retry").hidden = true;
  setPhase("starting");
  say("Starting the camera… If your browser asks, please allow the camera.");
  try {
    await openCamera();
  } catch (error) {
    console.warn("camera:", error.name, error.message);
    closeCamera();
    setPhase("camera-error");
    problem(describe(CAMERA_ERRORS.has(error.name) ? error.name : "AbortError"));
    say("The camera is not available.");
    $("retry").hidden = false;
    return;
  }
  try {
    finish(await run(task), task.action);
  } catch (error) {
    if (error instanceof Stop && !error.code) return; // finishing already
    console.error(error);
    finish(error.code || "server_error", task.action, 4000);
  }
}

function main() {
  let task;
  try {
    task = taskOf(decodeClaims(token));
  } catch (error) {
    console.error("cannot read the token", error);
    problem(describe("invalid_token"));
    say("");
    setPhase("failed");
    return;
  }
  document.title = TITLES[task.action];
  $("title").textContent = TITLES[task.action];
  $("intro").textContent = task.challenge.length
    ? "We take a few pictures of your face. Follow the arrows: turn your head slowly in the direction shown."
    : "We take a few pictures of your face. Look at the camera, then move your head slightly when asked.";
  $("cancel").addEventListener("click", () => finish("user_abort", task.action));
  $("retry").addEventListener("click", () => start(task));
  start(task);
}

main();
