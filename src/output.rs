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
/// Rows are any slices of strings (a table of 100,000 volumes is built
/// from borrowed cells, written once).
pub fn table<R, S>(header: Option<&[&str]>, rows: &[R]) -> String
where
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    let cols = header
        .map(|h| h.len())
        .unwrap_or_else(|| rows.first().map(|r| r.as_ref().len()).unwrap_or(0));
    let mut width = vec![0usize; cols];
    if let Some(h) = header {
        widen(&mut width, h);
    }
    for r in rows {
        widen(&mut width, r.as_ref());
    }
    let lines = rows.len() + usize::from(header.is_some());
    let mut out = String::with_capacity(lines * (width.iter().sum::<usize>() + 2 * cols + 1));
    if let Some(h) = header {
        line(&mut out, &width, h);
    }
    for r in rows {
        line(&mut out, &width, r.as_ref());
    }
    out
}

/// Widen each column to its cell in `cells`.
fn widen<S: AsRef<str>>(width: &mut [usize], cells: &[S]) {
    for (w, c) in width.iter_mut().zip(cells) {
        *w = (*w).max(c.as_ref().chars().count());
    }
}

/// One line of a table: each cell but the last padded to its column's
/// width and two spaces, no trailing space.
fn line<S: AsRef<str>>(out: &mut String, width: &[usize], cells: &[S]) {
    let start = out.len();
    for (i, (w, c)) in width.iter().zip(cells).enumerate() {
        let c = c.as_ref();
        out.push_str(c);
        if i + 1 < width.len() {
            out.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
        }
    }
    let kept = out[start..].trim_end().len();
    out.truncate(start + kept);
    out.push('\n');
}

/// Numbers as text, all in one string (not one allocation each).
struct Numbers {
    text: String,
    ends: Vec<usize>,
}

impl Numbers {
    fn of(numbers: impl ExactSizeIterator<Item = u64>) -> Numbers {
        use std::fmt::Write;
        let mut n = Numbers {
            text: String::with_capacity(numbers.len() * 4),
            ends: Vec::with_capacity(numbers.len()),
        };
        for x in numbers {
            let _ = write!(n.text, "{x}");
            n.ends.push(n.text.len());
        }
        n
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.text[a..b])
    }
}

/// The volume table: `ID  Name  Status  Size`, sorted by name.
pub fn volumes(vols: &[Volume], format: Format, quiet: bool) -> String {
    if format != Format::Table {
        return structured(vols, format);
    }
    let mut v: Vec<&Volume> = vols.iter().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    let sizes = Numbers::of(v.iter().map(|v| v.size));
    let rows: Vec<[&str; 4]> = v
        .iter()
        .zip(sizes.iter())
        .map(|(v, size)| [&v.id, &v.name, v.state().as_str(), size])
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
    let sizes = Numbers::of(v.iter().map(|p| p.volume.size));
    let rows: Vec<[&str; 5]> = v
        .iter()
        .zip(sizes.iter())
        .map(|(p, size)| {
            [
                &p.volume.id,
                &p.volume.name,
                p.volume.state().as_str(),
                size,
                &p.path,
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
        let rows: Vec<Vec<String>> = vec![
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

    /// The table as it was first written (clone every cell, pad with
    /// repeated strings, trim each line), for comparison.
    fn table_as_before(header: Option<&[&str]>, rows: &[Vec<String>]) -> String {
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
                line.push_str(c);
                if i + 1 != cols {
                    line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Byte for byte what it was: wide characters, empty and trailing
    /// blank cells, short and long rows, with and without a header.
    #[test]
    fn the_same_table_as_before() {
        let cells = [
            "",
            "a",
            "vol01",
            "Zürich",
            "日本",
            "x ",
            " y",
            "available",
            "12345678",
        ];
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as usize
        };
        for case in 0..200 {
            let n = next() % 6;
            let rows: Vec<Vec<String>> = (0..n)
                .map(|_| {
                    let len = 2 + next() % 4;
                    (0..len)
                        .map(|_| cells[next() % cells.len()].to_string())
                        .collect()
                })
                .collect();
            let header: Option<&[&str]> =
                (case % 2 == 0).then_some(&["ID", "Name", "Status", "Size"]);
            assert_eq!(
                table(header, &rows),
                table_as_before(header, &rows),
                "{rows:?}"
            );
        }
    }
}
