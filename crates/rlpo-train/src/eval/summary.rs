//! From sample records to the numbers of an evaluation, per dataset (`data_source`) and over all
//! problems: mean reward, pass@k and maj@k at the requested k values (each the mean over problems
//! of the per-problem estimate, [`super::estimators`]), and the coverage curve pass@k for every k
//! from 1 to n. Also the `eval/...` scalars logged during training and a plain-text table.

use super::estimators::{maj_at_k, pass_at_k, Vote};
use super::runner::SampleRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// pass@k and maj@k at one k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtK {
    /// k.
    pub k: usize,
    /// Mean over problems of the unbiased pass@k.
    #[serde(rename = "pass@k")]
    pub pass: f64,
    /// Mean over problems of maj@k.
    #[serde(rename = "maj@k")]
    pub maj: f64,
}

/// The numbers of one dataset (or of all problems).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// `data_source`, or `all`.
    pub name: String,
    /// Problems.
    pub problems: usize,
    /// Samples (problems × n).
    pub samples: usize,
    /// Mean total reward over the samples whose reward was computed (`None` if none was).
    pub mean_reward: Option<f64>,
    /// Samples whose reward failed (error or timeout; counted as not correct).
    pub reward_failures: usize,
    /// Fraction of samples in which no answer was found.
    pub no_answer_frac: f64,
    /// Correct judgements that rest on a weak signal (see `rlpo eval --audit`).
    pub weak_correct: usize,
    /// Mean generated tokens per sample.
    pub mean_tokens: f64,
    /// pass@k and maj@k at the requested k values.
    pub by_k: Vec<AtK>,
    /// The coverage curve: pass@k for k = 1..=n (entry k-1).
    pub coverage: Vec<f64>,
}

/// An evaluation's summary (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Samples per problem, n.
    pub samples_per_problem: usize,
    /// Requested k values.
    pub ks: Vec<usize>,
    /// What decides correctness: a verifier's name, or `reward > 0`.
    pub correct_by: String,
    /// All problems together.
    pub overall: DatasetSummary,
    /// One entry per dataset, by name (only when there are several).
    pub datasets: Vec<DatasetSummary>,
}

/// Summarise `records` (every problem must have the same number of samples `n`).
pub fn summarise(records: &[SampleRecord], n: usize, ks: &[usize], verifier: Option<&str>) -> EvalSummary {
    let mut by_ds: BTreeMap<&str, Vec<&SampleRecord>> = BTreeMap::new();
    for r in records {
        by_ds.entry(r.data_source.as_str()).or_default().push(r);
    }
    let all: Vec<&SampleRecord> = records.iter().collect();
    let datasets = if by_ds.len() > 1 { by_ds.iter().map(|(name, rs)| dataset(name, rs, n, ks, verifier)).collect() } else { Vec::new() };
    EvalSummary {
        samples_per_problem: n,
        ks: ks.to_vec(),
        correct_by: verifier.map_or_else(|| "reward > 0".to_string(), str::to_string),
        overall: dataset("all", &all, n, ks, verifier),
        datasets,
    }
}

fn dataset(name: &str, records: &[&SampleRecord], n: usize, ks: &[usize], verifier: Option<&str>) -> DatasetSummary {
    let mut problems: BTreeMap<usize, Vec<&SampleRecord>> = BTreeMap::new();
    for r in records {
        problems.entry(r.problem).or_default().push(r);
    }
    let mean_over_problems = |f: &dyn Fn(&[&SampleRecord]) -> Option<f64>| {
        let vals: Vec<f64> = problems.values().filter_map(|rs| f(rs)).collect();
        if vals.is_empty() { f64::NAN } else { vals.iter().sum::<f64>() / vals.len() as f64 }
    };
    let votes = |rs: &[&SampleRecord]| -> Vec<Vote> { rs.iter().map(|r| Vote { answer: r.answer.clone(), correct: r.correct }).collect() };
    let pass = |k: usize| mean_over_problems(&|rs| pass_at_k(rs.len(), rs.iter().filter(|r| r.correct).count(), k));
    let by_k = ks.iter().map(|&k| AtK { k, pass: pass(k), maj: mean_over_problems(&|rs| maj_at_k(&votes(rs), k)) }).collect();
    let rewards: Vec<f64> = records.iter().filter_map(|r| r.reward).collect();
    let frac = |count: usize| if records.is_empty() { f64::NAN } else { count as f64 / records.len() as f64 };
    let weak = |r: &&&SampleRecord| verifier.and_then(|v| r.answers.get(v)).is_some_and(|a| a.weak());
    DatasetSummary {
        name: name.to_string(),
        problems: problems.len(),
        samples: records.len(),
        mean_reward: (!rewards.is_empty()).then(|| rewards.iter().sum::<f64>() / rewards.len() as f64),
        reward_failures: records.iter().filter(|r| r.status != "ok").count(),
        no_answer_frac: frac(records.iter().filter(|r| r.answer.is_none()).count()),
        weak_correct: records.iter().filter(weak).count(),
        mean_tokens: frac(records.iter().map(|r| r.tokens).sum()),
        by_k,
        coverage: (1..=n).map(pass).collect(),
    }
}

impl DatasetSummary {
    /// pass@k at a requested k.
    pub fn pass_at(&self, k: usize) -> Option<f64> {
        self.by_k.iter().find(|a| a.k == k).map(|a| a.pass)
    }
}

impl EvalSummary {
    /// The `eval/...` scalars logged during training: `eval/pass@k`, `eval/maj@k` for every k,
    /// `eval/reward_mean`, `eval/no_answer_frac`, `eval/weak_correct_frac`,
    /// `eval/response_length_mean`, `eval/reward_failures`; with several datasets also
    /// `eval/<data_source>/pass@k` and `eval/<data_source>/maj@k`.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let o = &self.overall;
        let mut out = vec![
            ("eval/reward_mean".to_string(), o.mean_reward.unwrap_or(f64::NAN)),
            ("eval/no_answer_frac".to_string(), o.no_answer_frac),
            ("eval/weak_correct_frac".to_string(), o.weak_correct as f64 / o.samples.max(1) as f64),
            ("eval/response_length_mean".to_string(), o.mean_tokens),
            ("eval/reward_failures".to_string(), o.reward_failures as f64),
        ];
        for a in &o.by_k {
            out.push((format!("eval/pass@{}", a.k), a.pass));
            out.push((format!("eval/maj@{}", a.k), a.maj));
        }
        for d in &self.datasets {
            for a in &d.by_k {
                out.push((format!("eval/{}/pass@{}", d.name, a.k), a.pass));
                out.push((format!("eval/{}/maj@{}", d.name, a.k), a.maj));
            }
        }
        out
    }

    /// A plain-text table per dataset.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let all = std::iter::once(&self.overall).chain(&self.datasets);
        for d in all {
            let reward = d.mean_reward.map_or("-".into(), |r| format!("{r:.3}"));
            s.push_str(&format!(
                "{}: {} problems x {} samples, mean reward {reward}, no answer {:.1}%, reward failures {}, weak correct {}, mean length {:.1} tokens (correct = {})\n",
                d.name,
                d.problems,
                self.samples_per_problem,
                100.0 * d.no_answer_frac,
                d.reward_failures,
                d.weak_correct,
                d.mean_tokens,
                self.correct_by
            ));
            let row = |label: &str, f: &dyn Fn(&AtK) -> String| format!("  {label:<7}{}\n", d.by_k.iter().map(|a| format!("{:>7}", f(a))).collect::<String>());
            s.push_str(&row("k", &|a| a.k.to_string()));
            s.push_str(&row("pass@k", &|a| format!("{:.3}", a.pass)));
            s.push_str(&row("maj@k", &|a| format!("{:.3}", a.maj)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(problem: usize, answer: Option<&str>, correct: bool, reward: f64) -> SampleRecord {
        SampleRecord {
            problem,
            id: format!("p{problem}"),
            data_source: "d".into(),
            sample: 0,
            prompt: String::new(),
            response: String::new(),
            ground_truth: None,
            reward: Some(reward),
            status: "ok".into(),
            parts: BTreeMap::new(),
            answer: answer.map(str::to_string),
            correct,
            answers: BTreeMap::new(),
            tokens: 4,
            finish_reason: "eos".into(),
        }
    }

    /// Two problems by hand: problem 0 has 1 of 2 correct, problem 1 none.
    #[test]
    fn means_over_problems() {
        let rs = [rec(0, Some("4"), true, 1.0), rec(0, Some("5"), false, 0.0), rec(1, Some("9"), false, 0.0), rec(1, None, false, 0.0)];
        let s = summarise(&rs, 2, &[1, 2], Some("math"));
        let o = &s.overall;
        assert_eq!((o.problems, o.samples), (2, 4));
        assert_eq!(o.pass_at(1), Some(0.25)); // (1/2 + 0) / 2
        assert_eq!(o.pass_at(2), Some(0.5)); // (1 + 0) / 2
        // maj@2 of problem 0: tie 4 vs 5, "4" came first -> correct; problem 1 -> wrong.
        assert_eq!(o.by_k[1].maj, 0.5);
        assert_eq!(o.coverage, [0.25, 0.5]);
        assert_eq!(o.mean_reward, Some(0.25));
        assert_eq!(o.no_answer_frac, 0.25);
        assert!(s.datasets.is_empty(), "one dataset: only the overall entry");
        let scalars: BTreeMap<String, f64> = s.scalars().into_iter().collect();
        assert_eq!(scalars["eval/pass@1"], 0.25);
        assert_eq!(scalars["eval/maj@2"], 0.5);
        assert!(s.table().contains("pass@k"));
    }
}
