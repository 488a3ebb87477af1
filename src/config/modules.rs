//! `rexray.modules.<name>`: the Docker volume plugin endpoints `rexray
//! service start` serves, each with its own socket, service and settings.
//!
//! `default-docker` always exists; its own keys are registered (flags, the
//! environment and files set them as any key). Every other module is a
//! name under `rexray.modules` in a config file (the environment cannot
//! declare one, as in the original). A module's settings:
//!
//! * its own: `type` (`docker`), `desc`, `host` (default
//!   `unix:///run/docker/plugins/<name>.sock`), `spec` (default
//!   `/etc/docker/plugins/<name>.spec`), `disabled`, and the connection
//!   limits `headerTimeout`, `idleTimeout`, `maxConnections`;
//! * `libstorage.service`: the service it serves (default: the global
//!   one), whose `libstorage.server.services.<service>` section then
//!   applies as for the CLI;
//! * overrides: any global key but the process-wide ones (`rexray.*`,
//!   `libstorage.server.*`) spelt under the module —
//!   `rexray.modules.<name>.libstorage.integration.volume.operations.mount.preempt`,
//!   `rexray.modules.<name>.docker.size`, `rexray.modules.<name>.vfs.root`.
//!   As in the original's scoped configuration, the module's own value
//!   wins over the global one wherever that is set (file, environment or
//!   flag). It is read from `REXRAY_MODULES_<NAME>_<KEY>` first, then from
//!   the files.

use super::{keys, validate_as, Config, KeyDef, KeyType, Setting, Source, KEYS};
use crate::input::quote;
use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The module that serves today's single Docker endpoint.
pub const DEFAULT_DOCKER: &str = "default-docker";

/// The module types served: Docker volume plugin endpoints, and CSI
/// endpoints (see [`crate::csi`]).
pub const TYPES: &[&str] = &["docker", "csi"];

/// The environment variable a `csi` module's endpoint comes from when it
/// sets no `host` (as the CSI sidecars and the original name it).
pub const CSI_ENDPOINT_VAR: &str = "CSI_ENDPOINT";

/// A module's own settings (the rest of its keys override global ones).
const OWN: &[&str] = &[
    "type",
    "desc",
    "host",
    "spec",
    "disabled",
    "headerTimeout",
    "idleTimeout",
    "maxConnections",
];

/// One `rexray.modules.<name>`, resolved.
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    /// Name (lower case, as every key).
    pub name: String,
    /// `type` (lower case).
    pub kind: String,
    /// `desc`.
    pub desc: String,
    /// `disabled`.
    pub disabled: bool,
    /// `host`: where its endpoint listens (`unix:///…` or `tcp://…`).
    pub host: String,
    /// `spec`: the spec file written for a tcp endpoint.
    pub spec: PathBuf,
    /// `headerTimeout`.
    pub header_timeout: Duration,
    /// `idleTimeout`.
    pub idle_timeout: Duration,
    /// `maxConnections`.
    pub max_connections: u64,
    /// The configuration its requests are served with: its service's,
    /// with its overrides.
    pub config: Config,
    /// The registered keys it overrides.
    overridden: Vec<&'static str>,
    /// Its settings as `rexray env` lists them (full key, setting).
    settings: Vec<(String, Setting)>,
}

impl ModuleConfig {
    /// The full key of one of its settings: `rexray.modules.<name>.<setting>`.
    pub fn key(&self, setting: &str) -> String {
        module_key(&self.name, setting)
    }
    /// The service it serves.
    pub fn service(&self) -> &str {
        self.config.service()
    }
    /// Whether it sets registered key `key` itself.
    pub fn overrides(&self, key: &str) -> bool {
        self.overridden.iter().any(|k| k.eq_ignore_ascii_case(key))
    }
    /// Its own settings and its overrides, as (full key, setting), for
    /// `rexray env`; `default-docker`'s registered keys are not repeated.
    pub fn settings(&self) -> &[(String, Setting)] {
        &self.settings
    }
}

/// `rexray.modules.<module>.<setting>`.
pub fn module_key(module: &str, setting: &str) -> String {
    format!("rexray.modules.{module}.{setting}")
}

/// Whether a global key may be overridden by a module: not a process-wide
/// one (`rexray.*`: logging, locks, the modules themselves; the libStorage
/// server's), and not the service, which a module sets on its own terms.
fn overridable(def: &KeyDef) -> bool {
    !def.key.starts_with("rexray.")
        && !def.key.starts_with("libstorage.server.")
        && def.key != keys::SERVICE
}

/// Every spelling of a setting under `rexray.modules.<name>.`, lower case:
/// its own settings, `libstorage.service`, and every spelling of the keys
/// it may override.
pub fn module_settings() -> Vec<String> {
    let mut out: Vec<String> = OWN.iter().map(|s| s.to_ascii_lowercase()).collect();
    out.push(keys::SERVICE.to_ascii_lowercase());
    for def in KEYS.iter().filter(|d| overridable(d)) {
        for s in std::iter::once(&def.key).chain(def.aliases.iter()) {
            out.push(s.to_ascii_lowercase());
        }
    }
    out
}

/// A module name is a Docker driver name and a file name.
fn check_name(name: &str) -> Result<()> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid module name {} under rexray.modules: use up to 64 letters, digits, '-' and '_', starting with a letter or digit (the name is the Docker driver's and its socket's)",
            quote(name)
        )))
    }
}

impl Config {
    /// The modules configured: `default-docker` first, then every name
    /// under `rexray.modules` in the files, sorted.
    pub fn module_names(&self) -> Vec<String> {
        let mut names = vec![DEFAULT_DOCKER.to_string()];
        for k in self.tree.keys() {
            if let Some((name, _)) = k
                .strip_prefix("rexray.modules.")
                .and_then(|r| r.split_once('.'))
            {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        names
    }

    /// A module's own value for `setting` (any spelling; case-insensitive):
    /// from `REXRAY_MODULES_<NAME>_<SETTING>`, else a file.
    fn module_value(&self, module: &str, setting: &str) -> Option<(String, Source)> {
        let full = module_key(module, setting);
        if let Some((var, v)) = self.module_env.get(&keys::env_name(&full)) {
            return Some((v.clone(), Source::Env(var.clone())));
        }
        self.tree
            .get(&full.to_ascii_lowercase())
            .map(|(v, file)| (v.clone(), Source::File(file.clone())))
    }

    /// One of a module's own settings, checked as `def`'s type; `default`
    /// when unset.
    fn own_setting(
        &self,
        module: &str,
        setting: &str,
        ty: KeyType,
        default: &str,
    ) -> Result<Setting> {
        match self.module_value(module, setting) {
            Some((v, source)) => Ok(Setting {
                value: validate_as(&module_key(module, setting), ty, &v, &source)?.into(),
                source,
            }),
            None => Ok(Setting {
                value: default.to_string().into(),
                source: Source::Default,
            }),
        }
    }

    /// Whether module `name` is `disabled` (then nothing else of it is
    /// read, as in the original).
    pub fn module_disabled(&self, name: &str) -> Result<bool> {
        if name == DEFAULT_DOCKER {
            return Ok(self.boolean(keys::DOCKER_DISABLED));
        }
        Ok(self
            .own_setting(name, "disabled", KeyType::Bool, "false")?
            .value
            == "true")
    }

    /// Module `name`, resolved: its own settings, its service and its
    /// overrides. Invalid values fail with the module's key; the type is
    /// not checked here (see [`docker_modules`](Self::docker_modules)).
    pub fn module(&self, name: &str) -> Result<ModuleConfig> {
        let name = name.to_ascii_lowercase();
        let mut settings: Vec<(String, Setting)> = Vec::new();
        let mut own = |setting: &str, s: Setting, listed: bool| -> String {
            if listed || s.source != Source::Default {
                settings.push((module_key(&name, setting), s.clone()));
            }
            s.value.into_owned()
        };
        let default = name == DEFAULT_DOCKER;
        let kind = self.own_setting(
            &name,
            "type",
            KeyType::Str,
            if default { "docker" } else { "" },
        )?;
        let kind = own("type", kind, !default).trim().to_ascii_lowercase();
        let desc = self.own_setting(
            &name,
            "desc",
            KeyType::Str,
            if default {
                "The default docker module."
            } else {
                ""
            },
        )?;
        let desc = own("desc", desc, false);
        // A csi module listens where its host says, else where
        // $CSI_ENDPOINT says (as the CSI sidecars name it); it has no
        // default socket: kubelet finds a CSI driver where its registrar
        // says, so the operator names it.
        let csi_host = if kind == "csi" {
            Some(
                match (self.csi_endpoint.clone(), self.module_value(&name, "host")) {
                    (Some(v), None) => {
                        let v = v.trim();
                        let value = if v.contains("://") {
                            v.to_string()
                        } else {
                            format!("unix://{v}")
                        };
                        let source = Source::Env(CSI_ENDPOINT_VAR.into());
                        own(
                            "host",
                            Setting {
                                value: value.into(),
                                source,
                            },
                            true,
                        )
                    }
                    _ => {
                        let s = self.own_setting(&name, "host", KeyType::Str, "")?;
                        own("host", s, true)
                    }
                },
            )
        } else {
            None
        };
        // default-docker's own keys are registered; the others' defaults
        // are the same keys' defaults, their socket and spec file named
        // after the module.
        let registered = |key: &str| keys::find(key).expect("registered");
        let mut take = |setting: &str, key: &str, default_value: String| -> Result<String> {
            if default {
                return Ok(self.string(key).to_string());
            }
            // The Docker endpoint's settings mean nothing to a csi module
            // (`disabled` aside): not listed unless set.
            if kind == "csi" && setting != "disabled" && self.module_value(&name, setting).is_none()
            {
                return Ok(default_value);
            }
            let s = self.own_setting(&name, setting, registered(key).ty, &default_value)?;
            Ok(own(setting, s, true))
        };
        let host = match csi_host {
            Some(h) => h,
            None => take(
                "host",
                keys::DOCKER_HOST,
                format!("unix:///run/docker/plugins/{name}.sock"),
            )?,
        };
        let spec = take(
            "spec",
            keys::DOCKER_SPEC,
            format!("/etc/docker/plugins/{name}.spec"),
        )?;
        let disabled = take("disabled", keys::DOCKER_DISABLED, "false".into())? == "true";
        let header = take(
            "headerTimeout",
            keys::DOCKER_HEADER_TIMEOUT,
            registered(keys::DOCKER_HEADER_TIMEOUT).default.into(),
        )?;
        let idle = take(
            "idleTimeout",
            keys::DOCKER_IDLE_TIMEOUT,
            registered(keys::DOCKER_IDLE_TIMEOUT).default.into(),
        )?;
        let max = take(
            "maxConnections",
            keys::DOCKER_MAX_CONNECTIONS,
            registered(keys::DOCKER_MAX_CONNECTIONS).default.into(),
        )?;

        // Its service, then its overrides on top of that service's
        // configuration.
        let mut config = match self.module_value(&name, keys::SERVICE) {
            Some((v, source)) => {
                let key = module_key(&name, keys::SERVICE);
                let service = v.split(',').next().unwrap_or("").trim().to_string();
                if service.is_empty() {
                    return Err(Error::invalid(format!(
                        "invalid value {} for {key} (from {source}): expected a service name (e.g. loop)",
                        quote(&v)
                    )));
                }
                settings.push((
                    key,
                    Setting {
                        value: service.clone().into(),
                        source: source.clone(),
                    },
                ));
                let mut c = if service.eq_ignore_ascii_case(&self.service) {
                    self.clone()
                } else {
                    self.for_service(&service)?
                };
                c.values.insert(
                    keys::SERVICE,
                    Setting {
                        value: c.service.clone().into(),
                        source,
                    },
                );
                c
            }
            None => self.clone(),
        };
        let mut overridden = Vec::new();
        for def in KEYS.iter().filter(|d| overridable(d)) {
            for spelling in std::iter::once(&def.key).chain(def.aliases.iter()) {
                let Some((v, source)) = self.module_value(&name, spelling) else {
                    continue;
                };
                let value = validate_as(&module_key(&name, spelling), def.ty, &v, &source)?;
                let s = Setting {
                    value: value.into(),
                    source,
                };
                settings.push((module_key(&name, def.key), s.clone()));
                config.values.insert(def.key, s);
                overridden.push(def.key);
                break;
            }
        }
        config.warnings.clear();
        Ok(ModuleConfig {
            kind,
            desc,
            disabled,
            host,
            spec: PathBuf::from(spec),
            header_timeout: parse_duration(&header),
            idle_timeout: parse_duration(&idle),
            max_connections: max.parse().unwrap_or(1),
            config,
            overridden,
            settings,
            name,
        })
    }

    /// The Docker modules `rexray service start` serves (see
    /// [`served_modules`](Self::served_modules)).
    pub fn docker_modules(&self) -> Result<Vec<ModuleConfig>> {
        Ok(self
            .served_modules()?
            .into_iter()
            .filter(|m| m.kind == "docker")
            .collect())
    }

    /// The CSI modules `rexray service start` serves (see
    /// [`served_modules`](Self::served_modules)).
    pub fn csi_modules(&self) -> Result<Vec<ModuleConfig>> {
        Ok(self
            .served_modules()?
            .into_iter()
            .filter(|m| m.kind == "csi")
            .collect())
    }

    /// The modules `rexray service start` serves: every module not
    /// `disabled`, each of a type served (`docker`, `csi`) and a valid
    /// name.
    pub fn served_modules(&self) -> Result<Vec<ModuleConfig>> {
        let mut out = Vec::new();
        for name in self.module_names() {
            if self.module_disabled(&name)? {
                continue;
            }
            check_name(&name)?;
            let m = self.module(&name)?;
            if !TYPES.contains(&m.kind.as_str()) {
                let key = m.key("type");
                let source = self
                    .module_value(&name, "type")
                    .map(|(_, s)| format!(" (from {s})"))
                    .unwrap_or_default();
                return Err(Error::invalid(if m.kind.is_empty() {
                    format!(
                        "module {name} has no type: set {key} to docker or csi (or {} to true)",
                        m.key("disabled")
                    )
                } else {
                    format!(
                        "unknown module type {} for {key}{source}: the types served are {}; set it to one of them, or {} to true",
                        quote(&m.kind),
                        TYPES.join(", "),
                        m.key("disabled")
                    )
                }));
            }
            out.push(m);
        }
        Ok(out)
    }
}

fn parse_duration(v: &str) -> Duration {
    v.parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(v))
        .unwrap_or(Duration::from_secs(30))
}

#[cfg(test)]
mod tests;
