//! Group bookkeeping for `on_error = "drop_group"`: GRPO-style advantages are computed per group of
//! G responses to one prompt, so one failed response spoils its whole group.

use crate::error::{RewardError, Result};
use crate::types::RewardOutput;

/// Indices of the groups (consecutive runs of `group_size` samples) that contain at least one
/// sample whose status is not ok. Independent of the policy.
pub fn failed_groups(outputs: &[RewardOutput], group_size: usize) -> Result<Vec<usize>> {
    // `checked_rem` is `None` for a zero group size, which is as wrong as a remainder.
    if outputs.len().checked_rem(group_size) != Some(0) {
        return Err(RewardError::GroupSize { len: outputs.len(), group_size });
    }
    Ok(outputs
        .chunks(group_size)
        .enumerate()
        .filter(|(_, g)| g.iter().any(|o| !o.is_ok()))
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_whole_groups() {
        let ok = RewardOutput::ok(1.0);
        let outs = vec![
            ok.clone(), ok.clone(), ok.clone(),                     // group 0
            ok.clone(), RewardOutput::timeout(), ok.clone(),        // group 1
            RewardOutput::error("x"), ok.clone(), RewardOutput::error("y"), // group 2
            ok.clone(), ok.clone(), ok,                             // group 3
        ];
        assert_eq!(failed_groups(&outs, 3).expect("divisible"), [1, 2]);
        assert_eq!(failed_groups(&outs, 12).expect("divisible"), [0]);
        assert_eq!(failed_groups(&outs, 1).expect("divisible"), [4, 6, 8]);
        assert!(failed_groups(&outs, 5).is_err());
        assert!(failed_groups(&outs, 0).is_err());
        assert_eq!(failed_groups(&[], 4).expect("empty is fine"), Vec::<usize>::new());
    }
}
