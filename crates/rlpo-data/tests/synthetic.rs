//! Synthetic tasks: reproducibility, correctness checked by an independent evaluator written here
//! (exact fractions, precedence by recursive descent), and countdown solvability by brute force.

use rlpo_data::{
    ArithmeticConfig, CountdownConfig, DataConfig, Operator, Prompt, Sample, SyntheticConfig,
};

/// An exact rational `n / d` with `d > 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Frac(i128, i128);

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

impl Frac {
    fn new(n: i128, d: i128) -> Option<Frac> {
        if d == 0 {
            return None;
        }
        let g = gcd(n, d).max(1) * d.signum();
        Some(Frac(n / g, d / g))
    }
    fn apply(self, op: char, o: Frac) -> Option<Frac> {
        match op {
            '+' => Frac::new(self.0 * o.1 + o.0 * self.1, self.1 * o.1),
            '-' => Frac::new(self.0 * o.1 - o.0 * self.1, self.1 * o.1),
            '*' => Frac::new(self.0 * o.0, self.1 * o.1),
            '/' => Frac::new(self.0 * o.1, self.1 * o.0),
            _ => None,
        }
    }
}

/// Recursive-descent evaluator for `+ - * /` and parentheses; returns the value and the integer
/// literals in order of appearance.
fn eval(expr: &str) -> (Frac, Vec<i128>) {
    fn tokens(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            if !num.is_empty() {
                out.push(std::mem::take(&mut num));
            }
            if "+-*/()".contains(c) {
                out.push(c.to_string());
            } else {
                assert!(c == ' ', "unexpected character {c:?} in {s:?}");
            }
        }
        if !num.is_empty() {
            out.push(num);
        }
        out
    }
    struct P {
        t: Vec<String>,
        i: usize,
        lits: Vec<i128>,
    }
    impl P {
        fn peek(&self) -> Option<&str> {
            self.t.get(self.i).map(String::as_str)
        }
        fn expr(&mut self) -> Frac {
            let mut v = self.term();
            while let Some(op @ ("+" | "-")) = self.peek() {
                let op = op.chars().next().unwrap();
                self.i += 1;
                v = v.apply(op, self.term()).unwrap();
            }
            v
        }
        fn term(&mut self) -> Frac {
            let mut v = self.atom();
            while let Some(op @ ("*" | "/")) = self.peek() {
                let op = op.chars().next().unwrap();
                self.i += 1;
                v = v.apply(op, self.atom()).expect("division by zero");
            }
            v
        }
        fn atom(&mut self) -> Frac {
            let tok = self.t[self.i].clone();
            self.i += 1;
            if tok == "(" {
                let v = self.expr();
                assert_eq!(self.peek(), Some(")"));
                self.i += 1;
                v
            } else {
                let n: i128 = tok.parse().unwrap();
                self.lits.push(n);
                Frac(n, 1)
            }
        }
    }
    let mut p = P {
        t: tokens(expr),
        i: 0,
        lits: Vec::new(),
    };
    let v = p.expr();
    assert_eq!(p.i, p.t.len(), "trailing tokens in {expr:?}");
    (v, p.lits)
}

/// Can `target` be made from all of `nums`, each once, with `+ - * /` (any parenthesisation)?
fn solvable(nums: &[Frac], target: Frac) -> bool {
    if nums.len() == 1 {
        return nums[0] == target;
    }
    for i in 0..nums.len() {
        for j in 0..nums.len() {
            if i == j {
                continue;
            }
            let rest: Vec<Frac> = (0..nums.len())
                .filter(|&k| k != i && k != j)
                .map(|k| nums[k])
                .collect();
            for op in ['+', '-', '*', '/'] {
                if let Some(v) = nums[i].apply(op, nums[j]) {
                    let mut next = rest.clone();
                    next.push(v);
                    if solvable(&next, target) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

fn user_text(s: &Sample) -> &str {
    match &s.prompt {
        Prompt::Chat(m) => {
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].role, "user");
            &m[0].content
        }
        Prompt::Text(t) => t,
    }
}

fn arithmetic(f: impl FnOnce(&mut ArithmeticConfig)) -> SyntheticConfig {
    let mut c = ArithmeticConfig::default();
    f(&mut c);
    SyntheticConfig::Arithmetic(c)
}

#[test]
fn quickstart_arithmetic_is_single_digit_and_correct() {
    let samples = SyntheticConfig::default().generate(0).unwrap();
    assert_eq!(samples.len(), 1000);
    let mut ops_seen = std::collections::BTreeSet::new();
    for s in &samples {
        let text = user_text(s);
        let expr = text
            .strip_prefix("What is ")
            .and_then(|t| t.strip_suffix("? Answer with just the number."))
            .unwrap_or_else(|| panic!("unexpected wording: {text:?}"));
        let (value, lits) = eval(expr);
        assert_eq!(lits.len(), 2, "{expr}");
        assert!(lits.iter().all(|&n| (1..=9).contains(&n)), "{expr}");
        assert_eq!(value.1, 1);
        assert_eq!(s.answer.as_deref().unwrap(), value.0.to_string(), "{expr}");
        assert!(value.0 >= 0, "negative answers are off by default: {expr}");
        assert_eq!(s.difficulty, Some(1.0));
        ops_seen.insert(expr.split(' ').nth(1).unwrap().to_string());
    }
    assert_eq!(ops_seen.into_iter().collect::<Vec<_>>(), ["*", "+", "-"]);
    assert_eq!(samples[5].id, "arithmetic-5");
    assert_eq!(
        samples[5].data_source.as_deref(),
        Some("synthetic/arithmetic")
    );
}

#[test]
fn harder_arithmetic_levels_are_correct() {
    let cfg = arithmetic(|c| {
        c.size = 3000;
        c.max_digits = 3;
        c.max_operators = 3;
        c.allow_negative = true;
    });
    let samples = cfg.generate(42).unwrap();
    let mut levels = std::collections::BTreeSet::new();
    let mut negatives = 0;
    for s in &samples {
        let expr = s.metadata["expression"].as_str().unwrap();
        assert!(user_text(s).contains(expr));
        let (value, lits) = eval(expr);
        assert_eq!(s.answer.as_deref().unwrap(), value.0.to_string(), "{expr}");
        negatives += usize::from(value.0 < 0);
        // Difficulty recomputed from the text: digits of the operands + operators - 1.
        let digits = lits[0].to_string().len();
        assert!(lits.iter().all(|n| n.to_string().len() == digits), "{expr}");
        let level = (digits + lits.len() - 2) as f64;
        assert_eq!(s.difficulty, Some(level), "{expr}");
        levels.insert(level as i64);
    }
    assert_eq!(levels.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(
        negatives > 100,
        "allow_negative should produce negative answers, got {negatives}"
    );
}

#[test]
fn operator_subset_and_plain_text_prompts() {
    let cfg = arithmetic(|c| {
        c.operators = vec![Operator::Sub];
        c.max_operators = 3;
        c.max_digits = 3;
        c.chat = false;
        c.prompt_template = "Compute {expression}.".into();
        c.size = 300;
    });
    for s in cfg.generate(1).unwrap() {
        let Prompt::Text(t) = &s.prompt else {
            panic!("chat = false gives text prompts")
        };
        let expr = t
            .strip_prefix("Compute ")
            .unwrap()
            .strip_suffix('.')
            .unwrap();
        assert!(!expr.contains('+') && !expr.contains('*'), "{expr}");
        let (value, _) = eval(expr);
        assert!(value.0 >= 0, "{expr}");
        assert_eq!(s.answer.as_deref().unwrap(), value.0.to_string());
    }
}

#[test]
fn generation_is_reproducible_and_seed_dependent() {
    for cfg in [
        SyntheticConfig::default(),
        SyntheticConfig::Countdown(CountdownConfig::default()),
    ] {
        let a = cfg.generate(7).unwrap();
        assert_eq!(a, cfg.generate(7).unwrap());
        let b = cfg.generate(8).unwrap();
        let differing = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.prompt != y.prompt)
            .count();
        assert!(
            differing > 800,
            "{}: only {differing}/1000 prompts differ across seeds",
            cfg.task_name()
        );
        // Sample i does not depend on the set size.
        assert_eq!(cfg.generate_one(7, 999).unwrap(), a[999]);
    }
    // A section-level seed overrides [data] seed.
    let with_seed = arithmetic(|c| c.seed = Some(8));
    assert_eq!(
        with_seed.generate(123).unwrap(),
        SyntheticConfig::default().generate(8).unwrap()
    );
}

#[test]
fn countdown_instances_are_solvable() {
    let cfg = CountdownConfig {
        size: 500,
        ..CountdownConfig::default()
    };
    let samples = SyntheticConfig::Countdown(cfg).generate(3).unwrap();
    let mut counts = std::collections::BTreeSet::new();
    for s in &samples {
        let numbers: Vec<i128> = s.metadata["numbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i128)
            .collect();
        let target = s.metadata["target"].as_i64().unwrap() as i128;
        assert!((1..=100).contains(&target));
        assert!(numbers.iter().all(|n| (1..=100).contains(n)));
        assert_eq!(s.answer.as_deref().unwrap(), target.to_string());
        assert_eq!(s.difficulty, Some(numbers.len() as f64));
        counts.insert(numbers.len());
        let shown = numbers
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let text = user_text(s);
        assert!(
            text.contains(&format!("[{shown}]")) && text.contains(&format!("equals {target}.")),
            "{text}"
        );

        // The witness uses every number once and evaluates to the target...
        let (value, mut lits) = eval(s.metadata["solution"].as_str().unwrap());
        assert_eq!(value, Frac(target, 1), "{}", s.metadata);
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        lits.sort_unstable();
        assert_eq!(lits, sorted);
        // ...and, independently of it, brute force finds the target.
        let fracs: Vec<Frac> = numbers.iter().map(|&n| Frac(n, 1)).collect();
        assert!(solvable(&fracs, Frac(target, 1)), "{}", s.metadata);
    }
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn brute_force_detects_unsolvable() {
    // Guards the checker itself: 1, 1 can make 0, 1, 2 but not 3.
    assert!(!solvable(&[Frac(1, 1), Frac(1, 1)], Frac(3, 1)));
    assert!(solvable(&[Frac(1, 1), Frac(1, 1)], Frac(2, 1)));
    assert!(solvable(
        &[Frac(3, 1), Frac(3, 1), Frac(8, 1), Frac(8, 1)],
        Frac(24, 1)
    )); // 8/(3-8/3)
}

#[test]
fn recipe_section_parses_and_validates() {
    #[derive(serde::Deserialize)]
    struct Recipe {
        data: DataConfig,
    }
    let parse = |s: &str| toml::from_str::<Recipe>(s).map(|r| r.data);

    let cfg = parse(
        "[data]\nseed = 5\n[data.synthetic]\ntask = \"countdown\"\nsize = 10\nmax_numbers = 5\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    let SyntheticConfig::Countdown(c) = cfg.synthetic.clone().unwrap() else {
        panic!()
    };
    assert_eq!((c.size, c.min_numbers, c.max_numbers), (10, 3, 5));

    let cfg =
        parse("[data.synthetic]\ntask = \"arithmetic\"\noperators = [\"+\", \"×\"]\n").unwrap();
    let SyntheticConfig::Arithmetic(a) = cfg.synthetic.unwrap() else {
        panic!()
    };
    assert_eq!(a.operators, [Operator::Add, Operator::Mul]);

    // Unknown keys inside a task section are named, also keys of the other task.
    let err = parse("[data.synthetic]\ntask = \"arithmetic\"\nmax_numbers = 5\n").unwrap_err();
    assert!(err.to_string().contains("max_numbers"), "{err}");
    let err = parse("[data.synthetic]\ntask = \"sudoku\"\n").unwrap_err();
    assert!(err.to_string().contains("sudoku"), "{err}");

    let bad = |toml: &str, key: &str| {
        let msg = parse(toml).unwrap().validate().unwrap_err().to_string();
        assert!(msg.contains(&format!("`{key}`")), "{toml} -> {msg}");
    };
    bad(
        "[data.synthetic]\ntask = \"arithmetic\"\nmax_digits = 4\n",
        "data.synthetic.max_digits",
    );
    bad(
        "[data.synthetic]\ntask = \"arithmetic\"\nmin_digits = 2\n",
        "data.synthetic.max_digits",
    );
    bad(
        "[data.synthetic]\ntask = \"arithmetic\"\noperators = []\n",
        "data.synthetic.operators",
    );
    bad(
        "[data.synthetic]\ntask = \"arithmetic\"\nprompt_template = \"hi\"\n",
        "data.synthetic.prompt_template",
    );
    bad(
        "[data.synthetic]\ntask = \"countdown\"\nmin_numbers = 1\n",
        "data.synthetic.min_numbers",
    );
    bad(
        "[data.synthetic]\ntask = \"countdown\"\nsize = 0\n",
        "data.synthetic.size",
    );
    bad(
        "[data.synthetic]\ntask = \"countdown\"\nprompt_template = \"{numbers}\"\n",
        "data.synthetic.prompt_template",
    );
}
