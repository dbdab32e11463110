// Times in the viewer's own zone: every <time datetime> gets the full local
// time as its hover text (the server wrote it in UTC, which stays if this
// script does not run). The visible "3 min ago" does not depend on the zone.
(function () {
  "use strict";
  var opts = { dateStyle: "medium", timeStyle: "long" };
  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    try {
      t.title = d.toLocaleString(undefined, opts);
    } catch (e) {
      t.title = d.toString();
    }
  });
})();
