// The console's one script, and every page works without it: it only asks before a change
// marked data-confirm, and ticks or unticks every box of a list at once.
"use strict";
document.addEventListener("submit", (event) => {
  const question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
document.addEventListener("change", (event) => {
  const all = event.target;
  if (!all.matches || !all.matches("input[data-select-all]")) {
    return;
  }
  const form = document.getElementById(all.getAttribute("data-select-all"));
  if (!form) {
    return;
  }
  for (const box of form.querySelectorAll("input[type=checkbox][name]")) {
    box.checked = all.checked;
  }
});
