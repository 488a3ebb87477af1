//! Layered configuration: built-in defaults < config file(s) < environment
//! < command-line flags.
//!
//! Keys are case-insensitive. Every key `K` is also read as `rexray.K` (the
//! original's root scope) and, for the active service `S`, as
//! `libstorage.server.services.S.K`, which wins over the global spelling.
//! Old spellings (e.g. `libstorage.integration.volume.mount.preempt`) are
//! accepted after the canonical `…operations…` one. String values from files
//! expand `$VAR` and `${VAR}` from the environment.

pub mod dirs;
pub mod keys;
pub mod modules;

pub use dirs::Dirs;
pub use keys::{KeyDef, KeyType, KEYS};
pub use modules::{ModuleConfig, DEFAULT_DOCKER};

use crate::input::quote;
use crate::{Error, Result};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built in.
    Default,
    /// A config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file:{}", p.display()),
            Source::Env(v) => write!(f, "env:{v}"),
            Source::Flag(v) => write!(f, "flag:{v}"),
        }
    }
}

impl Source {
    /// `default`, `file`, `env` or `flag`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File(_) => "file",
            Source::Env(_) => "env",
            Source::Flag(_) => "flag",
        }
    }
}

/// One effective setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value as text (validated for its key's type); a default is
    /// borrowed, not copied.
    pub value: Cow<'static, str>,
    /// Where it came from.
    pub source: Source,
}

/// The settings of the registered keys, one slot per key in [`KEYS`]
/// order: a lookup is a position, not a map's search (every command reads
/// a few dozen settings, and makes all of them at start).
#[derive(Debug, Clone)]
struct Values(Vec<Option<Setting>>);

impl Values {
    fn get(&self, key: &str) -> Option<&Setting> {
        self.0.get(keys::index(key)?)?.as_ref()
    }
    fn get_mut(&mut self, key: &str) -> Option<&mut Setting> {
        self.0.get_mut(keys::index(key)?)?.as_mut()
    }
    fn insert(&mut self, key: &str, s: Setting) {
        let i = keys::index(key).unwrap_or_else(|| panic!("unregistered config key {key}"));
        self.0[i] = Some(s);
    }
}

/// A value set on the command line for a key.
#[derive(Debug, Clone)]
pub struct FlagValue {
    /// Canonical key.
    pub key: &'static str,
    /// Value text.
    pub value: String,
    /// The flag as typed, for `rexray env`.
    pub flag: String,
}

/// What to load.
#[derive(Default)]
pub struct LoadOptions {
    /// `-c/--config`: use exactly this file (it must exist).
    pub config_file: Option<PathBuf>,
    /// Values from command-line flags.
    pub flags: Vec<FlagValue>,
    /// The environment; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directories.
    pub dirs: Dirs,
    /// The files that were read, in order.
    pub files: Vec<PathBuf>,
    /// Warnings (unknown keys, ...) for the caller to log.
    pub warnings: Vec<String>,
    values: Values,
    tree: BTreeMap<String, (String, PathBuf)>,
    service: String,
    /// `REXRAY_MODULES_…` variables by normalised name (upper case, `-`
    /// as `_`): a module's own settings, read when the module is.
    module_env: BTreeMap<String, (String, String)>,
    /// `CSI_ENDPOINT`, where a csi module without a host listens.
    csi_endpoint: Option<String>,
}

/// Read a YAML file into lower-cased dotted paths → text values.
fn read_file(path: &Path, tree: &mut BTreeMap<String, (String, PathBuf)>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::from_io(format!("invalid config file {}", path.display()), &e))?;
    // A character device (`/dev/null`) is no file anyone can write
    // settings into.
    let device = std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type());
    if meta.mode() & 0o002 != 0 && !device {
        return Err(Error::invalid(format!(
            "refusing config file {}: it is writable by every user; run `chmod o-w {}`",
            path.display(),
            path.display()
        )));
    }
    // As sshd's StrictModes: a group other than root's may not write it.
    if meta.mode() & 0o020 != 0 && meta.gid() != 0 && !device {
        return Err(Error::invalid(format!(
            "refusing config file {}: it is writable by group {}; run `chmod g-w {}`",
            path.display(),
            meta.gid(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::from_io(format!("reading config file {}", path.display()), &e))?;
    if text.trim().is_empty() {
        return Ok(());
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| {
            Error::invalid(format!(
                "invalid config file {}: {e}; fix the YAML there (`rexray env` then shows every setting read)",
                path.display()
            ))
        })?;
    fn walk(
        v: &serde_yaml_ng::Value,
        prefix: &str,
        file: &Path,
        out: &mut BTreeMap<String, (String, PathBuf)>,
    ) -> Result<()> {
        use serde_yaml_ng::Value as V;
        let leaf = |s: String, out: &mut BTreeMap<String, (String, PathBuf)>| {
            out.insert(prefix.to_string(), (s, file.to_path_buf()));
        };
        match v {
            V::Mapping(m) => {
                for (k, v) in m {
                    let k = match k {
                        V::String(s) => s.clone(),
                        V::Number(n) => n.to_string(),
                        V::Bool(b) => b.to_string(),
                        _ => {
                            return Err(Error::invalid(format!(
                                "invalid config file {}: a key under {} is not a string",
                                file.display(),
                                if prefix.is_empty() {
                                    "the top level"
                                } else {
                                    prefix
                                }
                            )))
                        }
                    };
                    let key = if prefix.is_empty() {
                        k.to_ascii_lowercase()
                    } else {
                        format!("{prefix}.{}", k.to_ascii_lowercase())
                    };
                    walk(v, &key, file, out)?;
                }
            }
            V::String(s) => leaf(expand_env(s), out),
            V::Number(n) => leaf(n.to_string(), out),
            V::Bool(b) => leaf(b.to_string(), out),
            V::Null => leaf(String::new(), out),
            V::Sequence(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        V::String(s) => expand_env(s),
                        V::Number(n) => n.to_string(),
                        V::Bool(b) => b.to_string(),
                        _ => String::new(),
                    })
                    .collect();
                leaf(parts.join(","), out)
            }
            V::Tagged(t) => walk(&t.value, prefix, file, out)?,
        }
        Ok(())
    }
    if !matches!(
        doc,
        serde_yaml_ng::Value::Mapping(_) | serde_yaml_ng::Value::Null
    ) {
        return Err(Error::invalid(format!(
            "invalid config file {}: the top level must be a mapping of keys",
            path.display()
        )));
    }
    walk(&doc, "", path, tree)
}

/// Expand `$VAR` and `${VAR}` from the process environment. Unset variables
/// are left as written, so a literal `$` in a value survives.
pub fn expand_env(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, end) = if b.get(i + 1) == Some(&b'{') {
                match s[i + 2..].find('}') {
                    Some(close) => (&s[i + 2..i + 2 + close], i + 3 + close),
                    None => ("", i + 1),
                }
            } else {
                let len = s[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                (&s[i + 1..i + 1 + len], i + 1 + len)
            };
            if !name.is_empty() {
                if let Ok(v) = std::env::var(name) {
                    out.push_str(&v);
                    i = end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Check a value against its key's type; on success returns the normalised text.
fn validate(def: &KeyDef, value: &str, source: &Source) -> Result<String> {
    validate_as(def.key, def.ty, value, source)
}

/// [`validate`] for the key spelt `key` (a module's own spelling of it).
fn validate_as(key: &str, ty: KeyType, value: &str, source: &Source) -> Result<String> {
    let fail = |why: &str| {
        Err(Error::invalid(format!(
            "invalid value {} for {key} (from {source}): {why}",
            quote(value),
        )))
    };
    let v = value.trim();
    match ty {
        KeyType::Str => Ok(value.to_string()),
        KeyType::Bool => match crate::input::boolean(key, v) {
            Ok(b) => Ok(b.to_string()),
            Err(_) => fail("expected true or false"),
        },
        KeyType::SizeGib => match crate::input::size_gib(key, v) {
            Ok(n) => Ok(n.to_string()),
            Err(_) => fail(&format!(
                "expected a whole number of GiB from 1 to {}",
                crate::input::MAX_SIZE_GIB
            )),
        },
        KeyType::OptUint => {
            if v.is_empty() {
                return Ok(String::new());
            }
            match v.parse::<u64>() {
                Ok(n) => Ok(n.to_string()),
                Err(_) => fail("expected a whole number >= 0"),
            }
        }
        KeyType::Duration => {
            // A bare number is seconds, as the original's Go durations
            // were often written.
            let parsed = match v.parse::<u64>() {
                Ok(n) => Ok(Duration::from_secs(n)),
                Err(_) => humantime::parse_duration(v),
            };
            match parsed {
                Ok(d) if d > Duration::ZERO && d <= Duration::from_secs(86400) => Ok(v.to_string()),
                _ => fail("expected a duration such as 30s, 2m or 500ms (at most 24h)"),
            }
        }
        KeyType::DurationOrZero => {
            let parsed = match v.parse::<u64>() {
                Ok(n) => Ok(Duration::from_secs(n)),
                Err(_) => humantime::parse_duration(v),
            };
            match parsed {
                Ok(d) if d <= Duration::from_secs(86400) => Ok(v.to_string()),
                _ => fail("expected a duration such as 0s, 30s or 2m (at most 24h)"),
            }
        }
        KeyType::Count(max) => match v.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n.to_string()),
            _ => fail(&format!("expected a whole number from 1 to {max}")),
        },
        KeyType::OneOf(words) => {
            let l = v.to_ascii_lowercase();
            if words.contains(&l.as_str()) {
                Ok(l)
            } else {
                fail(&format!("expected one of {}", words.join(", ")))
            }
        }
        KeyType::Path => {
            if v.is_empty() || !v.starts_with('/') {
                fail("expected an absolute path")
            } else if v.contains('\0') {
                fail("a path cannot contain NUL")
            } else {
                Ok(v.to_string())
            }
        }
    }
}

/// The first segments of every key and alias (and `rexray`), upper case
/// with `_` appended: a variable that starts with none of them names no
/// key. Written out, so that no command derives them at start-up.
const ENV_PREFIXES: &[&str] = &[
    "DOCKER_",
    "LIBSTORAGE_",
    "LINUX_",
    "LOOP_",
    "RBD_",
    "REXRAY_",
    "S3FS_",
    "VFS_",
    "VOLUME_",
];

/// Whether an environment variable's name starts with one of
/// [`ENV_PREFIXES`] (ignoring case, `-` for `_`).
fn names_a_key(name: &str) -> bool {
    let k = name.as_bytes();
    ENV_PREFIXES.iter().any(|f| {
        k.len() >= f.len()
            && k.iter()
                .zip(f.bytes())
                .all(|(&c, f)| c.to_ascii_uppercase() == f || (c == b'-' && f == b'_'))
    })
}

/// Whether the configuration reads an environment variable.
fn env_relevant(name: &str) -> bool {
    names_a_key(name) || name == "HOME" || name == modules::CSI_ENDPOINT_VAR
}

impl Config {
    /// Load the configuration.
    pub fn load(opts: LoadOptions) -> Result<Config> {
        // Only the variables that can matter are copied: those that can
        // name a key (which covers the directory variables), HOME and
        // CSI_ENDPOINT; a name that is not UTF-8 names none of them.
        let env: Vec<(String, String)> = match opts.env {
            Some(e) => e.into_iter().filter(|(k, _)| env_relevant(k)).collect(),
            None => {
                let mut out = Vec::new();
                for (k, v) in std::env::vars_os() {
                    let Some(k) = k.to_str().filter(|k| env_relevant(k)) else {
                        continue;
                    };
                    let v = v.into_string().map_err(|_| {
                        Error::invalid(format!(
                            "environment variable {k} is not valid UTF-8; set it to a UTF-8 value or unset it"
                        ))
                    })?;
                    out.push((k.to_string(), v));
                }
                out
            }
        };
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let dirs = Dirs::from_env(&get);

        // Files: -c replaces the search; otherwise <etc>/rexray.yml, else
        // <etc>/config.yml, then the same name under ~/.rexray on top.
        let mut files = Vec::new();
        if let Some(f) = &opts.config_file {
            // A regular file, or what a shell hands over (`-c <(…)`, a
            // pipe; `-c /dev/null`, no settings).
            match std::fs::metadata(f) {
                Ok(m) if m.is_dir() => {
                    return Err(Error::invalid(format!(
                        "invalid config file {}: it is a directory",
                        f.display()
                    )))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::invalid(format!(
                        "invalid config file {}: no such file",
                        f.display()
                    )))
                }
                Err(e) => {
                    return Err(Error::from_io(
                        format!("invalid config file {}", f.display()),
                        &e,
                    ))
                }
            }
            files.push(f.clone());
        } else {
            let user = get("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".rexray"));
            for name in ["rexray.yml", "config.yml"] {
                let global = dirs.etc.join(name);
                let user_file = user.as_ref().map(|u| u.join(name));
                let mut found = false;
                if global.is_file() {
                    files.push(global);
                    found = true;
                }
                if let Some(u) = user_file.filter(|u| u.is_file() && !files.contains(u)) {
                    files.push(u);
                    found = true;
                }
                if found {
                    break;
                }
            }
        }
        let mut tree = BTreeMap::new();
        for f in &files {
            read_file(f, &mut tree)?;
        }

        // The env lookup table: upper case with '-' folded to '_'.
        // Only variables that can name a key: their first segment is one
        // some key starts with (REXRAY_, LIBSTORAGE_, LOOP_, ...; the
        // test `env_prefixes_are_the_keys_first_segments` derives them
        // from the keys). The directory variables are not keys.
        let env_norm: HashMap<String, (&String, &String)> = env
            .iter()
            .filter(|(k, _)| names_a_key(k))
            .map(|(k, v)| (k.to_ascii_uppercase().replace('-', "_"), (k, v)))
            .filter(|(n, _)| !n.starts_with("REXRAY_HOME") && n != "LIBSTORAGE_HOME")
            .collect();

        let module_env = env_norm
            .iter()
            .filter(|(n, _)| n.starts_with("REXRAY_MODULES_"))
            .map(|(n, (k, v))| (n.clone(), ((*k).clone(), (*v).clone())))
            .collect();
        let csi_endpoint = get(modules::CSI_ENDPOINT_VAR).filter(|v| !v.trim().is_empty());
        let mut cfg = Config {
            dirs,
            files,
            warnings: Vec::new(),
            values: Values(vec![None; KEYS.len()]),
            tree,
            service: String::new(),
            module_env,
            csi_endpoint,
        };

        // The service first: it scopes every other lookup.
        let service_def = keys::find(keys::SERVICE).expect("service key registered");
        let svc = cfg.resolve(service_def, None, &opts.flags, &env_norm)?;
        let service = svc.value.split(',').next().unwrap_or("").trim().to_string();
        if service.is_empty() {
            return Err(Error::invalid(
                "no storage service configured: set libstorage.service (e.g. loop)",
            ));
        }
        cfg.values.insert(
            service_def.key,
            Setting {
                value: service.clone().into(),
                source: svc.source,
            },
        );
        cfg.service = service;
        let svc = cfg.service.clone();
        for (i, def) in KEYS.iter().enumerate() {
            if def.key == keys::SERVICE {
                continue;
            }
            let s = cfg.resolve(def, Some(&svc), &opts.flags, &env_norm)?;
            cfg.values.0[i] = Some(s);
        }
        cfg.warnings = cfg.unknown_keys();
        Ok(cfg)
    }

    /// The spellings a key is looked up by, most specific first.
    fn candidates(def: &KeyDef, service: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |k: &str| {
            let k = k.to_ascii_lowercase();
            if !out.contains(&k) {
                out.push(k);
            }
        };
        for name in std::iter::once(&def.key).chain(def.aliases.iter()) {
            if let Some(s) = service {
                let bare = name.strip_prefix("rexray.").unwrap_or(name);
                add(&format!("libstorage.server.services.{s}.{bare}"));
            }
            if !name.starts_with("rexray.") {
                add(&format!("rexray.{name}"));
            }
            add(name);
            if let Some(bare) = name.strip_prefix("rexray.") {
                add(bare);
            }
        }
        out
    }

    fn resolve(
        &self,
        def: &'static KeyDef,
        service: Option<&str>,
        flags: &[FlagValue],
        env: &HashMap<String, (&String, &String)>,
    ) -> Result<Setting> {
        // Most processes (kubelet passes no environment; most hosts have no
        // file) need no candidate spellings at all.
        let cands = if env.is_empty() && self.tree.is_empty() {
            Vec::new()
        } else {
            Self::candidates(def, service)
        };
        let found = if let Some(f) = flags.iter().rev().find(|f| f.key == def.key) {
            Some((f.value.clone(), Source::Flag(f.flag.clone())))
        } else if let Some((name, value)) = cands
            .iter()
            .filter(|c| !c.starts_with("libstorage.server.services."))
            .find_map(|c| env.get(&keys::env_name(c)))
        {
            Some(((*value).clone(), Source::Env((*name).clone())))
        } else {
            cands.iter().find_map(|c| {
                self.tree
                    .get(c)
                    .map(|(v, file)| (v.clone(), Source::File(file.clone())))
            })
        };
        let (value, source) = match found {
            Some(f) => f,
            None if def.default.contains('{') => (self.dirs.expand(def.default), Source::Default),
            // A default is valid and in its canonical form already (the
            // test `defaults_are_valid_as_they_are` checks every one).
            None => {
                return Ok(Setting {
                    value: Cow::Borrowed(def.default),
                    source: Source::Default,
                })
            }
        };
        let value = validate(def, &value, &source)?;
        Ok(Setting {
            value: value.into(),
            source,
        })
    }

    /// File keys that no registered key or known section accounts for.
    fn unknown_keys(&self) -> Vec<String> {
        if self.tree.is_empty() {
            return Vec::new();
        }
        let mut known: Vec<String> = Vec::new();
        for def in KEYS {
            known.extend(Self::candidates(def, None));
        }
        let module_known = modules::module_settings();
        let mut out = Vec::new();
        for (k, (_, file)) in &self.tree {
            let scoped = k
                .strip_prefix("libstorage.server.services.")
                .and_then(|rest| rest.split_once('.'))
                .map(|(_, rest)| rest);
            // rexray.modules.<name>.<setting>
            let module = k
                .strip_prefix("rexray.modules.")
                .and_then(|rest| rest.split_once('.'));
            let ok = known.iter().any(|c| c == k)
                || matches!(scoped, Some("driver"))
                || scoped.is_some_and(|r| r.starts_with("auth."))
                || scoped.is_some_and(|r| known.iter().any(|c| c == r))
                || k.starts_with("libstorage.server.endpoints.")
                || module.is_some_and(|(_, r)| module_known.iter().any(|c| c == r))
                || k.starts_with("libstorage.host")
                || k.starts_with("libstorage.embedded");
            if !ok {
                let near = match module {
                    Some((name, rest)) => {
                        closest(rest, &module_known).map(|c| format!("rexray.modules.{name}.{c}"))
                    }
                    None => closest(k, &known).map(str::to_string),
                };
                let hint = near
                    .map(|c| format!("did you mean {c}? "))
                    .unwrap_or_default();
                out.push(format!(
                    "unknown config key {k} in {} (ignored; {hint}`rexray env` lists the known keys)",
                    file.display()
                ));
            }
        }
        out
    }

    /// The effective setting of a registered key.
    pub fn setting(&self, key: &str) -> &Setting {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("unregistered config key {key}"))
    }
    /// A string value.
    pub fn string(&self, key: &str) -> &str {
        &self.setting(key).value
    }
    /// A boolean value.
    pub fn boolean(&self, key: &str) -> bool {
        self.string(key) == "true"
    }
    /// A number value (0 when unset).
    pub fn number(&self, key: &str) -> u64 {
        self.string(key).parse().unwrap_or(0)
    }
    /// A duration value.
    pub fn duration(&self, key: &str) -> Duration {
        let v = self.string(key);
        v.parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(v))
            .unwrap_or(Duration::from_secs(30))
    }
    /// A path value.
    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.string(key))
    }
    /// The active service name.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The driver of the active service: `libstorage.server.services.S.driver`
    /// if declared, else the service name itself.
    pub fn driver_name(&self) -> String {
        self.service_driver(&self.service)
            .unwrap_or_else(|| self.service.to_ascii_lowercase())
    }
    /// The driver declared for a named service, if any.
    pub fn service_driver(&self, service: &str) -> Option<String> {
        let k = format!(
            "libstorage.server.services.{}.driver",
            service.to_ascii_lowercase()
        );
        self.tree.get(&k).map(|(v, _)| v.to_ascii_lowercase())
    }
    /// Whether the config files declare a service of this name under
    /// `libstorage.server.services.<name>` (with or without a `driver`).
    pub fn declares_service(&self, service: &str) -> bool {
        let prefix = format!(
            "libstorage.server.services.{}.",
            service.to_ascii_lowercase()
        );
        self.tree.keys().any(|k| k.starts_with(&prefix))
    }
    /// The libStorage server's endpoints, `libstorage.server.endpoints.<name>.address`,
    /// as (name, address) sorted by name.
    pub fn server_endpoints(&self) -> Vec<(String, String)> {
        self.tree
            .iter()
            .filter_map(|(k, (v, _))| {
                let name = k
                    .strip_prefix("libstorage.server.endpoints.")?
                    .strip_suffix(".address")?;
                (!name.contains('.')).then(|| (name.to_string(), v.trim().to_string()))
            })
            .collect()
    }
    /// The services declared under `libstorage.server.services.<name>`,
    /// sorted (names are lower case, as every key).
    pub fn server_services(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .tree
            .keys()
            .filter_map(|k| {
                let rest = k.strip_prefix("libstorage.server.services.")?;
                Some(rest.split_once('.')?.0.to_string())
            })
            .collect();
        out.dedup();
        out
    }
    /// The same configuration for another service: every key set in a
    /// file or left at its default is looked up again with `service`'s
    /// section (`libstorage.server.services.<service>.…`) first; keys set
    /// by a flag or the environment keep their value, as they win over
    /// every file spelling anyway.
    pub fn for_service(&self, service: &str) -> Result<Config> {
        let mut cfg = self.clone();
        cfg.service = service.to_ascii_lowercase();
        let svc = cfg.service.clone();
        let none = HashMap::new();
        for def in KEYS {
            if def.key == keys::SERVICE {
                if let Some(s) = cfg.values.get_mut(def.key) {
                    s.value = svc.clone().into();
                }
                continue;
            }
            if matches!(
                self.values.get(def.key).map(|s| &s.source),
                Some(Source::Default | Source::File(_))
            ) {
                let s = cfg.resolve(def, Some(&svc), &[], &none)?;
                cfg.values.insert(def.key, s);
            }
        }
        Ok(cfg)
    }
    /// A value as the config files set it (lower-case dotted key), for
    /// sections no registered key covers (a service's own `auth`).
    pub fn file_value(&self, key: &str) -> Option<&str> {
        self.tree
            .get(&key.to_ascii_lowercase())
            .map(|(v, _)| v.as_str())
    }
    /// Every effective setting, sorted by key.
    pub fn settings(&self) -> impl Iterator<Item = (&'static str, &Setting)> {
        let mut out: Vec<(&'static str, &Setting)> = KEYS
            .iter()
            .zip(&self.values.0)
            .filter_map(|(d, s)| Some((d.key, s.as_ref()?)))
            .collect();
        out.sort_by_key(|(k, _)| *k);
        out.into_iter()
    }
}

/// The known key nearest to a misspelt one (edit distance ≤ 3).
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Match a `--camelCaseKey[=value]` argument against the registered keys
/// (case-insensitive), as the original accepted a flag for every key.
pub fn key_for_flag(flag: &str) -> Option<&'static KeyDef> {
    let f = flag.trim_start_matches('-');
    // A key's flag (keys::flag_name) is the key without its dots and
    // dashes, with only the case of ASCII letters changed: ignoring that
    // case, it is compared here in place (every `--x` of every command
    // tried each key, building its flag name on the way).
    KEYS.iter().find(|k| {
        let key = k.key.chars().filter(|c| *c != '.' && *c != '-');
        key.map(Some)
            .chain(std::iter::once(None))
            .zip(f.chars().map(Some).chain(std::iter::once(None)))
            .all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(&b),
                (a, b) => a.is_none() && b.is_none(),
            })
    })
}

#[cfg(test)]
mod tests;
