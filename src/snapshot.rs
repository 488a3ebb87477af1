//! `rexray snapshot ls|create|rm`: point-in-time copies of volumes, the
//! sources of `snapshotName`/`snapshotID` at create.

use crate::config::Config;
use crate::model::Snapshot;
use crate::output::{self, Format};
use crate::volume::{SnapshotRef, VolumeRef, Volumes};
use crate::Result;

/// `rexray snapshot …`
#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// List snapshots.
    #[command(visible_aliases = ["list", "get"])]
    Ls {
        /// Output format: tmpl (table), json, jsonp or yaml.
        #[arg(short = 'f', long = "format", default_value = "tmpl")]
        format: String,
    },
    /// Take a snapshot of a volume (frozen for the copy when mounted here).
    #[command(visible_alias = "new")]
    Create {
        /// Volume id or name (`id:X` or `name:X` says which).
        volume: String,
        /// Name of the snapshot.
        name: String,
        /// Output format: tmpl (table), json, jsonp or yaml.
        #[arg(short = 'f', long = "format", default_value = "tmpl")]
        format: String,
    },
    /// Remove snapshots (exact id or name; `id:X` or `name:X` says which).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Snapshot ids or names.
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
}

fn render(s: &[Snapshot], format: Format) -> String {
    if format != Format::Table {
        return output::structured(s, format);
    }
    let rows: Vec<Vec<String>> = s
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.volume_id.clone(),
                s.volume_size.to_string(),
                s.start_time.clone(),
            ]
        })
        .collect();
    output::table(
        Some(&["ID", "Name", "VolumeID", "Size", "StartTime"]),
        &rows,
    )
}

/// Run a `rexray snapshot` command; appends the answer to `out`.
pub fn run(cmd: SnapshotCmd, cfg: Config, out: &mut String) -> Result<i32> {
    let vols = Volumes::open(cfg)?;
    match cmd {
        SnapshotCmd::Ls { format } => out.push_str(&render(&vols.snapshots()?, format.parse()?)),
        SnapshotCmd::Create {
            volume,
            name,
            format,
        } => {
            let format: Format = format.parse()?;
            let s = vols.snapshot(VolumeRef::operator(&volume), &name)?;
            out.push_str(&render(&[s], format));
        }
        SnapshotCmd::Rm { snapshots } => {
            for s in snapshots {
                let gone = vols.remove_snapshot(SnapshotRef::operator(&s))?;
                out.push_str(&gone.name);
                out.push('\n');
            }
        }
    }
    Ok(0)
}
