//! The life of a catalog row: a name claimed (its row made `creating`
//! under the row's lock) before its image exists, published (`ready`)
//! once the image is in place, marked `removing` before its image goes;
//! and what a killed writer left behind, finished by the next claim.

use super::{catalog, free_bytes, kernel_loops, new_id, Catalog, Kind, LoopDriver};
use crate::state::FileLock;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

impl LoopDriver {
    /// The lock a writer holds while a row of `kind` is not `ready`
    /// (for a volume, the same lock as attach and detach).
    pub(super) fn row_lock_path(&self, kind: Kind, id: &str) -> PathBuf {
        match kind {
            Kind::Volume => self.root.join("locks").join(format!("{id}.lock")),
            Kind::Snapshot => self.root.join("locks").join(format!("{id}.snapshot.lock")),
        }
    }

    /// Claim `name` for a new volume or snapshot, in one transaction:
    /// finish what killed writers left, refuse a taken name or a name that
    /// is an id, draw an id that is neither, and insert the row (made by
    /// `insert`) in state `creating`. Returns the id and the held lock that
    /// tells a sweep this writer lives.
    pub(super) fn claim(
        &self,
        kind: Kind,
        name: &str,
        insert: impl Fn(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<()>,
    ) -> Result<(String, FileLock)> {
        let what = kind.what();
        let step = format!("creating {what} {name}");
        for _ in 0..64 {
            let id = new_id()?;
            let lock = FileLock::acquire(
                &self.row_lock_path(kind, &id),
                self.lock_timeout,
                &format!("{what} {id}"),
            )?;
            let claimed = self.catalog.write_as(&step, false, |tx| {
                let sql = self.catalog.sql(&step);
                self.finish_unfinished(tx).map_err(&sql)?;
                let (named, id_of) = catalog::name_check(tx, kind.table(), name).map_err(&sql)?;
                if named {
                    return Err(Error::exists(format!("{what} {name} already exists")));
                }
                if let Some(other) = id_of {
                    crate::storage::refuse_name_that_is_an_id(
                        what,
                        name,
                        std::iter::once((name, other.as_str())),
                    )?;
                }
                let taken = id == name
                    || match kind {
                        Kind::Volume => catalog::volume_taken(tx, &id),
                        Kind::Snapshot => catalog::snapshot_taken(tx, &id),
                    }
                    .map_err(&sql)?;
                if taken {
                    return Ok(false);
                }
                insert(tx, &id).map_err(&sql)?;
                Ok(true)
            })?;
            if claimed {
                return Ok((id, lock));
            }
            lock.remove_file();
        }
        Err(Error::system(
            "could not draw a volume id that is not already an id or a name (64 tries)",
        ))
    }

    /// Mark the claimed row `id` ready (its image is in place and synced).
    pub(super) fn publish(&self, kind: Kind, id: &str, name: &str) -> Result<()> {
        let step = format!("creating {} {name}", kind.what());
        self.catalog.write(&step, |tx| {
            catalog::set_state(tx, kind.table(), id, "creating", "ready")
                .map(|_| ())
                .map_err(self.catalog.sql(&step))
        })
    }

    /// Undo a claim whose image could not be made: the row goes (the
    /// image is already gone); if even that fails, the next claim does it.
    pub(super) fn unclaim(&self, kind: Kind, id: &str, lock: FileLock) {
        let _ = self.catalog.write("undoing a failed create", |tx| {
            catalog::delete(tx, kind.table(), id).map_err(self.catalog.sql("undoing"))
        });
        lock.remove_file();
    }

    /// Finish the rows killed writers left (not `ready`, and their lock
    /// free): their images go, then the rows. An attached image is never
    /// removed.
    pub(super) fn finish_unfinished(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let rows = Catalog::unfinished(tx)?;
        if rows.is_empty() {
            return Ok(());
        }
        let loops = kernel_loops();
        for u in rows {
            let kind = if u.snapshot {
                Kind::Snapshot
            } else {
                Kind::Volume
            };
            let Ok(Some(lock)) = FileLock::try_acquire(&self.row_lock_path(kind, &u.id)) else {
                continue; // its writer lives
            };
            let img = match kind {
                Kind::Volume => self.image(&u.id),
                Kind::Snapshot => self.snap_image(&u.id),
            };
            if loops.contains_key(&img) {
                continue;
            }
            tracing::info!(image = %img.display(), "removing an image a killed create or remove left behind");
            if std::fs::remove_file(&img).is_err() && img.exists() {
                continue;
            }
            if kind == Kind::Volume {
                let _ = std::fs::remove_file(self.owner_path(&u.id));
            }
            catalog::delete(tx, kind.table(), &u.id)?;
            lock.remove_file();
        }
        Ok(())
    }

    /// Mark the row of `id` in `table` as being removed (`false`: no such
    /// ready row). On a full disk the catalog cannot take even that
    /// write, and removing is how an operator frees space: then the
    /// blocks of `img`, the image about to be removed (not attached), are
    /// freed first — it keeps its size, holding zeros — and the write is
    /// tried again. A failure after that leaves the row listed with a
    /// blank image, which `rm` removes once there is room.
    pub(super) fn mark_removing(
        &self,
        table: &str,
        id: &str,
        step: &str,
        img: &Path,
    ) -> Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        let mark = || {
            self.catalog.write(step, |tx| {
                catalog::set_state(tx, table, id, "ready", "removing")
                    .map_err(self.catalog.sql(step))
            })
        };
        let first = match mark() {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        let full = nix::sys::statvfs::statvfs(&self.root).is_ok_and(|s| s.files_available() == 0)
            || free_bytes(&self.root) < (1 << 20);
        if !full {
            return Err(first);
        }
        let freed = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(img)
            .and_then(|f| {
                let size = f.metadata()?.len();
                f.set_len(0)?;
                f.set_len(size)
            });
        if let Err(e) = freed {
            tracing::warn!(image = %img.display(), error = %e, "could not free the blocks of an image being removed");
            return Err(first);
        }
        tracing::warn!(image = %img.display(), "{}; freed the blocks of the image being removed to write the catalog", first.message());
        mark().map_err(|e| {
            e.context(format!(
                "{step}: the disk under loop.volumePath is full (its image's blocks were freed, and it holds zeros now; remove it again once space is freed)"
            ))
        })
    }
}
