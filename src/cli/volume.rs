//! `rexray volume …`: one function per sub-command over the workflows
//! ([`Volumes`]), and what they share: going through the volumes named
//! with their errors, and rendering what succeeded.

use super::{Answer, Notes};
use crate::model::{AttachmentState, CreateOptions, MountOptions, Volume, VolumeWithPath};
use crate::output::{self, Format};
use crate::volume::Consumer;
use crate::volume::{Created, Unmounted, VolumeRef, Volumes};
use crate::{Error, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

/// `rexray volume …`
#[derive(Subcommand)]
pub(crate) enum VolumeCmd {
    /// List volumes, or inspect the ones named.
    #[command(visible_aliases = ["list", "get", "inspect", "l"])]
    Ls(LsArgs),
    /// Create volumes.
    #[command(visible_aliases = ["new", "c", "n"])]
    Create(CreateArgs),
    /// Remove volumes (exact id or name; never a volume in use).
    #[command(visible_aliases = ["remove", "delete", "del", "r"])]
    Rm(RmArgs),
    /// Attach volumes to this instance.
    #[command(visible_alias = "a")]
    Attach(AttachArgs),
    /// Detach volumes that are not mounted.
    #[command(visible_alias = "d")]
    Detach(DetachArgs),
    /// Attach, format (only if blank) and mount volumes; prints their paths.
    #[command(visible_alias = "m")]
    Mount(MountArgs),
    /// Release this CLI's use of volumes; unmounts and detaches when no one
    /// else uses them.
    #[command(visible_aliases = ["umount", "u"])]
    Unmount(UnmountArgs),
    /// Print the path of a mounted volume.
    Path(PathArgs),
}

/// The output flags every volume command takes.
#[derive(Args, Clone)]
pub(crate) struct Fmt {
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

impl Fmt {
    fn format(&self) -> Result<Format> {
        self.format.parse()
    }
}

#[derive(Args)]
pub(crate) struct LsArgs {
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
}

#[derive(Args)]
pub(crate) struct CreateArgs {
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
}

#[derive(Args)]
pub(crate) struct RmArgs {
    /// Volume ids or names (exact; `id:X` or `name:X` says which).
    #[arg(required = true)]
    volumes: Vec<String>,
    /// Accepted for compatibility: a volume in use is never removed.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    fmt: Fmt,
}

#[derive(Args)]
pub(crate) struct AttachArgs {
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
}

#[derive(Args)]
pub(crate) struct DetachArgs {
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
}

#[derive(Args)]
pub(crate) struct MountArgs {
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
}

#[derive(Args)]
pub(crate) struct UnmountArgs {
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
}

#[derive(Args)]
pub(crate) struct PathArgs {
    /// Volume id or name (`id:X` or `name:X` says which).
    volume: String,
    #[command(flatten)]
    fmt: Fmt,
}

/// Run a `rexray volume` command over `vols`.
pub(crate) fn run(cmd: VolumeCmd, vols: &Volumes, notes: &mut Notes) -> Result<Answer> {
    match cmd {
        VolumeCmd::Ls(a) => ls(vols, &a),
        VolumeCmd::Create(a) => create(vols, &a, notes),
        VolumeCmd::Rm(a) => rm(vols, &a, notes),
        VolumeCmd::Attach(a) => volume_table(&a.fmt, &a.volumes, notes, |n, _| {
            vols.attach(VolumeRef::operator(n), a.force)
        }),
        VolumeCmd::Detach(a) => volume_table(&a.fmt, &a.volumes, notes, |n, _| {
            vols.detach(VolumeRef::operator(n), a.force)
        }),
        VolumeCmd::Mount(a) => mount(vols, &a, notes),
        VolumeCmd::Unmount(a) => unmount(vols, &a, notes),
        VolumeCmd::Path(a) => path(vols, &a),
    }
}

fn ls(vols: &Volumes, a: &LsArgs) -> Result<Answer> {
    let format = a.fmt.format()?;
    for n in &a.volumes {
        crate::input::volume_name(n)?;
    }
    let keep = |v: &Volume| {
        (a.volumes.is_empty() || a.volumes.iter().any(|n| *n == v.id || *n == v.name))
            && (!a.attached || v.state() == AttachmentState::Attached)
            && (!a.available || v.state() == AttachmentState::Available)
    };
    let out = if a.path {
        let rows: Vec<VolumeWithPath> = vols
            .list_with_paths()?
            .into_iter()
            .filter(|(v, _)| keep(v))
            .map(|(v, p)| with_path(v, p))
            .collect();
        output::volumes_with_path(&rows, format, a.fmt.quiet)
    } else if a.volumes.is_empty() {
        // A table shows no `allocated` (a stat per image).
        let all = if format == Format::Table {
            vols.list_without_usage()?
        } else {
            vols.list()?
        };
        let rows: Vec<Volume> = all.into_iter().filter(|v| keep(v)).collect();
        output::volumes(&rows, format, a.fmt.quiet)
    } else {
        // Each named volume by lookup: as fast among 100,000.
        let mut rows: Vec<Volume> = Vec::new();
        for n in &a.volumes {
            if let Some(v) = vols.lookup(VolumeRef::operator(n))? {
                if keep(&v) && !rows.iter().any(|r| r.id == v.id) {
                    rows.push(v);
                }
            }
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        output::volumes(&rows, format, a.fmt.quiet)
    };
    Ok(Answer::ok(out))
}

fn create(vols: &Volumes, a: &CreateArgs, notes: &mut Notes) -> Result<Answer> {
    let format = a.fmt.format()?;
    let opts = CreateOptions {
        encrypted: a.encrypted,
        ..flag_options(&[
            ("size", &a.size),
            ("iops", &a.iops),
            ("volumeType", &a.volume_type),
            ("availabilityZone", &a.availability_zone),
            ("fsType", &a.fs_type),
        ])?
        .create
    };
    // Every name is checked before the first volume is made.
    for n in &a.volumes {
        crate::input::volume_name(n)?;
    }
    let created = each(
        &a.volumes,
        a.fmt.continue_on_error,
        notes,
        |n, notes| match vols.create(n, &opts)? {
            Created::New(v) => Ok(Some(v)),
            Created::Existing(_) => Err(Error::exists(format!(
                "volume {n} already exists; nothing was changed"
            ))),
            Created::Disabled => {
                notes.line(format_args!(
                    "create.disable is set: volume {n} was not created"
                ));
                Ok(None)
            }
        },
    );
    Ok(created
        .flatten()
        .answer(|d| output::volumes(d, format, a.fmt.quiet)))
}

fn rm(vols: &Volumes, a: &RmArgs, notes: &mut Notes) -> Result<Answer> {
    let format = a.fmt.format()?;
    let removed = each(
        &a.volumes,
        a.fmt.continue_on_error,
        notes,
        |n, notes| match vols.remove(VolumeRef::operator(n))? {
            Some(v) => Ok(Some(v.name)),
            None => {
                notes.line(format_args!(
                    "remove.disable is set: volume {n} was not removed"
                ));
                Ok(None)
            }
        },
    )
    .flatten();
    let mut names = removed.done;
    names.sort();
    // The list of names is printed even when empty: `[]` for scripts.
    Ok(Answer {
        out: lines_or_structured(format, &names, &names),
        code: removed.failed.into(),
    })
}

fn mount(vols: &Volumes, a: &MountArgs, notes: &mut Notes) -> Result<Answer> {
    let who = consumer(a.consumer.as_deref());
    let format = a.fmt.format()?;
    let opts = MountOptions {
        fs_type: flag_options(&[("fsType", &a.fs_type)])?.create.fs_type,
        overwrite_fs: a.overwrite_fs,
        force_attach: false,
    };
    let mounted = each(&a.volumes, a.fmt.continue_on_error, notes, |n, _| {
        let (v, p) = vols.mount(VolumeRef::operator(n), who, &opts)?;
        Ok(with_path(v, p.to_string_lossy().into_owned()))
    });
    Ok(mounted.answer(|d| output::volumes_with_path(d, format, a.fmt.quiet)))
}

fn unmount(vols: &Volumes, a: &UnmountArgs, notes: &mut Notes) -> Result<Answer> {
    let who = consumer(a.consumer.as_deref());
    volume_table(&a.fmt, &a.volumes, notes, |n, notes| {
        let r = VolumeRef::operator(n);
        let released = match vols.unmount(r, who)? {
            Unmounted::StillUsed(_) => false,
            Unmounted::Released => true,
        };
        // One lookup for the note and the row.
        let v = vols.find(r)?;
        if !released {
            let users: Vec<String> = vols
                .mount_record_of(&v)?
                .map(|rec| rec.consumers.into_iter().collect())
                .unwrap_or_default();
            notes.line(format_args!(
                "volume {n} stays mounted: still used by {} (unmount.ignoreUsedCount unmounts it whoever uses it)",
                users.join(", ")
            ));
        }
        if released {
            if let Some(rec) = vols
                .mount_record_of(&v)?
                .filter(|rec| !rec.holds.is_empty())
            {
                let held: Vec<&str> = rec.holds.iter().map(String::as_str).collect();
                notes.line(format_args!(
                    "volume {n} stays attached: held by {} until its detach",
                    held.join(", ")
                ));
            }
        }
        Ok(v)
    })
}

fn path(vols: &Volumes, a: &PathArgs) -> Result<Answer> {
    let format = a.fmt.format()?;
    let v = vols.find(VolumeRef::operator(&a.volume))?;
    let Some(p) = vols.path(VolumeRef::Id(&v.id))? else {
        return Err(Error::not_found(format!(
            "volume {} is not mounted on this host (mount it with `rexray volume mount {}`)",
            v.name, v.name
        )));
    };
    let p = p.to_string_lossy().into_owned();
    let out = lines_or_structured(format, std::slice::from_ref(&p), &[with_path(v, p.clone())]);
    Ok(Answer::ok(out))
}

/// The consumer `--consumer` names: `cli:<ID>`, or the shared anonymous
/// one.
fn consumer(id: Option<&str>) -> Consumer<'_> {
    id.map_or(Consumer::Anonymous, Consumer::Cli)
}

/// The option flags given, checked by the one options parser (the
/// argument parser has refused unknown and repeated flags).
fn flag_options(flags: &[(&str, &Option<String>)]) -> Result<crate::options::Parsed> {
    let pairs: Vec<(String, String)> = flags
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.as_ref()?.clone())))
        .collect();
    crate::options::CLI.parse(&pairs)
}

/// What a command did to each volume named, and whether one failed (its
/// error is already on stderr).
struct Batch<T> {
    done: Vec<T>,
    failed: bool,
}

impl<T> Batch<T> {
    /// `render` of what succeeded — nothing at all when every volume
    /// failed; exit code 1 when one failed.
    fn answer(self, render: impl FnOnce(&[T]) -> String) -> Answer {
        let out = if self.done.is_empty() && self.failed {
            String::new()
        } else {
            render(&self.done)
        };
        Answer {
            out,
            code: self.failed.into(),
        }
    }
}

impl<T> Batch<Option<T>> {
    /// Leave out the volumes where nothing was done.
    fn flatten(self) -> Batch<T> {
        Batch {
            done: self.done.into_iter().flatten().collect(),
            failed: self.failed,
        }
    }
}

/// Apply `op` to each volume in order, each error to stderr as it
/// happens; stop at the first error unless asked to go on.
fn each<T>(
    names: &[String],
    continue_on_error: bool,
    notes: &mut Notes,
    mut op: impl FnMut(&str, &mut Notes) -> Result<T>,
) -> Batch<T> {
    let mut batch = Batch {
        done: Vec::new(),
        failed: false,
    };
    for n in names {
        match op(n, notes) {
            Ok(t) => batch.done.push(t),
            Err(e) => {
                notes.line(format_args!("error: {e}"));
                batch.failed = true;
                if !continue_on_error {
                    break;
                }
            }
        }
    }
    batch
}

/// Run `op` on each volume named and answer with the volume table.
fn volume_table(
    fmt: &Fmt,
    names: &[String],
    notes: &mut Notes,
    op: impl FnMut(&str, &mut Notes) -> Result<Volume>,
) -> Result<Answer> {
    let format = fmt.format()?;
    Ok(each(names, fmt.continue_on_error, notes, op)
        .answer(|d| output::volumes(d, format, fmt.quiet)))
}

/// One line each for a table, else `value` as JSON or YAML.
fn lines_or_structured<T: Serialize + ?Sized>(
    format: Format,
    lines: &[String],
    value: &T,
) -> String {
    if format == Format::Table {
        lines.iter().map(|l| format!("{l}\n")).collect()
    } else {
        output::structured(value, format)
    }
}

fn with_path(volume: Volume, path: String) -> VolumeWithPath {
    VolumeWithPath { volume, path }
}

#[cfg(test)]
#[path = "volume_tests.rs"]
mod tests;
