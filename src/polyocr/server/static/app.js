// polyocr's web page: upload through the job API, watch progress, look at each page with its boxes
// next to its Markdown and text, compare two engines on one page. No build step, no external assets.
import { escapeHtml, renderMarkdown } from "./render.js";

const $ = (id) => document.getElementById(id);
const KEY = "polyocr-api-key";
const SVG = "http://www.w3.org/2000/svg";
const FINAL = new Set(["done", "failed"]);
const JOB_ID = /^[0-9a-f]{32}$/;

const state = {
  info: null,
  engines: [], // rows of /v1/engines
  defaultChain: [],
  files: [],
  jobs: new Map(), // id -> job as /ui/api/jobs/{id} reports it, or {id, filename, failed: message}
  order: [], // job ids and failed-upload keys, in upload order
  current: null,
  page: 1,
  view: "page",
  result: null, // {result: DocumentResult, pages: [{markdown, text}]} of the current job
  resultFor: null,
  selected: null,
  images: new Map(), // "job/page" -> Promise of {url, blob} or a failure message
  timer: null,
};

class ApiError extends Error {
  constructor(status, message, kind = "", retryAfter = null) {
    super(message);
    this.status = status;
    this.kind = kind;
    this.retryAfter = retryAfter;
  }
}

// -- talking to the server -----------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw new ApiError(0, "the server cannot be reached (is `polyocr serve` still running?)", "network");
  }
  if (!response.ok) {
    let message = response.statusText || "request failed";
    let kind = "";
    try {
      const body = await response.json();
      message = body.error?.message ?? message;
      kind = body.error?.type ?? "";
    } catch {
      /* not a JSON error body: keep the status text */
    }
    if (response.status === 401) $("key-button").hidden = false;
    throw new ApiError(response.status, message, kind, response.headers.get("Retry-After"));
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();

// A failure in words a person can act on; the server's own message follows as the detail.
function explain(err) {
  if (!(err instanceof ApiError)) return { title: "Something went wrong in the page", detail: String(err) };
  const retry = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again shortly.";
  const titles = {
    0: ["No connection to the server", ""],
    400: ["The request was refused", ""],
    401: ["API key needed", " Enter the server's key with the “API key” button at the top."],
    403: ["Not allowed on this server", ""],
    404: ["Not found", ""],
    409: ["Not ready", ""],
    410: ["No longer available", ""],
    413: ["Too large for this server", ""],
    415: ["Not a supported file", " polyocr reads PDF, PNG, JPEG, TIFF, WebP and BMP."],
    422: ["The document could not be read", ""],
    429: ["The server is busy", retry],
    504: ["The server took too long", ""],
  };
  let [title, hint] = titles[err.status] ?? [`Server error ${err.status}`, ""];
  if (err.status === 413 && /pages?, over the limit/.test(err.message)) title = "Too many pages for this server";
  const message = /[.!?]$/.test(err.message) ? err.message : `${err.message}.`;
  return { title, detail: `${message}${hint}` };
}

function showAlert(err, context = "") {
  const { title, detail } = explain(err);
  const box = document.createElement("div");
  box.className = "alert";
  box.dataset.status = err instanceof ApiError ? String(err.status) : "";
  box.innerHTML = `<div><strong></strong><span></span></div><button type="button" class="close" aria-label="Dismiss">×</button>`;
  box.querySelector("strong").textContent = context ? `${context}: ${title}` : title;
  box.querySelector("span").textContent = detail;
  box.querySelector("button").addEventListener("click", () => box.remove());
  $("alerts").append(box);
  return { title, detail };
}

// -- the URL keeps the jobs, so a person can leave and come back ---------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  const ids = (params.get("jobs") || "").split(",").filter((id) => JOB_ID.test(id));
  for (const id of ids) {
    if (!state.jobs.has(id)) {
      state.jobs.set(id, { id, status: "unknown", filename: id.slice(0, 8), pages: [] });
      state.order.push(id);
    }
  }
  const job = params.get("job");
  state.current = job && state.jobs.has(job) ? job : ids[0] ?? null;
  state.page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  state.view = params.get("view") === "compare" ? "compare" : "page";
}

function writeUrl() {
  const ids = state.order.filter((id) => JOB_ID.test(id));
  const params = new URLSearchParams();
  if (ids.length) params.set("jobs", ids.join(","));
  if (state.current) params.set("job", state.current);
  if (state.current && state.page > 1) params.set("page", String(state.page));
  if (state.view === "compare") params.set("view", "compare");
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

// -- engines and options -------------------------------------------------------------------------

const runnable = () => state.engines.filter((e) => e.available && e.enabled);

async function loadEngines() {
  const body = await json("/v1/engines");
  state.engines = body.engines;
  state.defaultChain = body.default;
  const select = $("engine");
  select.replaceChildren();
  select.append(new Option(`auto (here: ${body.default.join(", ") || "none"})`, ""));
  for (const engine of runnable()) select.append(new Option(`${engine.name} (${engine.kind})`, engine.name));
  select.append(new Option("a chain of engines…", "__chain"));
  const off = state.engines.filter((e) => !(e.available && e.enabled));
  const list = $("unavailable-list");
  list.replaceChildren();
  for (const engine of off) {
    const item = document.createElement("li");
    const why = !engine.enabled ? "not enabled on this server (--allow-engines)" : engine.reason || "cannot run here";
    item.innerHTML = "<strong></strong>: <span></span>";
    item.querySelector("strong").textContent = engine.name;
    item.querySelector("span").textContent = why + (engine.fix ? ` — fix: ${engine.fix}` : "");
    list.append(item);
  }
  $("unavailable").hidden = off.length === 0;
  fillCompareEngines();
}

function fillCompareEngines() {
  for (const id of ["engine-a", "engine-b"]) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren(...runnable().map((e) => new Option(e.name, e.name)));
    if (keep) select.value = keep;
  }
}

function chosenEngine() {
  const value = $("engine").value;
  if (value === "__chain") return $("chain").value.replace(/\s+/g, "");
  return value;
}

// -- files and upload ----------------------------------------------------------------------------

function setFiles(files) {
  state.files = [...files];
  const list = $("chosen");
  list.replaceChildren();
  for (const [index, file] of state.files.entries()) {
    const item = document.createElement("li");
    item.innerHTML = `<span></span><button type="button" class="close">Remove</button>`;
    item.querySelector("span").textContent = `${file.name} (${formatBytes(file.size)})`;
    const remove = item.querySelector("button");
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    remove.addEventListener("click", () => setFiles(state.files.filter((_f, i) => i !== index)));
    list.append(item);
  }
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

function formatBytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  if (n >= 1024) return `${Math.round(n / 1024)} kB`;
  return `${n} bytes`;
}

async function submit(event) {
  event.preventDefault();
  $("alerts").replaceChildren();
  if (!state.files.length) {
    showAlert(new ApiError(400, "choose or drop at least one file first"), "Nothing to read");
    return;
  }
  const button = $("submit");
  button.disabled = true;
  const fields = {
    engine: chosenEngine(),
    task: $("task").value,
    language: $("languages").value.trim(),
    dpi: $("dpi").value.trim(),
  };
  let first = null;
  try {
    for (const file of state.files) {
      try {
        if (state.info && file.size > state.info.max_request_bytes) {
          throw new ApiError(
            413,
            `${file.name} is ${formatBytes(file.size)}, over the server's limit of ` +
              `${formatBytes(state.info.max_request_bytes)} (its --max-request-mb)`,
          );
        }
        const form = new FormData();
        form.append("file", file, file.name);
        for (const [name, value] of Object.entries(fields)) if (value) form.append(name, value);
        // The server deletes a job's upload when it finishes: ask it to keep each page's image.
        form.append("keep_pages", "1");
        const job = await json("/v1/jobs", { method: "POST", body: form });
        state.jobs.set(job.id, { ...job, pages: [] });
        state.order.push(job.id);
        first ??= job.id;
      } catch (err) {
        const { title, detail } = showAlert(err, file.name);
        const key = `failed-${state.order.length}`;
        state.jobs.set(key, { id: key, filename: file.name, failed: `${title}: ${detail}` });
        state.order.push(key);
      }
    }
  } finally {
    button.disabled = false;
  }
  setFiles([]);
  $("files").value = "";
  if (first) selectJob(first);
  renderJobs();
  writeUrl();
  poll();
}

// -- jobs: progress, polling ---------------------------------------------------------------------

function jobLine(job) {
  if (job.failed) return job.failed;
  const pages = `${job.pages_done ?? 0}/${job.page_count ?? "?"} pages`;
  const chain = job.params?.chain?.join(", ");
  const last = job.pages?.length ? job.pages[job.pages.length - 1].engine : null;
  switch (job.status) {
    case "queued":
      return `queued · ${pages} · chain: ${chain}`;
    case "running":
      return `running · ${pages} · ${last ? `last page read by ${last}` : `starting with ${job.params?.chain?.[0]}`} · chain: ${chain}`;
    case "done": {
      const engines = [...new Set((job.pages || []).map((p) => p.engine).filter(Boolean))];
      const failed = (job.pages || []).filter((p) => p.status === "failed").length;
      return `done · ${job.page_count} page${job.page_count === 1 ? "" : "s"} · read by ${engines.join(", ") || "no engine"}${failed ? ` · ${failed} failed` : ""}`;
    }
    case "failed":
      return `failed: ${job.error}`;
    default:
      return "looking it up…";
  }
}

function renderJobs() {
  const list = $("jobs");
  list.replaceChildren();
  for (const key of state.order) {
    const job = state.jobs.get(key);
    const item = document.createElement("li");
    item.className = `job ${job.failed || job.status === "failed" ? "failed" : job.status || ""}`;
    if (key === state.current) item.classList.add("current");
    item.dataset.job = key;
    item.innerHTML = `<span class="name"></span><div><progress max="1"></progress><div class="state"></div></div><span class="act"></span>`;
    item.querySelector(".name").textContent = job.filename;
    const progress = item.querySelector("progress");
    progress.value = job.failed ? 0 : job.progress ?? 0;
    progress.setAttribute("aria-label", `Progress of ${job.filename}`);
    if (job.failed) progress.hidden = true;
    item.querySelector(".state").textContent = jobLine(job);
    if (!job.failed) {
      const show = document.createElement("button");
      show.type = "button";
      show.textContent = key === state.current ? "Showing" : "Show";
      show.setAttribute("aria-label", `Show ${job.filename}`);
      show.disabled = key === state.current;
      show.addEventListener("click", () => selectJob(key));
      item.querySelector(".act").append(show);
    }
    list.append(item);
  }
  $("jobs-section").hidden = state.order.length === 0;
}

async function poll() {
  clearTimeout(state.timer);
  const open = state.order.filter((id) => JOB_ID.test(id) && !FINAL.has(state.jobs.get(id).status));
  await Promise.all(
    open.map(async (id) => {
      try {
        const job = await json(`/ui/api/jobs/${id}`);
        state.jobs.set(id, job);
      } catch (err) {
        if (err.status === 401) return;
        state.jobs.set(id, { id, filename: state.jobs.get(id).filename, failed: `${explain(err).title}: ${err.message}` });
      }
    }),
  );
  const jobs = JSON.stringify(state.order.map((k) => [k, state.jobs.get(k).status, state.jobs.get(k).pages_done]));
  if (jobs !== state.jobsSignature) {
    state.jobsSignature = jobs;
    renderJobs();
  }
  const current = state.jobs.get(state.current);
  const signature = current && `${current.id}:${current.status}:${current.pages_done}`;
  if (current && signature !== state.signature) {
    state.signature = signature;
    await showCurrent();
  }
  const still = state.order.some((id) => JOB_ID.test(id) && !FINAL.has(state.jobs.get(id).status) && !state.jobs.get(id).failed);
  if (still) state.timer = setTimeout(poll, 700);
}

function selectJob(id) {
  if (state.current !== id) {
    state.current = id;
    state.page = 1;
    state.selected = null;
  }
  writeUrl();
  renderJobs();
  state.signature = `${id}:${state.jobs.get(id)?.status}:${state.jobs.get(id)?.pages_done}`;
  showCurrent();
}

// -- the result of one job -----------------------------------------------------------------------

async function showCurrent() {
  const job = state.jobs.get(state.current);
  if (!job || job.failed) {
    $("result").hidden = true;
    return;
  }
  $("result").hidden = false;
  $("result-title").textContent = job.filename;
  if (job.status === "done" && state.resultFor !== job.id) {
    try {
      state.result = await json(`/ui/api/jobs/${job.id}/view`);
      state.resultFor = job.id;
    } catch (err) {
      showAlert(err, job.filename);
      return;
    }
  }
  const done = job.status === "done" && state.resultFor === job.id;
  state.page = Math.min(state.page, Math.max(1, job.page_count || 1));
  renderDownloads(done ? job : null);
  renderStrip(job);
  setView(state.view, false);
  if (!done) {
    renderAttempts(null);
    const waiting = job.status === "failed" ? `The job failed: ${job.error}` : "The page appears here when the job is done.";
    $("page-wrap").replaceChildren(Object.assign(document.createElement("p"), { className: "missing", textContent: waiting }));
    $("md").replaceChildren();
    $("txt").replaceChildren();
    $("legend").replaceChildren();
    return;
  }
  if (state.shown !== `${job.id}/${state.page}`) await showPage(state.page);
}

function pageSummaries(job) {
  const byNumber = new Map((job.pages || []).map((p) => [p.page, p]));
  return Array.from({ length: job.page_count || 0 }, (_v, i) => byNumber.get(i + 1) ?? { page: i + 1, status: "pending", attempts: [] });
}

function renderStrip(job) {
  const strip = $("strip");
  strip.replaceChildren();
  for (const summary of pageSummaries(job)) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = summary.status;
    button.dataset.page = String(summary.page);
    const tries = summary.attempts.length;
    const detail = summary.status === "pending" ? "waiting" : `${summary.engine ?? "no engine"} · ${summary.status}`;
    button.innerHTML = `Page ${summary.page}<small></small>`;
    button.querySelector("small").textContent = tries > 1 ? `${detail} · ${tries} attempts` : detail;
    button.setAttribute("aria-label", `Page ${summary.page}: ${button.querySelector("small").textContent}`);
    if (summary.page === state.page) button.setAttribute("aria-current", "page");
    button.disabled = job.status !== "done";
    button.addEventListener("click", () => showPage(summary.page));
    button.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = strip.querySelector(`[data-page="${summary.page + step}"]`);
      if (next) {
        next.focus();
        showPage(summary.page + step);
      }
    });
    strip.append(button);
  }
}

function renderAttempts(page) {
  const box = $("attempts");
  box.replaceChildren();
  if (!page) return;
  const table = document.createElement("table");
  table.innerHTML = `<caption class="visually-hidden">Attempts on page ${page.page}</caption>
    <thead><tr><th scope="col">#</th><th scope="col">Engine</th><th scope="col">Outcome</th><th scope="col">Seconds</th><th scope="col">Why</th></tr></thead><tbody></tbody>`;
  const body = table.querySelector("tbody");
  page.attempts.forEach((attempt, index) => {
    const row = body.insertRow();
    const cells = [String(index + 1), attempt.engine, attempt.outcome, attempt.seconds.toFixed(2), attempt.error ?? ""];
    for (const text of cells) row.insertCell().textContent = text;
    row.cells[2].className = attempt.outcome === "ok" ? "outcome-ok" : "outcome-bad";
    if (index > 0 && !attempt.error) {
      const prev = page.attempts[index - 1];
      row.cells[4].textContent = prev.engine === attempt.engine ? "retry" : `fallback after ${prev.engine}`;
    }
  });
  const lead = document.createElement("p");
  const status = page.status === "ok" ? "" : ` · status ${page.status}`;
  lead.textContent = `Page ${page.page}: ${page.width}×${page.height} px · read by ${page.engine ?? "no engine"}${status}` +
    (page.errors.length ? ` · ${page.errors.join("; ")}` : "");
  box.append(lead, table);
}

function renderDownloads(job) {
  const box = $("downloads");
  box.replaceChildren();
  if (!job) return;
  box.append(Object.assign(document.createElement("span"), { textContent: "Download:" }));
  for (const format of state.info.formats) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = format.toUpperCase();
    button.dataset.format = format;
    button.setAttribute("aria-label", `Download the result as ${format}`);
    button.addEventListener("click", () => download(job, format));
    box.append(button);
  }
}

async function download(job, format) {
  try {
    const response = await api(`/ui/api/jobs/${job.id}/download?format=${encodeURIComponent(format)}`);
    const blob = await response.blob();
    const match = /filename\*=UTF-8''([^;]+)/.exec(response.headers.get("Content-Disposition") || "");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = match ? decodeURIComponent(match[1]) : `result.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (err) {
    showAlert(err, `Download ${format}`);
  }
}

function pageImage(jobId, number) {
  const key = `${jobId}/${number}`;
  if (!state.images.has(key)) {
    const promise = api(`/ui/api/jobs/${jobId}/pages/${number}`)
      .then((r) => r.blob())
      .then((blob) => ({ blob, url: URL.createObjectURL(blob) }));
    promise.catch(() => state.images.delete(key)); // try again next time
    state.images.set(key, promise);
  }
  return state.images.get(key);
}

// The page image with an SVG on top whose viewBox is the page in pixels: a block's bbox is drawn as is.
async function pageFigure(wrap, jobId, page, blocks, engine, { extraClass = "", onSelect = null } = {}) {
  wrap.replaceChildren();
  wrap.style.aspectRatio = `${page.width || 1} / ${page.height || 1}`;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${page.width} ${page.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "group");
  svg.setAttribute("aria-label", `Boxes of ${engine ?? "the engine"} on page ${page.page}`);
  blocks.forEach((block, index) => {
    if (!block.bbox) return;
    const [x1, y1, x2, y2] = block.bbox;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", x1);
    rect.setAttribute("y", y1);
    rect.setAttribute("width", Math.max(0, x2 - x1));
    rect.setAttribute("height", Math.max(0, y2 - y1));
    rect.setAttribute("class", `box ${extraClass}`.trim());
    rect.style.color = `var(--cat-${block.category}, var(--cat-Text))`;
    rect.dataset.block = String(index);
    rect.dataset.category = block.category;
    rect.setAttribute("tabindex", "0");
    rect.setAttribute("role", "button");
    rect.setAttribute("aria-label", `Block ${index + 1}: ${block.category}${block.text ? `, ${block.text.slice(0, 60)}` : ""}`);
    rect.addEventListener("mouseenter", (event) => showTip(event, block, index, engine));
    rect.addEventListener("mousemove", moveTip);
    rect.addEventListener("mouseleave", hideTip);
    rect.addEventListener("focus", (event) => showTip(event, block, index, engine));
    rect.addEventListener("blur", hideTip);
    if (onSelect) {
      rect.addEventListener("click", () => onSelect(index));
      rect.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(index);
        }
      });
    }
    svg.append(rect);
  });
  wrap.append(svg); // the boxes at once; the image goes under them when it arrives
  const key = `${jobId}/${page.page}`;
  wrap.dataset.image = key;
  try {
    const { url } = await pageImage(jobId, page.page);
    if (wrap.dataset.image !== key) return svg; // another page was asked for meanwhile
    const img = document.createElement("img");
    img.alt = `Page ${page.page} of the document`;
    img.src = url;
    wrap.prepend(img);
  } catch (err) {
    const note = document.createElement("p");
    note.className = "missing";
    note.textContent = `No page image: ${err.message}`;
    wrap.prepend(note);
  }
  return svg;
}

function describeBlock(block, index, engine) {
  const confidence = block.confidence == null ? "no confidence reported" : `confidence ${(block.confidence * 100).toFixed(0)}%`;
  return { meta: `Block ${index + 1} · ${block.category} · ${confidence} · ${engine ?? "unknown engine"}`, text: block.text || "(no text)" };
}

let tip = null;
function showTip(event, block, index, engine) {
  const { meta, text } = describeBlock(block, index, engine);
  tip ??= Object.assign(document.createElement("div"), { className: "tip", role: "tooltip" });
  tip.textContent = `${meta}\n${text.length > 400 ? `${text.slice(0, 400)}…` : text}`;
  document.body.append(tip);
  if (event.type === "focus") {
    const box = event.target.getBoundingClientRect();
    placeTip(box.left, box.bottom);
  } else moveTip(event);
}
function moveTip(event) {
  placeTip(event.clientX + 14, event.clientY + 14);
}
function placeTip(x, y) {
  if (!tip) return;
  const width = tip.offsetWidth;
  tip.style.left = `${Math.max(4, Math.min(x, window.innerWidth - width - 8))}px`;
  tip.style.top = `${Math.min(y, window.innerHeight - tip.offsetHeight - 8)}px`;
}
function hideTip() {
  tip?.remove();
}

async function showPage(number) {
  const job = state.jobs.get(state.current);
  const doc = state.result?.result;
  if (!job || !doc) return;
  const index = doc.pages.findIndex((p) => p.page === number);
  if (index < 0) return;
  state.page = number;
  state.selected = null;
  state.shown = `${job.id}/${number}`;
  writeUrl();
  for (const button of $("strip").children) {
    if (button.dataset.page === String(number)) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  const page = doc.pages[index];
  const view = state.result.pages[index];
  renderAttempts(page);
  $("block-info").replaceChildren();
  renderText(page, view);
  renderLegend(page.blocks);
  await pageFigure($("page-wrap"), job.id, page, page.blocks, page.engine, { onSelect: selectBlock });
  if (state.view === "compare") prepareCompare(page);
}

function renderLegend(blocks) {
  const legend = $("legend");
  legend.replaceChildren();
  const categories = [...new Set(blocks.filter((b) => b.bbox).map((b) => b.category))];
  for (const category of categories) {
    const count = blocks.filter((b) => b.category === category).length;
    const span = document.createElement("span");
    span.style.color = `var(--cat-${category}, var(--cat-Text))`;
    span.innerHTML = `<b></b>`;
    span.querySelector("b").textContent = `${category} (${count})`;
    span.querySelector("b").style.color = "var(--fg)";
    legend.append(span);
  }
  if (!categories.length) legend.textContent = "No boxes on this page.";
}

function chunk(tag, index, onSelect) {
  const element = document.createElement(tag);
  element.className = "chunk";
  element.dataset.block = String(index);
  element.tabIndex = 0;
  element.setAttribute("role", "button");
  element.addEventListener("click", () => onSelect(index));
  element.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      onSelect(index);
    }
  });
  return element;
}

function renderText(page, view) {
  const md = $("md");
  const txt = $("txt");
  md.replaceChildren();
  txt.replaceChildren();
  if (page.status === "failed") {
    const reason = page.errors.join("; ") || "failed on every engine";
    md.textContent = `Page ${page.page} failed: ${reason}`;
    txt.textContent = md.textContent;
    return;
  }
  if (view.markdown) {
    view.markdown.forEach((source, index) => {
      if (!source) return;
      const element = chunk("div", index, selectBlock);
      element.innerHTML = renderMarkdown(source);
      element.setAttribute("aria-label", `Block ${index + 1}, Markdown`);
      md.append(element);
    });
  } else {
    md.innerHTML = renderMarkdown(page.markdown || page.text || "");
  }
  if (view.text) {
    view.text.forEach((text, index) => {
      if (!text) return;
      const element = chunk("p", index, selectBlock);
      element.textContent = text;
      txt.append(element);
    });
  } else {
    const pre = document.createElement("pre");
    pre.textContent = page.text;
    txt.append(pre);
  }
  if (!md.childNodes.length) md.textContent = "(no text on this page)";
  if (!txt.childNodes.length) txt.textContent = "(no text on this page)";
}

// One block selected everywhere: its box, its Markdown, its text; the others scroll to it.
function selectBlock(index) {
  const doc = state.result?.result;
  const page = doc?.pages.find((p) => p.page === state.page);
  if (!page) return;
  state.selected = index;
  for (const element of document.querySelectorAll("#page-view .selected")) element.classList.remove("selected");
  const targets = document.querySelectorAll(`#page-view [data-block="${index}"]`);
  for (const element of targets) element.classList.add("selected");
  for (const element of document.querySelectorAll(`#md [data-block="${index}"], #txt [data-block="${index}"]`)) {
    element.scrollIntoView({ block: "nearest" });
  }
  const { meta, text } = describeBlock(page.blocks[index], index, page.engine);
  const info = $("block-info");
  info.innerHTML = `<div class="meta"></div><div class="text"></div>`;
  info.querySelector(".meta").textContent = meta;
  info.querySelector(".text").textContent = text;
}

// -- compare two engines on one page -------------------------------------------------------------

function setView(view, render = true) {
  state.view = view;
  const compare = view === "compare";
  $("tab-page").setAttribute("aria-selected", String(!compare));
  $("tab-compare").setAttribute("aria-selected", String(compare));
  $("tab-page").tabIndex = compare ? -1 : 0;
  $("tab-compare").tabIndex = compare ? 0 : -1;
  $("page-view").hidden = compare;
  $("compare-view").hidden = !compare;
  writeUrl();
  if (render && compare) {
    const page = state.result?.result?.pages.find((p) => p.page === state.page);
    if (page) prepareCompare(page);
  }
}

function prepareCompare(page) {
  fillCompareEngines();
  const names = runnable().map((e) => e.name);
  const a = $("engine-a");
  const b = $("engine-b");
  if (!a.dataset.touched && page.engine && names.includes(page.engine)) a.value = page.engine;
  if (!b.dataset.touched) b.value = names.find((n) => n !== a.value) ?? a.value;
  $("compare-run").textContent = `Compare on page ${page.page}`;
}

async function ocrPage(blob, engine, job, number) {
  const form = new FormData();
  form.append("file", blob, `page-${number}.png`);
  form.append("engine", engine);
  form.append("task", job.params.task === "text" ? "layout" : job.params.task);
  form.append("language", job.params.languages.join("+"));
  form.append("format", "json");
  const doc = await json("/v1/ocr", { method: "POST", body: form });
  return doc.pages[0];
}

async function runCompare(event) {
  event.preventDefault();
  const job = state.jobs.get(state.current);
  const page = state.result?.result?.pages.find((p) => p.page === state.page);
  if (!job || !page) return;
  const engines = [$("engine-a").value, $("engine-b").value];
  const out = $("compare-out");
  const button = $("compare-run");
  button.disabled = true;
  out.replaceChildren(Object.assign(document.createElement("p"), { textContent: `Reading page ${page.page} with ${engines.join(" and ")}…`, role: "status" }));
  try {
    const { blob } = await pageImage(job.id, page.page);
    const results = [];
    for (const engine of engines) results.push(await ocrPage(blob, engine, job, page.page));
    const score = await json("/ui/api/compare", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ a: results[0].text, b: results[1].text }),
    });
    out.replaceChildren();
    const cer = document.createElement("p");
    cer.className = "cer";
    cer.id = "compare-cer";
    cer.dataset.cer = String(score.cer);
    cer.textContent = `CER of ${engines[1]} against ${engines[0]}: ${(score.cer * 100).toFixed(2)}% ` +
      `(${score.errors} character edits over ${score.reference_chars} characters of ${engines[0]}'s text)`;
    const panes = document.createElement("div");
    panes.className = "compare-panes";
    for (const [i, result] of results.entries()) {
      const figure = document.createElement("figure");
      figure.className = "pane";
      figure.dataset.engine = engines[i];
      const wrap = document.createElement("div");
      wrap.className = "page-wrap";
      const caption = document.createElement("figcaption");
      const time = result.attempts.reduce((s, a) => s + a.seconds, 0);
      caption.textContent = `${i === 0 ? "A" : "B"}: ${engines[i]} · ${plural(result.blocks.filter((b) => b.bbox).length, "box", "boxes")} · ` +
        `${result.status} · ${time.toFixed(2)} s${result.engine && result.engine !== engines[i] ? ` · answered by ${result.engine}` : ""}`;
      figure.append(wrap, caption);
      panes.append(figure);
      await pageFigure(wrap, job.id, { ...result, page: page.page }, result.blocks, engines[i], { extraClass: i ? "b-set" : "" });
    }
    const diff = document.createElement("div");
    diff.className = "diff";
    diff.setAttribute("aria-label", `Word differences: deleted from ${engines[0]}, inserted by ${engines[1]}`);
    diff.innerHTML = score.diff
      .map(([op, text]) => (op === "equal" ? escapeHtml(text) : op === "delete" ? `<del>${escapeHtml(text)}</del>` : `<ins>${escapeHtml(text)}</ins>`))
      .join("");
    const key = document.createElement("p");
    key.className = "muted";
    key.innerHTML = `<del>struck out</del>: only in ${escapeHtml(engines[0])}; <ins>underlined</ins>: only in ${escapeHtml(engines[1])}.`;
    out.append(cer, panes, key, diff);
  } catch (err) {
    out.replaceChildren();
    showAlert(err, "Compare");
  } finally {
    button.disabled = false;
  }
}

// -- API key -------------------------------------------------------------------------------------

function openKeyDialog() {
  $("key-input").value = sessionStorage.getItem(KEY) || "";
  $("key-dialog").showModal();
}

async function keyClosed() {
  if ($("key-dialog").returnValue !== "save") return;
  const key = $("key-input").value.trim();
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  $("alerts").replaceChildren();
  await start();
}

// -- wiring --------------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files?.length) setFiles(event.dataTransfer.files);
  });
  $("files").addEventListener("change", (event) => setFiles(event.target.files));
  $("upload-form").addEventListener("submit", submit);
  $("engine").addEventListener("change", () => {
    $("chain").hidden = $("engine").value !== "__chain";
    if (!$("chain").hidden) $("chain").focus();
  });
  $("key-button").addEventListener("click", openKeyDialog);
  $("key-dialog").addEventListener("close", keyClosed);
  $("tab-page").addEventListener("click", () => setView("page"));
  $("tab-compare").addEventListener("click", () => setView("compare"));
  for (const id of ["tab-page", "tab-compare"]) {
    $(id).addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const other = id === "tab-page" ? "tab-compare" : "tab-page";
      $(other).focus();
      setView(other === "tab-compare" ? "compare" : "page");
    });
  }
  for (const id of ["engine-a", "engine-b"]) $(id).addEventListener("change", () => ($(id).dataset.touched = "1"));
  $("compare-form").addEventListener("submit", runCompare);
}

async function start() {
  try {
    await loadEngines();
  } catch (err) {
    showAlert(err, "Engines");
    if (err.status === 401) return;
  }
  renderJobs();
  state.signature = null;
  await poll();
}

async function main() {
  wire();
  try {
    state.info = await json("/ui/api/info");
  } catch (err) {
    showAlert(err, "Server");
    return;
  }
  $("server-info").textContent = `v${state.info.version} · up to ${state.info.max_pages} pages, ${formatBytes(state.info.max_request_bytes)} a file`;
  $("languages").value = state.info.languages.join("+");
  $("dpi").value = String(state.info.dpi);
  readUrl();
  if (state.info.auth) {
    $("key-button").hidden = false;
    if (!sessionStorage.getItem(KEY)) {
      openKeyDialog();
      return;
    }
  }
  await start();
}

main();
