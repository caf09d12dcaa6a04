// 探访控制台: small progressive enhancements only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Submit buttons: prevent double submission of a form.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) {
        window.setTimeout(function () { b.disabled = true; }, 0);
      });
    });
  });
  // Audio: show a short note while a recording loads.
  document.querySelectorAll("audio.recording").forEach(function (a) {
    a.addEventListener("error", function () {
      var p = document.createElement("p");
      p.className = "error";
      p.textContent = "录音无法播放（可能已按保留期限删除）。";
      a.replaceWith(p);
    });
  });
});
