//! A safe evaluator for countdown expressions: integers, `+ - * /` (also `×` `÷`), unary minus and
//! parentheses, evaluated in exact rational arithmetic while parsing (recursive descent, no AST, no
//! `eval`). Input length and nesting depth are bounded so hostile responses cannot exhaust time or
//! stack; anything outside the grammar (`**`, `^`, letters, `__import__`, `;`) is a parse error.

use crate::rational::Rational;

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprError {
    /// The expression is empty.
    Empty,
    /// Longer than the limit (in bytes).
    TooLong(usize),
    /// Nested deeper than the limit.
    TooDeep,
    /// A character outside the grammar, with its byte offset.
    BadChar(char, usize),
    /// A token in the wrong place (byte offset).
    Unexpected(usize),
    /// More than 18 digits in one number.
    NumberTooLong,
    /// Division by zero.
    DivByZero,
    /// An intermediate value does not fit in 128-bit rationals.
    Overflow,
}

/// A successfully evaluated expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluated {
    /// The exact value.
    pub value: Rational,
    /// Every integer literal, in order of appearance.
    pub numbers: Vec<i128>,
}

/// Limits for [`evaluate`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum expression length in bytes.
    pub max_len: usize,
    /// Maximum nesting depth (parentheses and unary minus).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_len: 256, max_depth: 32 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(i128),
    Add,
    Sub,
    Mul,
    Div,
    Open,
    Close,
}

/// LaTeX spellings models use inside `\boxed{}`, mapped to plain tokens (`None`: ignored).
const LATEX: [(&str, Option<Tok>); 6] = [
    ("\\times", Some(Tok::Mul)),
    ("\\cdot", Some(Tok::Mul)),
    ("\\div", Some(Tok::Div)),
    ("\\left", None),
    ("\\right", None),
    ("\\ ", None),
];

/// Splits into tokens with their byte offsets; rejects anything outside the grammar.
fn tokenize(s: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(s.len() / 2 + 1);
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        // `at` is always on a char boundary (every arm advances over whole chars); `get` keeps
        // that an invariant rather than a panic.
        let rest = s.get(at..).unwrap_or_default();
        let (tok, len) = match b {
            b if b.is_ascii_whitespace() => (None, 1),
            b'0'..=b'9' => {
                let digits = bytes[at..].iter().take_while(|d| d.is_ascii_digit()).count();
                if digits > 18 {
                    return Err(ExprError::NumberTooLong);
                }
                // ≤ 18 ASCII digits always fit in i128.
                let n = bytes[at..at + digits].iter().fold(0i128, |n, d| n * 10 + i128::from(d - b'0'));
                (Some(Tok::Num(n)), digits)
            }
            b'+' => (Some(Tok::Add), 1),
            b'-' => (Some(Tok::Sub), 1),
            b'*' => (Some(Tok::Mul), 1),
            b'/' => (Some(Tok::Div), 1),
            b'(' => (Some(Tok::Open), 1),
            b')' => (Some(Tok::Close), 1),
            b'\\' => match LATEX.iter().find(|(name, _)| rest.starts_with(name)) {
                Some((name, tok)) => (*tok, name.len()),
                None => return Err(ExprError::BadChar('\\', at)),
            },
            _ => {
                let c = rest.chars().next().unwrap_or('\u{fffd}');
                let tok = match c {
                    '\u{2212}' => Tok::Sub,
                    '×' | '\u{22c5}' => Tok::Mul,
                    '÷' => Tok::Div,
                    other => return Err(ExprError::BadChar(other, at)),
                };
                (Some(tok), c.len_utf8())
            }
        };
        if let Some(tok) = tok {
            out.push((tok, at));
        }
        at += len;
    }
    Ok(out)
}

/// Parses and evaluates `expr`.
pub fn evaluate(expr: &str, limits: Limits) -> Result<Evaluated, ExprError> {
    if expr.len() > limits.max_len {
        return Err(ExprError::TooLong(expr.len()));
    }
    let toks = tokenize(expr)?;
    if toks.is_empty() {
        return Err(ExprError::Empty);
    }
    let mut p = Eval { toks: &toks, i: 0, end: expr.len(), max_depth: limits.max_depth, numbers: Vec::new() };
    let value = p.expr(0)?;
    if p.i != toks.len() {
        return Err(ExprError::Unexpected(p.offset()));
    }
    Ok(Evaluated { value, numbers: p.numbers })
}

struct Eval<'a> {
    toks: &'a [(Tok, usize)],
    i: usize,
    end: usize,
    max_depth: usize,
    numbers: Vec<i128>,
}

impl Eval<'_> {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.i).map(|t| t.0)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.i).map_or(self.end, |t| t.1)
    }

    /// `expr := term (('+' | '-') term)*`
    fn expr(&mut self, depth: usize) -> Result<Rational, ExprError> {
        let mut acc = self.term(depth)?;
        while let Some(op @ (Tok::Add | Tok::Sub)) = self.peek() {
            self.i += 1;
            let rhs = self.term(depth)?;
            acc = if op == Tok::Add { acc.checked_add(rhs) } else { acc.checked_sub(rhs) }
                .ok_or(ExprError::Overflow)?;
        }
        Ok(acc)
    }

    /// `term := factor (('*' | '/') factor)*`
    fn term(&mut self, depth: usize) -> Result<Rational, ExprError> {
        let mut acc = self.factor(depth)?;
        while let Some(op @ (Tok::Mul | Tok::Div)) = self.peek() {
            self.i += 1;
            let rhs = self.factor(depth)?;
            acc = if op == Tok::Mul {
                acc.checked_mul(rhs).ok_or(ExprError::Overflow)?
            } else if rhs.is_zero() {
                return Err(ExprError::DivByZero);
            } else {
                acc.checked_div(rhs).ok_or(ExprError::Overflow)?
            };
        }
        Ok(acc)
    }

    /// `factor := '-' factor | '(' expr ')' | number`
    fn factor(&mut self, depth: usize) -> Result<Rational, ExprError> {
        if depth >= self.max_depth {
            return Err(ExprError::TooDeep);
        }
        let at = self.offset();
        match self.peek() {
            Some(Tok::Num(n)) => {
                self.i += 1;
                self.numbers.push(n);
                Ok(Rational::int(n))
            }
            Some(Tok::Sub) => {
                self.i += 1;
                self.factor(depth + 1)?.checked_neg().ok_or(ExprError::Overflow)
            }
            Some(Tok::Open) => {
                self.i += 1;
                let v = self.expr(depth + 1)?;
                if self.peek() != Some(Tok::Close) {
                    return Err(ExprError::Unexpected(self.offset()));
                }
                self.i += 1;
                Ok(v)
            }
            _ => Err(ExprError::Unexpected(at)),
        }
    }
}
