//! Finding the answer text inside a response: the last `\boxed{...}` (nested braces balanced), the
//! text after the last `####`, or the last plain number. The `last_*` functions return slices of
//! the input and never allocate, because they run once per sample on the hot path; the `all_*`
//! functions list every candidate for verifier audits.

/// Content of the **last** `\boxed{...}` (or `\fbox{...}`), with nested braces balanced.
///
/// When a response holds two boxed answers, the last one wins: models often box a draft and then
/// correct it. Returns `None` when there is no `\boxed`, or when the last one is unbalanced
/// (a truncated response), rather than falling back to an earlier, possibly retracted, answer.
/// `\boxed 5` (space form, no braces) yields the next whitespace-delimited word.
pub fn last_boxed(text: &str) -> Option<&str> {
    let (at, cmd_len) = match (text.rfind("\\boxed"), text.rfind("\\fbox")) {
        (Some(b), Some(f)) if f > b => (f, "\\fbox".len()),
        (Some(b), _) => (b, "\\boxed".len()),
        (None, Some(f)) => (f, "\\fbox".len()),
        (None, None) => return None,
    };
    body_after_command(&text[at + cmd_len..])
}

/// The answer after a `\boxed` / `\fbox` command whose name ends just before `rest`.
fn body_after_command(rest: &str) -> Option<&str> {
    let trimmed = rest.trim_start();
    if let Some(body) = trimmed.strip_prefix('{') {
        return balanced_prefix(body);
    }
    // `\boxed 5`: only with a separating space, so `\boxedfoo` is not an answer.
    if trimmed.len() < rest.len() {
        let word = trimmed.split(|c: char| c.is_whitespace() || c == '$').next()?;
        return (!word.is_empty()).then_some(word);
    }
    None
}

/// Contents of every balanced `\boxed{...}` / `\fbox{...}` (and `\boxed 5` word form), left to
/// right: the candidates a verifier audit compares with the last one.
pub fn all_boxed(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut end = text.len();
    // Walk backwards over the commands with the parsing `last_boxed` uses, so the two agree.
    while end > 0 {
        let head = &text[..end];
        let at = match (head.rfind("\\boxed"), head.rfind("\\fbox")) {
            (Some(b), Some(f)) => b.max(f),
            (Some(b), None) => b,
            (None, Some(f)) => f,
            (None, None) => break,
        };
        let cmd_len = if text[at..].starts_with("\\boxed") { "\\boxed".len() } else { "\\fbox".len() };
        if let Some(body) = body_after_command(&text[at + cmd_len..]) {
            out.push(body);
        }
        end = at;
    }
    out.reverse();
    out
}

/// The rest of the line after **every** `####`, trimmed and non-empty, left to right.
pub fn all_hashes(text: &str) -> Vec<&str> {
    text.split("####")
        .skip(1)
        .map(|seg| {
            let rest = seg.trim_start_matches('#');
            rest.split('\n').next().unwrap_or(rest).trim()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The text of `body` up to the `}` that closes an already-opened `{`, or `None` if unbalanced.
pub(super) fn balanced_prefix(body: &str) -> Option<&str> {
    let mut depth = 1usize;
    for (i, b) in body.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The rest of the line after the **last** `####` (GSM8K's answer marker), trimmed; `None` if
/// there is no marker or nothing follows it.
pub fn after_hashes(text: &str) -> Option<&str> {
    let at = text.rfind("####")?;
    let rest = text[at + 4..].trim_start_matches('#');
    let line = rest.split('\n').next().unwrap_or(rest).trim();
    (!line.is_empty()).then_some(line)
}

/// The last number token in `text` (see [`NumberTokens`]).
pub fn last_number(text: &str) -> Option<&str> {
    NumberTokens::new(text).last()
}

/// Iterator over plain number tokens, left to right.
///
/// A token is `[-]digits[,ddd]*[.digits][/digits][%]` or `[-].digits...`:
/// - `,` is a thousands separator only between groups of exactly three digits after a first group
///   of one to three digits, so `1,000` is one token and `3,4,5` is three;
/// - `.` belongs to the number only when a digit follows, so the period ending `is 18.` is not part
///   of the answer;
/// - `-` (or U+2212 `−`) is a sign only when it does not follow a letter, digit or closing bracket,
///   so `10-7` yields `10` and `7` while `x = -5` yields `-5`;
/// - a `%` (or `\%`) right after the digits is kept so the parser can see a percentage.
pub struct NumberTokens<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> NumberTokens<'a> {
    /// Tokens of `text`.
    pub fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }
}

fn is_digit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(u8::is_ascii_digit)
}

/// Length of the run of ASCII digits starting at `i`.
fn digit_run(bytes: &[u8], i: usize) -> usize {
    bytes[i.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Whether a `-` ending just before byte `i` can be a sign (see [`NumberTokens`]).
fn sign_allowed_before(bytes: &[u8], i: usize) -> bool {
    match i.checked_sub(1).and_then(|j| bytes.get(j)) {
        None => true,
        Some(&b) => !(b.is_ascii_alphanumeric() || matches!(b, b')' | b']' | b'}' | b'_')),
    }
}

impl<'a> Iterator for NumberTokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        // Find the next digit, or a `.` followed by a digit not preceded by one.
        let mut i = self.pos;
        let start_digits = loop {
            if i >= bytes.len() {
                self.pos = i;
                return None;
            }
            if bytes[i].is_ascii_digit() || (bytes[i] == b'.' && is_digit(bytes, i + 1)) {
                break i;
            }
            i += 1;
        };
        // Integer part with optional thousands groups.
        let mut end = start_digits;
        let first = digit_run(bytes, end);
        end += first;
        if (1..=3).contains(&first) {
            while bytes.get(end) == Some(&b',')
                && digit_run(bytes, end + 1) == 3
                && !is_digit(bytes, end + 4)
            {
                end += 4;
            }
        }
        // Fraction part: only when a digit follows the point.
        if bytes.get(end) == Some(&b'.') && is_digit(bytes, end + 1) {
            end += 1 + digit_run(bytes, end + 1);
        }
        // Simple fraction a/b.
        if bytes.get(end) == Some(&b'/') && is_digit(bytes, end + 1) {
            end += 1 + digit_run(bytes, end + 1);
        }
        // Percentage, plain or LaTeX-escaped.
        if bytes.get(end) == Some(&b'%') {
            end += 1;
        } else if bytes.get(end) == Some(&b'\\') && bytes.get(end + 1) == Some(&b'%') {
            end += 2;
        }
        // Sign: ASCII `-` or U+2212 (3 bytes in UTF-8).
        let mut start = start_digits;
        if start >= 1 && bytes[start - 1] == b'-' && sign_allowed_before(bytes, start - 1) {
            start -= 1;
        } else if start >= 3
            && &bytes[start - 3..start] == "\u{2212}".as_bytes()
            && sign_allowed_before(bytes, start - 3)
        {
            start -= 3;
        }
        self.pos = end;
        // All boundaries sit on ASCII bytes or before a whole `−`, so this slice is valid UTF-8.
        self.text.get(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_nested_and_last() {
        assert_eq!(last_boxed(r"so \boxed{\frac{1}{2}}."), Some(r"\frac{1}{2}"));
        assert_eq!(last_boxed(r"\boxed{1} then \boxed{2}"), Some("2"));
        assert_eq!(last_boxed(r"\boxed{1} then \boxed{2"), None);
        assert_eq!(last_boxed(r"\boxed 7 done"), Some("7"));
        assert_eq!(last_boxed(r"\fbox{3}"), Some("3"));
        assert_eq!(last_boxed("no box"), None);
    }

    #[test]
    fn every_box_and_every_hash_line() {
        assert_eq!(all_boxed(r"\boxed{1} then \fbox{2} and \boxed{\frac{1}{2}}"), ["1", "2", r"\frac{1}{2}"]);
        assert_eq!(all_boxed(r"\boxed{1} then \boxed{2"), ["1"]);
        assert_eq!(all_boxed(r"\boxed 7 done"), ["7"]);
        assert!(all_boxed("no box").is_empty());
        assert_eq!(all_hashes("#### 1\nwork\n#### 2\n####\n"), ["1", "2"]);
    }

    #[test]
    fn hashes() {
        assert_eq!(after_hashes("work\n#### 1,000\n"), Some("1,000"));
        assert_eq!(after_hashes("#### "), None);
        assert_eq!(after_hashes("#### 1\n#### 2"), Some("2"));
    }

    #[test]
    fn tokens() {
        let t: Vec<_> = NumberTokens::new("10-7=3, x = -5; 1,000 and 3,4,5 is 18.").collect();
        assert_eq!(t, ["10", "7", "3", "-5", "1,000", "3", "4", "5", "18"]);
        let t: Vec<_> = NumberTokens::new("50% of .5 is 1/4 and −2, 12,3456").collect();
        assert_eq!(t, ["50%", ".5", "1/4", "\u{2212}2", "12", "3456"]);
        assert_eq!(last_number("none here"), None);
    }
}
