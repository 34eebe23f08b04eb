//! Recipe loading: bad inputs end in errors that name the problem (key, line, file), `--set`
//! overrides apply and are type-checked, and every recipe shipped in `recipes/` parses and
//! validates (model paths need not exist for that).

mod common;

use common::*;
use rlpo_train::{Recipe, Trainer};
use std::path::{Path, PathBuf};

/// A valid, small recipe (the model path does not have to exist to parse it).
const MINIMAL: &str = r#"[run]
name = "t"

[model]
path = "models/none"

[rollout]
group_size = 4
max_new_tokens = 8

[reward]
[[reward.fns]]
kind = "math"

[optim]
lr = 1e-5

[trainer]
total_steps = 3
prompts_per_step = 2
"#;

fn load(text: &str) -> Result<Recipe, String> {
    Recipe::from_toml(text, Path::new("recipes/broken.toml"), &[]).map_err(|e| e.to_string())
}

fn load_err(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("recipe should be rejected:\n{text}"),
        Err(e) => e,
    }
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not in recipe")) + 1
}

#[test]
fn minimal_recipe_parses_with_defaults() {
    let r = load(MINIMAL).unwrap();
    assert_eq!(r.rollout.group_size, 4);
    assert_eq!(r.mini_batch_rows(), 8);
    assert_eq!(r.micro_batch_rows(), 8);
    assert_eq!(r.optimizer_steps_per_step(), 1);
    assert_eq!(r.model.device, "cpu");
    assert_eq!(r.run_dir(), PathBuf::from("checkpoints/t"));
}

#[test]
fn unknown_key_names_the_key_line_and_file() {
    // A typo in a trainer-owned section ...
    let text = MINIMAL.replace("lr = 1e-5", "lr = 1e-5\nweight_decy = 0.0");
    let err = load_err(&text);
    let line = line_of(&text, "weight_decy");
    assert!(err.contains("unknown field `weight_decy`"), "{err}");
    assert!(err.contains(&format!("line {line}")), "expected line {line}: {err}");
    assert!(err.contains("recipes/broken.toml"), "{err}");
    // ... and in sections owned by the other crates.
    for (section, typo) in [
        ("[rollout]", "top_pp = 0.9"),
        ("[trainer]", "prompt_per_step = 4"),
        ("[run]", "sead = 1"),
    ] {
        let text = MINIMAL.replace(section, &format!("{section}\n{typo}"));
        let err = load_err(&text);
        let key = typo.split(' ').next().unwrap();
        assert!(err.contains(&format!("`{key}`")), "{section}: {err}");
        assert!(err.contains(&format!("line {}", line_of(&text, typo))), "{section}: {err}");
    }
    let text = format!("{MINIMAL}\n[algorithm.d3s]\ntoken_keep = 0.5\n");
    let err = load_err(&text);
    assert!(err.contains("`token_keep`") && err.contains(&format!("line {}", line_of(&text, "token_keep"))), "{err}");
    let text = format!("{MINIMAL}\n[data]\nshufle = false\n");
    assert!(load_err(&text).contains("`shufle`"));
    // Inside a [[reward.fns]] entry the key is named (the entry is tagged by `kind`).
    let text = MINIMAL.replace("kind = \"math\"", "kind = \"math\"\nextrct = \"boxed\"");
    let err = load_err(&text);
    assert!(err.contains("extrct"), "{err}");
    // An unknown section.
    let text = format!("{MINIMAL}\n[optimizer]\nlr = 1.0\n");
    let err = load_err(&text);
    assert!(err.contains("`optimizer`") && err.contains(&format!("line {}", line_of(&text, "[optimizer]"))), "{err}");
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let text = MINIMAL.replace("total_steps = 3", "total_steps = \"three\"");
    let err = load_err(&text);
    assert!(err.contains("total_steps") && err.contains(&format!("line {}", line_of(&text, "total_steps"))), "{err}");
    assert!(err.contains("invalid type") || err.contains("expected"), "{err}");
    let text = MINIMAL.replace("max_new_tokens = 8", "max_new_tokens = -8");
    let err = load_err(&text);
    assert!(err.contains("max_new_tokens"), "{err}");
    let text = MINIMAL.replace("lr = 1e-5", "lr = [1e-5]");
    assert!(load_err(&text).contains("lr"));
    let text = format!("{MINIMAL}\n[algorithm]\nadvantage = \"ppo\"\n");
    let err = load_err(&text);
    assert!(err.contains("ppo") && err.contains("grpo"), "the error lists the valid values: {err}");
    // Not TOML at all.
    let err = load_err("[model\npath = 1");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn missing_required_sections_are_named() {
    let no_reward = MINIMAL.replace("[reward]\n[[reward.fns]]\nkind = \"math\"\n", "");
    assert!(load_err(&no_reward).contains("reward"));
    let no_model = MINIMAL.replace("[model]\npath = \"models/none\"\n", "");
    assert!(load_err(&no_model).contains("model"));
    let empty_path = MINIMAL.replace("path = \"models/none\"", "device = \"cpu\"");
    assert!(load_err(&empty_path).contains("model.path"));
}

#[test]
fn missing_model_directory_names_model_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model");
    let text = recipe_text(&missing, dir.path(), "missing", &format!("{ROLLOUT}{TRAINER}{REWARD_DIGIT}"));
    let err = Trainer::new(parse(&text)).err().expect("a missing model directory must fail").to_string();
    assert!(err.contains("model.path"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    // Nothing was written for a run that could not start.
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn bad_device_and_dtype_name_their_keys() {
    let err = load_err(&MINIMAL.replace("path = \"models/none\"", "path = \"models/none\"\ndtype = \"int8\""));
    assert!(err.contains("model.dtype") && err.contains("int8"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let text = recipe_text(&fixture("tiny-qwen2"), dir.path(), "dev", &format!("{ROLLOUT}{TRAINER}{REWARD_DIGIT}"))
        .replace("device = \"cpu\"", "device = \"tpu\"");
    let err = Trainer::new(parse(&text)).err().expect("unknown device").to_string();
    assert!(err.contains("model.device") && err.contains("tpu"), "{err}");
}

#[test]
fn group_size_one_with_grpo_names_group_size() {
    let err = load_err(&MINIMAL.replace("group_size = 4", "group_size = 1"));
    assert!(err.contains("rollout.group_size"), "{err}");
    assert!(err.contains("got 1"), "{err}");
    let err = load_err(&MINIMAL.replace("group_size = 4", "group_size = 0"));
    assert!(err.contains("rollout.group_size"), "{err}");
}

#[test]
fn batch_arithmetic_that_does_not_divide_is_rejected() {
    // 2 prompts x 4 = 8 rows: 3 does not divide them, 16 is more than there are.
    for mini in [3, 16] {
        let text = MINIMAL.replace("prompts_per_step = 2", &format!("prompts_per_step = 2\nmini_batch_rows = {mini}"));
        let err = load_err(&text);
        assert!(err.contains("trainer.mini_batch_rows") && err.contains(&format!("got {mini}")), "{err}");
        assert!(err.contains("8 rows"), "the error states the rows of a step: {err}");
    }
    let text = MINIMAL.replace("prompts_per_step = 2", "prompts_per_step = 2\nmini_batch_rows = 8\nmicro_batch_rows = 3");
    let err = load_err(&text);
    assert!(err.contains("trainer.micro_batch_rows") && err.contains("got 3"), "{err}");
    // Dividing sizes are fine and give the expected plan.
    let text = MINIMAL.replace("prompts_per_step = 2", "prompts_per_step = 2\nmini_batch_rows = 4\nmicro_batch_rows = 2\nppo_epochs = 2");
    let r = load(&text).unwrap();
    assert_eq!((r.mini_batch_rows(), r.micro_batch_rows(), r.optimizer_steps_per_step()), (4, 2, 4));
    for (key, bad) in [("prompts_per_step", "0"), ("total_steps", "0"), ("ppo_epochs", "0")] {
        let text = format!("{MINIMAL}{key} = {bad}\n").replace(&format!("{key} = 3\n"), "").replace(&format!("{key} = 2\n"), "");
        let err = load_err(&text);
        assert!(err.contains(&format!("trainer.{key}")), "{key}: {err}");
    }
}

#[test]
fn algorithm_values_are_checked_with_full_keys() {
    let err = load_err(&format!("{MINIMAL}\n[algorithm.d3s]\nsamples_final = 6\n"));
    assert!(err.contains("algorithm.d3s.samples_final") && err.contains("G = 4"), "{err}");
    let err = load_err(&format!("{MINIMAL}\n[algorithm.rmt]\ntiers_start = [0.5, 0.3, 0.1]\n"));
    assert!(err.contains("algorithm.rmt.tiers_start"), "{err}");
    let err = load_err(&MINIMAL.replace("[optim]", "[rollout.adaptive_temperature]\ntau = 1.5\n\n[optim]"));
    assert!(err.contains("rollout.adaptive_temperature.tau"), "{err}");
    // Adaptive temperature without HAPO has no statistics to follow: named, not ignored.
    let err = load_err(&MINIMAL.replace("[optim]", "[rollout.adaptive_temperature]\ntau = 0.1\n\n[optim]"));
    assert!(err.contains("rollout.adaptive_temperature") && err.contains("algorithm.hapo"), "{err}");
    let err = load_err(&MINIMAL.replace("lr = 1e-5", "lr = 0.0"));
    assert!(err.contains("optim.lr"), "{err}");
    let err = load_err(&format!("{MINIMAL}\n[data]\nsource = \"jsonl\"\n"));
    assert!(err.contains("data.path"), "{err}");
}

#[test]
fn set_overrides_apply_with_types() {
    let sets: Vec<String> = [
        "optim.lr=2e-5",
        "trainer.total_steps=7",
        "model.path=/models/qwen",
        "model.device=cuda:1",
        "rollout.top_k=5",
        "algorithm.advantage=dr_grpo",
        "loss.clip_high=0.28",
        "metrics.console=false",
        "run.name=\"quoted name\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = Recipe::from_toml(MINIMAL, Path::new("t.toml"), &sets).unwrap();
    assert_eq!(r.optim.lr, 2e-5);
    assert_eq!(r.trainer.total_steps, 7);
    assert_eq!(r.model.path, PathBuf::from("/models/qwen"));
    assert_eq!(r.model.device, "cuda:1");
    assert_eq!(r.rollout.top_k, 5);
    assert_eq!(r.algorithm.advantage, rlpo_algo::config::AdvantageKind::DrGrpo);
    assert_eq!(r.loss.clip_high, Some(0.28));
    assert!(!r.metrics.console);
    assert_eq!(r.run.name, "quoted name");
    // The file's other values are kept.
    assert_eq!(r.rollout.group_size, 4);

    // Overrides are validated like the file: a bad value, an unknown key, a wrong type.
    let err = Recipe::from_toml(MINIMAL, Path::new("t.toml"), &["rollout.group_size=1".into()]).unwrap_err().to_string();
    assert!(err.contains("rollout.group_size"), "{err}");
    let err = Recipe::from_toml(MINIMAL, Path::new("t.toml"), &["optim.learning_rate=1e-5".into()]).unwrap_err().to_string();
    assert!(err.contains("learning_rate") && err.contains("--set"), "{err}");
    let err = Recipe::from_toml(MINIMAL, Path::new("t.toml"), &["trainer.total_steps=many".into()]).unwrap_err().to_string();
    assert!(err.contains("total_steps") || err.contains("many"), "{err}");
    let err = Recipe::from_toml(MINIMAL, Path::new("t.toml"), &["optim.lr".into()]).unwrap_err().to_string();
    assert!(err.contains("section.key=value"), "{err}");

    // Recipe::load reads the file and applies the same overrides.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let r = Recipe::load(Some(&file), &["trainer.prompts_per_step=4".into()]).unwrap();
    assert_eq!(r.trainer.prompts_per_step, 4);
    assert_eq!(r.mini_batch_rows(), 16);
    let err = Recipe::load(Some(&dir.path().join("absent.toml")), &[]).unwrap_err().to_string();
    assert!(err.contains("absent.toml"), "{err}");
}

/// Top-level sections every shipped recipe spells out (documentation by example).
const SECTIONS: &[&str] =
    &["run", "model", "data", "rollout", "reward", "algorithm", "loss", "optim", "trainer", "checkpoint", "metrics"];

#[test]
fn every_shipped_recipe_parses_and_validates() {
    let dir = repo_root().join("recipes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in ["quickstart.toml", "d3s_qwen.toml", "dapo_qwen.toml", "hapo_qwen.toml", "rmt_qwen.toml", "grpo_llama.toml"] {
        assert!(names.iter().any(|n| n == want), "recipes/{want} missing; have {names:?}");
    }
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let r = Recipe::from_toml(&text, path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(Recipe::load(Some(path), &[]).unwrap(), r);
        let table: toml::Table = toml::from_str(&text).unwrap();
        for s in SECTIONS {
            assert!(table.contains_key(*s), "{}: no [{s}] section", path.display());
        }
        // The resolved recipe written into the run directory loads back to the same recipe.
        let again = Recipe::from_toml(&r.to_toml(), Path::new("recipe.resolved.toml"), &[])
            .unwrap_or_else(|e| panic!("{}: resolved recipe does not reload: {e}\n{}", path.display(), r.to_toml()));
        assert_eq!(again, r, "{}: resolved recipe differs", path.display());
        // `rlpo check` reports the plan without the model and data being here (their absence
        // is a problem it names, so the binary would exit non-zero after printing the plan).
        let report = rlpo_train::check::check(&r).unwrap_or_else(|e| panic!("{}: check: {e}", path.display()));
        assert!(report.to_string().contains("prompts/step"), "{report}");
        if !r.model.path.is_dir() {
            assert!(report.problems.iter().any(|p| p.starts_with("model.path:")), "{:?}", report.problems);
        }
    }
    // The GPU recipes are commented: the options are explained, not just listed.
    for name in ["d3s_qwen.toml", "dapo_qwen.toml", "hapo_qwen.toml", "rmt_qwen.toml", "grpo_llama.toml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let comments = text.lines().filter(|l| l.contains('#')).count();
        assert!(comments >= 40, "{name}: only {comments} commented lines");
    }
    // The GPU recipes are what their names say.
    let load = |n: &str| Recipe::load(Some(&dir.join(n)), &[]).unwrap();
    let d3s = load("d3s_qwen.toml");
    assert!(d3s.algorithm.d3s.is_some() && d3s.model.device == "cuda:0" && d3s.model.dtype == "bf16");
    assert!(d3s.model.path.ends_with("Qwen2.5-Math-1.5B"));
    let dapo = load("dapo_qwen.toml");
    assert!(dapo.algorithm.dapo.filter_groups.is_some() && dapo.algorithm.dapo.overlong.is_some());
    assert_eq!(dapo.loss.clip_widths(), (0.2, 0.28));
    let hapo = load("hapo_qwen.toml");
    assert_eq!(hapo.algorithm.advantage, rlpo_algo::config::AdvantageKind::Hapo);
    let hcfg = hapo.algorithm.hapo.as_ref().unwrap();
    assert_eq!(hapo.rollout.adaptive_temperature.map(|a| a.tau), Some(hcfg.tau), "rollout τ = algorithm.hapo.tau");
    assert!(load("rmt_qwen.toml").algorithm.rmt.is_some());
    let llama = load("grpo_llama.toml");
    assert!(llama.model.path.ends_with("Llama-3.1-8B-Instruct"));
    assert!(llama.algorithm.d3s.is_none() && llama.algorithm.hapo.is_none() && llama.algorithm.rmt.is_none());
}

#[test]
fn recipes_doc_lists_every_key_of_the_trainer_sections() {
    // docs/recipes.md is the reference of every key: check it against the structs' defaults.
    let doc = std::fs::read_to_string(repo_root().join("docs/recipes.md")).unwrap();
    let r = load(MINIMAL).unwrap();
    let resolved: toml::Table = toml::from_str(&r.to_toml()).unwrap();
    for section in ["run", "model", "optim", "trainer", "checkpoint", "metrics", "rollout", "loss", "algorithm", "data"] {
        let keys = resolved[section].as_table().unwrap();
        for (k, v) in keys {
            if v.is_table() {
                continue;
            }
            assert!(doc.contains(&format!("`{k}`")), "docs/recipes.md does not document {section}.{k}");
        }
    }
}
