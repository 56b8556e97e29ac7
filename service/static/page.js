// The seller page: each chosen photo is sent on its own to POST /v1/predict (the server batches them), so
// every card fills in as soon as its own answer arrives and a bad file fails only its own card.
// Performance marks: "vt:chosen-N" when photos are chosen, "vt:chosen->card" measures each card shown.
"use strict";

const PREDICT_URL = "/v1/predict?k=5";
const BUSY_RETRIES = 3; // a 503 (service busy) is retried after its Retry-After, at most this often

const input = document.getElementById("files");
const drop = document.getElementById("drop");
const list = document.getElementById("results");
const statusLine = document.getElementById("status");
const clearButton = document.getElementById("clear");
const template = document.getElementById("card");
let choices = 0;

input.addEventListener("change", () => {
  analyse(input.files);
  input.value = ""; // choosing the same file again is a new choice
});
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  analyse(event.dataTransfer.files);
});
document.addEventListener("paste", (event) => analyse(event.clipboardData.files));
clearButton.addEventListener("click", () => {
  for (const image of list.querySelectorAll("img[src^='blob:']")) URL.revokeObjectURL(image.src);
  list.replaceChildren();
  clearButton.hidden = true;
  statusLine.textContent = "Results cleared.";
  input.focus();
});

async function analyse(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const chosen = `vt:chosen-${++choices}`;
  performance.mark(chosen);
  statusLine.textContent = `Analysing ${plural(files.length, "photo")}...`;
  const cards = files.map((file) => newCard(file));
  list.prepend(...cards);
  clearButton.hidden = false;
  const outcomes = await Promise.all(
    files.map(async (file, i) => {
      const answer = await predict(file);
      showAnswer(cards[i], answer);
      performance.mark(`vt:card-${cards[i].id}`);
      const measure = performance.measure("vt:chosen->card", { start: chosen, detail: { file: file.name } });
      cards[i].dataset.shownMs = measure.duration.toFixed(1);
      return answer.result ? "ok" : "error";
    })
  );
  const failed = outcomes.filter((o) => o === "error").length;
  statusLine.textContent =
    `${plural(files.length - failed, "photo")} analysed` + (failed ? `, ${failed} could not be analysed.` : ".");
}

function newCard(file) {
  const card = template.content.firstElementChild.cloneNode(true);
  card.id = `card-${++newCard.count}`;
  const title = card.querySelector(".file");
  title.id = `${card.id}-title`;
  title.textContent = file.name || "pasted image";
  card.setAttribute("aria-labelledby", title.id);
  const image = card.querySelector("img");
  image.alt = `Photo ${title.textContent}`;
  image.addEventListener("error", () => card.querySelector(".thumb").classList.add("no-preview"), { once: true });
  image.src = URL.createObjectURL(file);
  return card;
}
newCard.count = 0;

// -> {ms, modelId, result} or {ms, error: {code, message}}
async function predict(file) {
  const started = performance.now();
  for (let attempt = 0; ; attempt++) {
    const body = new FormData();
    body.append("files", file, file.name || "pasted-image");
    let response, payload;
    try {
      response = await fetch(PREDICT_URL, { method: "POST", body });
      payload = await response.json();
    } catch (error) {
      const reason = response ? `the service answered ${response.status}` : "the service could not be reached";
      return { ms: performance.now() - started, error: { code: "no_answer", message: reason } };
    }
    if (response.status === 503 && attempt < BUSY_RETRIES) {
      await sleep(Math.min(Number(response.headers.get("retry-after")) || 1, 5) * 1000);
      continue;
    }
    const ms = performance.now() - started;
    const item = response.ok && payload.results ? payload.results[0] : null;
    if (item && item.status === "ok") return { ms, modelId: payload.model_id, result: item };
    return { ms, error: (item || payload).error || { code: `http_${response.status}`, message: "unexpected answer" } };
  }
}

function showAnswer(card, answer) {
  card.removeAttribute("aria-busy");
  card.querySelector(".pending").hidden = true;
  if (answer.result) {
    fillPrediction(card, answer.result);
    card.dataset.state = "ok";
    card.querySelector(".meta").textContent = `Model ${answer.modelId} · answered in ${Math.round(answer.ms)} ms`;
  } else {
    const problem = card.querySelector(".problem");
    problem.querySelector(".problem-reason").textContent = sentence(answer.error.message);
    problem.dataset.code = answer.error.code;
    problem.hidden = false;
    card.dataset.state = "error";
    card.querySelector(".meta").textContent = `${answer.error.code} · answered in ${Math.round(answer.ms)} ms`;
  }
}

function fillPrediction(card, result) {
  const [first, second, ...rest] = result.categories;
  const top = [first, second].filter(Boolean).map((c, i) => categoryRow(c, i + 1, "top-row"));
  card.querySelector(".top2").replaceChildren(...top);
  card.querySelector(".more").replaceChildren(...rest.map((c) => categoryRow(c, null, "more-row")));
  card.querySelector(".more-title").hidden = rest.length === 0;
  card.querySelector(".tags").replaceChildren(
    ...Object.entries(result.tags).map(([tag, decision]) => tagChip(tag, decision))
  );
  card.querySelector(".answer").hidden = false;
}

function categoryRow(category, rank, kind) {
  const row = element("li", kind);
  const label = element("span", "category", category.category);
  label.dataset.category = category.category;
  const percent = element("span", "percent", percentOf(category.probability));
  const bar = element("span", "bar");
  bar.setAttribute("aria-hidden", "true");
  const fill = element("span", "fill");
  fill.style.width = `${Math.max(category.probability * 100, 0.5)}%`;
  bar.append(fill);
  if (rank) row.append(element("span", "rank", String(rank)));
  row.append(label, percent, bar);
  return row;
}

function tagChip(tag, decision) {
  const present = decision.present === 1;
  const chip = element("li", `chip ${present ? "on" : "off"}`);
  chip.dataset.tag = tag;
  chip.dataset.present = String(decision.present);
  const mark = element("span", "chip-mark", present ? "✓" : "–");
  mark.setAttribute("aria-hidden", "true");
  const gauge = element("span", "gauge");
  gauge.setAttribute("aria-hidden", "true");
  const fill = element("span", "fill");
  fill.style.width = `${decision.score * 100}%`;
  const tick = element("span", "tick");
  tick.style.left = `${decision.threshold * 100}%`;
  gauge.append(fill, tick);
  const numbers = element("span", "chip-score", `${decision.score.toFixed(2)} / ${decision.threshold.toFixed(2)}`);
  numbers.title = "score / threshold";
  const spoken = element("span", "visually-hidden", present ? ": present, " : ": not present, ");
  const spokenNumbers = `score ${decision.score.toFixed(2)}, threshold ${decision.threshold.toFixed(2)}`;
  numbers.setAttribute("aria-label", spokenNumbers);
  chip.append(mark, element("span", "chip-name", tag), spoken, gauge, numbers);
  return chip;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percentOf(p) {
  return p < 0.0005 ? "<0.1%" : `${(p * 100).toFixed(1)}%`;
}

function sentence(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".") : "";
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
