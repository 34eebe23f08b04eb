//! `--set section.key=value` overrides applied to the parsed TOML table before it is typed.
//! The value is read as a TOML value (`3`, `1e-5`, `true`, `"x"`, `[1, 2]`); anything that does
//! not parse as one is taken as a string, so `--set model.path=/models/qwen` works unquoted.

use crate::error::{invalid, Result};

/// Apply one `KEY=VALUE` override to `table`.
pub fn apply(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| invalid(assignment, "--set expects section.key=value"))?;
    let key = key.trim();
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(key, "--set key has an empty component"));
    }
    let (last, path) = parts.split_last().expect("split gives at least one part");
    let mut node = table;
    for p in path {
        let entry = node.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| invalid(key, format!("`{p}` is not a table")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_nested_values_with_types() {
        let mut t: toml::Table = toml::from_str("[optim]\nlr = 1e-6\n").unwrap();
        apply(&mut t, "optim.lr=2e-5").unwrap();
        apply(&mut t, "model.path=/x/y").unwrap();
        apply(&mut t, "trainer.total_steps=7").unwrap();
        assert_eq!(t["optim"]["lr"].as_float(), Some(2e-5));
        assert_eq!(t["model"]["path"].as_str(), Some("/x/y"));
        assert_eq!(t["trainer"]["total_steps"].as_integer(), Some(7));
        assert!(apply(&mut t, "optim.lr").is_err());
        assert!(apply(&mut t, "optim.lr.x=1").unwrap_err().to_string().contains("not a table"));
    }
}
