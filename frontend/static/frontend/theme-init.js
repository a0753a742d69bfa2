/* Loaded (not deferred) in <head>, before first paint: the theme chosen with the toggle
   (localStorage), else the OS's. A file, not an inline script: the Content-Security-Policy
   allows scripts from this origin only. */
try {
  var t = localStorage.getItem("theme");
  if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
} catch (e) {}
