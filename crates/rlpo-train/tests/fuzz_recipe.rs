//! Fuzzer of the recipe parser: mutations of real recipes (the quickstart, every recipe in
//! `recipes/`, the all-sections test recipe) and random bytes go through `Recipe::from_toml`
//! (TOML, every section's schema, all validation) and must give a recipe or an error, never a
//! panic. Bounded case count.

#[path = "../../../build_support/mutate.rs"]
mod mutate;

use proptest::prelude::*;
use rlpo_train::Recipe;
use std::path::Path;

const SEEDS: &[&str] = &[
    rlpo_train::recipe::QUICKSTART,
    include_str!("../../../recipes/d3s_qwen.toml"),
    include_str!("../../../recipes/dapo_qwen.toml"),
    include_str!("../../../recipes/hapo_qwen.toml"),
    include_str!("../../../recipes/rmt_qwen.toml"),
    include_str!("../../../recipes/grpo_llama.toml"),
    include_str!("recipe_numbers_a.toml"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_recipes_parse_or_fail_cleanly(seed in 0..SEEDS.len(), ops in mutate::ops(12)) {
        let text = String::from_utf8_lossy(&mutate::apply(SEEDS[seed].as_bytes(), &ops)).into_owned();
        if let Err(e) = Recipe::from_toml(&text, Path::new("fuzz.toml"), &[]) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn random_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Recipe::from_toml(&String::from_utf8_lossy(&bytes), Path::new("fuzz.toml"), &[]);
    }
}

#[test]
fn the_seeds_are_valid() {
    for (i, s) in SEEDS.iter().enumerate() {
        Recipe::from_toml(s, Path::new("seed.toml"), &[]).unwrap_or_else(|e| panic!("seed {i}: {e}"));
    }
}
