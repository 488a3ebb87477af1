//! The `rexray` operator CLI — its argv, the commands, the rendering of
//! their answers — and what the three binaries share: configuration from
//! argv, logging, signals and panics, version facts.
//!
//! `src/bin/rexray.rs` only calls [`main`]. Like the other front-ends, the
//! commands reach volumes through [`Volumes`] only.

mod docs;
mod env;
mod flags;
mod process;
mod token;
mod version;
mod volume;

pub use flags::{load_config, take_key_flags};
pub use process::{
    catch_panics, deferred, level_filter, log_to_stderr, quiet_panics, reset_inherited_signals,
    start,
};
pub use version::{version_info, VersionInfo};

use crate::config::{keys, Config, FlagValue};
use crate::docker::service::{self, ServiceCmd, StartArgs};
use crate::volume::Volumes;
use crate::{Error, Result};
use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

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
    Volume(volume::VolumeCmd),
    /// Take, list and remove volume snapshots.
    #[command(subcommand, visible_alias = "snapshots")]
    Snapshot(crate::snapshot::SnapshotCmd),
    /// Run the Docker volume plugin service (start, stop, status).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Same as `rexray service start`.
    Start(StartArgs),
    /// Same as `rexray service stop`.
    Stop,
    /// Same as `rexray service status`.
    Status,
    /// Install, remove or check the Kubernetes FlexVolume driver.
    #[command(subcommand)]
    Flexrex(crate::flex::install::FlexrexCmd),
    /// Make and read bearer tokens for the libStorage API.
    #[command(subcommand)]
    Token(token::TokenCmd),
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

/// The argument definitions of `rexray`, for completions and man pages.
fn command() -> clap::Command {
    Cli::command()
}

/// What a command hands back: its answer for stdout, and the exit code.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    out: String,
    code: u8,
}

impl Answer {
    fn ok(out: String) -> Answer {
        Answer { out, code: 0 }
    }
}

/// Where notes and per-volume errors go (stderr), as they happen: one
/// volume's error shows even when a later one hangs.
pub(crate) struct Notes<'a>(&'a mut dyn Write);

impl Notes<'_> {
    /// One `rexray: <line>` line.
    fn line(&mut self, line: std::fmt::Arguments) {
        let _ = writeln!(self.0, "rexray: {line}");
    }
}

/// The whole `rexray` run over `argv` (the program name first): parse it,
/// run the command, print its answer, and turn an error — a panic too —
/// into one `rexray: error: …` line and its exit code. A usage error is
/// clap's message and exit code 2. Returns the exit code.
pub fn main(argv: Vec<OsString>) -> u8 {
    reset_inherited_signals();
    quiet_panics();
    match catch_panics(|| run(argv)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rexray: error: {e}");
            e.exit_code() as u8
        }
    }
}

fn run(argv: Vec<OsString>) -> Result<u8> {
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let (args, key_flags) = take_key_flags(utf8_args(argv)?);
    let cli = parse(args);
    let answer = execute(cli, key_flags, &mut Notes(&mut std::io::stderr()))?;
    print(&answer.out);
    Ok(answer.code)
}

/// [`Cli::parse_from`], but the command tree (a few hundred arguments,
/// each with its help text) is left to the end of the process instead of
/// freed piece by piece before the command even starts.
fn parse(args: Vec<String>) -> Cli {
    use clap::FromArgMatches;
    let mut cmd = std::mem::ManuallyDrop::new(Cli::command());
    let mut matches = cmd
        .try_get_matches_from_mut(args)
        .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    std::mem::forget(matches);
    cli
}

/// argv as text, or an error naming the argument that is not.
fn utf8_args(argv: Vec<OsString>) -> Result<Vec<String>> {
    argv.into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.into_string()
                .map_err(|a| Error::invalid(format!("argument {i} ({a:?}) is not valid UTF-8")))
        })
        .collect()
}

/// Write the answer to stdout; a reader that went away is not an error.
fn print(out: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn execute(cli: Cli, key_flags: Vec<FlagValue>, notes: &mut Notes) -> Result<Answer> {
    // These need no configuration, so they work with a broken one.
    match cli.command {
        Command::Version { format } => {
            return Ok(Answer::ok(version::render(&version_info(), &format)?))
        }
        Command::Completion { shell, program } => {
            return Ok(Answer::ok(docs::completion(shell, &program)?))
        }
        Command::Man { dir } => {
            docs::write_man_pages(&dir)?;
            return Ok(Answer::ok(String::new()));
        }
        _ => {}
    }
    let cfg = load_config(cli.config, cli.log_level, cli.service, key_flags)?;
    log_to_stderr("rexray", cfg.string(keys::LOG_LEVEL));
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match cli.command {
        Command::Volume(cmd) => volume::run(cmd, &Volumes::open(cfg)?, notes),
        Command::Snapshot(cmd) => {
            let mut out = String::new();
            let code = crate::snapshot::run(cmd, cfg, &mut out)?;
            Ok(Answer {
                out,
                code: code as u8,
            })
        }
        Command::Flexrex(cmd) => {
            let mut out = String::new();
            let code = crate::flex::install::run(cmd, &cfg, &mut out)?;
            Ok(Answer {
                out,
                code: code as u8,
            })
        }
        Command::Service(cmd) => run_service(cmd, cfg),
        Command::Start(a) => run_service(ServiceCmd::Start(a), cfg),
        Command::Stop => run_service(ServiceCmd::Stop, cfg),
        Command::Status => run_service(ServiceCmd::Status, cfg),
        Command::Env { format } => Ok(Answer::ok(env::render(&cfg, &format)?)),
        Command::Token(cmd) => Ok(Answer::ok(token::run(cmd, &cfg)?)),
        Command::Version { .. } | Command::Completion { .. } | Command::Man { .. } => {
            unreachable!("answered above")
        }
    }
}

fn run_service(cmd: ServiceCmd, cfg: Config) -> Result<Answer> {
    let mut out = String::new();
    match service::run(cmd, cfg, &mut out) {
        Ok(code) => Ok(Answer {
            out,
            code: code as u8,
        }),
        Err(e) => {
            // What it did before the error (a daemon started) is reported
            // before the error.
            print(&out);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
