//! `rexray`: the operator CLI.

use clap::{Args, Parser, Subcommand};
use rexray::cli;
use rexray::config::Config;
use rexray::docker::service::ServiceCmd;
use rexray::model::{CreateOptions, MountOptions, Volume, VolumeWithPath};
use rexray::output::{self, Format};
use rexray::state::Consumer;
use rexray::volume::{Created, Unmounted, VolumeRef, Volumes};
use rexray::{Error, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rexray",
    version,
    about = "Storage orchestration for Docker, Kubernetes and Mesos",
    long_about = "Storage orchestration for Docker, Kubernetes and Mesos.\n\n\
        Every configuration key can also be set with a flag named after it, e.g. \
        --libstorageIntegrationVolumeOperationsMountPreempt or --loopVolumePath=/srv/loop; \
        `rexray env` shows every key, its value and where the value came from."
)]
struct Cli {
    /// Config file to use instead of <etc>/rexray.yml or <etc>/config.yml.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level: error, warn, info, debug (rexray.logLevel).
    #[arg(short = 'l', long = "logLevel", global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Storage service to use (libstorage.service).
    #[arg(short = 's', long = "service", global = true, value_name = "NAME")]
    service: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage volumes.
    #[command(subcommand, visible_alias = "volumes")]
    Volume(VolumeCmd),
    /// Take, list and remove volume snapshots.
    #[command(subcommand, visible_alias = "snapshots")]
    Snapshot(rexray::snapshot::SnapshotCmd),
    /// Run the Docker volume plugin service (start, stop, status).
    #[command(subcommand)]
    Service(rexray::docker::service::ServiceCmd),
    /// Same as `rexray service start`.
    Start(rexray::docker::service::StartArgs),
    /// Same as `rexray service stop`.
    Stop,
    /// Same as `rexray service status`.
    Status,
    /// Install, remove or check the Kubernetes FlexVolume driver.
    #[command(subcommand)]
    Flexrex(rexray::flex::install::FlexrexCmd),
    /// Print the effective configuration, one KEY=value line per setting,
    /// each with its source (default, file, env or flag).
    Env {
        /// Output format: text (KEY=value lines), json or yaml.
        #[arg(short = 'f', long = "format", default_value = "text")]
        format: String,
    },
    /// Print a shell completion script: `rexray completion bash > /etc/bash_completion.d/rexray`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        /// The program to complete: rexray or dvdcli (flexrex is run by
        /// kubelet only).
        #[arg(long, hide = true, default_value = "rexray")]
        program: String,
    },
    /// Write man pages (rexray.1, rexray-volume.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        /// Target directory.
        dir: PathBuf,
    },
    /// Print version facts.
    Version {
        /// Output format: text or json.
        #[arg(short = 'f', long = "format", default_value = "text")]
        format: String,
    },
}

#[derive(Args, Clone)]
struct Fmt {
    /// Output format: tmpl (table), json, jsonp (indented JSON) or yaml.
    #[arg(short = 'f', long = "format", default_value = "tmpl")]
    format: String,
    /// Leave out the header row.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Go on with the next volume after an error (the exit code is still 1).
    #[arg(long = "continueOnError")]
    continue_on_error: bool,
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// List volumes, or inspect the ones named.
    #[command(visible_aliases = ["list", "get", "inspect", "l"])]
    Ls {
        /// Volume ids or names (exact).
        volumes: Vec<String>,
        /// Only volumes attached to this instance.
        #[arg(long)]
        attached: bool,
        /// Only volumes attached nowhere.
        #[arg(long)]
        available: bool,
        /// Add the Path column (where the volume is mounted here).
        #[arg(long)]
        path: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Create volumes.
    #[command(visible_aliases = ["new", "c", "n"])]
    Create {
        /// Names of the volumes to create.
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Size in GiB (default: create.default.size).
        #[arg(long)]
        size: Option<String>,
        /// IOPS.
        #[arg(long)]
        iops: Option<String>,
        /// Volume type.
        #[arg(long = "volumeType")]
        volume_type: Option<String>,
        /// Availability zone.
        #[arg(long = "availabilityZone")]
        availability_zone: Option<String>,
        /// Filesystem to make at the first mount: ext4 or xfs.
        #[arg(long = "fsType")]
        fs_type: Option<String>,
        /// Encrypt the volume (not supported by the local drivers).
        #[arg(long)]
        encrypted: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Remove volumes (exact id or name; never a volume in use).
    #[command(visible_aliases = ["remove", "delete", "del", "r"])]
    Rm {
        /// Volume ids or names (exact; `id:X` or `name:X` says which).
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Accepted for compatibility: a volume in use is never removed.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Attach volumes to this instance.
    #[command(visible_alias = "a")]
    Attach {
        /// Volume ids or names (`id:X` or `name:X` says which).
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Take the volume from another instance.
        #[arg(long)]
        force: bool,
        /// Succeed for volumes that are already attached (always true here).
        #[arg(short = 'i', long)]
        idempotent: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Detach volumes that are not mounted.
    #[command(visible_alias = "d")]
    Detach {
        /// Volume ids or names (`id:X` or `name:X` says which).
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Detach from another instance too.
        #[arg(long)]
        force: bool,
        /// Succeed for volumes that are already detached (always true here).
        #[arg(short = 'i', long)]
        idempotent: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Attach, format (only if blank) and mount volumes; prints their paths.
    #[command(visible_alias = "m")]
    Mount {
        /// Volume ids or names (`id:X` or `name:X` says which).
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Filesystem to make on a blank volume: ext4 or xfs.
        #[arg(long = "fsType")]
        fs_type: Option<String>,
        /// Format even if the volume holds a filesystem. DESTROYS ITS DATA.
        #[arg(long = "overwriteFS")]
        overwrite_fs: bool,
        /// Who uses the mount (default: the CLI's shared anonymous consumer).
        /// The volume stays mounted until every consumer has unmounted.
        /// Recorded as `cli:<ID>`: it never names a Docker or kubelet consumer.
        #[arg(long, value_name = "ID")]
        consumer: Option<String>,
        /// Succeed for volumes that are already mounted (always true here).
        #[arg(short = 'i', long)]
        idempotent: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Release this CLI's use of volumes; unmounts and detaches when no one
    /// else uses them.
    #[command(visible_aliases = ["umount", "u"])]
    Unmount {
        /// Volume ids or names (`id:X` or `name:X` says which).
        #[arg(required = true)]
        volumes: Vec<String>,
        /// The consumer to release (default: the anonymous consumer).
        #[arg(long, value_name = "ID")]
        consumer: Option<String>,
        /// Succeed for volumes that are not mounted (always true here).
        #[arg(short = 'i', long)]
        idempotent: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Print the path of a mounted volume.
    Path {
        /// Volume id or name (`id:X` or `name:X` says which).
        volume: String,
        #[command(flatten)]
        fmt: Fmt,
    },
}

/// The option flags given, checked by the one options parser (the
/// argument parser has refused unknown and repeated flags).
fn flag_options(flags: &[(&str, Option<String>)]) -> Result<rexray::options::Parsed> {
    let pairs: Vec<(String, String)> = flags
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
        .collect();
    rexray::options::CLI.parse(&pairs)
}

fn open(cfg: Config) -> Result<Volumes> {
    Volumes::open(cfg)
}

fn fmt_of(f: &Fmt) -> Result<Format> {
    f.format.parse()
}

/// Apply `op` to each volume; stop at the first error unless asked not to.
/// Returns what succeeded and whether anything failed.
fn each<T>(
    names: &[String],
    continue_on_error: bool,
    mut op: impl FnMut(&str) -> Result<T>,
) -> (Vec<T>, Option<Error>) {
    let mut done = Vec::new();
    let mut first_err = None;
    for n in names {
        match op(n) {
            Ok(t) => done.push(t),
            Err(e) => {
                eprintln!("rexray: error: {e}");
                first_err.get_or_insert(e);
                if !continue_on_error {
                    break;
                }
            }
        }
    }
    (done, first_err)
}

/// Print what succeeded — nothing at all when every volume failed.
fn emit<T>(
    out: &mut String,
    done: &[T],
    err: Option<Error>,
    render: impl FnOnce(&[T]) -> String,
) -> Option<Error> {
    if !(done.is_empty() && err.is_some()) {
        out.push_str(&render(done));
    }
    err
}

/// Run `op` on each volume and print the resulting volume table.
fn volume_table(
    out: &mut String,
    fmt: &Fmt,
    names: &[String],
    op: impl FnMut(&str) -> Result<Volume>,
) -> Result<Option<Error>> {
    let format = fmt_of(fmt)?;
    let (done, err) = each(names, fmt.continue_on_error, op);
    Ok(emit(out, &done, err, |d| {
        output::volumes(d, format, fmt.quiet)
    }))
}

fn with_path(v: Volume, path: String) -> VolumeWithPath {
    VolumeWithPath { volume: v, path }
}

fn run_volume(cmd: VolumeCmd, cfg: Config, out: &mut String) -> Result<Option<Error>> {
    let vols = open(cfg)?;
    Ok(match cmd {
        VolumeCmd::Ls {
            volumes,
            attached,
            available,
            path,
            fmt,
        } => {
            let format = fmt_of(&fmt)?;
            let keep = |v: &Volume| {
                (volumes.is_empty() || volumes.iter().any(|a| *a == v.id || *a == v.name))
                    && (!attached || v.attachment_state == 2)
                    && (!available || v.attachment_state == 3)
            };
            for a in &volumes {
                rexray::input::volume_name(a)?;
            }
            if path {
                let rows: Vec<VolumeWithPath> = vols
                    .list_with_paths()?
                    .into_iter()
                    .filter(|(v, _)| keep(v))
                    .map(|(v, p)| with_path(v, p))
                    .collect();
                out.push_str(&output::volumes_with_path(&rows, format, fmt.quiet));
            } else {
                let rows: Vec<Volume> = if volumes.is_empty() {
                    // A table shows no `allocated` (a stat per image).
                    let all = if format == Format::Table {
                        vols.list_without_usage()?
                    } else {
                        vols.list()?
                    };
                    all.into_iter().filter(|v| keep(v)).collect()
                } else {
                    // Each named volume by lookup: as fast among 100,000.
                    let mut rows: Vec<Volume> = Vec::new();
                    for a in &volumes {
                        if let Some(v) = vols.lookup(VolumeRef::operator(a))? {
                            if keep(&v) && !rows.iter().any(|r| r.id == v.id) {
                                rows.push(v);
                            }
                        }
                    }
                    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
                    rows
                };
                out.push_str(&output::volumes(&rows, format, fmt.quiet));
            }
            None
        }
        VolumeCmd::Create {
            volumes,
            size,
            iops,
            volume_type,
            availability_zone,
            fs_type,
            encrypted,
            fmt,
        } => {
            let format = fmt_of(&fmt)?;
            let opts = CreateOptions {
                encrypted,
                ..flag_options(&[
                    ("size", size),
                    ("iops", iops),
                    ("volumeType", volume_type),
                    ("availabilityZone", availability_zone),
                    ("fsType", fs_type),
                ])?
                .create
            };
            for n in &volumes {
                rexray::input::volume_name(n)?;
            }
            let (done, err) = each(&volumes, fmt.continue_on_error, |n| {
                match vols.create(n, &opts)? {
                    Created::New(v) => Ok(Some(v)),
                    Created::Existing(_) => Err(Error::exists(format!(
                        "volume {n} already exists; nothing was changed"
                    ))),
                    Created::Disabled => {
                        eprintln!("rexray: create.disable is set: volume {n} was not created");
                        Ok(None)
                    }
                }
            });
            let done: Vec<Volume> = done.into_iter().flatten().collect();
            emit(out, &done, err, |d| output::volumes(d, format, fmt.quiet))
        }
        VolumeCmd::Rm { volumes, fmt, .. } => {
            let format = fmt_of(&fmt)?;
            let (done, err) = each(&volumes, fmt.continue_on_error, |n| {
                match vols.remove(VolumeRef::operator(n))? {
                    Some(v) => Ok(Some(v.name)),
                    None => {
                        eprintln!("rexray: remove.disable is set: volume {n} was not removed");
                        Ok(None)
                    }
                }
            });
            let mut names: Vec<String> = done.into_iter().flatten().collect();
            names.sort();
            if format == Format::Table {
                for n in names {
                    out.push_str(&n);
                    out.push('\n');
                }
            } else {
                out.push_str(&output::structured(&names, format));
            }
            err
        }
        VolumeCmd::Attach {
            volumes,
            force,
            fmt,
            ..
        } => volume_table(out, &fmt, &volumes, |n| {
            vols.attach(VolumeRef::operator(n), force)
        })?,
        VolumeCmd::Detach {
            volumes,
            force,
            fmt,
            ..
        } => volume_table(out, &fmt, &volumes, |n| {
            vols.detach(VolumeRef::operator(n), force)
        })?,
        VolumeCmd::Mount {
            volumes,
            fs_type,
            overwrite_fs,
            consumer,
            fmt,
            ..
        } => {
            let who = consumer
                .as_deref()
                .map_or(Consumer::Anonymous, Consumer::Cli);
            let format = fmt_of(&fmt)?;
            let opts = MountOptions {
                fs_type: flag_options(&[("fsType", fs_type)])?.create.fs_type,
                overwrite_fs,
                force_attach: false,
            };
            let (done, err) = each(&volumes, fmt.continue_on_error, |n| {
                let (v, p) = vols.mount(VolumeRef::operator(n), who, &opts)?;
                Ok(with_path(v, p.to_string_lossy().into_owned()))
            });
            emit(out, &done, err, |d| {
                output::volumes_with_path(d, format, fmt.quiet)
            })
        }
        VolumeCmd::Unmount {
            volumes,
            consumer,
            fmt,
            ..
        } => {
            let who = consumer
                .as_deref()
                .map_or(Consumer::Anonymous, Consumer::Cli);
            volume_table(out, &fmt, &volumes, |n| {
                match vols.unmount(VolumeRef::operator(n), who)? {
                    Unmounted::StillUsed(k) => eprintln!(
                        "rexray: volume {n} stays mounted: {k} other consumer(s) still use it"
                    ),
                    Unmounted::Released => {
                        if let Some(r) = vols
                            .mount_record(VolumeRef::operator(n))?
                            .filter(|r| !r.holds.is_empty())
                        {
                            let held: Vec<&str> = r.holds.iter().map(String::as_str).collect();
                            eprintln!(
                                "rexray: volume {n} stays attached: held by {} until its detach",
                                held.join(", ")
                            );
                        }
                    }
                }
                vols.find(VolumeRef::operator(n))
            })?
        }
        VolumeCmd::Path { volume, fmt } => {
            let format = fmt_of(&fmt)?;
            let v = vols.find(VolumeRef::operator(&volume))?;
            match vols.path(VolumeRef::Id(&v.id))? {
                Some(p) => {
                    let p = p.to_string_lossy().into_owned();
                    if format == Format::Table {
                        out.push_str(&p);
                        out.push('\n');
                    } else {
                        out.push_str(&output::structured(&[with_path(v, p)], format));
                    }
                    None
                }
                None => {
                    return Err(Error::not_found(format!(
                        "volume {} is not mounted on this host (mount it with `rexray volume mount {}`)",
                        v.name, v.name
                    )))
                }
            }
        }
    })
}

#[derive(serde::Serialize)]
struct EnvEntry<'a> {
    key: &'a str,
    env: String,
    value: &'a str,
    source: String,
}

fn run_env(cfg: &Config, format: &str) -> Result<String> {
    let home = cfg.dirs.home.to_string_lossy().into_owned();
    let dirs = [
        ("REXRAY_HOME", home),
        (
            "REXRAY_HOME_ETC",
            cfg.dirs.etc.to_string_lossy().into_owned(),
        ),
        (
            "REXRAY_HOME_LIB",
            cfg.dirs.lib.to_string_lossy().into_owned(),
        ),
        (
            "REXRAY_HOME_LOG",
            cfg.dirs.log.to_string_lossy().into_owned(),
        ),
        (
            "REXRAY_HOME_RUN",
            cfg.dirs.run.to_string_lossy().into_owned(),
        ),
    ];
    let mut entries: Vec<EnvEntry> = cfg
        .settings()
        .map(|(k, s)| EnvEntry {
            key: k,
            env: rexray::config::keys::env_name(k),
            value: &s.value,
            source: s.source.to_string(),
        })
        .collect();
    entries.sort_by(|a, b| a.env.cmp(&b.env));
    match format.to_ascii_lowercase().as_str() {
        "text" | "tmpl" | "" => {
            let mut out = String::new();
            for (k, v) in &dirs {
                out.push_str(&format!("{k}={}  # directory\n", shell_quote(v)));
            }
            for e in &entries {
                out.push_str(&format!(
                    "{}={}  # {}\n",
                    e.env,
                    shell_quote(e.value),
                    e.source
                ));
            }
            Ok(out)
        }
        f => {
            let fmt: Format = f.parse()?;
            if fmt == Format::Table {
                return Err(Error::invalid("invalid format: use text, json or yaml"));
            }
            #[derive(serde::Serialize)]
            struct All<'a> {
                directories: std::collections::BTreeMap<&'a str, String>,
                files: Vec<String>,
                settings: Vec<EnvEntry<'a>>,
            }
            let all = All {
                directories: dirs.iter().map(|(k, v)| (*k, v.clone())).collect(),
                files: cfg
                    .files
                    .iter()
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect(),
                settings: entries,
            };
            Ok(output::structured(&all, fmt))
        }
    }
}

/// Quote a value for a POSIX shell only when needed.
fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+,@%".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

fn run_version(format: &str) -> Result<String> {
    let v = cli::version_info();
    match format.to_ascii_lowercase().as_str() {
        "text" | "tmpl" | "" => Ok(format!(
            "REX-Ray (rexray-rs)\n-------------------\nBinary: {}\nSemVer: {}\nOsArch: {}\nBranch: {}\nCommit: {}\nFormed: {}\nDrivers: {}\n",
            v.binary,
            v.sem_ver,
            v.os_arch,
            v.branch,
            v.commit,
            v.formed,
            v.drivers.join(", ")
        )),
        f => Ok(output::structured(&v, f.parse()?)),
    }
}

/// rexray.1 plus one page per sub-command (rexray-volume-mount.1, ...).
fn write_man_pages(dir: &std::path::Path) -> Result<()> {
    use rexray::error::IoContext;
    fn walk(cmd: &clap::Command, name: String, dir: &std::path::Path) -> Result<()> {
        let page = cmd.clone().name(name.clone());
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .ctx(|| format!("rendering the man page of {name}"))?;
        let path = dir.join(format!("{name}.1"));
        // Man pages are for every user: 0644, replaced, never written
        // through a link.
        rexray::state::atomic::write_mode(&path, &buf, 0o644)?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    walk(&cmd, "rexray".into(), dir)?;
    // One page each: their sub-commands are protocol verbs, not commands
    // people type, and their argv is not parsed by clap.
    for (page, sections) in [
        (
            rexray::dvdi::args::doc_command(),
            rexray::dvdi::args::MAN_SECTIONS,
        ),
        (
            rexray::flex::args::doc_command(),
            rexray::flex::args::MAN_SECTIONS,
        ),
    ] {
        let name = page.get_name().to_string();
        let buf = protocol_man_page(page, sections)
            .ctx(|| format!("rendering the man page of {name}"))?;
        let path = dir.join(format!("{name}.1"));
        // Man pages are for every user: 0644, replaced, never written
        // through a link.
        rexray::state::atomic::write_mode(&path, &buf, 0o644)?;
    }
    Ok(())
}

/// A single man page: name, synopsis, description, options, then every
/// command with its usage, then `sections`.
fn protocol_man_page(
    mut cmd: clap::Command,
    sections: &[(&str, &str)],
) -> std::io::Result<Vec<u8>> {
    fn roff(text: &str) -> String {
        let t = text.replace('\\', "\\e").replace('-', "\\-");
        match t.chars().next() {
            Some('.') | Some('\'') => format!("\\&{t}"),
            _ => t,
        }
    }
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().next().is_some() {
        man.render_options_section(&mut buf)?;
    }
    let mut text = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands_mut() {
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        text.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(usage), roff(&about)));
    }
    for (title, body) in sections {
        text.push_str(&format!(".SH \"{title}\"\n{}\n", roff(body)));
    }
    buf.extend_from_slice(text.as_bytes());
    man.render_version_section(&mut buf)?;
    Ok(buf)
}

fn real_main() -> Result<ExitCode> {
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let (args, key_flags) = cli::take_key_flags(std::env::args().collect());
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    match &cli.command {
        Command::Version { format } => {
            print!("{}", run_version(format)?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completion { shell, program } => {
            let mut cmd = match program.as_str() {
                "rexray" => <Cli as clap::CommandFactory>::command(),
                "dvdcli" => rexray::dvdi::args::doc_command(),
                other => {
                    return Err(Error::invalid(format!(
                        "no completions for {}: use rexray or dvdcli",
                        rexray::input::quote(other)
                    )))
                }
            };
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, program.as_str(), &mut script);
            let _ = std::io::stdout().write_all(&script);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => {
            write_man_pages(dir)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let cfg = cli::load_config(cli.config, cli.log_level, cli.service, key_flags)?;
    cli::log_to_stderr("rexray", cfg.string(rexray::config::keys::LOG_LEVEL));
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let mut out = String::new();
    let failed = match cli.command {
        Command::Volume(cmd) => run_volume(cmd, cfg, &mut out)?,
        Command::Service(cmd) => return service(cmd, cfg, &mut out),
        Command::Start(a) => return service(ServiceCmd::Start(a), cfg, &mut out),
        Command::Stop => return service(ServiceCmd::Stop, cfg, &mut out),
        Command::Status => return service(ServiceCmd::Status, cfg, &mut out),
        Command::Snapshot(cmd) => {
            let code = rexray::snapshot::run(cmd, cfg, &mut out)?;
            print!("{out}");
            return Ok(ExitCode::from(code as u8));
        }
        Command::Flexrex(cmd) => {
            let code = rexray::flex::install::run(cmd, &cfg, &mut out)?;
            print!("{out}");
            return Ok(ExitCode::from(code as u8));
        }
        Command::Env { format } => {
            out = run_env(&cfg, &format)?;
            None
        }
        Command::Version { .. } | Command::Completion { .. } | Command::Man { .. } => {
            unreachable!("handled above")
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(if failed.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn service(cmd: ServiceCmd, cfg: Config, out: &mut String) -> Result<ExitCode> {
    let code = rexray::docker::service::run(cmd, cfg, out);
    print!("{out}");
    Ok(ExitCode::from(code? as u8))
}

fn main() -> ExitCode {
    cli::reset_inherited_signals();
    cli::quiet_panics();
    match cli::catch_panics(real_main) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rexray: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
