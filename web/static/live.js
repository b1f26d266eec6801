// Live refresh of the dashboard's lists (htmx polling of [data-live] regions), pausable.
// The pages work without it: every figure is rendered by the server. A poll is skipped
// while paused (the header's toggle, remembered in this browser), while the user is typing
// or choosing in a form inside the region, while text is selected, and while the tab is
// hidden.
(function () {
  "use strict";
  var KEY = "outbox-live-paused";
  function paused() {
    try { return window.localStorage.getItem(KEY) === "1"; } catch (e) { return false; }
  }
  function show(button) {
    var off = paused();
    button.setAttribute("aria-pressed", off ? "false" : "true");
    button.textContent = off ? "Live: paused" : "Live: on";
  }
  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName)) {
      return true;
    }
    var chosen = window.getSelection ? String(window.getSelection()) : "";
    return chosen.length > 0 || document.hidden;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("live-toggle");
    if (!button || !document.querySelector("[data-live]")) { return; }
    button.hidden = false;
    show(button);
    button.addEventListener("click", function () {
      try { window.localStorage.setItem(KEY, paused() ? "0" : "1"); } catch (e) { /* private mode */ }
      show(button);
    });
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var region = event.target;
    if (region && region.hasAttribute && region.hasAttribute("data-live") && (paused() || busy(region))) {
      event.preventDefault();
    }
  });
})();
