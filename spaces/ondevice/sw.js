// The page's service worker: a copy of every file of the page (its code, onnxruntime-web, the model) in the
// browser's cache, so that the page works offline once it has loaded. Online, files come from the network (and
// refresh the copy); offline, from the copy. It never fetches anything but the page's own files.
const CACHE = "hf-skin-ondevice";
const SHELL = [
  "./",
  "index.html",
  "app.js",
  "skin.js",
  "style.css",
  "manifest.webmanifest",
  "vendor/ort.wasm.min.mjs",
  "vendor/ort-wasm-simd-threaded.mjs",
  "vendor/ort-wasm-simd-threaded.wasm",
  "model/hf_skin_export.json",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(SHELL);
      const spec = await (await cache.match("model/hf_skin_export.json")).json();
      const entry = spec.models.int8 ?? spec.models.fp32;
      await cache.add(`model/${entry.file}`);
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(request, response.clone());
        return response;
      } catch (err) {
        const cached = await cache.match(request, { ignoreSearch: true });
        if (cached) return cached;
        throw err;
      }
    })(),
  );
});
