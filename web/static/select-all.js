// "Select all" on a page: a checkbox with data-select-all="NAME" ticks or clears every
// checkbox named NAME (the rows shown). A file of its own: the CSP forbids inline scripts.
document.addEventListener("change", (event) => {
  const box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.dataset.selectAll) return;
  for (const row of document.querySelectorAll("input[type=checkbox]")) {
    if (row.name === box.dataset.selectAll) row.checked = box.checked;
  }
});
