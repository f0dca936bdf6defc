// Runs before the page paints: applies the theme chosen earlier (else the system's).
(function () {
  try {
    var chosen = localStorage.getItem("edgebench-theme");
    if (chosen === "dark" || chosen === "light") {
      document.documentElement.dataset.theme = chosen;
    }
  } catch (e) { /* storage blocked: follow the system */ }
})();
