// Spotwise console: optional enhancements; every page works without this file.
"use strict";

// Hibernation grid: press on an hour and drag to set every hour passed to the same state.
document.querySelectorAll("table[data-grid]").forEach((grid) => {
  let painting = null;
  grid.addEventListener("pointerdown", (event) => {
    const box = event.target.closest("input[type=checkbox]");
    if (!box || box.disabled) return;
    event.preventDefault();
    painting = !box.checked;
    box.checked = painting;
  });
  grid.addEventListener("pointerover", (event) => {
    const box = event.target.closest("input[type=checkbox]");
    if (painting !== null && box && !box.disabled) box.checked = painting;
  });
  // The pointer handlers already toggled the box; the click that follows must not undo it.
  grid.addEventListener("click", (event) => {
    if (event.detail > 0 && event.target.matches("input[type=checkbox]")) event.preventDefault();
  });
  document.addEventListener("pointerup", () => { painting = null; });
});

// Cron fields: the next runs, or the API's objection, shortly after each keystroke.
document.querySelectorAll("input[data-cron-check]").forEach((field) => {
  const preview = document.getElementById(field.getAttribute("aria-describedby"));
  const zone = field.form.querySelector("[name=time_zone]");
  let timer = null;
  const check = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!field.value.trim()) { preview.textContent = ""; return; }
      const query = new URLSearchParams({ cron: field.value, time_zone: zone ? zone.value : "UTC" });
      const answer = await fetch("/console/cron-preview?" + query, { credentials: "same-origin" });
      preview.innerHTML = answer.ok ? await answer.text() : "";
    }, 250);
  };
  field.addEventListener("input", check);
  if (zone) zone.addEventListener("input", check);
});

// A rollout in progress: reload now and then to show how far it got.
const running = document.querySelector("[data-refresh-seconds]");
if (running) setTimeout(() => window.location.reload(), Number(running.dataset.refreshSeconds) * 1000);
