// Copy buttons for read-only values marked data-copy (the DNS records on the
// domains page). The buttons are made here, so without this script the page
// is the same minus the buttons: the fields can still be selected and copied.
(function () {
  "use strict";
  var fields = document.querySelectorAll("input[data-copy]");
  Array.prototype.forEach.call(fields, function (input) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "secondary copy";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy " + (input.getAttribute("aria-label") || "value"));
    var done = function () { b.textContent = "Copied"; };
    var fallback = function () {
      input.select();
      try { document.execCommand("copy"); done(); } catch (e) { b.textContent = "Press Ctrl+C"; }
    };
    b.addEventListener("click", function () {
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(input.value).then(done, fallback);
      } else {
        fallback();
      }
    });
    input.insertAdjacentElement("afterend", b);
  });
})();
