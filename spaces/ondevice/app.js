// The on-device page: the photo is decoded, preprocessed and classified here, by onnxruntime-web (WebAssembly) over
// the exported int8 model in model/. Nothing is sent anywhere: the page's only requests are for its own files.
import * as ort from "./vendor/ort.wasm.min.mjs";
import {
  displayName,
  imageSize,
  metadataInputs,
  parseAge,
  percent,
  pixelValues,
  rgbaToRGB,
  softmax,
  summarize,
} from "./skin.js";

// The Space's own words (spaces/app.py read_upload, NO_PHOTO), so that both pages say the same about a bad file.
const NO_PHOTO = "Add a photo of the skin lesion first (upload one or take one with the webcam).";
const NOT_AN_IMAGE = "This file could not be read as an image. Please upload a photo (JPEG, PNG, WebP, TIFF or BMP).";
const WAITING = "Add a photo of the lesion, then press Classify.";
// spaces/app.py calibration_note for a model without calibration; a calibrated export carries its own sentence
const RAW_NOTE =
  "These probabilities are the model's raw outputs, not calibrated: they may be more or less sure than the " +
  "model's record justifies.";
const $ = (id) => document.getElementById(id);

ort.env.wasm.wasmPaths = new URL("vendor/", import.meta.url).href;
ort.env.wasm.proxy = false;

const state = { spec: null, session: null, file: null, latencies: [] };

function tooLarge(spec) {
  return (
    `This image is too large to open safely (over ${Math.round(spec.image.max_pixels / 1e6)} megapixels). ` +
    "Please downscale it and try again."
  );
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function clearResult(status = WAITING) {
  $("summary").replaceChildren();
  $("probabilities").replaceChildren();
  $("probabilities-title").hidden = true;
  $("timing").textContent = "";
  $("status").textContent = status;
  showError("");
}

// What the model learned from, in the words of hf_skin.data.training_data_sentence (the browser test compares them).
export function trainingDataSentence(data) {
  if (!data) return "Where this model's training data came from is not recorded, so what it learned from is unknown.";
  if (data.synthetic) {
    return (
      "This model is a demo: it learned from synthetic lesions drawn by hf-skin, not from photos of real skin, " +
      "and it knows nothing about real lesions — its answer on a real photo means nothing."
    );
  }
  if (data.kind === "ham10000") {
    return (
      "This model learned from HAM10000, dermatoscope images of 7 kinds of pigmented skin lesions from two " +
      "clinics (Vienna and Queensland)."
    );
  }
  if (data.kind === "isic2018") {
    return (
      "This model learned from the ISIC 2018 Task 3 training set (HAM10000's dermatoscope images of 7 kinds of " +
      "pigmented skin lesions, without age, sex or body site)."
    );
  }
  if (data.kind === "hub") {
    return `This model learned from the Hub dataset ${data.location}, in HAM10000's format (7 kinds of skin lesions).`;
  }
  if (data.prepared_from) {
    return trainingDataSentence(data.prepared_from).replace("learned from", "learned from a prepared copy of");
  }
  const name = String(data.location).split(/[\\/]/).filter(Boolean).pop();
  return `This model learned from a prepared dataset in HAM10000's format (${name}).`;
}

async function load() {
  const spec = await (await fetch("model/hf_skin_export.json")).json();
  const entry = spec.models.int8 ?? spec.models.fp32;
  const session = await ort.InferenceSession.create(`model/${entry.file}`, { executionProviders: ["wasm"] });
  state.spec = spec;
  state.session = session;
  const fields = spec.metadata?.fields ?? [];
  for (const field of ["sex", "localization"]) {
    if (!fields.includes(field)) continue;
    const select = $(field);
    for (const value of spec.metadata.vocabularies[field]) select.add(new Option(value, value));
    select.value = spec.metadata.unknown;
    $(`${field}-field`).hidden = false;
  }
  $("age-field").hidden = !fields.includes("age");
  $("metadata").hidden = fields.length === 0;
  const checked = entry === spec.models.int8 ? entry.validation : undefined; // int8 measured against fp32
  $("model").textContent =
    `Model: ${spec.architecture ?? spec.model_type}, ${entry === spec.models.int8 ? "int8" : "fp32"} ` +
    (entry.fp32_layers ? `(its first ${entry.fp32_layers} layers fp32, ` : "(") +
    `${(entry.bytes / 2 ** 20).toFixed(1)} MB), exported by hf-skin ${spec.hf_skin_version}.` +
    (checked?.top1_agreement === undefined
      ? ""
      : ` Its top diagnosis is the full-precision model's on ${(100 * checked.top1_agreement).toFixed(2)}% ` +
        `of ${checked.n} validation images.`);
  $("calibration").textContent = spec.calibration_note ?? RAW_NOTE;
  $("training-data").textContent = trainingDataSentence(spec.training_data);
  $("status").textContent = WAITING;
  $("classify").disabled = false;
  document.body.dataset.ready = "true";
}

// The photo as RGB pixels at its full size, EXIF orientation applied (as hf_skin.processing.load_image does),
// no colour management (PIL applies none), or an Error with the Space's message.
async function readPhoto(file, spec) {
  const head = new Uint8Array(await file.slice(0, 256 * 1024).arrayBuffer());
  const size = imageSize(head);
  if (size && size.width * size.height > spec.image.max_pixels) throw new Error(tooLarge(spec));
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch {
    throw new Error(NOT_AN_IMAGE);
  }
  if (bitmap.width * bitmap.height > spec.image.max_pixels) throw new Error(tooLarge(spec));
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
  context.drawImage(bitmap, 0, 0); // 1:1, no scaling: the resize is skin.js's, not the browser's
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" });
  bitmap.close();
  return rgbaToRGB(data, canvas.width, canvas.height);
}

function feeds(image, metadata, spec) {
  const pixels = pixelValues(image, spec.image);
  const out = { pixel_values: new ort.Tensor("float32", pixels.data, pixels.dims) };
  for (const [name, value] of Object.entries(metadataInputs(metadata, spec.metadata))) {
    out[name] = new ort.Tensor(value.data instanceof BigInt64Array ? "int64" : "float32", value.data, value.dims);
  }
  return out;
}

async function run(inputs) {
  const start = performance.now();
  const output = await state.session.run(inputs);
  const ms = performance.now() - start;
  return { logits: Array.from(output.logits.data), ms };
}

function render(probs, ms) {
  const spec = state.spec;
  const summary = $("summary");
  summary.replaceChildren();
  for (const paragraph of summarize(probs, spec)) {
    const p = document.createElement("p");
    for (const part of paragraph) {
      const node = document.createElement(part.strong ? "strong" : "span");
      node.textContent = part.text;
      p.append(node);
    }
    summary.append(p);
  }
  const list = $("probabilities");
  list.replaceChildren();
  const ranked = Object.entries(probs).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of ranked) {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.dataset.probability = String(p);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = displayName(label, spec);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    bar.append(fill);
    item.append(name, value, bar);
    list.append(item);
  }
  $("probabilities-title").hidden = false;
  $("timing").textContent = `Classified on this device in ${Math.round(ms)} ms.`;
  $("status").textContent = "";
}

async function classify() {
  const spec = state.spec;
  clearResult("Classifying…");
  try {
    if (!state.file) throw new Error(NO_PHOTO);
    const metadata = {};
    const fields = spec.metadata?.fields ?? [];
    if (fields.includes("age")) metadata.age = parseAge($("age").value);
    for (const field of ["sex", "localization"]) if (fields.includes(field)) metadata[field] = $(field).value;
    const image = await readPhoto(state.file, spec);
    const inputs = feeds(image, metadata, spec);
    const { logits, ms } = await run(inputs);
    state.lastInputs = inputs;
    state.latencies.push(ms);
    const probabilities = softmax(logits);
    const probs = Object.fromEntries(spec.labels.map((label, i) => [label, probabilities[i]]));
    render(probs, ms);
    window.hfSkinResult = { probs, logits, ms, metadata };
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
    window.hfSkinResult = { error: err.message };
  }
}

// Benchmark hook (benchmarks/bench_onnx.py): `repeat` more runs of the last photo's inputs, their times in ms.
window.hfSkinBenchmark = async (repeat = 50) => {
  const times = [];
  for (let i = 0; i < repeat; i++) times.push((await run(state.lastInputs)).ms);
  return times;
};

$("photo").addEventListener("change", () => {
  state.file = $("photo").files[0] ?? null;
  clearResult();
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !state.file;
  if (state.file) preview.src = URL.createObjectURL(state.file);
});
// a file the browser cannot show (not an image, or a corrupt one): no broken-image icon; Classify says what is wrong
$("preview").addEventListener("error", () => {
  $("preview").hidden = true;
});
$("classify").addEventListener("click", classify);

if ("serviceWorker" in navigator) {
  // Keeps the page, onnxruntime and the model in the browser's cache: the page then works offline.
  navigator.serviceWorker.register("sw.js").catch(() => {});
}
load().catch((err) => {
  $("status").textContent = "";
  showError(`The model could not be loaded (${err.message}). Reload the page to try again.`);
});
