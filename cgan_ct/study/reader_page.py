"""The reader study's web page: one self-contained HTML file with its style and script inline.

It opens from a file (file://) in any current browser, makes no network
request (a Content-Security-Policy forbids it), and keeps a reader's progress
in the browser's local storage so a closed tab can be resumed. At the end the
reader downloads their answers as JSON or CSV (a Blob and an <a download>).

What the page knows of each trial is its number, its window and the two image
names: never which side is real. It names no source, patient, id or date.
"""

from __future__ import annotations

import json

ANSWERS_FORMAT = "cgan-ct-reader-study-answers"
CSV_COLUMNS = ("study_id", "reader", "trial", "window", "left_image", "right_image", "choice", "confidence", "note")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: blob: data:; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>CT reader study</title>
<style>
body { background: #1b1b1b; color: #e6e6e6; font: 16px/1.45 system-ui, sans-serif; margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 16px; }
section[hidden] { display: none; }
h1, h2 { font-weight: 600; }
.bar { display: flex; justify-content: space-between; margin-bottom: 8px; }
.pair { display: flex; gap: 24px; justify-content: center; }
figure { margin: 0; text-align: center; }
.pick { background: #000; border: 4px solid #000; padding: 0; cursor: pointer; border-radius: 2px; }
.pick:focus-visible { outline: 2px dashed #888; outline-offset: 2px; }
.pick.chosen { border-color: #4a9eff; }
.pick img { display: block; width: min(__SIZE__px, 44vw); height: auto; }
figcaption { margin-top: 4px; }
fieldset { border: 1px solid #555; margin: 0; }
.controls { display: flex; gap: 16px; margin: 10px 0; }
.controls .note { flex: 1; }
textarea, input[type=text] { background: #2a2a2a; color: #e6e6e6; border: 1px solid #555; padding: 4px; }
textarea { box-sizing: border-box; width: 100%; resize: vertical; }
button { font: inherit; padding: 6px 14px; }
.nav { display: flex; justify-content: space-between; }
.error { color: #ff8a80; }
</style>
</head>
<body>
<main>
<section id="start">
<h1>Real or generated?</h1>
<p>Each of the <span id="count"></span> screens shows two axial CT slices side by side. One is from a real CT scan;
the other is the matching slice of a generated (synthetic) CT. Both are displayed the same way: the same window,
the same scale, and radiological convention (the patient's right on the left of each image).
<span id="windows-note" hidden>Each pair of slices appears twice, once in each window, in mixed order; judge each
screen on its own.</span></p>
<p>Click the image you believe is <strong>real</strong> (or press the left or right arrow key). You may add how
confident you are (keys 1 to 5) and a note. You can go back and change an answer. At the end, download your
answers and send the file to the person who gave you this study.</p>
<p><label>Reader code <input type="text" id="reader" maxlength="32" autocomplete="off" spellcheck="false"></label>
<small>the code you were given, such as R1 (letters, digits, - and _; please not your name)</small></p>
<p id="reader-error" class="error" hidden>Enter a reader code of letters, digits, - or _.</p>
<p><button id="begin">Start</button></p>
</section>
<section id="trial" hidden>
<div class="bar"><span id="progress"></span><span id="window"></span></div>
<div class="pair">
<figure><button class="pick" id="pick-left" type="button"><img id="img-left" alt="left image"
 width="__SIZE__" height="__SIZE__"></button><figcaption>Left</figcaption></figure>
<figure><button class="pick" id="pick-right" type="button"><img id="img-right" alt="right image"
 width="__SIZE__" height="__SIZE__"></button><figcaption>Right</figcaption></figure>
</div>
<div class="controls">
<fieldset id="confidence"><legend>Confidence in your choice (optional)</legend>
<label><input type="radio" name="confidence" value="1"> 1 guess</label>
<label><input type="radio" name="confidence" value="2"> 2</label>
<label><input type="radio" name="confidence" value="3"> 3</label>
<label><input type="radio" name="confidence" value="4"> 4</label>
<label><input type="radio" name="confidence" value="5"> 5 certain</label>
</fieldset>
<fieldset class="note"><legend><label for="note">Note (optional)</label></legend>
<textarea id="note" rows="2" maxlength="2000"></textarea></fieldset>
</div>
<div class="nav"><button id="prev" type="button">Previous</button>
<button id="next" type="button" disabled>Next</button></div>
</section>
<section id="done" hidden>
<h2>Thank you</h2>
<p id="summary"></p>
<p><button id="download-json" type="button">Download answers (JSON)</button>
<button id="download-csv" type="button">Download answers (CSV)</button></p>
<p><button id="review" type="button">Review answers</button></p>
</section>
</main>
<script id="study-data" type="application/json">__DATA__</script>
<script>
"use strict";
const study = JSON.parse(document.getElementById("study-data").textContent);
const trials = study.trials;
const $ = (id) => document.getElementById(id);
let reader = "";
let index = 0;
let shownAt = 0;
let answers = trials.map((t) => ({trial: t.trial, window: t.window, left_image: t.left, right_image: t.right,
  choice: null, confidence: null, note: "", seconds: 0}));

function storageKey() { return "cgan-ct-reader-study:" + study.study_id + ":" + reader; }
function save() {
  try { localStorage.setItem(storageKey(), JSON.stringify(answers)); } catch (e) { /* storage off: keep going */ }
}
function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem(storageKey()) || "null");
    if (Array.isArray(saved) && saved.length === answers.length &&
        saved.every((a, i) => a.trial === answers[i].trial && a.left_image === answers[i].left_image)) {
      answers = saved;
    }
  } catch (e) { /* unreadable: start afresh */ }
}
function src(name) { return "img/" + name; }
function show(i) {
  index = i;
  const t = trials[i], a = answers[i], w = study.windows[t.window];
  $("progress").textContent = "Pair " + (i + 1) + " of " + trials.length;
  $("window").textContent = w.label + " (W " + w.width_hu + ", L " + w.level_hu + ")";
  $("img-left").src = src(t.left);
  $("img-right").src = src(t.right);
  for (const r of document.querySelectorAll("input[name=confidence]")) r.checked = String(a.confidence) === r.value;
  $("note").value = a.note;
  $("prev").disabled = i === 0;
  $("next").textContent = i === trials.length - 1 ? "Finish" : "Next";
  mark();
  if (i + 1 < trials.length) { new Image().src = src(trials[i + 1].left); new Image().src = src(trials[i + 1].right); }
  shownAt = performance.now();
}
function mark() {
  const choice = answers[index].choice;
  $("pick-left").classList.toggle("chosen", choice === "left");
  $("pick-right").classList.toggle("chosen", choice === "right");
  $("pick-left").setAttribute("aria-pressed", String(choice === "left"));
  $("pick-right").setAttribute("aria-pressed", String(choice === "right"));
  $("next").disabled = choice === null;
}
function leave() {
  const a = answers[index];
  a.note = $("note").value;
  a.seconds = Math.round((a.seconds + (performance.now() - shownAt) / 1000) * 10) / 10;
  save();
}
function choose(side) { answers[index].choice = side; mark(); save(); }
function setConfidence(value) {
  answers[index].confidence = value;
  for (const r of document.querySelectorAll("input[name=confidence]")) r.checked = String(value) === r.value;
  save();
}
function go(step) {
  leave();
  const i = index + step;
  if (i >= trials.length) { finish(); } else if (i >= 0) { show(i); }
}
function finish() {
  $("trial").hidden = true;
  $("done").hidden = false;
  const answered = answers.filter((a) => a.choice !== null).length;
  $("summary").textContent = "You answered " + answered + " of " + trials.length +
    " pairs. Download your answers and send the file to the person who gave you this study.";
}
function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\\r\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}
function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], {type: type}));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
function answersJson() {
  return JSON.stringify({format: study.format, version: 1, study_id: study.study_id, reader: reader,
    answers: answers}, null, 1);
}
function answersCsv() {
  const lines = [study.csv_columns.join(",")];
  for (const a of answers) {
    const row = Object.assign({study_id: study.study_id, reader: reader}, a);
    lines.push(study.csv_columns.map((c) => csvCell(row[c])).join(","));
  }
  return lines.join("\\r\\n") + "\\r\\n";
}
$("count").textContent = trials.length;
$("windows-note").hidden = Object.keys(study.windows).length < 2;
$("begin").addEventListener("click", () => {
  const code = $("reader").value.trim();
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(code)) { $("reader-error").hidden = false; return; }
  reader = code;
  restore();
  $("start").hidden = true;
  $("trial").hidden = false;
  const first = answers.findIndex((a) => a.choice === null);
  show(first === -1 ? 0 : first);
});
$("pick-left").addEventListener("click", () => choose("left"));
$("pick-right").addEventListener("click", () => choose("right"));
for (const r of document.querySelectorAll("input[name=confidence]")) {
  r.addEventListener("change", () => setConfidence(Number(r.value)));
}
$("prev").addEventListener("click", () => go(-1));
$("next").addEventListener("click", () => go(1));
$("review").addEventListener("click", () => { $("done").hidden = true; $("trial").hidden = false; show(0); });
$("download-json").addEventListener("click", () => download("answers-" + reader + ".json", answersJson(),
  "application/json"));
$("download-csv").addEventListener("click", () => download("answers-" + reader + ".csv", answersCsv(), "text/csv"));
document.addEventListener("keydown", (e) => {
  const typing = e.target.tagName === "TEXTAREA" || (e.target.tagName === "INPUT" && e.target.type === "text");
  if ($("trial").hidden || typing) return;
  if (e.key === "ArrowLeft") choose("left");
  else if (e.key === "ArrowRight") choose("right");
  else if (/^[1-5]$/.test(e.key)) setConfidence(Number(e.key));
  else if (e.key === "Enter" && !$("next").disabled && e.target.tagName !== "BUTTON") go(1);
  else return;
  e.preventDefault();
});
</script>
</body>
</html>
"""


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def page_data(study_id: str, trials: list[dict], windows: dict) -> dict:
    """What the page's script reads: per trial only its number, window and two image names."""
    shown = sorted({t["window"] for t in trials})
    return {
        "format": ANSWERS_FORMAT,
        "study_id": study_id,
        "csv_columns": list(CSV_COLUMNS),
        "windows": {
            w: {
                "label": windows[w].label,
                "width_hu": _number(windows[w].width_hu),
                "level_hu": _number(windows[w].level_hu),
            }
            for w in shown
        },
        "trials": [
            {"trial": t["trial"], "window": t["window"], "left": t["left_image"], "right": t["right_image"]}
            for t in sorted(trials, key=lambda t: t["trial"])
        ],
    }


def page_html(study_id: str, trials: list[dict], windows: dict, size_px: int) -> str:
    """The page for ``trials`` (key rows; their ``real_side`` is never read) shown at size_px x size_px."""
    data = json.dumps(page_data(study_id, trials, windows), separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.replace("__SIZE__", str(int(size_px))).replace("__DATA__", data)
