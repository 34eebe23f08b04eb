//! Which curves the report draws: one [`Panel`] per question a reader asks of a run (did reward
//! go up, did responses grow, did entropy collapse, where did the time go, what did D³S / HAPO /
//! RMT do). A panel is drawn when the run logged at least one of its series; the algorithm panels
//! also need their recipe section, and panels left out are listed with the reason.

use serde::Serialize;
use std::collections::BTreeMap;

/// One series of a panel: a `metrics.jsonl` key and its legend label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The metric key.
    pub key: String,
    /// Legend label.
    pub label: String,
}

/// One chart: metric series over training steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Panel {
    /// Element id (`panel-<id>`).
    pub id: String,
    /// Title.
    pub title: String,
    /// Y-axis label with unit.
    pub unit: String,
    /// The series, drawn in palette order.
    pub series: Vec<Series>,
    /// Smooth (EMA) over steps: false for sparse series (evaluations) and schedules.
    pub smooth: bool,
}

/// A panel by hand: `(key, label)` pairs.
fn panel(id: &str, title: &str, unit: &str, series: &[(&str, &str)]) -> Panel {
    Panel {
        id: id.into(),
        title: title.into(),
        unit: unit.into(),
        series: series.iter().map(|(k, l)| Series { key: k.to_string(), label: l.to_string() }).collect(),
        smooth: true,
    }
}

/// A schedule (learning rate, RMT budget and tiers): exact values, drawn without smoothing,
/// which would only make it lag.
fn schedule(p: Panel) -> Panel {
    Panel { smooth: false, ..p }
}

/// The recipe features that gate panels, read from `recipe.resolved.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `[algorithm.d3s]` is set.
    pub d3s: bool,
    /// `[algorithm.hapo]` is set.
    pub hapo: bool,
    /// `[algorithm.rmt]` is set.
    pub rmt: bool,
    /// `loss.kl_coef > 0`.
    pub kl: bool,
}

impl Features {
    /// From the resolved recipe text (missing or unparsable: no algorithm panels).
    pub fn from_recipe(text: Option<&str>) -> Self {
        let Some(v) = text.and_then(|t| toml::from_str::<toml::Value>(t).ok()) else { return Features::default() };
        let has = |sec: &str| v.get("algorithm").and_then(|a| a.get(sec)).is_some();
        let kl = v.get("loss").and_then(|l| l.get("kl_coef")).and_then(toml::Value::as_float).is_some_and(|c| c > 0.0);
        Features { d3s: has("d3s"), hapo: has("hapo"), rmt: has("rmt"), kl }
    }
}

/// The panels to draw for `metrics` (key -> one value per step, `None` = not logged / not
/// finite) and the ones left out, each with its reason.
pub fn choose(metrics: &BTreeMap<String, Vec<Option<f64>>>, f: Features) -> (Vec<Panel>, Vec<String>) {
    let ks = |prefix: &str| -> Vec<(String, String)> {
        let mut v: Vec<(usize, String)> = metrics
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()).map(|n| (n, k.clone())))
            .collect();
        v.sort();
        v.into_iter().map(|(n, k)| (k, format!("k = {n}"))).collect()
    };
    let by_k = |id: &str, title: &str, prefix: &str| {
        let s = ks(prefix);
        let pairs: Vec<(&str, &str)> = s.iter().map(|(k, l)| (k.as_str(), l.as_str())).collect();
        Panel { smooth: false, ..panel(id, title, "fraction of problems", &pairs) }
    };
    let candidates: Vec<(Panel, Option<(bool, &str)>)> = vec![
        (panel("reward", "Reward", "mean reward", &[("reward/mean", "reward")]), None),
        (panel("pass", "Pass rate", "share verified correct", &[("reward/pass_rate", "pass rate")]), None),
        (by_k("eval-pass", "Held-out pass@k", "eval/pass@"), None),
        (by_k("eval-maj", "Held-out maj@k", "eval/maj@"), None),
        (panel("length", "Response length", "tokens", &[("response/length_mean", "mean"), ("response/length_max", "max")]), None),
        (panel("truncated", "Truncated responses", "share truncated", &[("response/clip_ratio", "truncated")]), None),
        (panel("entropy", "Entropy", "nats per token", &[("rollout/entropy_mean", "rollout"), ("actor/entropy", "actor")]), None),
        (panel("clip", "Clip fraction", "share of tokens clipped", &[("actor/clip_frac", "clipped")]), None),
        (panel("kl", "KL to the reference", "nats per token", &[("actor/kl", "KL")]), Some((f.kl, "loss.kl_coef = 0"))),
        (schedule(panel("lr", "Learning rate", "lr", &[("optim/lr", "lr")])), None),
        (panel("grad", "Gradient norm", "L2 norm before clipping", &[("actor/grad_norm", "grad norm")]), None),
        (
            panel(
                "time",
                "Step time by stage",
                "seconds",
                &[
                    ("timing/step_s", "step"),
                    ("timing/rollout_s", "rollout"),
                    ("timing/update_s", "update"),
                    ("timing/reward_s", "reward"),
                    ("timing/old_logprob_s", "old log-probs"),
                    ("timing/plan_s", "plan"),
                    ("timing/eval_s", "eval"),
                ],
            ),
            None,
        ),
        (panel("throughput", "Rollout throughput", "tokens per second", &[("perf/rollout_tokens_per_s", "tokens/s")]), None),
        (
            panel(
                "d3s",
                "D³S kept fractions",
                "fraction kept",
                &[("select/kept_token_frac", "tokens"), ("select/kept_row_frac", "rows"), ("select/d3s_token_keep", "token target")],
            ),
            Some((f.d3s, "no [algorithm.d3s]")),
        ),
        (panel("hapo-temp", "HAPO rollout temperature", "temperature", &[("rollout/temperature_mean", "temperature")]), Some((f.hapo, "no [algorithm.hapo]"))),
        (
            panel(
                "hapo-clip",
                "HAPO clip statistics",
                "clip width / groups",
                &[("hapo/clip_low_mean", "clip low (mean)"), ("hapo/clip_high_mean", "clip high (mean)"), ("select/hapo_fallback_groups", "fallback groups")],
            ),
            Some((f.hapo, "no [algorithm.hapo]")),
        ),
        (schedule(panel("rmt-budget", "RMT token budget", "tokens", &[("rmt/budget", "budget")])), Some((f.rmt, "no [algorithm.rmt]"))),
        (schedule(panel("rmt-tiers", "RMT tier mix", "probability", &[("rmt/p_easy", "easy"), ("rmt/p_hard", "hard")])), Some((f.rmt, "no [algorithm.rmt]"))),
    ];
    let logged = |k: &str| metrics.get(k).is_some_and(|v| v.iter().any(Option::is_some));
    let mut shown = Vec::new();
    let mut left_out = Vec::new();
    for (mut p, gate) in candidates {
        if let Some((false, why)) = gate {
            left_out.push(format!("{} ({why})", p.title));
            continue;
        }
        p.series.retain(|s| logged(&s.key));
        if p.series.is_empty() {
            left_out.push(format!("{} (not logged in this run)", p.title));
        } else {
            shown.push(p);
        }
    }
    (shown, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_follow_data_and_recipe() {
        let mut m: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
        m.insert("reward/mean".into(), vec![Some(0.1), Some(0.2)]);
        m.insert("actor/kl".into(), vec![Some(0.1), None]);
        m.insert("eval/pass@8".into(), vec![Some(0.5), None]);
        m.insert("eval/pass@1".into(), vec![Some(0.2), None]);
        m.insert("select/kept_token_frac".into(), vec![None, None]);
        let (shown, out) = choose(&m, Features { d3s: true, ..Default::default() });
        let ids: Vec<&str> = shown.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["reward", "eval-pass"]);
        let eval = &shown[1];
        assert_eq!(eval.series.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["eval/pass@1", "eval/pass@8"]);
        assert!(!eval.smooth);
        assert!(out.contains(&"KL to the reference (loss.kl_coef = 0)".to_string()), "{out:?}");
        assert!(out.contains(&"D³S kept fractions (not logged in this run)".to_string()), "{out:?}");
        let f = Features::from_recipe(Some("[algorithm.d3s]\nlevel = \"x\"\n[loss]\nkl_coef = 0.1\n"));
        assert_eq!(f, Features { d3s: true, kl: true, ..Default::default() });
    }
}
