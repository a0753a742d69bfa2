/* The version upload form (registry/_upload_form.html), posted by htmx: a refused upload
   (400) is swapped in place of the form, so the errors show while the chosen file stays
   selected (the file input carries hx-preserve). Loaded by the model page only. */
(function () {
  document.addEventListener("htmx:beforeSwap", function (e) {
    var elt = e.detail && e.detail.elt;
    if (elt && elt.hasAttribute("data-swap-errors") && e.detail.xhr.status === 400) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    var summary = e.detail && e.detail.target && e.detail.target.querySelector(".form-errors");
    if (summary) { summary.setAttribute("tabindex", "-1"); summary.focus(); }
  });
})();
