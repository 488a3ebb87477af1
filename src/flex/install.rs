//! `rexray flexrex install|uninstall|status`.

use crate::config::Config;
use crate::{Error, Result};

/// `rexray flexrex …`
#[derive(clap::Subcommand, Debug)]
pub enum FlexrexCmd {
    /// Install the flexrex driver where kubelet looks for it.
    Install,
    /// Remove the installed flexrex driver.
    Uninstall,
    /// Show whether flexrex is installed.
    Status,
}

/// Run a `rexray flexrex` command; appends the answer to `out` and returns
/// the exit code.
pub fn run(cmd: FlexrexCmd, cfg: &Config, out: &mut String) -> Result<i32> {
    let _ = (cmd, cfg, out);
    Err(Error::unsupported("rexray flexrex is not implemented yet"))
}
