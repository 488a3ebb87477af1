//! `rexray service start|stop|status`.

use crate::config::Config;
use crate::{Error, Result};

/// `rexray service …`
#[derive(clap::Subcommand, Debug)]
pub enum ServiceCmd {
    /// Serve the Docker volume plugin endpoint in the foreground.
    Start,
    /// Stop the running service.
    Stop,
    /// Report whether the service runs.
    Status,
}

/// Run a `rexray service` command; appends the answer to `out` and returns
/// the exit code.
pub fn run(cmd: ServiceCmd, cfg: Config, out: &mut String) -> Result<i32> {
    let _ = (cmd, cfg, out);
    Err(Error::unsupported("rexray service is not implemented yet"))
}
