/* The portal's own behaviour, kept out of the templates: the Content-Security-Policy allows
   scripts from this origin only (no inline <script>, no on*= attributes). */
(function () {
  var root = document.documentElement;
  function isDark() { return root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches; }
  function label() { document.querySelectorAll("[data-theme-toggle]").forEach(function (b) { b.setAttribute("aria-pressed", String(isDark())); }); }
  label();
  document.addEventListener("click", function (e) {
    if (!e.target.matches("[data-theme-toggle]")) return;
    root.dataset.theme = isDark() ? "light" : "dark";
    try { localStorage.setItem("theme", root.dataset.theme); } catch (err) {}
    label();
  });
  // "/" jumps to the global search box (unless typing in a field already).
  document.addEventListener("keydown", function (e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)) return;
    var box = document.getElementById("global-search");
    if (box) { e.preventDefault(); box.focus(); box.select(); }
  });
  // Copy buttons: data-copy names the element whose text is copied.
  document.addEventListener("click", function (e) {
    var btn = e.target.closest("[data-copy]");
    if (!btn) return;
    navigator.clipboard.writeText(document.getElementById(btn.dataset.copy).textContent.trim());
    btn.textContent = "Copied";
  });
  // People found by the add-member search: a click puts the username in the field it names
  // (data-pick-for) and closes the list; the form is then sent as if it had been typed.
  document.addEventListener("click", function (e) {
    var btn = e.target.closest("[data-pick-user]");
    if (!btn) return;
    var input = document.getElementById(btn.dataset.pickFor);
    var list = btn.closest("[aria-live]") || btn.parentNode;
    input.value = btn.dataset.pickUser;
    list.textContent = "";
    var note = document.createElement("p");
    note.textContent = "Picked " + btn.dataset.pickUser + ".";
    list.appendChild(note);
    input.focus();
  });
  // Keyboard: ArrowDown from the search field moves into its matches, the arrows move within
  // them, Escape (or ArrowUp from the first) goes back to the field.
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (!t.matches) return;
    if (t.matches("input[aria-controls]") && e.key === "ArrowDown") {
      var box = document.getElementById(t.getAttribute("aria-controls"));
      var first = box && box.querySelector("[data-pick-user]");
      if (first) { e.preventDefault(); first.focus(); }
      return;
    }
    if (!t.matches("[data-pick-user]") || ["ArrowDown", "ArrowUp", "Escape"].indexOf(e.key) < 0) return;
    e.preventDefault();
    var buttons = Array.prototype.slice.call(t.closest("ul").querySelectorAll("[data-pick-user]"));
    var i = buttons.indexOf(t);
    if (e.key === "Escape" || (e.key === "ArrowUp" && i === 0)) {
      document.getElementById(t.dataset.pickFor).focus();
      return;
    }
    var next = buttons[i + (e.key === "ArrowDown" ? 1 : -1)];
    if (next) next.focus();
  });
  // Forms with data-confirm ask before they are sent (e.g. deleting a deployment).
  document.addEventListener("submit", function (e) {
    var message = e.target.dataset && e.target.dataset.confirm;
    if (message && !window.confirm(message)) e.preventDefault();
  });
  // Live logs (data-follow): lines appended by htmx keep the view at the bottom, unless the
  // reader scrolled up to read earlier ones.
  function atBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 40; }
  document.querySelectorAll("[data-follow]").forEach(function (el) { el.scrollTop = el.scrollHeight; });
  document.addEventListener("htmx:beforeSwap", function (e) {
    var t = e.detail && e.detail.target;
    if (t && t.hasAttribute("data-follow")) t.dataset.atBottom = String(atBottom(t));
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    var t = e.detail && e.detail.target;
    if (t && t.hasAttribute("data-follow") && t.dataset.atBottom !== "false") t.scrollTop = t.scrollHeight;
  });
  // Polling marked data-poll-visible skips its request while the tab is hidden (htmx's
  // "[condition]" trigger filters need eval, which the policy forbids).
  document.addEventListener("htmx:beforeRequest", function (e) {
    var elt = e.detail && e.detail.elt;
    if (elt && elt.hasAttribute("data-poll-visible") && document.visibilityState !== "visible") {
      e.preventDefault();
    }
  });
  // A box that scrolls (a wide table or code on a phone, a long log) must be reachable by
  // keyboard to be scrolled: give it a tab stop while, and only while, it overflows.
  function focusableScrollers() {
    document.querySelectorAll("main pre, main table, main .table-scroll, main .version-log").forEach(function (el) {
      var scrolls = el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1;
      if (scrolls && !el.hasAttribute("tabindex")) { el.setAttribute("tabindex", "0"); el.dataset.scrollStop = ""; }
      else if (!scrolls && el.hasAttribute("data-scroll-stop")) { el.removeAttribute("tabindex"); el.removeAttribute("data-scroll-stop"); }
    });
  }
  focusableScrollers();
  window.addEventListener("resize", focusableScrollers);
  document.addEventListener("htmx:afterSettle", focusableScrollers);
})();
