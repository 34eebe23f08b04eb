//! Difficulty tiers and the tier sampler: proportions over many seeded draws, renormalisation
//! over empty tiers, and resume.

use rlpo_data::curriculum::renormalise;
use rlpo_data::{
    difficulty_tiers, tiers_by_quantile, ArithmeticConfig, Prompt, Sample, SyntheticConfig,
    TierSampler, TierSamplerState,
};

#[test]
fn tiers_split_at_thirds() {
    // Values 1..=9 in scrambled positions: tiers hold {1,2,3}, {4,5,6}, {7,8,9}.
    let values = [5.0, 9.0, 1.0, 7.0, 3.0, 2.0, 8.0, 6.0, 4.0];
    let t = tiers_by_quantile(&values).unwrap();
    let tier_values = |k: usize| t.members[k].iter().map(|&i| values[i]).collect::<Vec<_>>();
    assert_eq!(tier_values(0), [1.0, 3.0, 2.0]);
    assert_eq!(tier_values(1), [5.0, 6.0, 4.0]);
    assert_eq!(tier_values(2), [9.0, 7.0, 8.0]);
    assert!(tiers_by_quantile(&[1.0, f64::NAN]).is_err());
    assert!(tiers_by_quantile(&[]).is_err());
}

#[test]
fn ties_keep_equal_values_together() {
    let t = tiers_by_quantile(&[2.0; 6]).unwrap();
    assert_eq!(t.sizes(), [6, 0, 0]);
    // [0,0,0,0,10,10,10,10,10]: q1 = 0 and q2 = 10, so nothing is hard.
    let t = tiers_by_quantile(&[0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 10.0, 10.0]).unwrap();
    assert_eq!(t.sizes(), [4, 5, 0]);
}

fn fractions(draws: &[usize], tiers: &rlpo_data::Tiers) -> [f64; 3] {
    let mut counts = [0usize; 3];
    for d in draws {
        let k = (0..3).find(|&k| tiers.members[k].contains(d)).unwrap();
        counts[k] += 1;
    }
    counts.map(|c| c as f64 / draws.len() as f64)
}

#[test]
fn draws_follow_tier_probabilities() {
    let values: Vec<f64> = (0..90).map(f64::from).collect();
    let tiers = tiers_by_quantile(&values).unwrap();
    assert_eq!(tiers.sizes(), [30, 30, 30]);
    let mut sampler = TierSampler::new(tiers.clone(), 11).unwrap();
    let n = 30_000;
    let draws = sampler.sample([0.6, 0.3, 0.1], n).unwrap();
    let f = fractions(&draws, &tiers);
    // Binomial std at n = 30 000 is at most 0.003; 0.02 is a loose bound.
    for (got, want) in f.iter().zip([0.6, 0.3, 0.1]) {
        assert!((got - want).abs() < 0.02, "fractions {f:?}");
    }
    // Uniform within a tier: each easy member expects 30 000 * 0.6 / 30 = 600 draws (std ~24).
    let mut per = vec![0usize; 90];
    for &d in &draws {
        per[d] += 1;
    }
    assert!(
        per[..30].iter().all(|&c| (450..750).contains(&c)),
        "{:?}",
        &per[..30]
    );

    // Reversed schedule (RMT's late-stage p_t2).
    let f = fractions(&sampler.sample([0.1, 0.3, 0.6], n).unwrap(), &tiers);
    assert!(
        (f[2] - 0.6).abs() < 0.02 && (f[0] - 0.1).abs() < 0.02,
        "{f:?}"
    );
}

#[test]
fn empty_tiers_are_renormalised_away() {
    let values = [0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 10.0, 10.0];
    let tiers = tiers_by_quantile(&values).unwrap();
    let p = renormalise([0.5, 0.2, 0.3], tiers.sizes()).unwrap();
    assert!(
        (p[0] - 5.0 / 7.0).abs() < 1e-12 && (p[1] - 2.0 / 7.0).abs() < 1e-12 && p[2] == 0.0,
        "{p:?}"
    );

    let mut sampler = TierSampler::new(tiers.clone(), 5).unwrap();
    let f = fractions(&sampler.sample([0.5, 0.2, 0.3], 20_000).unwrap(), &tiers);
    assert_eq!(f[2], 0.0);
    assert!((f[0] - 5.0 / 7.0).abs() < 0.02, "{f:?}");

    // All mass on the empty tier, or invalid probabilities: clear errors.
    let err = sampler.sample([0.0, 0.0, 1.0], 1).unwrap_err().to_string();
    assert!(err.contains("no mass on a non-empty tier"), "{err}");
    assert!(sampler.sample([f64::NAN, 0.5, 0.5], 1).is_err());
    assert!(sampler.sample([-0.1, 0.5, 0.5], 1).is_err());
}

#[test]
fn sampler_is_seeded_and_resumable() {
    let tiers = tiers_by_quantile(&(0..40).map(f64::from).collect::<Vec<_>>()).unwrap();
    let p = [0.5, 0.3, 0.2];
    let mut a = TierSampler::new(tiers.clone(), 1).unwrap();
    let full: Vec<Vec<usize>> = (0..10).map(|_| a.sample(p, 7).unwrap()).collect();

    let mut b = TierSampler::new(tiers.clone(), 1).unwrap();
    for expected in &full[..4] {
        assert_eq!(&b.sample(p, 7).unwrap(), expected);
    }
    let saved = serde_json::to_string(&b.state()).unwrap();
    let mut c = TierSampler::new(tiers.clone(), 999).unwrap(); // seed is overwritten by restore
    c.restore(&serde_json::from_str::<TierSamplerState>(&saved).unwrap())
        .unwrap();
    for expected in &full[4..] {
        assert_eq!(&c.sample(p, 7).unwrap(), expected);
    }
    assert_eq!(c.state().draws, 70);

    let mut other = TierSampler::new(tiers, 2).unwrap();
    assert_ne!(other.sample(p, 70).unwrap(), full.concat());

    let small = tiers_by_quantile(&[1.0, 2.0, 3.0]).unwrap();
    let mut d = TierSampler::new(small, 1).unwrap();
    assert!(d.restore(&serde_json::from_str(&saved).unwrap()).is_err());
}

#[test]
fn synthetic_difficulty_feeds_the_tiers() {
    let cfg = SyntheticConfig::Arithmetic(ArithmeticConfig {
        max_digits: 3,
        max_operators: 3,
        size: 600,
        ..ArithmeticConfig::default()
    });
    let samples = cfg.generate(0).unwrap();
    let tiers = difficulty_tiers(&samples).unwrap();
    assert!(tiers.sizes().iter().all(|&n| n > 0), "{:?}", tiers.sizes());
    let max_easy = tiers.members[0]
        .iter()
        .map(|&i| samples[i].difficulty.unwrap())
        .fold(0.0, f64::max);
    let min_hard = tiers.members[2]
        .iter()
        .map(|&i| samples[i].difficulty.unwrap())
        .fold(9.0, f64::min);
    assert!(max_easy < min_hard);

    let mut no_difficulty = samples.clone();
    no_difficulty.push(Sample {
        id: "doc-7".into(),
        prompt: Prompt::Text("x".into()),
        answer: None,
        data_source: None,
        difficulty: None,
        metadata: serde_json::Value::Null,
    });
    let err = difficulty_tiers(&no_difficulty).unwrap_err().to_string();
    assert!(
        err.contains("`doc-7`") && err.contains("data.fields.difficulty"),
        "{err}"
    );
}
