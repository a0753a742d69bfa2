/* The version upload form (registry/_upload_form.html), posted by htmx: a refused upload
   (400) is swapped in place of the form, so the errors show while the chosen file stays
   selected (the file input carries hx-preserve). Choosing an MLflow model as .zip fills an
   empty input example with one row built from the MLmodel's signature, read in the browser
   (only the archive's directory and MLmodel are read, not the whole file). Left unchanged,
   that row is not sent: the platform builds the same one and, since it is made up, neither
   predicts it in the sandbox nor keeps it as the drift baseline. Loaded by the model page. */
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
  document.addEventListener("htmx:configRequest", function (e) {
    var box = document.getElementById("id_input_example");
    if (!e.detail.elt.hasAttribute("data-swap-errors") || !box || !box.dataset.prefilled) return;
    if (box.value === box.dataset.prefilled) {
      if (e.detail.formData) e.detail.formData.set("input_example", "");
      else e.detail.parameters.input_example = "";
    }
  });

  var SAMPLE = {double: 0.5, float: 0.5, long: 1, integer: 1, boolean: true, string: "text",
                binary: "", datetime: "2024-01-01T00:00:00"};
  var TENSOR = {float64: 0.5, float32: 0.5, float16: 0.5, int64: 1, int32: 1, int16: 1,
                int8: 1, uint8: 1, bool: true, str: "text", object: "text"};

  function u16(b, o) { return b[o] | (b[o + 1] << 8); }
  function u32(b, o) { return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0; }
  function bytes(file, start, end) {
    return file.slice(start, end).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function inflate(data) {
    var stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }

  // MLmodel's text from a zip: the end record, the central directory, then that one member.
  async function mlmodelFromZip(file) {
    var tailStart = Math.max(0, file.size - 65557);
    var tail = await bytes(file, tailStart, file.size);
    var end = -1;
    for (var i = tail.length - 22; i >= 0; i--) { if (u32(tail, i) === 0x06054b50) { end = i; break; } }
    if (end < 0) return null;
    var count = u16(tail, end + 10), size = u32(tail, end + 12), offset = u32(tail, end + 16);
    var dir = await bytes(file, offset, offset + size);
    for (var n = 0, p = 0; n < count && p + 46 <= dir.length; n++) {
      if (u32(dir, p) !== 0x02014b50) return null;
      var method = u16(dir, p + 10), csize = u32(dir, p + 20), nameLength = u16(dir, p + 28);
      var skip = nameLength + u16(dir, p + 30) + u16(dir, p + 32), local = u32(dir, p + 42);
      var name = new TextDecoder().decode(dir.subarray(p + 46, p + 46 + nameLength));
      p += 46 + skip;
      if (!/^([^/]+\/)?MLmodel$/.test(name) || csize > 1048576) continue;
      var header = await bytes(file, local, local + 30);
      var start = local + 30 + u16(header, 26) + u16(header, 28);
      var data = await bytes(file, start, start + csize);
      if (method === 8) data = await inflate(data);
      else if (method !== 0) return null;
      return new TextDecoder().decode(data);
    }
    return null;
  }

  // signature.inputs: a JSON string in single quotes, which YAML folds over lines.
  function signatureInputs(text) {
    var at = text.search(/^signature:\s*$/m);
    if (at < 0) return null;
    var rest = text.slice(at), m = /^[ \t]+inputs:[ \t]*'/m.exec(rest);
    if (!m) return null;
    var s = rest.slice(m.index + m[0].length), out = "";
    for (var k = 0; k < s.length; k++) {
      var c = s[k];
      if (c === "'") { if (s[k + 1] === "'") { out += "'"; k++; continue; } break; }
      if (c === "\n") { out = out.replace(/[ \t]+$/, "") + " "; while (s[k + 1] === " " || s[k + 1] === "\t") k++; continue; }
      out += c;
    }
    try { return JSON.parse(out); } catch (err) { return null; }
  }

  function exampleOf(inputs) {
    if (!Array.isArray(inputs) || !inputs.length) return null;
    if (inputs[0].type === "tensor") {
      var spec = inputs[0]["tensor-spec"] || {}, shape = spec.shape || [], value = TENSOR[spec.dtype];
      if (inputs.length !== 1 || value === undefined || shape.length !== 2 || !(shape[1] > 0 && shape[1] <= 1000)) return null;
      return {inputs: [new Array(shape[1]).fill(value)]};
    }
    var columns = [], row = [];
    for (var i = 0; i < inputs.length; i++) {
      if (!inputs[i].name || !(inputs[i].type in SAMPLE)) return null;
      columns.push(inputs[i].name); row.push(SAMPLE[inputs[i].type]);
    }
    return {columns: columns, data: [row]};
  }

  document.addEventListener("change", async function (e) {
    if (e.target.id !== "id_file" || !e.target.files.length) return;
    var file = e.target.files[0], box = document.getElementById("id_input_example");
    var note = document.getElementById("upload-prefill-note");
    if (!box || (box.value.trim() && box.value !== box.dataset.prefilled)) return;
    var example = null;
    if (/\.zip$/i.test(file.name) && typeof DecompressionStream !== "undefined") {
      try { var text = await mlmodelFromZip(file); example = text && exampleOf(signatureInputs(text)); } catch (err) { example = null; }
    }
    box.value = example ? JSON.stringify(example) : "";
    box.dataset.prefilled = box.value;
    if (note) note.textContent = example ? "Filled from the model's signature; edit it to send your own." : "";
  });
})();
