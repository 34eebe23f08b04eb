//! `rlpo report` checked in a real browser: a 4-step tiny run (D³S, `[eval]` every 2 steps) with
//! the binary, `rlpo report`, then headless Chromium (Debian's `chromium`, installed by
//! scripts/setup.sh) loads `report.html` from disk. The page must render with no console output
//! at all and no error caught by its own trap; every plotted raw series, read back from the DOM
//! (SVG path coordinates through the plot's data-to-pixel mapping), must equal `metrics.jsonl`;
//! a screenshot is saved under the target directory. The harness itself is shown to fail on a
//! page with a script error and on a plotted value that differs from the log.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Chromium binary (Debian: `chromium`).
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no chromium on PATH: run scripts/setup.sh (it installs Debian's chromium package)");
}

/// Run headless Chromium on `page` with `extra` flags; returns (stdout, console lines).
fn browse(page: &Path, extra: &[String], scratch: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir_in(scratch).unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.canonicalize().unwrap().display()));
    let log = scratch.join(format!("chromium-{}", extra.len()));
    let mut child = spawn_logged(cmd.stdin(Stdio::null()), &log);
    let status = wait_exit(&mut child, 120);
    let err = read(&log.with_extension("err"));
    assert!(status.success(), "chromium failed ({status}):\n{err}");
    // Chromium reports every console message of the page (any level) as `INFO:CONSOLE`.
    let console = err.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect();
    (read(&log.with_extension("out")), console)
}

/// The value of attribute `name` in the start tag `tag`.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = tag[at..].find('"')?;
    Some(tag[at..at + end].replace("&quot;", "\"").replace("&amp;", "&"))
}

/// Every start tag `<name ...>` in `html`, in document order.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    html.match_indices(&open).map(|(i, _)| &html[i..i + html[i..].find('>').unwrap_or(0) + 1]).collect()
}

/// A raw series read back from the DOM: (step, value) points and the value range of one pixel.
struct Plotted {
    pts: Vec<(f64, f64)>,
    per_px: f64,
}

/// Raw series drawn on step axes, read back from the DOM, by metric.
fn plotted(dom: &str) -> BTreeMap<String, Plotted> {
    let mut out = BTreeMap::new();
    // Each `<g class="plot">` holds its mapping; the raw paths follow it until the next plot.
    let plots: Vec<(usize, &str)> = dom.match_indices("<g class=\"plot\"").map(|(i, _)| (i, &dom[i..i + dom[i..].find('>').unwrap() + 1])).collect();
    for (n, (start, g)) in plots.iter().enumerate() {
        let end = plots.get(n + 1).map_or(dom.len(), |p| p.0);
        if attr(g, "data-xscale").as_deref() != Some("linear") {
            continue; // the coverage curve (k on a log axis) is checked elsewhere
        }
        let f = |k: &str| attr(g, k).unwrap_or_else(|| panic!("plot without {k}: {g}")).parse::<f64>().unwrap();
        let (x0, x1, y0, y1) = (f("data-xmin"), f("data-xmax"), f("data-ymin"), f("data-ymax"));
        let (left, top, w, h) = (f("data-left"), f("data-top"), f("data-width"), f("data-height"));
        for p in tags(&dom[*start..end], "path").into_iter().filter(|t| attr(t, "class").as_deref() == Some("raw")) {
            let key = attr(p, "data-metric").expect("raw path names its metric");
            let d = attr(p, "d").unwrap();
            let nums: Vec<f64> = d.split(['M', 'L', ' ']).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
            let pts = nums.chunks(2).map(|xy| (x0 + (xy[0] - left) / w * (x1 - x0), y0 + (top + h - xy[1]) / h * (y1 - y0))).collect();
            out.insert(key, Plotted { pts, per_px: (y1 - y0) / h });
        }
    }
    out
}

/// Compare read-back points with metrics.jsonl (merged by step): same steps, values within the
/// pixel rounding of their plot (coordinates have 2 decimals). Returns how many points matched.
fn compare(plots: &BTreeMap<String, Plotted>, lines: &[serde_json::Value]) -> Result<usize, String> {
    let mut logged: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for l in lines {
        let step = l["step"].as_u64().unwrap();
        for (k, v) in l["metrics"].as_object().unwrap() {
            if let Some(x) = v.as_f64() {
                logged.entry(k.clone()).or_default().insert(step, x);
            }
        }
    }
    let mut matched = 0;
    for (key, Plotted { pts, per_px }) in plots {
        let want = logged.get(key).ok_or_else(|| format!("{key} is plotted but not in metrics.jsonl"))?;
        if pts.len() != want.len() {
            return Err(format!("{key}: {} points plotted, {} logged", pts.len(), want.len()));
        }
        for ((x, y), (step, v)) in pts.iter().zip(want) {
            if (x - *step as f64).abs() > 0.01 {
                return Err(format!("{key}: plotted step {x} where the log has step {step}"));
            }
            let tol = 0.006 * per_px.abs() + 1e-9 * v.abs();
            if (y - v).abs() > tol {
                return Err(format!("{key} at step {step}: plotted {y}, logged {v} (tolerance {tol})"));
            }
            matched += 1;
        }
    }
    Ok(matched)
}

#[test]
fn report_renders_in_chromium_and_plots_exactly_the_logged_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "rep", 4, 0);
    let extra = "\n[algorithm.d3s]\nsamples_init = 2\nsamples_final = 4\n[eval]\nevery = 2\nproblems = 2\nsamples = 4\n[eval.data]\nseed = 5\n";
    std::fs::write(&recipe, read(&recipe) + extra).unwrap();
    run_ok(rlpo().arg("train").arg(&recipe));
    let run = tmp.path().join("rep");
    let out = run_ok(rlpo().arg("report").arg(&run));
    let page = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(page, run.join("report.html"));

    let (dom, console) = browse(&page, &["--dump-dom".to_string()], tmp.path());
    assert!(console.is_empty(), "console output while loading the report:\n{}", console.join("\n"));
    let html = tags(&dom, "html").into_iter().next().expect("an <html> element");
    assert_eq!(attr(html, "data-rendered").as_deref(), Some("ok"), "the renderer did not finish: {html}");
    assert_eq!(attr(html, "data-errors").as_deref(), Some("[]"), "errors caught by the page");

    let plots = plotted(&dom);
    for key in ["reward/mean", "reward/pass_rate", "eval/pass@1", "eval/maj@4", "response/length_mean", "rollout/entropy_mean", "actor/clip_frac", "optim/lr", "actor/grad_norm", "timing/step_s", "timing/rollout_s", "select/kept_token_frac", "select/kept_row_frac"] {
        assert!(plots.contains_key(key), "{key} is not plotted; plotted: {:?}", plots.keys().collect::<Vec<_>>());
    }
    let lines = metric_lines(&run);
    let matched = compare(&plots, &lines).unwrap_or_else(|e| panic!("plotted points differ from metrics.jsonl: {e}"));
    assert!(matched >= 13 * 3, "only {matched} points compared");
    // Evaluation ran at steps 0, 2 and 4: three points on the held-out curve.
    assert_eq!(plots["eval/pass@1"].pts.iter().map(|p| p.0.round() as u64).collect::<Vec<_>>(), [0, 2, 4]);
    // The sample browser shows the last recorded step's responses; the recipe is on the page.
    assert!(dom.contains("step 4 (4 of 4 recorded)"), "sample browser not at the last step");
    assert!(dom.contains("id=\"recipe-text\"") && dom.contains("total_steps = 4"));

    // The comparison can fail: one logged value changed, and the same DOM no longer matches.
    let mut tampered = lines.clone();
    let last = tampered.iter_mut().rev().find(|l| l["metrics"]["reward/mean"].is_number()).unwrap();
    let v = last["metrics"]["reward/mean"].as_f64().unwrap();
    last["metrics"]["reward/mean"] = serde_json::json!(v + 0.05);
    assert!(compare(&plots, &tampered).unwrap_err().contains("reward/mean"));

    // The browser check can fail: a script error on the page is seen twice over.
    let broken = tmp.path().join("broken.html");
    std::fs::write(&broken, read(&page).replace("</body>", "<script>notDefinedAnywhere();</script></body>")).unwrap();
    let (bdom, bconsole) = browse(&broken, &["--dump-dom".to_string()], tmp.path());
    assert!(bconsole.iter().any(|l| l.contains("notDefinedAnywhere")), "{bconsole:?}");
    let bhtml = tags(&bdom, "html").into_iter().next().unwrap();
    assert!(attr(bhtml, "data-errors").is_some_and(|e| e.contains("notDefinedAnywhere")), "{bhtml}");

    // A screenshot for people (cargo's scratch directory for integration tests).
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_browser");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("report.png");
    let _ = std::fs::remove_file(&png);
    browse(&page, &[format!("--screenshot={}", png.display()), "--window-size=1400,2400".into(), "--hide-scrollbars".into()], tmp.path());
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "{} bytes", bytes.len());
    eprintln!("screenshot: {}", png.display());
}
