//! Built-in synthetic tasks with verifiable answers, so a quickstart run needs no download.
//!
//! Sample `i` of a task is generated from its own stream `derive_seed(seed, SYNTHETIC, i)`, so it is
//! the same whatever `size` is, and a seed reproduces the whole set on any platform. Tasks:
//!
//! - [`arithmetic`]: `a op b [op c ...]` with 1–3 digit operands and `+ - *` (usual precedence);
//!   answer is the integer value; difficulty `digits + operators - 1`.
//! - [`countdown`]: reach a target from 2–6 numbers using each exactly once with `+ - * /`;
//!   solvable by construction; metadata `{"numbers": [...], "target": N, "solution": "..."}`;
//!   difficulty is the count of numbers.

pub mod arithmetic;
pub mod countdown;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::{derive_seed, domain, SplitMix64};
use crate::sample::{Message, Prompt, Sample};

pub use arithmetic::{ArithmeticConfig, Operator};
pub use countdown::CountdownConfig;


/// Largest `[data.synthetic] size`: the set is generated in memory when the run starts.
pub const MAX_SYNTHETIC_SIZE: usize = 10_000_000;
/// The `[data.synthetic]` section; `task` selects the variant and its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum SyntheticConfig {
    /// `task = "arithmetic"`.
    Arithmetic(ArithmeticConfig),
    /// `task = "countdown"`.
    Countdown(CountdownConfig),
}

/// Deserialized by [`crate::tagged`] (not serde's derived tag handling), so that a bad value in
/// the section names its key.
impl<'de> Deserialize<'de> for SyntheticConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use crate::tagged::{split, variant};
        let (task, rest) = split(d, "task")?;
        match task.as_str() {
            "arithmetic" => Ok(Self::Arithmetic(variant(rest, "task", &task)?)),
            "countdown" => Ok(Self::Countdown(variant(rest, "task", &task)?)),
            other => Err(serde::de::Error::unknown_variant(other, &["arithmetic", "countdown"])),
        }
    }
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig::Arithmetic(ArithmeticConfig::default())
    }
}

/// Keys shared by every task; each task's section repeats them because serde cannot combine
/// `deny_unknown_fields` with flattened structs.
pub(crate) struct Common<'a> {
    pub size: usize,
    pub seed: Option<u64>,
    pub chat: bool,
    pub prompt_template: &'a str,
}

impl SyntheticConfig {
    /// Task name as used in recipes and sample ids.
    pub fn task_name(&self) -> &'static str {
        match self {
            SyntheticConfig::Arithmetic(_) => "arithmetic",
            SyntheticConfig::Countdown(_) => "countdown",
        }
    }

    fn common(&self) -> Common<'_> {
        match self {
            SyntheticConfig::Arithmetic(c) => Common {
                size: c.size,
                seed: c.seed,
                chat: c.chat,
                prompt_template: &c.prompt_template,
            },
            SyntheticConfig::Countdown(c) => Common {
                size: c.size,
                seed: c.seed,
                chat: c.chat,
                prompt_template: &c.prompt_template,
            },
        }
    }

    /// Checks ranges and the prompt template; errors name `data.synthetic.<key>`.
    pub fn validate(&self) -> Result<()> {
        let size = self.common().size;
        if size == 0 || size > MAX_SYNTHETIC_SIZE {
            // The whole set is generated in memory at start-up.
            return Err(key_err("size", format!("must be in 1..={MAX_SYNTHETIC_SIZE}, got {size}")));
        }
        match self {
            SyntheticConfig::Arithmetic(c) => c.validate(),
            SyntheticConfig::Countdown(c) => c.validate(),
        }
    }

    /// Generates the whole task set. `data_seed` is `[data] seed`, used unless the section sets
    /// its own `seed`.
    pub fn generate(&self, data_seed: u64) -> Result<Vec<Sample>> {
        self.validate()?;
        let common = self.common();
        let seed = common.seed.unwrap_or(data_seed);
        (0..common.size)
            .map(|i| self.generate_one(seed, i))
            .collect()
    }

    /// Generates sample `index` alone (identical to element `index` of [`Self::generate`]).
    pub fn generate_one(&self, seed: u64, index: usize) -> Result<Sample> {
        let mut rng = SplitMix64::new(derive_seed(seed, domain::SYNTHETIC, index as u64));
        let common = self.common();
        let task = self.task_name();
        let inst = match self {
            SyntheticConfig::Arithmetic(c) => c.instance(&mut rng, index)?,
            SyntheticConfig::Countdown(c) => c.instance(&mut rng, index)?,
        };
        let text = render(common.prompt_template, &inst.fills);
        let prompt = if common.chat {
            Prompt::Chat(vec![Message::user(text)])
        } else {
            Prompt::Text(text)
        };
        Ok(Sample {
            id: format!("{task}-{index}"),
            prompt,
            answer: Some(inst.answer),
            data_source: Some(format!("synthetic/{task}")),
            difficulty: Some(inst.difficulty),
            metadata: inst.metadata,
        })
    }
}

/// What a task generator produces before the prompt is rendered.
pub(crate) struct Instance {
    /// `(placeholder, value)` pairs for the prompt template, e.g. `("{expression}", "7 + 5")`.
    pub fills: Vec<(&'static str, String)>,
    pub answer: String,
    pub difficulty: f64,
    pub metadata: serde_json::Value,
}

fn render(template: &str, fills: &[(&'static str, String)]) -> String {
    fills
        .iter()
        .fold(template.to_string(), |acc, (k, v)| acc.replace(k, v))
}

pub(crate) fn key_err(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("data.synthetic.{key}"),
        reason: reason.into(),
    }
}

/// Checks that `template` contains each placeholder.
pub(crate) fn check_template(template: &str, placeholders: &[&str]) -> Result<()> {
    for p in placeholders {
        if !template.contains(p) {
            return Err(key_err(
                "prompt_template",
                format!("must contain the placeholder {p}"),
            ));
        }
    }
    Ok(())
}

/// Checks `1 <= lo <= hi <= max` for a `min_*`/`max_*` key pair.
pub(crate) fn check_range(name: &str, lo: u32, hi: u32, min: u32, max: u32) -> Result<()> {
    if lo < min || lo > max {
        return Err(key_err(
            &format!("min_{name}"),
            format!("must be in {min}..={max}, got {lo}"),
        ));
    }
    if hi < lo || hi > max {
        return Err(key_err(
            &format!("max_{name}"),
            format!("must be in min_{name}..={max} ({lo}..={max}), got {hi}"),
        ));
    }
    Ok(())
}
