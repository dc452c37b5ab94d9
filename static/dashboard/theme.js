// Applied before first paint: the saved theme choice (auto | light | dark), default follows the OS.
(function () {
  try {
    var saved = window.localStorage.getItem("iops-theme");
    if (saved === "light" || saved === "dark") document.documentElement.setAttribute("data-theme", saved);
  } catch (e) { /* storage disabled: stay on auto */ }
})();
