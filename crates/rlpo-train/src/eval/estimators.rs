//! pass@k and maj@k of one problem from its n samples, as exact expectations over the k-subsets
//! of those samples (no resampling noise on top of the sampling itself).
//!
//! - **pass@k** (Chen et al. 2021, the unbiased estimator): `1 - C(n-c, k) / C(n, k)` for `c`
//!   correct samples, computed as the product `1 - Π_{i=n-c+1..n} (1 - k/i)`, which never forms a
//!   binomial coefficient (`C(2000, 1000)` is ~10^600 and overflows `f64`).
//! - **maj@k**: the probability that a majority vote over the final answers of a uniformly random
//!   k-subset picks a correct answer. Samples without an answer do not vote; a subset with no vote
//!   counts as wrong. Ties go to the answer that appears first among all n samples (sample order is
//!   the generation order, fixed by the seed), so the vote is deterministic. An answer counts as
//!   correct when most of its samples were judged correct (ties: wrong); for a verifier that
//!   judges the answer alone they all agree.
//!
//! maj@k is computed exactly without enumerating subsets: for each correct answer `a` and each
//! count `j` of its votes in the subset, the other `k - j` samples are a uniform subset of the
//! rest, and every other answer `b` must get fewer votes than `j` (or exactly `j` when `a` wins the
//! tie against `b`). That probability is a dynamic programme over the answers whose every step is
//! a hypergeometric probability, so all intermediate numbers stay in `[0, 1]`.

/// One sample's vote: its final answer in normal form (`None` = no answer found) and whether the
/// verifier judged it correct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The extracted answer's normal form.
    pub answer: Option<String>,
    /// Judged correct.
    pub correct: bool,
}

/// pass@k for `c` correct samples out of `n`; `None` unless `1 <= k <= n` and `c <= n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    // C(n-c, k) / C(n, k) = Π_{i=n-c+1..=n} (1 - k/i).
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Some(1.0 - miss)
}

/// `ln(i!)` for `i = 0..=n`.
struct LnFact(Vec<f64>);

impl LnFact {
    fn new(n: usize) -> Self {
        let mut v = Vec::with_capacity(n + 1);
        let mut acc = 0.0f64;
        v.push(0.0);
        for i in 1..=n {
            acc += (i as f64).ln();
            v.push(acc);
        }
        LnFact(v)
    }

    fn ln_choose(&self, n: usize, k: usize) -> f64 {
        self.0[n] - self.0[k] - self.0[n - k]
    }

    /// P(exactly `c` of the `m` marked items in a uniform `t`-subset of `n` items).
    fn hyper(&self, c: usize, n: usize, m: usize, t: usize) -> f64 {
        if c > m || c > t || t - c > n - m || t > n {
            return 0.0;
        }
        (self.ln_choose(m, c) + self.ln_choose(n - m, t - c) - self.ln_choose(n, t)).exp()
    }
}

/// Probability that a uniform `draw`-subset of `free + Σ m` items takes at most `limit` items of
/// every constrained group `(m, limit)` (the `free` items are unconstrained).
fn prob_within_limits(groups: &[(usize, usize)], free: usize, draw: usize, lf: &LnFact) -> f64 {
    // p[t]: probability that a uniform t-subset of the items seen so far meets the limits so far.
    let mut seen = free;
    let mut p: Vec<f64> = (0..=draw).map(|t| if t <= free { 1.0 } else { 0.0 }).collect();
    for &(m, limit) in groups {
        let total = seen + m;
        let mut q = vec![0.0; draw + 1];
        for (t, qt) in q.iter_mut().enumerate().take(draw.min(total) + 1) {
            *qt = (0..=m.min(limit).min(t)).filter(|&c| t - c <= seen).map(|c| lf.hyper(c, total, m, t) * p[t - c]).sum();
        }
        p = q;
        seen = total;
    }
    if draw <= seen { p[draw] } else { 0.0 }
}

/// maj@k of one problem's votes (see the module docs); `None` unless `1 <= k <= votes.len()`.
pub fn maj_at_k(votes: &[Vote], k: usize) -> Option<f64> {
    let n = votes.len();
    if k == 0 || k > n {
        return None;
    }
    // Answer classes in order of first appearance: (count, correct count).
    let mut keys: Vec<&str> = Vec::new();
    let mut classes: Vec<(usize, usize)> = Vec::new();
    let mut no_answer = 0usize;
    for v in votes {
        let Some(a) = v.answer.as_deref() else {
            no_answer += 1;
            continue;
        };
        let i = keys.iter().position(|k| *k == a).unwrap_or_else(|| {
            keys.push(a);
            classes.push((0, 0));
            keys.len() - 1
        });
        classes[i].0 += 1;
        classes[i].1 += usize::from(v.correct);
    }
    let lf = LnFact::new(n);
    let mut total = 0.0;
    for (a, &(m_a, ok)) in classes.iter().enumerate() {
        if 2 * ok <= m_a {
            continue; // a wrong answer winning adds nothing
        }
        for j in 1..=m_a.min(k) {
            let p_j = lf.hyper(j, n, m_a, k);
            if p_j == 0.0 {
                continue;
            }
            // Answers before `a` win ties against it: they need < j votes; answers after, <= j.
            let mut free = no_answer;
            let mut limited = Vec::new();
            for (b, &(m_b, _)) in classes.iter().enumerate().filter(|(b, _)| *b != a) {
                let limit = if b < a { j - 1 } else { j };
                if m_b <= limit {
                    free += m_b;
                } else {
                    limited.push((m_b, limit));
                }
            }
            total += p_j * prob_within_limits(&limited, free, k - j, &lf);
        }
    }
    Some(total.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(a: Option<&str>, correct: bool) -> Vote {
        Vote { answer: a.map(str::to_string), correct }
    }

    /// All k-subsets of 0..n as bit masks.
    fn subsets(n: usize, k: usize) -> impl Iterator<Item = u32> {
        (0u32..1 << n).filter(move |m| m.count_ones() as usize == k)
    }

    fn brute_pass(n: usize, c: usize, k: usize) -> f64 {
        // Samples 0..c are the correct ones.
        let (hit, all) = subsets(n, k).fold((0, 0), |(h, a), m| (h + usize::from(m & ((1 << c) - 1) != 0), a + 1));
        hit as f64 / all as f64
    }

    /// The vote of one subset, literally: count, take the maximum, break ties by first appearance
    /// among all samples, look up whether most samples with that answer are correct.
    fn brute_maj(votes: &[Vote], k: usize) -> f64 {
        let first = |a: &str| votes.iter().position(|v| v.answer.as_deref() == Some(a)).unwrap();
        let class_ok = |a: &str| {
            let (ok, all) = votes.iter().filter(|v| v.answer.as_deref() == Some(a)).fold((0, 0), |(o, n), v| (o + usize::from(v.correct), n + 1));
            2 * ok > all
        };
        let (mut wins, mut all) = (0, 0);
        for m in subsets(votes.len(), k) {
            all += 1;
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for (i, v) in votes.iter().enumerate() {
                if m & (1 << i) == 0 {
                    continue;
                }
                if let Some(a) = v.answer.as_deref() {
                    match counts.iter_mut().find(|(x, _)| *x == a) {
                        Some(e) => e.1 += 1,
                        None => counts.push((a, 1)),
                    }
                }
            }
            let best = counts.iter().max_by(|x, y| x.1.cmp(&y.1).then(first(y.0).cmp(&first(x.0))));
            if best.is_some_and(|(a, _)| class_ok(a)) {
                wins += 1;
            }
        }
        wins as f64 / all as f64
    }

    #[test]
    fn pass_at_k_equals_subset_enumeration() {
        for n in 1..=10 {
            for c in 0..=n {
                for k in 1..=n {
                    let got = pass_at_k(n, c, k).unwrap();
                    let want = brute_pass(n, c, k);
                    assert!((got - want).abs() < 1e-12, "n={n} c={c} k={k}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn pass_at_k_hand_cases_and_large_n() {
        assert_eq!(pass_at_k(16, 0, 1), Some(0.0));
        assert_eq!(pass_at_k(16, 0, 16), Some(0.0));
        assert_eq!(pass_at_k(16, 16, 1), Some(1.0));
        assert_eq!(pass_at_k(16, 1, 16), Some(1.0)); // k = n: any correct sample is in the subset
        assert_eq!(pass_at_k(2, 1, 1), Some(0.5));
        // Misses only with the one all-wrong pair of the 6 pairs.
        assert!((pass_at_k(4, 2, 2).unwrap() - 5.0 / 6.0).abs() < 1e-15);
        assert_eq!(pass_at_k(4, 2, 0), None);
        assert_eq!(pass_at_k(4, 2, 5), None);
        assert_eq!(pass_at_k(4, 5, 1), None);
        // Far beyond f64 binomials (C(2000, 1000) ~ 1e600): compare with a log-space oracle.
        let lf = LnFact::new(2000);
        for (n, c, k) in [(2000, 1, 1), (2000, 3, 1000), (2000, 700, 20), (2000, 10, 1985), (2000, 10, 1999)] {
            let want = if k > n - c { 1.0 } else { 1.0 - (lf.ln_choose(n - c, k) - lf.ln_choose(n, k)).exp() };
            let got = pass_at_k(n, c, k).unwrap();
            assert!((got - want).abs() < 1e-9, "n={n} c={c} k={k}: {got} vs {want}");
        }
        assert!((pass_at_k(2000, 1, 1).unwrap() - 1.0 / 2000.0).abs() < 1e-15);
    }

    #[test]
    fn maj_at_k_equals_subset_enumeration() {
        // Deterministic pseudo-random vote lists over 3 answers plus "no answer".
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        let names = ["7", "8", "12"];
        for case in 0..300 {
            let n = 1 + (case % 9);
            let votes: Vec<Vote> = (0..n)
                .map(|_| match next(5) {
                    0 => vote(None, false),
                    r => {
                        let a = names[(r as usize - 1) % 3];
                        // "7" is correct; answer "12" is judged inconsistently to exercise the class rule.
                        vote(Some(a), a == "7" || (a == "12" && next(2) == 0))
                    }
                })
                .collect();
            for k in 1..=n {
                let got = maj_at_k(&votes, k).unwrap();
                let want = brute_maj(&votes, k);
                assert!((got - want).abs() < 1e-12, "case {case} k={k} {votes:?}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn maj_at_k_hand_cases() {
        let a_wrong = vote(Some("3"), false);
        let b_right = vote(Some("4"), true);
        // A 1-1 tie goes to the answer seen first.
        assert_eq!(maj_at_k(&[a_wrong.clone(), b_right.clone()], 2), Some(0.0));
        assert_eq!(maj_at_k(&[b_right.clone(), a_wrong.clone()], 2), Some(1.0));
        // k = 1: each sample decides alone.
        assert_eq!(maj_at_k(&[a_wrong.clone(), b_right.clone()], 1), Some(0.5));
        // c = n and c = 0.
        assert_eq!(maj_at_k(&vec![b_right.clone(); 5], 3), Some(1.0));
        assert_eq!(maj_at_k(&vec![a_wrong.clone(); 5], 3), Some(0.0));
        // No answers at all: no vote, wrong.
        assert_eq!(maj_at_k(&vec![vote(None, false); 4], 2), Some(0.0));
        // k = n: the plain majority (2 right vs 1 wrong; the silent sample does not vote).
        let v = [a_wrong.clone(), b_right.clone(), vote(None, false), b_right.clone()];
        assert_eq!(maj_at_k(&v, 4), Some(1.0));
        // Silent samples do not vote: {wrong, silent} picks the wrong answer, {right, silent} the right.
        let v = [a_wrong.clone(), vote(None, false), b_right.clone()];
        let got = maj_at_k(&v, 2).unwrap();
        // Subsets: {a,_}: a wins; {a,b}: tie, a first; {_,b}: b wins -> 1/3.
        assert!((got - 1.0 / 3.0).abs() < 1e-15, "{got}");
        assert_eq!(maj_at_k(&v, 0), None);
        assert_eq!(maj_at_k(&v, 4), None);
    }
}
