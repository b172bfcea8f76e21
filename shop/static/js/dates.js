// Every <time datetime> the server wrote in UTC, shown in the shopper's own time zone in the
// same format ("22 Nov 2026, 16:23 GMT+1"). Without JavaScript the UTC text stays, labelled.
(function () {
  "use strict";
  var format;
  try {
    format = new Intl.DateTimeFormat("en-US", {
      day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
      hourCycle: "h23", timeZoneName: "short"
    });
    if (!format.formatToParts) format = null;
  } catch (error) {
    format = null;
  }

  function localise(time) {
    var moment = new Date(time.getAttribute("datetime"));
    if (!format || isNaN(moment.getTime())) return;
    var parts = {};
    format.formatToParts(moment).forEach(function (part) { parts[part.type] = part.value; });
    time.textContent = parts.day + " " + parts.month + " " + parts.year + ", " +
      parts.hour + ":" + parts.minute + " " + parts.timeZoneName;
  }

  window.showLocalTime = function (time, iso) {
    time.setAttribute("datetime", iso);
    time.textContent = iso;
    localise(time);
  };
  document.querySelectorAll("time[datetime]").forEach(localise);
})();
