//! The page around the data: HTML skeleton, inline CSS (`page.css`) and script (`page.js`).
//! An error trap runs first, so any script error or `console.error` is recorded on the `<html>`
//! element (`data-errors`); the renderer sets `data-rendered="ok"` when it has drawn everything.

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// The error trap: the first script of the page.
const TRAP: &str = "window.__reportErrors=[];function __note(m){window.__reportErrors.push(String(m));\
document.documentElement.setAttribute('data-errors',JSON.stringify(window.__reportErrors));}\
window.addEventListener('error',function(e){__note(e.message||'error');});\
window.addEventListener('unhandledrejection',function(e){__note('unhandled rejection: '+e.reason);});\
(function(){var ce=console.error;console.error=function(){__note(Array.prototype.join.call(arguments,' '));ce.apply(console,arguments);};})();";

/// Escape text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page for run `name` with `json` (the page data) embedded. `<` in the JSON is written as
/// `\u003c` so no string inside it can close the script element.
pub(super) fn page(name: &str, json: &str) -> String {
    let data = json.replace('<', "\\u003c");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>rlpo report: {title}</title>\n<script>{TRAP}</script>\n<style>\n{CSS}</style>\n</head>\n<body>\n\
<header><h1 id=\"title\">{title}</h1><div id=\"subtitle\" class=\"muted\"></div><p id=\"story\"></p></header>\n\
<section id=\"cards\" class=\"cards\"></section>\n<section id=\"warnings\"></section>\n\
<h2>Training curves</h2>\n<p class=\"muted small\">Thin lines: raw values per step; thick lines: smoothed (exponential moving average, weight 0.6). Hover a chart to read values.</p>\n\
<section id=\"panels\" class=\"grid\"></section>\n<p id=\"left-out\" class=\"muted small\"></p>\n\
<h2>Samples</h2>\n<section id=\"samples\"></section>\n\
<details id=\"recipe\"><summary>Recipe (recipe.resolved.toml)</summary><pre id=\"recipe-text\"></pre></details>\n\
<footer class=\"muted small\">Written by <code>rlpo report</code>; self-contained, works offline.</footer>\n\
<div id=\"tip\" class=\"tip\" hidden></div>\n\
<script id=\"report-data\" type=\"application/json\">{data}</script>\n<script>\n{JS}</script>\n</body>\n</html>\n",
        title = escape(name),
    )
}
