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
    let fail = |why: &str| {
        Err(Error::invalid(format!(
            "invalid volume name {}: {why} (names match [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {MAX_NAME_LEN} characters)",
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
