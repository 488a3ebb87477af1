//! Parsers for values that come from outside: volume names, sizes, booleans,
//! consumer ids. Every error names the field and the bad value.

use crate::{Error, Result};

/// Longest volume name accepted (Docker's limit for names is the same).
pub const MAX_NAME_LEN: usize = 255;
/// Largest volume accepted, in GiB (64 TiB: above ext4's and most
/// filesystems' limit for one sparse file).
pub const MAX_SIZE_GIB: u64 = 64 * 1024;

/// Check a volume name: Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// 255 characters. This also keeps names safe as path components: no `/`,
/// no `..` on its own, no NUL.
pub fn volume_name(name: &str) -> Result<&str> {
    name_of("volume", name)
}

/// Check the name of a `what` (a volume, a snapshot) by the rule of
/// [`volume_name`]; the error says "invalid `what` name".
pub fn name_of<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    let fail = |why: &str| {
        Err(Error::invalid(format!(
            "invalid {what} name {}: {why} (names match [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {MAX_NAME_LEN} characters)",
            quote(name)
        )))
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail(&format!("it has {} characters", name.len()));
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or(' ');
    if !first.is_ascii_alphanumeric() {
        return fail(&format!("it starts with {}", quote(&first.to_string())));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return fail(&format!("it contains {}", quote(&bad.to_string())));
    }
    Ok(name)
}

/// Check a volume id as given by a caller (ids are names' alphabet too).
pub fn volume_id(id: &str) -> Result<&str> {
    volume_name(id).map_err(|_| {
        Error::invalid(format!(
            "invalid volume id {}: ids use [a-zA-Z0-9_.-]",
            quote(id)
        ))
    })
}

/// Check a snapshot id as given by a caller: a name, or
/// `<volume id>@<snapshot name>` as the rbd driver makes them
/// (`<pool>.<image>@<snap>`), each side in the names' alphabet.
pub fn snapshot_id(id: &str) -> Result<&str> {
    let ok = match id.split_once('@') {
        Some((vol, snap)) => volume_name(vol).is_ok() && volume_name(snap).is_ok(),
        None => volume_name(id).is_ok(),
    };
    if ok {
        Ok(id)
    } else {
        Err(Error::invalid(format!(
            "invalid snapshot id {}: ids use [a-zA-Z0-9_.-], and at most one @ between a volume id and a snapshot name",
            quote(id)
        )))
    }
}

/// The bytes of a size of `gib` GiB, refused past [`MAX_SIZE_GIB`]: what
/// a driver checks whatever front-end or request the size came from (a
/// multiplication that wrapped would make an image of 0 bytes and record
/// an absurd size).
pub fn gib_bytes(gib: u64) -> Result<u64> {
    if gib > MAX_SIZE_GIB {
        return Err(Error::invalid(format!(
            "invalid size {gib} GiB: the largest size is {MAX_SIZE_GIB} GiB"
        )));
    }
    Ok(gib << 30)
}

/// Parse a size in GiB: a positive whole number up to [`MAX_SIZE_GIB`].
/// `field` names the option or key in the error.
pub fn size_gib(field: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    let n: u64 = v.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {field} {}: a size is a whole number of GiB, e.g. 16",
            quote(value)
        ))
    })?;
    if n == 0 {
        return Err(Error::invalid(format!(
            "invalid {field} {}: a size must be at least 1 GiB",
            quote(value)
        )));
    }
    if n > MAX_SIZE_GIB {
        return Err(Error::invalid(format!(
            "invalid {field} {}: the largest size is {MAX_SIZE_GIB} GiB",
            quote(value)
        )));
    }
    Ok(n)
}

/// Parse IOPS: a whole number >= 0.
pub fn iops(field: &str, value: &str) -> Result<i64> {
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(Error::invalid(format!(
            "invalid {field} {}: IOPS is a whole number >= 0",
            quote(value)
        ))),
    }
}

/// Parse a boolean the way operators write them.
pub fn boolean(field: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "n" | "" => Ok(false),
        _ => Err(Error::invalid(format!(
            "invalid {field} {}: expected true or false",
            quote(value)
        ))),
    }
}

/// Check a consumer id (Docker's mount ID, kubelet's path, ...): printable,
/// no NUL, at most 4096 bytes.
pub fn consumer(id: &str) -> Result<&str> {
    if id.is_empty() || id.len() > 4096 || id.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "invalid consumer id {}: it must be 1 to 4096 printable characters",
            quote(id)
        )));
    }
    Ok(id)
}

/// Parse JSON text like `serde_json::from_slice::<Value>`, but refuse an
/// object that gives a key twice (serde_json keeps the last silently):
/// which of two values the caller meant is a guess. With `fold_case`,
/// keys that differ only in case count as the same key (for callers that
/// match keys case-insensitively, as Go decodes Docker's requests).
pub fn json_without_repeated_keys(
    text: &[u8],
    fold_case: bool,
) -> std::result::Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(text);
    let v = NoRepeats { fold_case }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

#[derive(Clone, Copy)]
struct NoRepeats {
    fold_case: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for NoRepeats {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoRepeats {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(out.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        // Each key as compared (folded when keys are case-insensitive) →
        // as given: one lookup per key, so a body of many keys costs
        // linear time, not quadratic.
        let mut seen = std::collections::HashMap::<String, String>::new();
        while let Some(k) = map.next_key::<String>()? {
            let compared = if self.fold_case {
                k.to_ascii_lowercase()
            } else {
                k.clone()
            };
            if let Some(before) = seen.get(&compared) {
                let how = if *before == k {
                    String::new()
                } else {
                    format!(" (as {} too; keys are case-insensitive)", quote(before))
                };
                return Err(serde::de::Error::custom(format!(
                    "the key {} is given twice{how}: give each key once",
                    quote(&k)
                )));
            }
            let v = map.next_value_seed(self)?;
            seen.insert(compared, k.clone());
            out.insert(k, v);
        }
        Ok(out.into())
    }
}

/// Quote a user-supplied value for an error message: JSON-style escaping so
/// control characters and NUL stay visible and harmless; long values are cut.
pub fn quote(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    let mut q = serde_json::to_string(&cut).unwrap_or_else(|_| "\"?\"".into());
    if cut.len() < s.len() {
        q.insert_str(q.len() - 1, "...");
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_past_the_largest_have_no_bytes() {
        assert_eq!(gib_bytes(1).unwrap(), 1 << 30);
        assert_eq!(gib_bytes(MAX_SIZE_GIB).unwrap(), MAX_SIZE_GIB << 30);
        for n in [MAX_SIZE_GIB + 1, 1 << 34, u64::MAX] {
            let e = gib_bytes(n).unwrap_err();
            assert!(e.to_string().contains("largest size"), "{e}");
        }
    }

    #[test]
    fn a_snapshot_name_is_called_one() {
        let e = name_of("snapshot", "a/b").unwrap_err();
        assert!(
            e.message()
                .starts_with("invalid snapshot name \"a/b\": it contains \"/\""),
            "{e}"
        );
        assert_eq!(name_of("snapshot", "s1").unwrap(), "s1");
    }

    #[test]
    fn snapshot_ids_may_name_their_volume() {
        for ok in ["snap1", "rbd.vol1@s1", "rxt-1-2.v@snap.0"] {
            assert_eq!(snapshot_id(ok).unwrap(), ok);
        }
        for bad in ["a@b@c", "@s", "v@", "a/b@s", "v@s p", ""] {
            let e = snapshot_id(bad).unwrap_err();
            assert!(e.message().contains("invalid snapshot id"), "{bad}: {e}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "vol-1", "A.b_c-d", "0", "a..b"] {
            assert!(volume_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(300);
        for bad in [
            "", ".", "..", "../x", "a/b", "-a", "_a", "a b", "a\0b", &long,
        ] {
            let e = volume_name(bad).unwrap_err();
            assert!(e.to_string().contains("invalid volume name"), "{bad}: {e}");
        }
        assert!(volume_name(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(size_gib("--size", "16").unwrap(), 16);
        for bad in ["abc", "0", "-1", "99999999999", "1.5", ""] {
            let e = size_gib("--size", bad).unwrap_err();
            assert!(e.to_string().contains("--size"), "{e}");
        }
    }

    #[test]
    fn booleans() {
        assert!(boolean("x", "TRUE").unwrap());
        assert!(!boolean("x", "false").unwrap());
        assert!(boolean("x", "maybe").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn any_accepted_name_is_a_safe_path_component(s in "\\PC{0,300}") {
            if let Ok(n) = volume_name(&s) {
                prop_assert!(!n.contains('/') && n != "." && n != ".." && !n.contains('\0'));
                prop_assert!(n.len() <= MAX_NAME_LEN);
            }
        }

        #[test]
        fn size_parser_never_panics(s in "\\PC{0,40}") {
            match size_gib("size", &s) {
                Ok(n) => prop_assert!((1..=MAX_SIZE_GIB).contains(&n)),
                Err(e) => prop_assert!(e.to_string().contains("size")),
            }
        }
    }
}

#[cfg(test)]
mod repeated_key_tests {
    use super::*;

    #[test]
    fn a_body_of_many_keys_is_checked_in_one_pass() {
        // A megabyte of distinct keys (the Docker endpoint's body limit):
        // each key looked up once, not compared with every earlier one
        // (which took minutes of a worker thread), and a repeat at the
        // very end still found.
        let keys: Vec<String> = (0..120_000).map(|i| format!("\"k{i:06}\":0")).collect();
        let body = format!("{{{}}}", keys.join(","));
        let v = json_without_repeated_keys(body.as_bytes(), true).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 120_000);
        let body = format!("{{{},\"K000007\":1}}", keys.join(","));
        let e = json_without_repeated_keys(body.as_bytes(), true).unwrap_err();
        assert!(e.to_string().contains("\"K000007\" is given twice"), "{e}");
    }

    #[test]
    fn repeated_keys_are_refused_by_name() {
        let parse = |t: &str, fold| json_without_repeated_keys(t.as_bytes(), fold);
        let e = parse(r#"{"Name":"a","Name":"b"}"#, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Name\" is given twice"), "{e}");
        let e = parse(r#"{"Opts":{"size":"1","size":"2"}}"#, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"size\" is given twice"), "{e}");
        let e = parse(r#"{"Opts":{"size":"1","Size":"2"}}"#, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Size\"") && e.contains("\"size\""), "{e}");
        assert!(parse(r#"{"size":"1","Size":"2"}"#, false).is_ok());
        assert!(parse(r#"[{"a":1},{"a":2}]"#, false).is_ok());
        let v = parse(r#"{"a":[1,-2,2.5,"x",null,true,{"b":{}}]}"#, true).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":[1,-2,2.5,"x",null,true,{"b":{}}]})
        );
        assert!(parse(r#"{"a":1} x"#, false).is_err());
        assert!(parse(r#"{"a":"#, false).is_err());
    }
}
