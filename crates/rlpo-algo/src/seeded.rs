//! Seeded randomness for tests, examples and benchmarks: [`SplitMix`] (SplitMix64) scalars and
//! random tensors built from them on the host, so every input depends only on the caller's seed.
//!
//! Why not LibTorch's `Tensor::randn` after `tch::manual_seed`: that generator is process-global,
//! and the tests of one binary run on parallel threads, so their draws interleave and a failing
//! case cannot be reproduced. Tensors here are `f64` on the host, then converted to the requested
//! kind and device; shapes are anything `tch` accepts as a size (`[n, t]`, `&[i64]`).

use tch::{Device, Kind, Tensor};

/// SplitMix64: a 64-bit state advanced by a constant and mixed (Steele et al. 2014).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) (53 bits).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Uniform integer in `[low, high)` (`high > low`).
    pub fn int_in(&mut self, low: i64, high: i64) -> i64 {
        assert!(high > low, "empty range [{low}, {high})");
        low + (self.next_u64() % (high - low) as u64) as i64
    }

    fn tensor(&mut self, size: &[i64], options: (Kind, Device), mut draw: impl FnMut(&mut Self) -> f64) -> Tensor {
        let n: i64 = size.iter().product();
        let v: Vec<f64> = (0..n).map(|_| draw(self)).collect();
        Tensor::from_slice(&v).view(size).to_kind(options.0).to_device(options.1)
    }

    /// Like `Tensor::rand`: uniform in [0, 1).
    pub fn rand(&mut self, size: impl AsRef<[i64]>, options: (Kind, Device)) -> Tensor {
        self.tensor(size.as_ref(), options, Self::uniform)
    }

    /// Like `Tensor::randn`: standard normal.
    pub fn randn(&mut self, size: impl AsRef<[i64]>, options: (Kind, Device)) -> Tensor {
        self.tensor(size.as_ref(), options, Self::normal)
    }

    /// Like `Tensor::randint_low`: integers in `[low, high)`.
    pub fn randint_low(&mut self, low: i64, high: i64, size: impl AsRef<[i64]>, options: (Kind, Device)) -> Tensor {
        let n: i64 = size.as_ref().iter().product();
        let v: Vec<i64> = (0..n).map(|_| self.int_in(low, high)).collect();
        Tensor::from_slice(&v).view(size.as_ref()).to_kind(options.0).to_device(options.1)
    }

    /// Like `Tensor::randint`: integers in `[0, high)`.
    pub fn randint(&mut self, high: i64, size: impl AsRef<[i64]>, options: (Kind, Device)) -> Tensor {
        self.randint_low(0, high, size, options)
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix;
    use tch::{Device, Kind};

    #[test]
    fn same_seed_same_tensors_and_plausible_moments() {
        let opts = (Kind::Double, Device::Cpu);
        let (a, b) = (SplitMix(5).randn([400, 50], opts), SplitMix(5).randn([400, 50], opts));
        assert!(a.equal(&b));
        assert!(!a.equal(&SplitMix(6).randn([400, 50], opts)));
        // 20 000 draws: mean within 5 standard errors of 0, variance of 1.
        assert!(a.mean(Kind::Double).double_value(&[]).abs() < 5.0 / 20_000f64.sqrt());
        assert!((a.var(true).double_value(&[]) - 1.0).abs() < 0.05);
        let u = SplitMix(1).rand([20_000], opts);
        assert!(u.min().double_value(&[]) >= 0.0 && u.max().double_value(&[]) < 1.0);
        assert!((u.mean(Kind::Double).double_value(&[]) - 0.5).abs() < 0.01);
        let i = SplitMix(2).randint_low(3, 7, [1000], (Kind::Int64, Device::Cpu));
        let counts: Vec<i64> = (3..7).map(|k| i.eq(k).sum(Kind::Int64).int64_value(&[])).collect();
        assert!(counts.iter().all(|&c| c > 200 && c < 300), "{counts:?}");
        assert_eq!(i.size(), [1000]);
    }
}
