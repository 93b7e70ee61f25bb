// PanoSAMic Studio's 360° viewer: stand inside the panorama and look around.
//
// Our own small WebGL code (no library, no network). app.py hands this file to
// gr.HTML(js_on_load=...), which runs it once with `element` (the component's root),
// `props` (props.value is the payload below), `watch` and `trigger`.
//
// Payload (panosamic.studio.render.viewer_payload), or null before Run:
//   texture  data URL of the ERP picture the ERP view shows (photo, class colours, the
//            selected candidate mask, the prompts)
//   labels   data URL of a small grey PNG: class index per pixel (255 = unlabelled), for hovering
//   classes  class names
//
// Directions follow panosamic.geometry: lon = x / W * 360 - 180 (degrees, 0 at the image
// centre, growing to the right), lat = 90 - y / H * 180; world frame x forward (lon 0),
// y left, z up, so a direction is (cos lat cos lon, -cos lat sin lon, sin lat).
// A fragment shader turns each screen pixel into its ray and samples the ERP texture at
// the ray's (lon, lat); a click turns the pointer into the same ray in JavaScript and
// sends trigger("pano_click", {lon, lat, shift}) to Python, which adds the prompt exactly as
// a click on the ERP view does (shift: Shift was held, the click adds to the selection).
//
// Controls: drag to turn, wheel or pinch to zoom (field of view 20-120°), arrow keys turn
// by 15°, +/- zoom, 0 (or a click on the compass) resets. The compass shows where you look
// (the wedge) and where the seam (lon ±180°) is (red).
//
// State for tests and scripts: the root's data-state is "empty", "loading" or "ready";
// data-frames counts drawn payloads; data-previews the live previews (hover.js) drawn.

const root = element.querySelector(".pv");
const canvas = root.querySelector("canvas.pv-gl");
const compass = root.querySelector("canvas.pv-compass");
const tip = root.querySelector(".pv-tip");
const readout = root.querySelector(".pv-readout");
const empty = root.querySelector(".pv-empty");
const DEG = Math.PI / 180;
const HOME = { yaw: 0, pitch: 0, fov: 90 };
const view = { ...HOME };          // degrees: yaw = lon at the centre, pitch = lat, vertical field of view
let labels = null;                 // { data: Uint8Array, w, h } class per pixel
let classes = [];
let generation = 0;                // payloads arrive faster than images decode: draw the newest only
let frames = 0;

root.dataset.state = "empty";
root.dataset.frames = "0";

// ----------------------------------------------------------------------------- WebGL
const glOptions = { preserveDrawingBuffer: true, antialias: false, alpha: false };
const gl = canvas.getContext("webgl2", glOptions) || canvas.getContext("webgl", glOptions);
if (!gl) {
  empty.textContent = "This browser cannot draw WebGL: use the panorama on the left.";
  root.dataset.state = "no-webgl";
  return;
}

const VERTEX = `
attribute vec2 corner;
varying vec2 ndc;
void main() { ndc = corner; gl_Position = vec4(corner, 0.0, 1.0); }`;
const FRAGMENT = `
#ifdef GL_FRAGMENT_PRECISION_HIGH
precision highp float;
#else
precision mediump float;
#endif
varying vec2 ndc;
uniform sampler2D erp;
uniform sampler2D hoverMask;       // the live preview's mask (hover.js), 0 or 1 per ERP pixel
uniform float hoverOn;
uniform vec3 forward, right, up;   // camera basis in the world frame
uniform vec2 halfSize;             // tan(fov / 2) * aspect, tan(fov / 2)
void main() {
  vec3 d = normalize(forward + ndc.x * halfSize.x * right + ndc.y * halfSize.y * up);
  float lon = atan(-d.y, d.x);
  float lat = asin(clamp(d.z, -1.0, 1.0));
  // fract: the left and right borders of the ERP meet at the seam
  vec2 uv = vec2(fract(lon / 6.283185307179586 + 0.5), 0.5 - lat / 3.141592653589793);
  vec4 c = texture2D(erp, uv);
  float m = hoverOn * texture2D(hoverMask, uv).r;
  gl_FragColor = vec4(mix(c.rgb, vec3(1.0, 0.84, 0.0), 0.47 * m), 1.0);
}`;

function shader(type, source) {
  const s = gl.createShader(type);
  gl.shaderSource(s, source);
  gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
  return s;
}
const program = gl.createProgram();
gl.attachShader(program, shader(gl.VERTEX_SHADER, VERTEX));
gl.attachShader(program, shader(gl.FRAGMENT_SHADER, FRAGMENT));
gl.linkProgram(program);
gl.useProgram(program);
const quad = gl.createBuffer();
gl.bindBuffer(gl.ARRAY_BUFFER, quad);
gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
const cornerLoc = gl.getAttribLocation(program, "corner");
gl.enableVertexAttribArray(cornerLoc);
gl.vertexAttribPointer(cornerLoc, 2, gl.FLOAT, false, 0, 0);
const u = {};
for (const name of ["erp", "hoverMask", "hoverOn", "forward", "right", "up", "halfSize"]) u[name] = gl.getUniformLocation(program, name);
// no mipmaps (any size works in WebGL 1, and no blur line where fract() jumps at the seam)
function linearTexture() {
  const t = gl.createTexture();
  gl.bindTexture(gl.TEXTURE_2D, t);
  for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
                        [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) {
    gl.texParameteri(gl.TEXTURE_2D, k, v);
  }
  return t;
}
const texture = linearTexture();
let hasTexture = false;
const maskTexture = linearTexture();
let hasMask = false;
let previews = 0;
root.dataset.previews = "0";

// ----------------------------------------------------------------------------- camera
function basis() {
  const y = view.yaw * DEG, p = view.pitch * DEG;
  return {
    forward: [Math.cos(p) * Math.cos(y), -Math.cos(p) * Math.sin(y), Math.sin(p)],
    right: [-Math.sin(y), -Math.cos(y), 0],
    up: [-Math.sin(p) * Math.cos(y), Math.sin(p) * Math.sin(y), Math.cos(p)],
  };
}

function halfSize() {
  const t = Math.tan(view.fov * DEG / 2);
  const w = canvas.clientWidth || 1, h = canvas.clientHeight || 1;
  return [t * w / h, t];
}

/** (lon, lat) in degrees under the point (px, py), CSS pixels from the canvas' top left. */
function directionAt(px, py) {
  const b = basis(), hs = halfSize();
  const x = (2 * px / (canvas.clientWidth || 1) - 1) * hs[0];
  const y = (1 - 2 * py / (canvas.clientHeight || 1)) * hs[1];
  const d = [0, 1, 2].map((i) => b.forward[i] + x * b.right[i] + y * b.up[i]);
  const n = Math.hypot(d[0], d[1], d[2]);
  return { lon: Math.atan2(-d[1], d[0]) / DEG, lat: Math.asin(Math.max(-1, Math.min(1, d[2] / n))) / DEG };
}

function wrapYaw(yaw) {
  return ((yaw + 180) % 360 + 360) % 360 - 180;
}

function setView(yaw, pitch, fov) {
  view.yaw = wrapYaw(yaw);
  view.pitch = Math.max(-89.5, Math.min(89.5, pitch));
  view.fov = Math.max(20, Math.min(120, fov));
  requestDraw();
}

// ----------------------------------------------------------------------------- drawing
let drawQueued = false;
function requestDraw() {
  if (!drawQueued) {
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; draw(); });
  }
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  gl.viewport(0, 0, w, h);
  gl.clearColor(0.12, 0.12, 0.14, 1);
  gl.clear(gl.COLOR_BUFFER_BIT);
  if (hasTexture) {
    const b = basis();
    gl.uniform3fv(u.forward, b.forward);
    gl.uniform3fv(u.right, b.right);
    gl.uniform3fv(u.up, b.up);
    gl.uniform2fv(u.halfSize, halfSize());
    gl.uniform1i(u.erp, 0);
    gl.uniform1i(u.hoverMask, 1);
    gl.uniform1f(u.hoverOn, hasMask ? 1 : 0);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }
  drawCompass();
  readout.textContent = `lon ${view.yaw.toFixed(0)}° · lat ${view.pitch.toFixed(0)}° · FOV ${view.fov.toFixed(0)}°`;
}

function drawCompass() {
  const dpr = window.devicePixelRatio || 1;
  const size = 64;
  if (compass.width !== size * dpr) { compass.width = compass.height = size * dpr; }
  const c = compass.getContext("2d");
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  c.clearRect(0, 0, size, size);
  const r = size / 2 - 4, cx = size / 2, cy = size / 2;
  // top = lon 0 (the image centre); clockwise = growing lon, as seen from above
  const angle = (lon) => (lon - 90) * DEG;
  c.fillStyle = "rgba(0,0,0,0.45)";
  c.beginPath(); c.arc(cx, cy, r + 2, 0, 2 * Math.PI); c.fill();
  const hfov = 2 * Math.atan(halfSize()[0]) / DEG;
  c.fillStyle = "rgba(255,255,255,0.55)";
  c.beginPath(); c.moveTo(cx, cy);
  c.arc(cx, cy, r, angle(view.yaw - hfov / 2), angle(view.yaw + hfov / 2)); c.closePath(); c.fill();
  c.strokeStyle = "rgb(255,70,70)"; c.lineWidth = 3;          // the seam, lon ±180°
  c.beginPath(); c.moveTo(cx, cy + r * 0.45); c.lineTo(cx, cy + r + 2); c.stroke();
  c.fillStyle = "white"; c.font = "9px sans-serif"; c.textAlign = "center";
  c.fillText("0°", cx, cy - r + 10);
}

// ----------------------------------------------------------------------------- payloads
function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the viewer could not decode its picture"));
    img.src = url;
  });
}

async function show(payload) {
  const mine = ++generation;
  if (!payload || !payload.texture) {
    hasTexture = false; labels = null; classes = [];
    document.dispatchEvent(new CustomEvent("panosamic-hover-payload", { detail: null }));
    root.dataset.state = "empty";
    empty.style.display = "";
    requestDraw();
    return;
  }
  root.dataset.state = "loading";
  // the live preview's payload (token, frame, URLs) goes to hover.js, which decodes the cursor's mask
  document.dispatchEvent(new CustomEvent("panosamic-hover-payload", { detail: payload.hover || null }));
  const [img, lab] = await Promise.all([loadImage(payload.texture), payload.labels ? loadImage(payload.labels) : null]);
  if (mine !== generation) return;
  gl.activeTexture(gl.TEXTURE0);
  gl.bindTexture(gl.TEXTURE_2D, texture);
  gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
  gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, img);
  hasTexture = true;
  if (lab) {
    const c = document.createElement("canvas");
    c.width = lab.naturalWidth; c.height = lab.naturalHeight;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(lab, 0, 0);
    const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
    const data = new Uint8Array(c.width * c.height);
    for (let i = 0; i < data.length; i++) data[i] = rgba[4 * i];
    labels = { data, w: c.width, h: c.height };
  }
  classes = payload.classes || [];
  empty.style.display = "none";
  frames += 1;
  root.dataset.frames = String(frames);
  root.dataset.state = "ready";
  draw();
}

function classAt(lon, lat) {
  if (!labels) return null;
  const x = Math.min(labels.w - 1, Math.floor((lon + 180) / 360 * labels.w));
  const y = Math.min(labels.h - 1, Math.max(0, Math.floor((90 - lat) / 180 * labels.h)));
  const k = labels.data[y * labels.w + x];
  return k < classes.length ? classes[k] : "unlabelled";
}

// ----------------------------------------------------------------------------- input
const pointers = new Map();        // pointerId -> {x, y}
let gesture = null;                // {x, y, yaw, pitch, fov, dist, moved}

function local(e) {
  const r = canvas.getBoundingClientRect();
  return { x: e.clientX - r.left, y: e.clientY - r.top };
}

function pinchDistance() {
  const [a, b] = [...pointers.values()];
  return Math.hypot(a.x - b.x, a.y - b.y) || 1;
}

canvas.addEventListener("pointerdown", (e) => {
  if (!hasTexture) return;
  canvas.setPointerCapture(e.pointerId);
  pointers.set(e.pointerId, local(e));
  const p = local(e);
  gesture = { x: p.x, y: p.y, yaw: view.yaw, pitch: view.pitch, fov: view.fov,
              dist: pointers.size === 2 ? pinchDistance() : 0, moved: pointers.size > 1 };
  tip.style.display = "none";
});

canvas.addEventListener("pointermove", (e) => {
  const p = local(e);
  if (gesture && pointers.has(e.pointerId)) {
    pointers.set(e.pointerId, p);
    if (pointers.size === 2 && gesture.dist) {
      setView(view.yaw, view.pitch, gesture.fov * gesture.dist / pinchDistance());
      return;
    }
    const dx = p.x - gesture.x, dy = p.y - gesture.y;
    if (Math.hypot(dx, dy) > 4) gesture.moved = true;
    if (gesture.moved) {
      const perPixel = view.fov / (canvas.clientHeight || 1);   // the scene follows the pointer
      setView(gesture.yaw - dx * perPixel, gesture.pitch + dy * perPixel, view.fov);
    }
    return;
  }
  if (!hasTexture) return;
  const d = directionAt(p.x, p.y);
  const name = classAt(d.lon, d.lat);
  tip.textContent = `${name ?? ""}  ${d.lon.toFixed(1)}°, ${d.lat.toFixed(1)}°`;
  tip.style.left = `${p.x + 14}px`;
  tip.style.top = `${p.y + 10}px`;
  tip.style.display = "block";
  document.dispatchEvent(new CustomEvent("panosamic-viewer-hover", { detail: d }));
});

// The live preview (hover.js): {mask: Uint8Array h*w of 0/1, w, h} or null, in the ERP frame.
document.addEventListener("panosamic-hover-mask", (e) => {
  const res = e.detail;
  hasMask = Boolean(res);
  if (res) {
    const bytes = new Uint8Array(res.mask.length);
    for (let i = 0; i < bytes.length; i++) bytes[i] = res.mask[i] ? 255 : 0;
    gl.activeTexture(gl.TEXTURE1);
    gl.bindTexture(gl.TEXTURE_2D, maskTexture);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.LUMINANCE, res.w, res.h, 0, gl.LUMINANCE, gl.UNSIGNED_BYTE, bytes);
    gl.activeTexture(gl.TEXTURE0);
    previews += 1;
    root.dataset.previews = String(previews);
  }
  requestDraw();
});

function endPointer(e, cancelled) {
  if (!pointers.has(e.pointerId)) return;
  pointers.delete(e.pointerId);
  if (gesture && pointers.size === 0) {
    if (!gesture.moved && !cancelled) {
      const p = local(e);
      const d = directionAt(p.x, p.y);
      trigger("pano_click", { lon: d.lon, lat: d.lat, shift: e.shiftKey === true });
    }
    gesture = null;
  } else if (gesture && pointers.size === 1) {
    // one finger of a pinch left: go on turning from here
    const p = [...pointers.values()][0];
    gesture = { x: p.x, y: p.y, yaw: view.yaw, pitch: view.pitch, fov: view.fov, dist: 0, moved: true };
  }
}
canvas.addEventListener("pointerup", (e) => endPointer(e, false));
canvas.addEventListener("pointercancel", (e) => endPointer(e, true));
canvas.addEventListener("pointerleave", () => {
  tip.style.display = "none";
  document.dispatchEvent(new CustomEvent("panosamic-viewer-hover", { detail: null }));
});

canvas.addEventListener("wheel", (e) => {
  if (!hasTexture) return;
  e.preventDefault();
  setView(view.yaw, view.pitch, view.fov * Math.exp(e.deltaY * 0.0015));
}, { passive: false });

canvas.addEventListener("keydown", (e) => {
  const keys = {
    ArrowLeft: () => setView(view.yaw - 15, view.pitch, view.fov),
    ArrowRight: () => setView(view.yaw + 15, view.pitch, view.fov),
    ArrowUp: () => setView(view.yaw, view.pitch + 15, view.fov),
    ArrowDown: () => setView(view.yaw, view.pitch - 15, view.fov),
    "+": () => setView(view.yaw, view.pitch, view.fov / 1.2),
    "=": () => setView(view.yaw, view.pitch, view.fov / 1.2),
    "-": () => setView(view.yaw, view.pitch, view.fov * 1.2),
    "0": () => setView(HOME.yaw, HOME.pitch, HOME.fov),
  };
  if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
});

compass.addEventListener("click", () => setView(HOME.yaw, HOME.pitch, HOME.fov));

new ResizeObserver(() => requestDraw()).observe(canvas);
watch("value", () => show(props.value));
show(props.value);
