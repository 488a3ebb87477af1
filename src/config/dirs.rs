//! Directories derived from `REXRAY_HOME`, exactly as the original lays
//! them out.

use std::path::{Path, PathBuf};

/// The directories a process works in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `REXRAY_HOME` (default `/`).
    pub home: PathBuf,
    /// Configuration files.
    pub etc: PathBuf,
    /// State: locks, records, volumes, driver data.
    pub lib: PathBuf,
    /// Log files.
    pub log: PathBuf,
    /// Pid and socket files.
    pub run: PathBuf,
}

impl Dirs {
    /// The layout for a home directory: `/` maps to the system directories
    /// (`/etc/rexray`, `/var/lib/rexray`, ...), anything else `X` to
    /// `X/etc`, `X/var/lib`, `X/var/log`, `X/var/run`.
    pub fn for_home(home: &Path) -> Dirs {
        if home == Path::new("/") {
            Dirs {
                home: home.to_path_buf(),
                etc: "/etc/rexray".into(),
                lib: "/var/lib/rexray".into(),
                log: "/var/log/rexray".into(),
                run: "/var/run/rexray".into(),
            }
        } else {
            Dirs {
                home: home.to_path_buf(),
                etc: home.join("etc"),
                lib: home.join("var/lib"),
                log: home.join("var/log"),
                run: home.join("var/run"),
            }
        }
    }

    /// From the environment: `REXRAY_HOME` (or `LIBSTORAGE_HOME`); a
    /// non-root user with home `/` gets `~/.rexray`; `REXRAY_HOME_ETC`,
    /// `_LIB`, `_LOG`, `_RUN` override one directory when it exists.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Dirs {
        let home = get("REXRAY_HOME")
            .or_else(|| get("LIBSTORAGE_HOME"))
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let home = if home == Path::new("/") && !nix::unistd::geteuid().is_root() {
            match get("HOME") {
                Some(h) if !h.is_empty() => PathBuf::from(h).join(".rexray"),
                _ => home,
            }
        } else {
            home
        };
        let mut dirs = Dirs::for_home(&home);
        let over = |var: &str, slot: &mut PathBuf| {
            if let Some(p) = get(var).filter(|p| !p.is_empty()) {
                let p = PathBuf::from(p);
                if p.is_dir() {
                    *slot = p;
                }
            }
        };
        over("REXRAY_HOME_ETC", &mut dirs.etc);
        over("REXRAY_HOME_LIB", &mut dirs.lib);
        over("REXRAY_HOME_LOG", &mut dirs.log);
        over("REXRAY_HOME_RUN", &mut dirs.run);
        dirs
    }

    /// Replace `{home}`, `{etc}`, `{lib}`, `{log}`, `{run}` in a default
    /// (one pass: every command expands a dozen defaults at start-up).
    pub fn expand(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 32);
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let dir = [
                ("{lib}", &self.lib),
                ("{etc}", &self.etc),
                ("{log}", &self.log),
                ("{run}", &self.run),
                ("{home}", &self.home),
            ]
            .into_iter()
            .find(|(k, _)| tail.starts_with(k));
            match dir {
                Some((k, d)) => {
                    out.push_str(&d.to_string_lossy());
                    rest = &tail[k.len()..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let d = Dirs::for_home(Path::new("/"));
        assert_eq!(d.lib, PathBuf::from("/var/lib/rexray"));
        assert_eq!(d.run, PathBuf::from("/var/run/rexray"));
        let d = Dirs::for_home(Path::new("/x"));
        assert_eq!(d.etc, PathBuf::from("/x/etc"));
        assert_eq!(d.lib, PathBuf::from("/x/var/lib"));
        assert_eq!(d.log, PathBuf::from("/x/var/log"));
        assert_eq!(d.run, PathBuf::from("/x/var/run"));
    }

    #[test]
    fn defaults_expand_every_directory_once_and_leave_other_braces() {
        let d = Dirs::for_home(Path::new("/x"));
        assert_eq!(
            d.expand("{lib}/a:{etc}:{log}:{run}:{home}/b"),
            "/x/var/lib/a:/x/etc:/x/var/log:/x/var/run:/x/b"
        );
        assert_eq!(d.expand("{x}{lib"), "{x}{lib");
        assert_eq!(d.expand("{{run}}"), "{/x/var/run}");
        assert_eq!(d.expand(""), "");
        assert_eq!(d.expand("plain"), "plain");
    }
}
