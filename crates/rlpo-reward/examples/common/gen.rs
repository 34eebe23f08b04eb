//! Deterministic GSM8K-like samples for the benchmarks: a few hundred characters of reasoning
//! with intermediate numbers, then a final answer in one of the usual spellings (`\boxed{}`,
//! `####`, a closing sentence, fractions, thousands separators). About 60 % are correct.

use rlpo_reward::RewardInput;

/// SplitMix64: tiny, seedable, good enough for benchmark data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 6] = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert"];
const ITEMS: [&str; 6] = ["clips", "dollars", "pages", "apples", "letters", "slices"];

/// `n` samples from `seed`; the reasoning paragraph is repeated `paragraphs` times (≈ 300 bytes
/// each), so that response length can be varied.
pub fn gsm8k_like(n: usize, seed: u64, paragraphs: usize) -> Vec<RewardInput> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let name = NAMES[rng.below(6) as usize];
            let item = ITEMS[rng.below(6) as usize];
            let a = 10 + rng.below(990);
            let b = 2 + rng.below(20);
            let c = a * b;
            let d = rng.below(500);
            let answer = c + d;
            let paragraph = format!(
                "{name} starts with {a} {item}. Each day the number of {item} grows by a factor, \
                 so after the first step {name} has {a} * {b} = {c} {item}. Then {name} receives {d} more {item}, \
                 giving {c} + {d} = {answer} {item} in total. Let me double-check: {answer} - {d} = {c}, \
                 and {c} / {b} = {a}, which matches the start.\n"
            );
            let mut text = format!("<think>\n{}</think>\n", paragraph.repeat(paragraphs.max(1)));
            let correct = rng.below(10) < 6;
            let said = if correct { answer } else { answer + 1 + rng.below(9) };
            let (final_part, gt) = match rng.below(6) {
                0 => (format!("The answer is \\boxed{{{said}}}."), answer.to_string()),
                1 => (format!("#### {said}"), answer.to_string()),
                2 => (format!("So {name} has {said} {item}."), answer.to_string()),
                3 => (format!("The answer is \\boxed{{{}}}.", thousands(said)), answer.to_string()),
                4 => (format!("Each share is \\boxed{{\\frac{{{said}}}{{{b}}}}}."), format!("{answer}/{b}")),
                _ => (format!("That is ${said}.00 in total, so the answer is {said}."), format!("{answer}")),
            };
            text.push_str(&final_part);
            let len = text.len() / 4;
            RewardInput { response_len: len, max_len: 1024, ..RewardInput::new(text, Some(&gt)) }
        })
        .collect()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let head = s.len() % 3; // digits before the first separator (0 means a full group)
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && i % 3 == head {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
