//! A small exact rational number over `i128`, so that answers compare exactly (`0.5 == 1/2`,
//! `0.1 + 0.2 == 0.3`) and countdown arithmetic never rounds. Every operation is checked: an
//! overflow gives `None`, which callers treat as "not a usable number", never as a wrong value.

use std::cmp::Ordering;
use std::fmt;

/// A reduced fraction `num / den` with `den > 0` and `gcd(num, den) = 1`, so equality of values is
/// equality of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    /// Zero.
    pub const ZERO: Self = Self { num: 0, den: 1 };

    /// `num / den` reduced; `None` if `den == 0` or the value does not fit (`i128::MIN` parts).
    pub fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 || num == i128::MIN || den == i128::MIN {
            return None;
        }
        let g = gcd(num.unsigned_abs(), den.unsigned_abs()) as i128; // g ≥ 1 because den ≠ 0
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            (num, den) = (-num, -den);
        }
        Some(Self { num, den })
    }

    /// An integer.
    pub const fn int(n: i128) -> Self {
        Self { num: n, den: 1 }
    }

    /// The numerator (sign carrier) of the reduced fraction.
    pub fn numer(&self) -> i128 {
        self.num
    }

    /// The denominator (always > 0) of the reduced fraction.
    pub fn denom(&self) -> i128 {
        self.den
    }

    /// True when the value is zero.
    pub fn is_zero(&self) -> bool {
        self.num == 0
    }

    /// The nearest `f64` (for display only; comparisons stay exact).
    pub fn to_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `-self`.
    pub fn checked_neg(self) -> Option<Self> {
        Some(Self { num: self.num.checked_neg()?, den: self.den })
    }

    /// `self + rhs`, `None` on overflow.
    pub fn checked_add(self, rhs: Self) -> Option<Self> {
        // a/b + c/d = (a·(l/b) + c·(l/d)) / l with l = lcm(b, d): keeps intermediates small.
        let g = gcd(self.den as u128, rhs.den as u128) as i128;
        let l = (self.den / g).checked_mul(rhs.den)?;
        let a = self.num.checked_mul(l / self.den)?;
        let c = rhs.num.checked_mul(l / rhs.den)?;
        Self::new(a.checked_add(c)?, l)
    }

    /// `self - rhs`, `None` on overflow.
    pub fn checked_sub(self, rhs: Self) -> Option<Self> {
        self.checked_add(rhs.checked_neg()?)
    }

    /// `self · rhs`, `None` on overflow.
    pub fn checked_mul(self, rhs: Self) -> Option<Self> {
        // Cross-reduce first so that products of reduced fractions overflow only when the result does.
        let g1 = gcd(self.num.unsigned_abs(), rhs.den as u128).max(1) as i128;
        let g2 = gcd(rhs.num.unsigned_abs(), self.den as u128).max(1) as i128;
        let num = (self.num / g1).checked_mul(rhs.num / g2)?;
        let den = (self.den / g2).checked_mul(rhs.den / g1)?;
        Self::new(num, den)
    }

    /// `self / rhs`, `None` on division by zero or overflow.
    pub fn checked_div(self, rhs: Self) -> Option<Self> {
        if rhs.num == 0 {
            return None;
        }
        self.checked_mul(Self::new(rhs.den, rhs.num)?)
    }
}

impl PartialOrd for Rational {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rational {
    fn cmp(&self, other: &Self) -> Ordering {
        // a/b vs c/d with b, d > 0: compare a·d with c·b, widening through the f64 fallback only
        // if i128 overflows (values that large are never compared for equality anyway).
        match (self.num.checked_mul(other.den), other.num.checked_mul(self.den)) {
            (Some(l), Some(r)) => l.cmp(&r),
            _ => self.to_f64().total_cmp(&other.to_f64()),
        }
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rational as R;

    fn r(n: i128, d: i128) -> R {
        R::new(n, d).expect("valid test fraction")
    }

    #[test]
    fn reduces_and_normalises_sign() {
        assert_eq!(r(2, 4), r(1, 2));
        assert_eq!(r(1, -2), r(-1, 2));
        assert_eq!(r(-3, -6), r(1, 2));
        assert_eq!(r(0, -5), R::ZERO);
        assert_eq!(r(6, 3).denom(), 1);
        assert!(R::new(1, 0).is_none());
        assert!(R::new(i128::MIN, 1).is_none());
    }

    #[test]
    fn exact_arithmetic() {
        // 0.1 + 0.2 == 0.3 exactly.
        assert_eq!(r(1, 10).checked_add(r(2, 10)), Some(r(3, 10)));
        assert_eq!(r(1, 3).checked_sub(r(1, 2)), Some(r(-1, 6)));
        assert_eq!(r(2, 3).checked_mul(r(9, 4)), Some(r(3, 2)));
        assert_eq!(r(2, 3).checked_div(r(4, 9)), Some(r(3, 2)));
        assert_eq!(r(1, 2).checked_div(R::ZERO), None);
    }

    #[test]
    fn overflow_is_none_not_wrong() {
        let big = R::int(i128::MAX);
        assert_eq!(big.checked_add(R::int(1)), None);
        assert_eq!(big.checked_mul(R::int(2)), None);
        assert_eq!(R::int(i128::MAX).checked_neg(), Some(R::int(-i128::MAX)));
        // Cross-reduction avoids a spurious overflow: (MAX/3)·(3/MAX) = 1.
        assert_eq!(r(i128::MAX, 3).checked_mul(r(3, i128::MAX)), Some(R::int(1)));
    }

    #[test]
    fn ordering_and_display() {
        assert!(r(1, 3) < r(1, 2));
        assert!(r(-1, 2) < R::ZERO);
        assert_eq!(r(-7, 2).to_string(), "-7/2");
        assert_eq!(R::int(5).to_string(), "5");
    }
}
