//! Slurm's compressed lists: host lists (`SLURM_JOB_NODELIST=node[01-04,07],gpu-a[1-2]-x`) and
//! tasks per node (`SLURM_TASKS_PER_NODE=8(x2),4`). Pure string functions, no environment.

/// Expand a Slurm host list: `node[01-04,07]` -> node01, node02, node03, node04, node07. Zero
/// padding of a range is kept (`[08-10]` -> 08, 09, 10); several bracket groups in one name
/// (`r[1-2]-n[1-2]`) give their product, in order; items are separated by top-level commas.
pub fn expand_nodelist(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top_level(list)? {
        if item.is_empty() {
            return Err(format!("empty host name in {list:?}"));
        }
        expand_item(item, &mut out).map_err(|e| format!("{e} in {list:?}"))?;
    }
    if out.is_empty() {
        return Err(format!("no host in {list:?}"));
    }
    Ok(out)
}

/// Split at commas outside brackets.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced or nested brackets in {s:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced brackets in {s:?}"));
    }
    items.push(s[start..].trim());
    Ok(items)
}

/// Expand the first bracket group of `item`, recursing on the rest of the name.
fn expand_item(item: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = item.find('[') else {
        if item.contains(']') {
            return Err(format!("stray ']' in {item:?}"));
        }
        out.push(item.to_string());
        return Ok(());
    };
    let close = item[open..].find(']').map(|i| open + i).ok_or_else(|| format!("unclosed '[' in {item:?}"))?;
    let (prefix, body, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    for part in body.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let bad = || format!("bad range {part:?} in {item:?}");
        if lo.is_empty() || hi.is_empty() || !lo.bytes().chain(hi.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (a, b): (u64, u64) = (lo.parse().map_err(|_| bad())?, hi.parse().map_err(|_| bad())?);
        if a > b || b - a > 100_000 {
            return Err(bad());
        }
        // Slurm pads to the width of the range's lower bound as written.
        let width = lo.len();
        for n in a..=b {
            expand_item(&format!("{prefix}{n:0width$}{rest}"), out)?;
        }
    }
    Ok(())
}

/// Tasks on each node from `SLURM_TASKS_PER_NODE` (`2(x3),1` -> [2, 2, 2, 1]).
pub fn expand_tasks_per_node(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        let bad = || format!("bad entry {item:?} in {s:?} (expected N or N(xM))");
        let (n, times) = match item.split_once("(x") {
            Some((n, rest)) => (n, rest.strip_suffix(')').ok_or_else(bad)?.parse::<usize>().map_err(|_| bad())?),
            None => (item, 1),
        };
        let n: usize = n.parse().map_err(|_| bad())?;
        out.extend(std::iter::repeat_n(n, times));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(s: &str) -> Vec<String> {
        expand_nodelist(s).unwrap()
    }

    #[test]
    fn plain_and_single_names() {
        assert_eq!(hosts("node7"), ["node7"]);
        assert_eq!(hosts("a,b , c"), ["a", "b", "c"]);
    }

    #[test]
    fn ranges_lists_and_padding() {
        assert_eq!(hosts("node[01-04,07]"), ["node01", "node02", "node03", "node04", "node07"]);
        assert_eq!(hosts("gpu[8-10]"), ["gpu8", "gpu9", "gpu10"]);
        assert_eq!(hosts("gpu[08-10]"), ["gpu08", "gpu09", "gpu10"]);
        assert_eq!(hosts("n[1-2],login,m[5]"), ["n1", "n2", "login", "m5"]);
    }

    #[test]
    fn several_groups_in_one_name() {
        assert_eq!(hosts("r[1-2]-n[1,3]"), ["r1-n1", "r1-n3", "r2-n1", "r2-n3"]);
        assert_eq!(hosts("c[1-2]x.cluster"), ["c1x.cluster", "c2x.cluster"]);
    }

    #[test]
    fn malformed_lists_are_errors() {
        for bad in ["", "node[1-", "node]1", "node[a-b]", "node[3-1]", "node[1-2]]", "a,,b", "node[[1]]", "x[]"] {
            assert!(expand_nodelist(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tasks_per_node() {
        assert_eq!(expand_tasks_per_node("8").unwrap(), [8]);
        assert_eq!(expand_tasks_per_node("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert!(expand_tasks_per_node("2(x3").is_err());
        assert!(expand_tasks_per_node("x").is_err());
    }
}
