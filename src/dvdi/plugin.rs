//! A Docker volume plugin (v1 protocol) as the original dvdcli reached it,
//! for every driver name that is not rexray's own: discovery by name with
//! the original's retry, `Plugin.Activate`, then `VolumeDriver.*` calls.
//!
//! Discovery, first hit wins (Docker 1.11's order):
//! `<socket dir>/<n>.sock`, `<socket dir>/<n>/<n>.sock` (must be sockets),
//! then in each spec dir `<n>.spec`, `<n>/<n>.spec`, `<n>.json`,
//! `<n>/<n>.json`. The directories and the retry budget can be moved with
//! environment variables (see [`Discovery::from_env`]).

use super::http::{self, Addr, Failure};
use crate::input::quote;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Socket directories searched, overridable (colon-separated) by this
/// variable.
pub const ENV_SOCKET_DIRS: &str = "DVDCLI_PLUGIN_SOCKET_DIRS";
/// Spec directories searched, overridable (colon-separated) by this
/// variable.
pub const ENV_SPEC_DIRS: &str = "DVDCLI_PLUGIN_SPEC_DIRS";
/// How long to keep looking for (and connecting to) a plugin: seconds or
/// a duration such as `500ms`; `0` tries once.
pub const ENV_LOOKUP_TIMEOUT: &str = "DVDCLI_LOOKUP_TIMEOUT";

/// The original's budget (Docker's `defaultTimeOut`).
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_SOCKET_DIRS: &[&str] = &["/run/docker/plugins"];
const DEFAULT_SPEC_DIRS: &[&str] = &["/etc/docker/plugins", "/usr/lib/docker/plugins"];
/// Create and Mount may format and attach: Docker 17+ allows them 2 min.
const SLOW_CALL: Duration = Duration::from_secs(120);
/// Everything else: 1 min, as Docker 17+.
const FAST_CALL: Duration = Duration::from_secs(60);

/// Where and how long to look for plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Directories holding `<n>.sock` / `<n>/<n>.sock`.
    pub socket_dirs: Vec<PathBuf>,
    /// Directories holding `.spec` / `.json` files.
    pub spec_dirs: Vec<PathBuf>,
    /// Retry budget for lookup and for connection failures.
    pub timeout: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            socket_dirs: DEFAULT_SOCKET_DIRS.iter().map(PathBuf::from).collect(),
            spec_dirs: DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect(),
            timeout: DEFAULT_LOOKUP_TIMEOUT,
        }
    }
}

fn dirs_from(var: &str, v: &str) -> Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = v
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
        return Err(Error::invalid(format!(
            "invalid {var}: {} is not an absolute path",
            quote(&d.to_string_lossy())
        )));
    }
    Ok(dirs)
}

/// Parse a lookup timeout: whole seconds or a duration like `500ms`.
pub fn parse_timeout(var: &str, v: &str) -> Result<Duration> {
    let v = v.trim();
    v.parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(v))
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .ok_or_else(|| {
            Error::invalid(format!(
                "invalid {var} {}: expected seconds or a duration such as 500ms (at most 1h)",
                quote(v)
            ))
        })
}

impl Discovery {
    /// The defaults, moved by `DVDCLI_PLUGIN_SOCKET_DIRS`,
    /// `DVDCLI_PLUGIN_SPEC_DIRS` and `DVDCLI_LOOKUP_TIMEOUT` when set.
    pub fn from_env() -> Result<Discovery> {
        let mut d = Discovery::default();
        if let Ok(v) = std::env::var(ENV_SOCKET_DIRS) {
            d.socket_dirs = dirs_from(ENV_SOCKET_DIRS, &v)?;
        }
        if let Ok(v) = std::env::var(ENV_SPEC_DIRS) {
            d.spec_dirs = dirs_from(ENV_SPEC_DIRS, &v)?;
        }
        if let Ok(v) = std::env::var(ENV_LOOKUP_TIMEOUT) {
            d.timeout = parse_timeout(ENV_LOOKUP_TIMEOUT, &v)?;
        }
        Ok(d)
    }

    /// Every path looked at for `name`, in order.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in &self.socket_dirs {
            out.push(d.join(format!("{name}.sock")));
            out.push(d.join(name).join(format!("{name}.sock")));
        }
        for d in &self.spec_dirs {
            for ext in ["spec", "json"] {
                out.push(d.join(format!("{name}.{ext}")));
                out.push(d.join(name).join(format!("{name}.{ext}")));
            }
        }
        out
    }

    /// One pass over the candidates.
    pub fn locate(&self, name: &str) -> Result<Option<Addr>> {
        for p in self.candidates(name) {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            match p.extension().and_then(|e| e.to_str()) {
                Some("sock") => {
                    if meta.file_type().is_socket() {
                        return Ok(Some(Addr::Unix(p)));
                    }
                }
                Some("spec") => {
                    let text = std::fs::read_to_string(&p).map_err(|e| {
                        Error::from_io(format!("reading plugin spec {}", p.display()), &e)
                    })?;
                    return parse_url(text.trim(), &p).map(Some);
                }
                _ => {
                    let text = std::fs::read_to_string(&p).map_err(|e| {
                        Error::from_io(format!("reading plugin spec {}", p.display()), &e)
                    })?;
                    let v: Value = serde_json::from_str(&text).map_err(|e| {
                        Error::invalid(format!("invalid plugin spec {}: {e}", p.display()))
                    })?;
                    let addr = v.get("Addr").and_then(Value::as_str).unwrap_or("");
                    return parse_url(addr.trim(), &p).map(Some);
                }
            }
        }
        Ok(None)
    }
}

/// A spec's URL → where to connect.
pub fn parse_url(url: &str, spec: &Path) -> Result<Addr> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "invalid plugin spec {}: {why} (expected unix:///path/to.sock or tcp://host:port)",
            spec.display()
        ))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(&format!("unknown protocol in {}", quote(url))));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => {
            if !rest.starts_with('/') {
                return Err(bad("a unix socket path must be absolute"));
            }
            Ok(Addr::Unix(PathBuf::from(rest)))
        }
        "tcp" | "http" => {
            let hostport = rest.split('/').next().unwrap_or("");
            if hostport.is_empty() || !hostport.contains(':') {
                return Err(bad(&format!("{} has no host:port", quote(url))));
            }
            Ok(Addr::Tcp(hostport.to_string()))
        }
        "https" => Err(Error::unsupported(format!(
            "plugin spec {}: TLS plugin endpoints (https) are not supported by this dvdcli; use a unix socket or plain tcp",
            spec.display()
        ))),
        _ => Err(bad(&format!("unknown protocol {}", quote(scheme)))),
    }
}

/// Docker's backoff: 1, 2, 4, 8 … seconds.
fn backoff(retries: u32) -> Duration {
    Duration::from_secs(1u64 << retries.min(10))
}

/// Run `attempt` until it gives `Some`, sleeping 1, 2, 4 … s between tries
/// while the next sleep still fits in `budget`.
fn with_retry<T>(
    budget: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>>,
    mut on_retry: impl FnMut(Duration),
) -> Result<Option<T>> {
    let start = Instant::now();
    let mut retries = 0;
    loop {
        if let Some(t) = attempt()? {
            return Ok(Some(t));
        }
        let wait = backoff(retries);
        if start.elapsed() + wait >= budget {
            return Ok(None);
        }
        on_retry(wait);
        std::thread::sleep(wait);
        retries += 1;
    }
}

/// An activated volume plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    name: String,
    addr: Addr,
    budget: Duration,
}

/// How a call failed.
enum CallError {
    /// The plugin answered with an error (non-200 or `Err`).
    Plugin(String),
    /// No usable answer at all.
    Transport(Error),
}

impl Plugin {
    /// Find the plugin named `name`, retrying as the original did, and
    /// activate it.
    pub fn lookup(name: &str, d: &Discovery) -> Result<Plugin> {
        let addr = with_retry(
            d.timeout,
            || d.locate(name),
            |wait| {
                tracing::warn!(
                    "Unable to locate plugin: {name}, retrying in {}",
                    humantime::format_duration(wait)
                )
            },
        )?
        .ok_or_else(|| {
            let dirs: Vec<String> = d
                .socket_dirs
                .iter()
                .chain(d.spec_dirs.iter())
                .map(|p| p.display().to_string())
                .collect();
            Error::not_found(format!(
                "volume driver {}: no plugin found in {} within {} (nor is it a rexray service: use --volumedriver=rexray or declare it under libstorage.server.services)",
                quote(name),
                dirs.join(", "),
                humantime::format_duration(d.timeout)
            ))
        })?;
        let p = Plugin {
            name: name.to_string(),
            addr,
            budget: d.timeout,
        };
        p.activate()?;
        Ok(p)
    }

    /// Where the plugin listens.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    fn ctx(&self) -> String {
        format!("volume driver {} ({})", self.name, self.addr)
    }

    /// POST one call; connection failures are retried within the budget.
    fn call(
        &self,
        method: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let bytes = match &body {
            Some(v) => {
                let mut b = serde_json::to_vec(v).expect("JSON values serialise");
                b.push(b'\n');
                b
            }
            None => Vec::new(),
        };
        let path = format!("/{method}");
        let mut last = None;
        let reply = with_retry(
            self.budget,
            || match http::post(&self.addr, &path, &bytes, timeout) {
                Ok(r) => Ok(Some(r)),
                Err(Failure::Connect(e)) => {
                    last = Some(e);
                    Ok(None)
                }
                Err(f @ Failure::Exchange(_)) => Err(Error::system(format!("{}: {method}: {f}", self.ctx()))),
            },
            |wait| tracing::warn!(plugin = %self.name, "{method}: cannot connect, retrying in {}", humantime::format_duration(wait)),
        )
        .map_err(CallError::Transport)?;
        let Some(reply) = reply else {
            return Err(CallError::Transport(Error::system(format!(
                "{}: {method}: cannot connect: {}",
                self.ctx(),
                last.map(|e| e.to_string()).unwrap_or_default()
            ))));
        };
        let text = String::from_utf8_lossy(&reply.body);
        let parsed: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let err_field = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        if reply.status != 200 {
            let msg = parsed
                .as_ref()
                .and_then(|v| err_field(v, "Err").or_else(|| err_field(v, "Error")))
                .unwrap_or_else(|| text.trim().to_string());
            return Err(CallError::Plugin(format!(
                "{method}: {msg} (HTTP {})",
                reply.status
            )));
        }
        let Some(v) = parsed else {
            if reply.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(json!({}));
            }
            return Err(CallError::Transport(Error::backend(format!(
                "{}: {method}: the reply is not JSON: {}",
                self.ctx(),
                quote(text.trim())
            ))));
        };
        if let Some(e) = err_field(&v, "Err") {
            return Err(CallError::Plugin(format!("{method}: {e}")));
        }
        Ok(v)
    }

    /// Like `call`, every failure an [`Error`].
    fn call_ok(&self, method: &str, body: Option<Value>, timeout: Duration) -> Result<Value> {
        self.call(method, body, timeout).map_err(|e| match e {
            CallError::Plugin(m) => Error::backend(format!("{}: {m}", self.ctx())),
            CallError::Transport(e) => e,
        })
    }

    fn activate(&self) -> Result<()> {
        let v = self.call_ok("Plugin.Activate", None, FAST_CALL)?;
        let implements: Vec<&str> = v
            .get("Implements")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !implements.contains(&"VolumeDriver") {
            return Err(Error::unsupported(format!(
                "{}: the plugin does not implement VolumeDriver (it implements: {})",
                self.ctx(),
                if implements.is_empty() {
                    "nothing".to_string()
                } else {
                    implements.join(", ")
                }
            )));
        }
        Ok(())
    }

    /// `VolumeDriver.Get`: the volume object, or `None` when the plugin
    /// reports any error for it (the original's rule: a failed Get means
    /// "missing"). Transport failures are errors.
    pub fn get(&self, name: &str) -> Result<Option<Value>> {
        match self.call("VolumeDriver.Get", Some(json!({ "Name": name })), FAST_CALL) {
            Ok(v) => Ok(v.get("Volume").filter(|v| !v.is_null()).cloned()),
            Err(CallError::Plugin(m)) => {
                tracing::info!(volume = name, "{m}");
                Ok(None)
            }
            Err(CallError::Transport(e)) => Err(e),
        }
    }

    /// `VolumeDriver.Create`.
    pub fn create(&self, name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
        self.call_ok(
            "VolumeDriver.Create",
            Some(json!({ "Name": name, "Opts": opts })),
            SLOW_CALL,
        )
        .map(|_| ())
    }

    /// `VolumeDriver.Mount` without an `ID`, as Docker 1.11 sent it.
    pub fn mount(&self, name: &str) -> Result<String> {
        let v = self.call_ok(
            "VolumeDriver.Mount",
            Some(json!({ "Name": name })),
            SLOW_CALL,
        )?;
        let mp = v.get("Mountpoint").and_then(Value::as_str).unwrap_or("");
        if mp.is_empty() {
            return Err(Error::backend(format!(
                "{}: VolumeDriver.Mount of volume {} returned no mountpoint",
                self.ctx(),
                quote(name)
            )));
        }
        Ok(mp.to_string())
    }

    /// `VolumeDriver.Unmount`.
    pub fn unmount(&self, name: &str) -> Result<()> {
        self.call_ok(
            "VolumeDriver.Unmount",
            Some(json!({ "Name": name })),
            FAST_CALL,
        )
        .map(|_| ())
    }

    /// `VolumeDriver.Path` ("" when the plugin knows no path).
    pub fn path(&self, name: &str) -> Result<String> {
        let v = self.call_ok(
            "VolumeDriver.Path",
            Some(json!({ "Name": name })),
            FAST_CALL,
        )?;
        Ok(v.get("Mountpoint")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string())
    }

    /// `VolumeDriver.Remove`.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.call_ok(
            "VolumeDriver.Remove",
            Some(json!({ "Name": name })),
            FAST_CALL,
        )
        .map(|_| ())
    }

    /// `VolumeDriver.List`: the names.
    pub fn list(&self) -> Result<Vec<String>> {
        let v = self.call_ok("VolumeDriver.List", Some(json!({})), FAST_CALL)?;
        Ok(v.get("Volumes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.get("Name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_in_docker_order() {
        let d = Discovery {
            socket_dirs: vec!["/run/docker/plugins".into()],
            spec_dirs: vec![
                "/etc/docker/plugins".into(),
                "/usr/lib/docker/plugins".into(),
            ],
            timeout: Duration::ZERO,
        };
        let c: Vec<String> = d
            .candidates("x")
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            c,
            [
                "/run/docker/plugins/x.sock",
                "/run/docker/plugins/x/x.sock",
                "/etc/docker/plugins/x.spec",
                "/etc/docker/plugins/x/x.spec",
                "/etc/docker/plugins/x.json",
                "/etc/docker/plugins/x/x.json",
                "/usr/lib/docker/plugins/x.spec",
                "/usr/lib/docker/plugins/x/x.spec",
                "/usr/lib/docker/plugins/x.json",
                "/usr/lib/docker/plugins/x/x.json",
            ]
        );
    }

    #[test]
    fn spec_urls() {
        let p = Path::new("/etc/docker/plugins/x.spec");
        assert_eq!(
            parse_url("unix:///run/x.sock", p).unwrap(),
            Addr::Unix("/run/x.sock".into())
        );
        assert_eq!(
            parse_url("tcp://localhost:8080", p).unwrap(),
            Addr::Tcp("localhost:8080".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:7981/", p).unwrap(),
            Addr::Tcp("127.0.0.1:7981".into())
        );
        for bad in ["localhost:8080", "ftp://x:1", "tcp://", "unix://rel.sock"] {
            let e = parse_url(bad, p).unwrap_err();
            assert!(e.to_string().contains("x.spec"), "{bad}: {e}");
        }
        assert!(parse_url("https://h:1", p)
            .unwrap_err()
            .to_string()
            .contains("TLS"));
    }

    #[test]
    fn spec_files_are_found_in_order() {
        let t = tempfile::tempdir().unwrap();
        let spec = t.path().join("spec");
        std::fs::create_dir_all(spec.join("p")).unwrap();
        std::fs::write(
            spec.join("p/p.json"),
            r#"{"Name":"p","Addr":"tcp://127.0.0.1:9"}"#,
        )
        .unwrap();
        let d = Discovery {
            socket_dirs: vec![t.path().join("run")],
            spec_dirs: vec![spec.clone()],
            timeout: Duration::ZERO,
        };
        assert_eq!(
            d.locate("p").unwrap(),
            Some(Addr::Tcp("127.0.0.1:9".into()))
        );
        std::fs::write(spec.join("p.spec"), "  unix:///tmp/p.sock \n").unwrap();
        assert_eq!(
            d.locate("p").unwrap(),
            Some(Addr::Unix("/tmp/p.sock".into()))
        );
        // A regular file named like a socket does not count.
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        std::fs::write(t.path().join("run/p.sock"), "").unwrap();
        assert_eq!(
            d.locate("p").unwrap(),
            Some(Addr::Unix("/tmp/p.sock".into()))
        );
        assert_eq!(d.locate("q").unwrap(), None);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("V", "0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_timeout("V", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_timeout("V", "soon")
            .unwrap_err()
            .to_string()
            .contains("V"));
    }

    #[test]
    fn no_retry_with_a_zero_budget() {
        let mut n = 0;
        let r: Option<()> = with_retry(
            Duration::ZERO,
            || {
                n += 1;
                Ok(None)
            },
            |_| panic!("no sleep"),
        )
        .unwrap();
        assert_eq!((r, n), (None, 1));
    }
}
