// The dashboard's only script: the theme toggle, and live parts of pages that fetch
// their fragment again while something is in flight. Pages work without it.
(function () {
  "use strict";
  var root = document.documentElement;

  function currentTheme() {
    if (root.dataset.theme) return root.dataset.theme;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function showTheme() {
    var label = document.getElementById("theme-name");
    if (label) label.textContent = currentTheme();
  }

  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var next = currentTheme() === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      try { localStorage.setItem("edgebench-theme", next); } catch (e) { /* not kept */ }
      showTheme();

  // Controls that apply themselves (the scatter's axes): no inline handlers, which the
  // pages' Content-Security-Policy forbids.
  document.querySelectorAll("[data-autosubmit]").forEach(function (control) {
    control.addEventListener("change", function () { control.form.submit(); });
  });
    });
  }
  showTheme();

  // Live fragments: [data-live-src] is refreshed every few seconds until the fragment
  // says it is final (data-final="true") or the page is hidden.
  var live = document.querySelector("[data-live-src]");
  function isFinal(element) {
    var marked = element.querySelector("[data-final]");
    return marked !== null && marked.dataset.final === "true";
  }
  function refresh() {
    if (!live || document.hidden) return;
    fetch(live.dataset.liveSrc, { headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        if (isFinal(live)) { clearInterval(timer); }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  var timer = null;
  if (live && !isFinal(live)) {
    timer = setInterval(refresh, Number(live.dataset.liveEvery) || 1500);
  }
})();
