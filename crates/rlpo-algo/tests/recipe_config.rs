//! Recipe sections as a user writes them: TOML → `AlgorithmConfig` / `LossConfig` → validation,
//! with errors that name the full key.

use rlpo_algo::config::{AdvantageKind, BaseLoss, D3sLevel, FilterMetric, HapoStatsScope, NtpNorm};
use rlpo_algo::{validate_sections, AggMode, Aggregation, AlgorithmConfig, LossConfig};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Recipe {
    algorithm: AlgorithmConfig,
    loss: LossConfig,
}

fn parse(src: &str) -> Result<Recipe, String> {
    toml::from_str(src).map_err(|e| e.to_string())
}

/// Parse and validate with group size `g`; the error text on failure.
fn load(src: &str, g: usize) -> Result<Recipe, String> {
    let r = parse(src)?;
    validate_sections(&r.algorithm, &r.loss, g).map_err(|e| e.to_string())?;
    Ok(r)
}

fn load_err(src: &str, g: usize) -> String {
    load(src, g).expect_err("recipe should be rejected")
}

#[test]
fn empty_sections_are_a_grpo_baseline() {
    let r = load("[algorithm]\n[loss]\n", 8).unwrap();
    assert_eq!(r.algorithm, AlgorithmConfig::default());
    assert_eq!(r.algorithm.advantage, AdvantageKind::Grpo);
    assert!(r.algorithm.d3s.is_none() && r.algorithm.hapo.is_none() && r.algorithm.rmt.is_none());
    assert_eq!(r.loss.clip_widths(), (0.2, 0.2));
    assert_eq!(r.loss.dual_clip(), Some(3.0));
    assert_eq!(r.loss.aggregation(), Aggregation::TokenMean);
    assert_eq!(r.loss.kl_coef, 0.0);
}

#[test]
fn full_recipe_parses() {
    let src = r#"
        [algorithm]
        advantage = "hapo"
        std = "population"
        adv_eps = 1e-8

        [algorithm.dapo]
        overlong_filter = false
        [algorithm.dapo.overlong]
        max_len = 20480
        cache_len = 4096
        penalty_factor = 1.0
        [algorithm.dapo.filter_groups]
        metric = "score"
        max_num_gen_batches = 3
        on_exhausted = "train_available"

        [algorithm.d3s]
        level = "intra_group"
        samples_init = 4
        samples_final = 12
        token_keep_init = 0.2
        token_keep_final = 0.6

        [algorithm.hapo]
        quantile = 0.8
        tau = 0.05
        code_compat = true
        stats_scope = "micro_batch"

        [algorithm.rmt]
        budget_init = 800
        tiers_start = [0.5, 0.25, 0.25]
        ntp_norm = "sum"

        [loss]
        base = "gspo_token"
        clip_high = 0.28
        agg = "constant_norm"
        norm_len = 3000
        kl_coef = 0.001
        kl_estimator = "k2"
    "#;
    let r = load(src, 16).unwrap();
    let a = &r.algorithm;
    assert_eq!(a.advantage, AdvantageKind::Hapo);
    assert_eq!(
        a.dapo.filter_groups.as_ref().unwrap().metric,
        FilterMetric::Score
    );
    assert_eq!(a.d3s.as_ref().unwrap().level, D3sLevel::IntraGroup);
    assert_eq!(
        a.hapo.as_ref().unwrap().stats_scope,
        HapoStatsScope::MicroBatch
    );
    assert_eq!(a.rmt.as_ref().unwrap().ntp_norm, NtpNorm::Sum);
    assert_eq!(r.loss.base, BaseLoss::GspoToken);
    // GSPO default for the unset low width, the recipe's high width.
    assert_eq!(r.loss.clip_widths(), (3e-4, 0.28));
    assert_eq!(r.loss.dual_clip(), None);
    assert_eq!(
        r.loss.aggregation(),
        Aggregation::ConstantNorm { len: 3000.0 }
    );
    // GSPO's default aggregation is the sequence mean.
    let g = load("[loss]\nbase = \"gspo\"\n", 8).unwrap();
    assert_eq!(g.loss.agg_mode(), AggMode::SeqMeanTokenMean);
}

#[test]
fn unknown_keys_and_values_are_rejected() {
    let e = parse("[loss]\nclip_hgih = 0.28\n").unwrap_err();
    assert!(e.contains("unknown field `clip_hgih`"), "{e}");
    let e = parse("[algorithm.d3s]\ntoken_keep = 0.5\n").unwrap_err();
    assert!(e.contains("unknown field `token_keep`"), "{e}");
    let e = parse("[algorithm]\nadvantage = \"ppo\"\n").unwrap_err();
    assert!(e.contains("unknown variant `ppo`"), "{e}");
    let e = parse("[algorithm.rmt]\ntiers_end = [0.5, 0.5]\n").unwrap_err();
    assert!(e.contains("tiers_end"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let cases: &[(&str, usize, &str)] = &[
        ("[loss]\nclip_low = -0.1", 8, "loss.clip_low must be in [0, 1), got -0.1"),
        ("[loss]\nclip_high = -0.2", 8, "loss.clip_high must be >= 0, got -0.2"),
        ("[loss]\ndual_clip = 0.5", 8, "loss.dual_clip must be > 1 (or inf to switch it off), got 0.5"),
        ("[loss]\nbase = \"cispo\"\ndual_clip = 3.0", 8, "loss.dual_clip is not read with loss.base = \"cispo\""),
        ("[loss]\nbase = \"gspo\"\nagg = \"token_mean\"", 8, "loss.agg is not read with loss.base = \"gspo\""),
        ("[loss]\ngspo_agg = \"token_mean\"", 8, "loss.gspo_agg is only read with loss.base = \"gspo\""),
        ("[loss]\nnorm_len = 100", 8, "loss.norm_len is only read with loss.agg = \"constant_norm\""),
        ("[algorithm.hapo]\nbeta = 1.5", 8, "algorithm.hapo.beta must be in [0, 1], got 1.5"),
        ("[algorithm.d3s]\nsamples_init = 1", 8, "algorithm.d3s.samples_init must be >= 2"),
        ("[algorithm.dapo.filter_groups]\ngen_batch_factor = 0.5", 8, "algorithm.dapo.filter_groups.gen_batch_factor must be >= 1"),
        ("[algorithm.rollout_correction]\nthreshold = 0.9", 8, "algorithm.rollout_correction.threshold must be"),
        ("[algorithm.rollout_correction]\nthreshold_lower = 0.5", 8, "algorithm.rollout_correction.threshold_lower is only read with mode = \"mask\""),
        ("[algorithm.hapo]\n[loss]\nbase = \"cispo\"", 8, "loss.base = \"cispo\" does not combine with algorithm.hapo"),
        ("[loss]\nkl_coef = -1.0", 8, "loss.kl_coef must be >= 0, got -1"),
        ("[loss]\nagg = \"constant_norm\"", 8, "loss.norm_len must be set"),
        ("[algorithm.d3s]\ntoken_keep_init = 1.5", 16, "algorithm.d3s.token_keep_init must be in (0, 1], got 1.5"),
        ("[algorithm.d3s]\ntoken_keep_final = 0.0", 16, "algorithm.d3s.token_keep_final must be in (0, 1], got 0"),
        (
            "[algorithm.d3s]\nsamples_final = 20",
            16,
            "algorithm.d3s.samples_final must be <= the group size G = 16 (rollouts per prompt), got 20",
        ),
        ("[algorithm.d3s]\nsamples_init = 0", 16, "algorithm.d3s.samples_init must be >= 2"),
        ("[algorithm.rmt]\nbudget_min = 0", 8, "algorithm.rmt.budget_min must be >= 1, got 0"),
        ("[algorithm.rmt]\nbudget_decay = 1.5", 8, "algorithm.rmt.budget_decay must be in (0, 1], got 1.5"),
        (
            "[algorithm.rmt]\ntiers_start = [0.5, 0.3, 0.1]",
            8,
            "algorithm.rmt.tiers_start must sum to 1, got 0.9",
        ),
        ("[algorithm.rmt]\ntiers_end = [1.2, -0.1, -0.1]", 8, "algorithm.rmt.tiers_end must have entries >= 0"),
        (
            "[algorithm.rmt]\ncurriculum_start = 0.8\ncurriculum_end = 0.5",
            8,
            "algorithm.rmt.curriculum_end must be > algorithm.rmt.curriculum_start = 0.8, got 0.5",
        ),
        ("[algorithm.hapo]\ntau = 1.0", 8, "algorithm.hapo.tau must be in [0, 1), got 1"),
        ("[algorithm.hapo]\nquantile = 1.2", 8, "algorithm.hapo.quantile must be in [0, 1], got 1.2"),
        (
            "[algorithm.dapo.overlong]\nmax_len = 4096\ncache_len = 4096",
            8,
            "algorithm.dapo.overlong.cache_len must be < algorithm.dapo.overlong.max_len = 4096, got 4096",
        ),
        ("[algorithm]\nadv_eps = -1e-6", 8, "algorithm.adv_eps must be >= 0"),
        (
            "[algorithm.dapo.filter_groups]\nmax_num_gen_batches = 0",
            8,
            "algorithm.dapo.filter_groups.max_num_gen_batches must be >= 1, got 0",
        ),
        ("[algorithm.hapo]\n[loss]\nbase = \"gspo\"", 8, "loss.base = \"gspo\" needs one advantage per sequence"),
    ];
    for (src, g, want) in cases {
        let e = load_err(src, *g);
        assert!(
            e.starts_with(want),
            "recipe {src:?}\n  got:  {e}\n  want: {want}"
        );
    }
    // The D³S defaults (G/4 → 3G/4) are valid for any G, and N = G is allowed (keeps all).
    load("[algorithm.d3s]\n", 2).unwrap();
    load("[algorithm.d3s]\nsamples_final = 16\n", 16).unwrap();
}

/// Every TOML snippet in `docs/algorithms.md` parses and validates (G = 16), so the user guide
/// cannot drift from the code.
#[test]
fn docs_snippets_load() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/algorithms.md"
    ))
    .expect("docs/algorithms.md");
    let mut n = 0;
    for block in doc.split("```toml\n").skip(1) {
        let src = block.split("```").next().unwrap();
        load(src, 16).unwrap_or_else(|e| panic!("snippet\n{src}\nfails: {e}"));
        n += 1;
    }
    assert!(n >= 8, "found {n} snippets");
}
