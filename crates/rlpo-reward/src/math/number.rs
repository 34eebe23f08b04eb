//! Turning an extracted answer string into something comparable: an exact [`Number`] when the
//! text is a number in any of the usual spellings (`1,000`, `-0.50`, `1/2`, `\frac{1}{2}`,
//! `\frac12`, `50%`, `$18`, `18 dollars`, `x = 5`), otherwise a normalised string.

use std::borrow::Cow;

use super::extract::{balanced_prefix, NumberTokens};
use crate::rational::Rational;

/// A numeric answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    /// The exact value as written (`50%` is 50 here, with `percent` set).
    pub value: Rational,
    /// Whether a `%` followed the number.
    pub percent: bool,
}

/// A parsed answer: a number, or text compared after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A number.
    Number(Number),
    /// Anything else: whitespace removed, ASCII lower-cased, outer braces stripped.
    Text(String),
}

impl Answer {
    /// Parses an extracted answer.
    ///
    /// Order: (1) the whole cleaned string as one number; (2) if the string holds exactly one
    /// number token among other text (`18 dollars`), that number; (3) normalised text.
    pub fn parse(raw: &str) -> Answer {
        let cleaned = clean(raw);
        if let Some(n) = parse_whole(&cleaned) {
            return Answer::Number(n);
        }
        let mut tokens = NumberTokens::new(&cleaned);
        if let (Some(only), None) = (tokens.next(), tokens.next()) {
            if let Some(n) = parse_whole(only) {
                return Answer::Number(n);
            }
        }
        Answer::Text(normalise_text(&cleaned))
    }

    /// Whether two answers are the same.
    ///
    /// Numbers compare exactly as rationals. A percentage against a plain number matches either
    /// reading (`50%` matches `50` and `0.5`); two percentages compare their written values.
    /// Texts compare after normalisation. A number never equals a text.
    pub fn matches(&self, other: &Answer) -> bool {
        match (self, other) {
            (Answer::Number(a), Answer::Number(b)) => {
                if a.percent == b.percent {
                    return a.value == b.value;
                }
                let (p, plain) = if a.percent { (a, b) } else { (b, a) };
                p.value == plain.value
                    || p.value.checked_div(Rational::int(100)) == Some(plain.value)
            }
            (Answer::Text(a), Answer::Text(b)) => a == b,
            _ => false,
        }
    }
}

/// Bytes that send a string down the slow, allocating clean-up path. Plain answers like `72`,
/// `-3.5` or `1,000` contain none of them and are parsed in place.
fn needs_cleaning(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'\\' | b'{' | b'}' | b'$' | b'=' | b'^') || !b.is_ascii())
}

/// LaTeX wrappers whose content is kept (`\text{ dollars}` → ` dollars`).
const UNWRAP: [&str; 6] = ["\\text", "\\textbf", "\\mathrm", "\\mbox", "\\mathbf", "\\operatorname"];
/// Fragments deleted outright: sizing, spacing, dollars, degree marks.
const DELETE: [&str; 14] = [
    "\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\$", "$", "^\\circ",
    "^{\\circ}", "\\circ", "°",
];

/// Removes formatting that does not change the value. Borrows when there is nothing to do.
pub fn clean(raw: &str) -> Cow<'_, str> {
    let s = raw.trim();
    if !needs_cleaning(s) {
        return Cow::Borrowed(trim_period(s));
    }
    let mut s = s.to_owned();
    // Keep only what follows the last `=`: `x = 5`, `a+b=12`. `\approx` etc. are left as text.
    if let Some(at) = s.rfind('=') {
        s.drain(..=at);
    }
    for w in UNWRAP {
        s = unwrap_command(&s, w);
    }
    s = s.replace("{,}", ",").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac");
    s = s.replace('\u{2212}', "-");
    for d in DELETE {
        if s.contains(d) {
            s = s.replace(d, "");
        }
    }
    Cow::Owned(trim_period(s.trim()).to_owned())
}

fn trim_period(s: &str) -> &str {
    s.trim_end_matches('.').trim_end()
}

/// Replaces every `\cmd{X}` by ` X ` (balanced braces); leaves the string alone if unbalanced.
fn unwrap_command(s: &str, cmd: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(cmd) {
        let after = &rest[at + cmd.len()..];
        // `\textbf` also starts with `\text`: only match a whole command followed by `{`.
        let Some(body) = after.strip_prefix('{') else {
            out.push_str(&rest[..at + cmd.len()]);
            rest = after;
            continue;
        };
        let Some(inner) = balanced_prefix(body) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push(' ');
        out.push_str(inner);
        out.push(' ');
        rest = &body[inner.len() + 1..];
    }
    out.push_str(rest);
    out
}

fn normalise_text(s: &str) -> String {
    let mut t = s.trim();
    while let Some(inner) = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        t = inner.trim();
    }
    t.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_lowercase()).collect()
}

/// Parses the whole string as exactly one number, or `None`.
pub fn parse_whole(s: &str) -> Option<Number> {
    let mut p = Parser { s: s.as_bytes(), i: 0 };
    let n = p.signed_number(0)?;
    p.skip_ws();
    (p.i == p.s.len()).then_some(n)
}

/// A byte cursor for the small number grammar:
/// `number := ws sign* ( '{' number '}' | \frac arg arg | decimal ['/' decimal] ) ['%' | '\%']`.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// Braces and `\frac` arguments nest; bound the recursion so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 16;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn signed_number(&mut self, depth: usize) -> Option<Number> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        let mut negative = false;
        loop {
            if self.eat(b"-") {
                negative = !negative;
            } else if !self.eat(b"+") {
                break;
            }
            self.skip_ws();
        }
        let mut n = self.unsigned(depth)?;
        self.skip_ws();
        if self.eat(b"%") || self.eat(b"\\%") {
            n.percent = true;
        }
        if negative {
            n.value = n.value.checked_neg()?;
        }
        Some(n)
    }

    fn unsigned(&mut self, depth: usize) -> Option<Number> {
        if self.eat(b"{") {
            let n = self.signed_number(depth + 1)?;
            self.skip_ws();
            return self.eat(b"}").then_some(n);
        }
        if self.eat(b"\\frac") {
            let a = self.frac_arg(depth)?;
            let b = self.frac_arg(depth)?;
            return Some(Number { value: a.checked_div(b)?, percent: false });
        }
        let a = self.decimal()?;
        self.skip_ws();
        if self.eat(b"/") {
            self.skip_ws();
            let b = self.decimal()?;
            return Some(Number { value: a.checked_div(b)?, percent: false });
        }
        Some(Number { value: a, percent: false })
    }

    /// A `\frac` argument: `{number}` or a single digit (`\frac12`).
    fn frac_arg(&mut self, depth: usize) -> Option<Rational> {
        self.skip_ws();
        if self.eat(b"{") {
            let n = self.signed_number(depth + 1)?;
            self.skip_ws();
            return (self.eat(b"}") && !n.percent).then_some(n.value);
        }
        let d = self.peek().filter(u8::is_ascii_digit)?;
        self.i += 1;
        Some(Rational::int(i128::from(d - b'0')))
    }

    /// `digits[,ddd]*[.digits]` or `.digits`, exactly.
    fn decimal(&mut self) -> Option<Rational> {
        let mut int: i128 = 0;
        let start = self.i;
        let mut group = 0usize;
        let mut grouped = false;
        while let Some(b) = self.peek() {
            if b.is_ascii_digit() {
                int = int.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
                group += 1;
                self.i += 1;
            } else if b == b',' {
                // Thousands separator: first group 1-3 digits, later groups exactly 3.
                if group == 0 || group > 3 || (grouped && group != 3) {
                    return None;
                }
                grouped = true;
                group = 0;
                self.i += 1;
            } else {
                break;
            }
        }
        if grouped && group != 3 {
            return None;
        }
        let had_int = self.i > start;
        let mut value = Rational::int(int);
        if self.peek() == Some(b'.') && self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
            let (mut frac, mut scale): (i128, i128) = (0, 1);
            while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
                frac = frac.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
                scale = scale.checked_mul(10)?;
                self.i += 1;
            }
            value = value.checked_add(Rational::new(frac, scale)?)?;
        } else if !had_int {
            return None;
        }
        Some(value)
    }
}
