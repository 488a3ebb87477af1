//! `rexray flexrex install|uninstall|status`: put the `flexrex` binary
//! where kubelet looks for FlexVolume drivers.
//!
//! The binary is copied, not linked, so upgrading rexray never changes the
//! driver under a running kubelet, and it is written to a temporary file
//! in the same directory and renamed into place, so kubelet's directory
//! watcher never sees a half-written executable.

use crate::config::Config;
use crate::error::IoContext;
use crate::output::{self, Format};
use crate::{Error, Result};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where kubelet looks for the `rexray/flexrex` driver by default.
pub const DEFAULT_PATH: &str =
    "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/rexray~flexrex/flexrex";

/// Options every `rexray flexrex` command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Where the driver goes (kubelet's plugin dir + `rexray~flexrex/flexrex`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub path: PathBuf,
    /// Output format: tmpl (table), json, jsonp (indented JSON) or yaml.
    #[arg(short = 'f', long = "format", default_value = "tmpl")]
    pub format: String,
    /// Leave out the header row.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// `rexray flexrex …`
#[derive(clap::Subcommand, Debug)]
pub enum FlexrexCmd {
    /// Install the flexrex driver where kubelet looks for it.
    ///
    /// Copies the flexrex binary next to this rexray. Modified = an
    /// existing, different file was replaced.
    Install {
        #[command(flatten)]
        target: Target,
        /// Replace an existing file that differs from this flexrex.
        #[arg(long)]
        force: bool,
    },
    /// Remove the installed flexrex driver; prints its path.
    Uninstall {
        #[command(flatten)]
        target: Target,
    },
    /// Show whether flexrex is installed.
    ///
    /// Modified = the installed file differs from this rexray's flexrex
    /// (install --force would replace it).
    Status {
        #[command(flatten)]
        target: Target,
    },
}

/// One row of the `Path  Installed  Modified` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallStatus {
    /// The driver's path.
    pub path: String,
    /// A flexrex is there.
    pub installed: bool,
    /// See the command's help.
    pub modified: bool,
}

/// The result of an uninstall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uninstalled {
    /// The driver's path.
    pub path: String,
    /// A file was there and is gone.
    pub removed: bool,
}

/// Run a `rexray flexrex` command; appends the answer to `out` and returns
/// the exit code.
pub fn run(cmd: FlexrexCmd, cfg: &Config, out: &mut String) -> Result<i32> {
    let _ = cfg;
    match cmd {
        FlexrexCmd::Install { target, force } => {
            let format: Format = target.format.parse()?;
            let path = checked(&target.path)?;
            let st = install(&source_binary()?, &path, force)?;
            out.push_str(&render(&st, format, target.quiet));
        }
        FlexrexCmd::Status { target } => {
            let format: Format = target.format.parse()?;
            let path = checked(&target.path)?;
            let st = status(&source_binary()?, &path)?;
            out.push_str(&render(&st, format, target.quiet));
        }
        FlexrexCmd::Uninstall { target } => {
            let format: Format = target.format.parse()?;
            let path = checked(&target.path)?;
            let u = uninstall(&path)?;
            if format == Format::Table {
                out.push_str(&u.path);
                out.push('\n');
            } else {
                out.push_str(&output::structured(&[u], format));
            }
        }
    }
    Ok(0)
}

fn checked(p: &Path) -> Result<PathBuf> {
    if !p.is_absolute() || p.file_name().is_none() {
        return Err(Error::invalid(format!(
            "invalid --path {}: expected an absolute path to a file, e.g. {DEFAULT_PATH}",
            crate::input::quote(&p.to_string_lossy())
        )));
    }
    Ok(p.to_path_buf())
}

fn render(st: &InstallStatus, format: Format, quiet: bool) -> String {
    if format != Format::Table {
        return output::structured(std::slice::from_ref(st), format);
    }
    let header: &[&str] = &["Path", "Installed", "Modified"];
    output::table(
        (!quiet).then_some(header),
        &[vec![
            st.path.clone(),
            st.installed.to_string(),
            st.modified.to_string(),
        ]],
    )
}

/// The `flexrex` binary that sits next to the running executable.
pub fn source_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().ctx(|| "finding the running rexray binary")?;
    let p = exe
        .parent()
        .map(|d| d.join("flexrex"))
        .unwrap_or_else(|| PathBuf::from("flexrex"));
    if !p.is_file() {
        return Err(Error::system(format!(
            "the flexrex binary was not found at {}: it is installed next to rexray (e.g. /usr/bin/flexrex)",
            p.display()
        )));
    }
    Ok(p)
}

fn read_existing(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::from_io(format!("inspecting {}", path.display()), &e)),
        Ok(m) if m.is_dir() => {
            return Err(Error::invalid(format!(
                "{} is a directory; --path names the driver file itself (…/rexray~flexrex/flexrex)",
                path.display()
            )))
        }
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        // A dangling symbolic link (the original installed one) counts as
        // a different file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Vec::new())),
        Err(e) => Err(Error::from_io(format!("reading {}", path.display()), &e)),
    }
}

/// Whether `path` holds `source`'s bytes.
pub fn status(source: &Path, path: &Path) -> Result<InstallStatus> {
    let want = std::fs::read(source).ctx(|| format!("reading {}", source.display()))?;
    let have = read_existing(path)?;
    Ok(InstallStatus {
        path: path.to_string_lossy().into_owned(),
        installed: have.is_some(),
        modified: have.is_some_and(|h| h != want),
    })
}

/// Copy `source` to `path` (mode 0755) unless it is already there.
pub fn install(source: &Path, path: &Path, force: bool) -> Result<InstallStatus> {
    let want = std::fs::read(source).ctx(|| format!("reading {}", source.display()))?;
    let have = read_existing(path)?;
    let modified = match &have {
        Some(h) if *h == want => {
            // Never chmod through a link: only the regular file itself.
            let mode = std::fs::symlink_metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.permissions().mode() & 0o777);
            if mode.is_some_and(|m| m & 0o111 == 0) {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .ctx(|| format!("making {} executable", path.display()))?;
            }
            return Ok(InstallStatus {
                path: path.to_string_lossy().into_owned(),
                installed: true,
                modified: false,
            });
        }
        Some(_) if !force => {
            return Err(Error::exists(format!(
                "{} exists and differs from this rexray's flexrex; pass --force to replace it",
                path.display()
            )))
        }
        Some(_) => true,
        None => false,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        // kubelet's plugin directory: a program directory, 0755.
        crate::files::own_dir(dir, crate::files::SHARED_DIR, crate::files::Link::Refuse)?;
    }
    // Temp file + rename: kubelet's directory watcher never sees a
    // half-written driver.
    crate::files::atomic::write_mode(path, &want, 0o755)?;
    Ok(InstallStatus {
        path: path.to_string_lossy().into_owned(),
        installed: true,
        modified,
    })
}

/// Remove the driver at `path` (and its `rexray~flexrex` directory when
/// that is left empty, so kubelet stops probing it). Absent is success.
pub fn uninstall(path: &Path) -> Result<Uninstalled> {
    let removed = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::from_io(format!("inspecting {}", path.display()), &e)),
        Ok(m) if m.is_dir() => {
            return Err(Error::invalid(format!(
                "{} is a directory; --path names the driver file itself",
                path.display()
            )))
        }
        Ok(_) => {
            crate::files::atomic::remove(path)?;
            true
        }
    };
    if let Some(dir) = path.parent() {
        if dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains('~'))
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(Uninstalled {
        path: path.to_string_lossy().into_owned(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_guarded() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("flexrex");
        std::fs::write(&src, b"v1").unwrap();
        let dest = t.path().join("exec/rexray~flexrex/flexrex");
        assert!(!status(&src, &dest).unwrap().installed);
        let st = install(&src, &dest, false).unwrap();
        assert!(st.installed && !st.modified);
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let st = install(&src, &dest, false).unwrap();
        assert!(st.installed && !st.modified);
        std::fs::write(&src, b"v2").unwrap();
        assert!(status(&src, &dest).unwrap().modified);
        let e = install(&src, &dest, false).unwrap_err().to_string();
        assert!(e.contains("--force") && e.contains("rexray~flexrex"), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"v1");
        let st = install(&src, &dest, true).unwrap();
        assert!(st.installed && st.modified);
        assert_eq!(std::fs::read(&dest).unwrap(), b"v2");
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1
        );
        let u = uninstall(&dest).unwrap();
        assert!(u.removed && !dest.exists() && !dest.parent().unwrap().exists());
        assert!(!uninstall(&dest).unwrap().removed);
    }
}
