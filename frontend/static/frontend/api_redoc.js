// Loaded before ReDoc's bundle on /api/v1/redoc/. ReDoc's sidebar credits Redocly with a logo
// fetched from cdn.redoc.ly; no page of the platform requests anything off the host (offline it
// would fail, and the CSP refuses it), so that one image gets an empty picture instead.
(function () {
  "use strict";
  var blank = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw==";
  var offHost = /^https:\/\/cdn\.redoc\.ly\//;
  var setAttribute = Element.prototype.setAttribute;
  HTMLImageElement.prototype.setAttribute = function (name, value) {
    if (String(name).toLowerCase() === "src" && offHost.test(String(value))) {
      value = blank;
    }
    return setAttribute.call(this, name, value);
  };
  var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: src.enumerable,
    get: function () { return src.get.call(this); },
    set: function (value) { src.set.call(this, offHost.test(String(value)) ? blank : value); }
  });
})();
