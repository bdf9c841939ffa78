// hf-skin in the browser: what hf_skin does in Python (hf_skin.processing, hf_skin.inference), for an exported
// model's spec (hf_skin_export.json). No DOM here: photo pixels in, model inputs out; logits in, summary out.

// PIL's filters (hf_skin.processing.resize._FILTERS): support at scale 1 and kernel.
const FILTERS = {
  bilinear: [1.0, (x) => Math.max(0, 1 - Math.abs(x))],
  bicubic: [2.0, (x) => bicubic(Math.abs(x))],
};

function bicubic(x, a = -0.5) {
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// One axis of a separable resize (hf_skin.processing.resample_weights): for each output pixel, the first input
// pixel it reads and its weights. PIL's ImagingResample rule: centre (i + 0.5) * scale, the support grows with the
// downscale factor (antialiasing), weights normalised to sum 1.
export function resampleWeights(inSize, outSize, resample) {
  const rows = [];
  const scale = inSize / outSize;
  if (resample === "nearest") {
    for (let i = 0; i < outSize; i++) {
      rows.push({ lo: Math.min(Math.trunc((i + 0.5) * scale), inSize - 1), w: [1] });
    }
    return rows;
  }
  const [baseSupport, kernel] = FILTERS[resample];
  const filterScale = Math.max(scale, 1);
  const support = baseSupport * filterScale;
  const inv = 1 / filterScale;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = [];
    let total = 0;
    for (let j = lo; j < hi; j++) {
      const v = kernel((j - center + 0.5) * inv);
      w.push(v);
      total += v;
    }
    rows.push({ lo, w: w.map((v) => v / total) });
  }
  return rows;
}

// Float weights -> integers and their precision, as torch's uint8 antialiased kernel (hf_skin.processing.resize._fixed_point)
function fixedPoint(rows) {
  let max = 0;
  for (const row of rows) for (const v of row.w) max = Math.max(max, v);
  let precision = 0;
  while (precision < 22 && Math.trunc(0.5 + max * 2 ** (precision + 1)) < 2 ** 15) precision++;
  const k = 2 ** precision;
  const ints = rows.map((row) => ({
    lo: row.lo,
    w: row.w.map((v) => (v * k < 0 ? Math.trunc(v * k - 0.5) : Math.trunc(v * k + 0.5))),
  }));
  return { ints, precision };
}

// One pass over `axis` (1: horizontal, 0: vertical) of an RGB uint8 image {data, width, height}.
function resampleAxis(image, outSize, resample, axis) {
  const { width, height, data } = image;
  const inSize = axis === 1 ? width : height;
  const { ints, precision } = fixedPoint(resampleWeights(inSize, outSize, resample));
  const half = precision > 0 ? 2 ** (precision - 1) : 0;
  const k = 2 ** precision;
  const outW = axis === 1 ? outSize : width;
  const outH = axis === 1 ? height : outSize;
  const out = new Uint8ClampedArray(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { lo, w } = ints[axis === 1 ? x : y];
      for (let c = 0; c < 3; c++) {
        let acc = half;
        for (let t = 0; t < w.length; t++) {
          const src = axis === 1 ? (y * width + lo + t) * 3 + c : ((lo + t) * width + x) * 3 + c;
          acc += data[src] * w[t];
        }
        const v = Math.floor(acc / k);
        out[(y * outW + x) * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return { width: outW, height: outH, data: out };
}

// hf_skin.processing.resize_array: horizontal pass, 8-bit rounding, vertical pass.
export function resizeRGB(image, height, width, resample) {
  let out = image;
  if (out.width !== width) out = resampleAxis(out, width, resample, 1);
  if (out.height !== height) out = resampleAxis(out, height, resample, 0);
  return out;
}

function cropRGB(image, top, left, height, width) {
  const out = new Uint8ClampedArray(width * height * 3);
  for (let y = 0; y < height; y++) {
    const start = ((top + y) * image.width + left) * 3;
    out.set(image.data.subarray(start, start + width * 3), y * width * 3);
  }
  return { width, height, data: out };
}

// RGBA pixels from a canvas -> RGB, transparency shown over white (hf_skin.processing.images._to_rgb).
export function rgbaToRGB(rgba, width, height) {
  const out = new Uint8ClampedArray(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const a = rgba[i + 3];
    for (let c = 0; c < 3; c++) {
      out[j + c] = a === 255 ? rgba[i + c] : Math.round((rgba[i + c] * a + 255 * (255 - a)) / 255);
    }
  }
  return { width, height, data: out };
}

// An RGB image -> the model's pixel_values (1, 3, H, W) float32, as the spec's image section says
// (hf_skin.processing.pixel_values_from_spec).
export function pixelValues(image, spec) {
  const { resize, resample } = spec;
  let img;
  if (resize.height !== undefined) {
    img = resizeRGB(image, resize.height, resize.width, resample);
  } else if (resize.shortest_edge < 384) {
    const edge = resize.shortest_edge;
    const target = Math.trunc(edge / resize.crop_pct);
    const short = Math.min(image.width, image.height);
    const long = Math.max(image.width, image.height);
    const newLong = Math.trunc((target * long) / short);
    const [h, w] = image.height <= image.width ? [target, newLong] : [newLong, target];
    img = resizeRGB(image, h, w, resample);
    img = cropRGB(img, Math.trunc((h - edge) / 2), Math.trunc((w - edge) / 2), edge, edge);
  } else {
    img = resizeRGB(image, resize.shortest_edge, resize.shortest_edge, resample);
  }
  const { width, height, data } = img;
  const out = new Float32Array(3 * width * height);
  const scale = Math.fround(spec.rescale_factor);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(Math.fround(spec.image_mean[c]) / scale);
    const std = Math.fround(Math.fround(spec.image_std[c]) / scale);
    for (let p = 0; p < width * height; p++) out[c * width * height + p] = (data[p * 3 + c] - mean) / std;
  }
  return { data: out, dims: [1, 3, height, width] };
}

// The age box as the Space reads it (spaces/app.py parse_age): empty -> unknown, else years from 0 to 120.
export function parseAge(text) {
  const value = String(text ?? "").trim();
  if (!value) return null;
  const age = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value) ? Number(value) : NaN;
  if (!(age >= 0 && age <= 120)) {
    throw new Error(`Age “${text}” is not a number of years from 0 to 120. Leave the box empty if it is unknown.`);
  }
  return age;
}

// Metadata -> the model's named inputs (hf_skin.processing.SkinProcessor.encode_metadata).
export function metadataInputs(metadata, spec) {
  const out = {};
  if (!spec) return out;
  for (const field of spec.fields) {
    if (field === "age") {
      const age = metadata.age;
      out.age = { data: new Float32Array([age === null ? 0 : (age - spec.age.mean) / spec.age.std]), dims: [1] };
      out.age_missing = { data: new Float32Array([age === null ? 1 : 0]), dims: [1] };
    } else {
      const vocabulary = spec.vocabularies[field];
      let index = vocabulary.indexOf(metadata[field]);
      if (index < 0) index = vocabulary.indexOf(spec.unknown);
      out[field] = { data: new BigInt64Array([BigInt(index)]), dims: [1] };
    }
  }
  return out;
}

export function softmax(logits) {
  const max = Math.max(...logits);
  const exp = logits.map((v) => Math.exp(v - max));
  const total = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => v / total);
}

export function displayName(label, spec) {
  const name = spec.label_names[label];
  return name && name !== label ? `${name} (${label})` : label;
}

// Python's f"{p:.Nf%}": toFixed rounds the exact binary value, as Python does (they differ only on exact ties)
export function pyPercent(p, digits = 0) {
  return `${(p * 100).toFixed(digits)}%`;
}

// hf_skin.inference.percent: whole percent, never "0%" or "100%"
export function percent(p) {
  if (p < 0.01) return "<1%";
  if (p > 0.99) return ">99%";
  return pyPercent(p);
}

// hf_skin.inference.referral_advice: the "see a dermatologist" sentence by the model's referral threshold.
export function referralAdvice(malignant, point) {
  let why =
    `The threshold, ${pyPercent(point.threshold, 1)}, was chosen on validation images to flag at least ` +
    `${pyPercent(point.target_sensitivity)} of malignant lesions`;
  const test = point.test;
  if (test && test.sensitivity != null && test.specificity != null) {
    why +=
      `; on test images it flagged ${pyPercent(test.sensitivity)} of malignant lesions, and ` +
      `${pyPercent(1 - test.specificity)} of benign ones too`;
  }
  if (malignant >= point.threshold) {
    return [
      { strong: true, text: "See a dermatologist:" },
      { strong: false, text: ` the probability of a malignant class is at or above this model's referral threshold. ${why}.` },
    ];
  }
  return [
    {
      strong: false,
      text:
        `Below this model's referral threshold for a malignant class. ${why}. A spot that changes, bleeds or itches ` +
        "needs a doctor whatever this says.",
    },
  ];
}

// hf_skin.inference.summarize, as paragraphs of [{strong, text}] (Markdown's ** as <strong>).
export function summarize(probs, spec) {
  const labels = Object.keys(probs);
  const top = labels.reduce((a, b) => (probs[b] > probs[a] ? b : a));
  const malignantNames = spec.malignant
    .map((dx) => spec.label_names[dx])
    .map((name) => name[0].toLowerCase() + name.slice(1))
    .join(", ");
  const malignant = spec.malignant.reduce((sum, dx) => sum + (probs[dx] ?? 0), 0);
  const paragraphs = [
    [{ strong: true, text: `Most likely: ${displayName(top, spec)}, ${percent(probs[top])}.` }],
    [
      { strong: false, text: `Probability of a malignant class (${malignantNames}): ` },
      { strong: true, text: percent(malignant) },
      { strong: false, text: "." },
    ],
  ];
  if (probs[top] < spec.uncertain_below) {
    paragraphs.unshift([
      { strong: true, text: "Uncertain — this needs a dermatologist's eyes." },
      {
        strong: false,
        text:
          ` No class reaches ${pyPercent(spec.uncertain_below)}: the model's best guess is less likely than all ` +
          "the others together.",
      },
    ]);
  }
  if (spec.operating_point) paragraphs.push(referralAdvice(malignant, spec.operating_point));
  return paragraphs;
}

// Width and height from an image file's header, without decoding it (PNG, JPEG, GIF, BMP, WebP), or null.
// A decompression bomb (a small file of a huge image) is refused before the browser tries to allocate it.
export function imageSize(bytes) {
  const b = bytes;
  const u16 = (i) => (b[i] << 8) | b[i + 1];
  const u16le = (i) => b[i] | (b[i + 1] << 8);
  const u32 = (i) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
  const u32le = (i) => (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    return { width: u32(16), height: u32(20) };
  }
  if (b.length >= 10 && b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46) return { width: u16le(6), height: u16le(8) };
  if (b.length >= 26 && b[0] === 0x42 && b[1] === 0x4d) {
    return { width: Math.abs(u32le(18) | 0), height: Math.abs(u32le(22) | 0) };
  }
  if (b.length >= 30 && u32(0) === 0x52494646 && u32(8) === 0x57454250) {
    const chunk = String.fromCharCode(b[12], b[13], b[14], b[15]);
    if (chunk === "VP8X") return { width: 1 + (b[24] | (b[25] << 8) | (b[26] << 16)), height: 1 + (b[27] | (b[28] << 8) | (b[29] << 16)) };
    if (chunk === "VP8L") {
      const bits = u32le(21);
      return { width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff) };
    }
    if (chunk === "VP8 ") return { width: u16le(26) & 0x3fff, height: u16le(28) & 0x3fff };
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) {
        i++;
        continue;
      }
      const marker = b[i + 1];
      if (marker === 0xff) {
        i++;
        continue;
      }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
        i += 2;
        continue;
      }
      // SOF0-SOF15 except DHT (C4), JPG (C8), DAC (CC)
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { width: u16(i + 7), height: u16(i + 5) };
      }
      i += 2 + u16(i + 2);
    }
  }
  return null;
}
