//! Rendering answers for people (aligned tables) and scripts (JSON, YAML).

use crate::model::{Volume, VolumeWithPath};
use crate::{Error, Result};
use serde::Serialize;

/// Output formats of the `rexray` CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns with a header (the original's `tmpl`).
    Table,
    /// Compact JSON.
    Json,
    /// Indented JSON.
    JsonPretty,
    /// YAML.
    Yaml,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "tmpl" | "table" | "" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "jsonp" => Ok(Format::JsonPretty),
            "yaml" | "yml" => Ok(Format::Yaml),
            _ => Err(Error::invalid(format!(
                "invalid format {}: use tmpl, json, jsonp or yaml",
                crate::input::quote(s)
            ))),
        }
    }
}

/// Render any serialisable value as JSON or YAML.
pub fn structured<T: Serialize + ?Sized>(value: &T, format: Format) -> String {
    match format {
        Format::Json | Format::Table => serde_json::to_string(value).expect("serialises") + "\n",
        Format::JsonPretty => serde_json::to_string_pretty(value).expect("serialises") + "\n",
        Format::Yaml => serde_yaml_ng::to_string(value).expect("serialises"),
    }
}

/// Aligned columns: two spaces between columns, no trailing spaces.
pub fn table(header: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let cols = header
        .map(|h| h.len())
        .unwrap_or_else(|| rows.first().map(Vec::len).unwrap_or(0));
    let mut width = vec![0usize; cols];
    let all = header
        .map(|h| h.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .into_iter()
        .chain(rows.iter().cloned());
    let all: Vec<Vec<String>> = all.collect();
    for r in &all {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &all {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate().take(cols) {
            if i + 1 == cols {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The volume table: `ID  Name  Status  Size`, sorted by name.
pub fn volumes(vols: &[Volume], format: Format, quiet: bool) -> String {
    if format != Format::Table {
        return structured(vols, format);
    }
    let mut v: Vec<&Volume> = vols.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.name.clone(),
                v.state().as_str().to_string(),
                v.size.to_string(),
            ]
        })
        .collect();
    let header: &[&str] = &["ID", "Name", "Status", "Size"];
    table((!quiet).then_some(header), &rows)
}

/// The volume table with a `Path` column.
pub fn volumes_with_path(vols: &[VolumeWithPath], format: Format, quiet: bool) -> String {
    if format != Format::Table {
        return structured(vols, format);
    }
    let mut v: Vec<&VolumeWithPath> = vols.iter().collect();
    v.sort_by(|a, b| a.volume.name.cmp(&b.volume.name));
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|p| {
            vec![
                p.volume.id.clone(),
                p.volume.name.clone(),
                p.volume.state().as_str().to_string(),
                p.volume.size.to_string(),
                p.path.clone(),
            ]
        })
        .collect();
    let header: &[&str] = &["ID", "Name", "Status", "Size", "Path"];
    table((!quiet).then_some(header), &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_like_the_original() {
        let rows = vec![
            vec![
                "925def7200000006".into(),
                "vol01".into(),
                "available".into(),
                "32".into(),
            ],
            vec!["1".into(), "v".into(), "attached".into(), "1".into()],
        ];
        let t = table(Some(&["ID", "Name", "Status", "Size"]), &rows);
        assert_eq!(
            t,
            "ID                Name   Status     Size\n\
             925def7200000006  vol01  available  32\n\
             1                 v      attached   1\n"
        );
    }
}
