//! Mesos: the `dvdcli` that mesos-module-dvdi and Mesos' docker/volume
//! isolator exec.
//!
//! `--volumedriver=rexray` (or the name of a configured service) runs the
//! volume workflows in-process with the anonymous consumer, so an agent
//! needs only the binaries and a config file, and stays consistent with a
//! `rexray service` on the same host (same state directory, same locks).
//! Any other driver name is a Docker volume plugin reached over its socket,
//! as the original did ([`plugin`]).

pub mod args;
pub mod http;
pub mod opts;
pub mod plugin;

use crate::config::Config;
use crate::config::{FlagValue, LoadOptions};
use crate::input::quote;
use crate::volume::Consumer;
use crate::volume::{Created, Unmounted, VolumeRef, Volumes};
use crate::{Error, Result};
use args::{Command, Invocation};
use opts::VolumeOpts;
use plugin::{Discovery, Plugin};

/// Who serves a driver name.
#[derive(Debug)]
pub enum Target {
    /// The library, in this process, with this configuration (its service
    /// is the one the name selects).
    Local(Box<Config>),
    /// A Docker volume plugin of that name.
    Plugin(String),
}

fn load(service: Option<&str>, flags: &[FlagValue]) -> Result<Config> {
    let mut flags = flags.to_vec();
    if let Some(s) = service {
        flags.push(FlagValue {
            key: crate::config::keys::SERVICE,
            value: s.to_string(),
            flag: "--volumedriver".into(),
        });
    }
    Config::load(LoadOptions {
        flags,
        ..LoadOptions::default()
    })
}

/// A driver name becomes a path component of the plugin lookup, so it
/// follows the volume-name alphabet.
fn check_driver(driver: &str) -> Result<()> {
    crate::input::volume_name(driver).map(|_| ()).map_err(|_| {
        Error::invalid(format!(
            "invalid --volumedriver {}: driver names match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            quote(driver)
        ))
    })
}

impl Target {
    /// Decide who serves `driver`: `rexray` is the configured service; a
    /// name equal to `libstorage.service` or declared under
    /// `libstorage.server.services.<name>` is that service; anything else
    /// is a plugin. Returns the configuration too (for logging).
    pub fn resolve(driver: &str, flags: &[FlagValue]) -> Result<(Config, Target)> {
        check_driver(driver)?;
        let cfg = load(None, flags)?;
        let is_current = driver.eq_ignore_ascii_case(cfg.service())
            || (driver.eq_ignore_ascii_case("rexray") && !cfg.declares_service(driver));
        if is_current {
            return Ok((cfg.clone(), Target::Local(Box::new(cfg))));
        }
        if cfg.declares_service(driver) {
            let c = load(Some(driver), flags)?;
            return Ok((c.clone(), Target::Local(Box::new(c))));
        }
        Ok((cfg, Target::Plugin(driver.to_string())))
    }
}

/// Run one invocation; returns exactly what goes to stdout.
pub fn execute(inv: &Invocation, target: Target) -> Result<String> {
    match inv.command {
        Command::Version => return Ok(version_text()),
        Command::Help => return Ok(args::USAGE.to_string()),
        Command::List => {}
        _ => {
            crate::input::volume_name(&inv.name)?;
        }
    }
    match target {
        Target::Local(cfg) => local(inv, &Volumes::open(*cfg)?),
        Target::Plugin(name) => via_plugin(inv, &Plugin::lookup(&name, &Discovery::from_env()?)?),
    }
}

fn line(s: &str) -> String {
    format!("{s}\n")
}

fn local(inv: &Invocation, vols: &Volumes) -> Result<String> {
    let name = inv.name.as_str();
    Ok(match inv.command {
        Command::Mount => {
            let o = VolumeOpts::parse(&inv.opts)?;
            let overwrite_allowed = match vols.lookup(VolumeRef::Name(name))? {
                Some(_) => {
                    if !inv.opts.is_empty() {
                        tracing::debug!(volume = name, "the volume exists: create options are not used");
                    }
                    false
                }
                None if inv.explicit_create => {
                    return Err(Error::not_found(format!(
                        "volume {} does not exist and --explicitcreate is set: nothing was created or mounted",
                        quote(name)
                    )))
                }
                None => match vols.create(name, &o.create_options())? {
                    // Between this create and the mount below another
                    // caller may mount the new volume and write to it. A
                    // volume the backend hands over blank needs no
                    // overwrite (it is formatted because it is blank), so
                    // overwritefs is kept only for backends that hand over
                    // a signature, where it is needed.
                    Created::New(v) => {
                        tracing::info!(volume = name, "created");
                        vols.content(&v) != crate::model::Content::Blank
                    }
                    Created::Existing(_) => false,
                    Created::Disabled => {
                        return Err(Error::not_found(format!(
                            "volume {} does not exist and create.disable is set: nothing was created or mounted",
                            quote(name)
                        )))
                    }
                },
            };
            let (_, path) = vols.mount(
                VolumeRef::Name(name),
                Consumer::Anonymous,
                &o.mount_options(overwrite_allowed),
            )?;
            let p = path.to_string_lossy();
            tracing::info!(volume = name, "{p}");
            line(&p)
        }
        Command::Unmount => {
            if let Unmounted::StillUsed(n) =
                vols.unmount(VolumeRef::Name(name), Consumer::Anonymous)?
            {
                tracing::info!(volume = name, "stays mounted: {n} other consumer(s) use it");
            }
            String::new()
        }
        Command::Path => match vols.path(VolumeRef::Name(name))? {
            Some(p) => line(&p.to_string_lossy()),
            None => {
                tracing::info!(volume = name, "not mounted on this host: no path");
                String::new()
            }
        },
        Command::Create => {
            let o = VolumeOpts::parse(&inv.opts)?;
            match vols.create(name, &o.create_options())? {
                Created::New(_) => tracing::info!(volume = name, "created"),
                Created::Existing(_) => tracing::info!(volume = name, "exists: left as it is"),
                Created::Disabled => {
                    tracing::warn!(volume = name, "create.disable is set: not created")
                }
            }
            String::new()
        }
        Command::Remove => {
            if vols.remove(VolumeRef::Name(name))?.is_none() {
                tracing::warn!(volume = name, "remove.disable is set: not removed");
            }
            String::new()
        }
        Command::Get => line(&vols.find(VolumeRef::Name(name))?.name),
        Command::List => vols.list()?.iter().map(|v| line(&v.name)).collect(),
        Command::Version | Command::Help => unreachable!("handled by execute"),
    })
}

fn via_plugin(inv: &Invocation, p: &Plugin) -> Result<String> {
    let name = inv.name.as_str();
    Ok(match inv.command {
        Command::Mount => {
            if p.get(name)?.is_none() {
                if inv.explicit_create {
                    return Err(Error::not_found(format!(
                        "volume {} does not exist and --explicitcreate is set: nothing was created or mounted",
                        quote(name)
                    )));
                }
                p.create(name, &opts::as_plugin_opts(&inv.opts))?;
            }
            let mp = p.mount(name)?;
            tracing::info!(volume = name, "{mp}");
            line(&mp)
        }
        Command::Unmount => {
            p.unmount(name)?;
            String::new()
        }
        Command::Path => {
            let from_get = p
                .get(name)?
                .and_then(|v| {
                    v.get("Mountpoint")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            let mp = if from_get.is_empty() {
                p.path(name)?
            } else {
                from_get
            };
            if mp.is_empty() {
                String::new()
            } else {
                line(&mp)
            }
        }
        Command::Create => {
            p.create(name, &opts::as_plugin_opts(&inv.opts))?;
            String::new()
        }
        Command::Remove => {
            p.remove(name)?;
            String::new()
        }
        Command::Get => match p.get(name)? {
            Some(_) => line(name),
            None => {
                return Err(Error::not_found(format!(
                    "volume {} not found by driver {}",
                    quote(name),
                    quote(&inv.driver)
                )))
            }
        },
        Command::List => p.list()?.iter().map(|n| line(n)).collect(),
        Command::Version | Command::Help => unreachable!("handled by execute"),
    })
}

/// The original's six `version` lines.
pub fn version_text() -> String {
    let v = crate::cli::version_info();
    let epoch: u64 = env!("REXRAY_BUILD_EPOCH").parse().unwrap_or(0);
    format!(
        "Binary: {}\nSemVer: {}\nOsArch: {}\nBranch: {}\nCommit: {}\nFormed: {}\n",
        v.binary,
        v.sem_ver,
        v.os_arch,
        option_env!("REXRAY_BRANCH").unwrap_or(""),
        v.commit,
        rfc1123(epoch)
    )
}

/// `Mon, 02 Jan 2006 15:04:05 UTC` (Go's `time.RFC1123` in UTC).
pub fn rfc1123(epoch: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_dates() {
        assert_eq!(rfc1123(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(rfc1123(1_136_214_245), "Mon, 02 Jan 2006 15:04:05 UTC");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
    }

    #[test]
    fn version_has_six_lines() {
        let t = version_text();
        let keys: Vec<&str> = t.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            ["Binary", "SemVer", "OsArch", "Branch", "Commit", "Formed"]
        );
    }

    #[test]
    fn driver_names_are_path_safe() {
        for bad in ["", "..", "a/b", "../x", ".hidden", "a b"] {
            assert!(
                check_driver(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("--volumedriver"),
                "{bad}"
            );
        }
        check_driver("rexray").unwrap();
        check_driver("convoy-1.2").unwrap();
    }
}
