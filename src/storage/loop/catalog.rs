//! The loop driver's catalog: every volume and snapshot, one row each,
//! in the SQLite database `<volumePath>/catalog.db`.
//!
//! Every lookup (by name, by id), create, remove and resize touches a few
//! index pages, so an operation costs the same among 100,000 volumes as
//! among ten; `ls` streams the rows.
//!
//! - WAL mode: readers never wait for a writer, and a writer appends.
//! - `synchronous=FULL`: a commit is on disk when it returns. The image of
//!   a new volume is fsynced before its create is reported done, and so
//!   must its row be (with NORMAL, a power loss could roll back the last
//!   commits: a volume reported created would be gone, its image left).
//! - `busy_timeout` is `rexray.lockTimeout`: a writer waits that long for
//!   another, then says which file is locked.
//! - A row is made in state `creating` (committed) *before* its image
//!   exists, and marked `removing` before its image goes, by a writer that
//!   holds `locks/<id>.lock` throughout. A row not `ready` whose lock no
//!   process holds was left by a killed writer: the next claim of a name
//!   finishes it (removes the image and the row). So no image is ever
//!   unknown to the catalog, and no directory scan is needed to find
//!   what a crash left.
//! - The generation the long-running service's cache of the volumes
//!   compares is SQLite's `PRAGMA data_version` on a connection of its
//!   own that never writes: it changes with every commit, by this process
//!   or another (a change made by hand with `sqlite3` too).
//! - `meta` holds the sum of all volume sizes (an O(1) bound for the
//!   overcommit warning), kept by the statements that insert, delete or
//!   resize a volume's row (a size changed by hand leaves it behind until
//!   the next migration recounts it).
//! - No volume's name is another's id, nor its id another's name: the
//!   claim of a name checks it inside the inserting transaction, and so
//!   does the import of `catalog.json`.
//! - Every process that opens the catalog parses its schema, so the
//!   schema holds nothing more: no triggers (they were a third of the
//!   parse).
//! - A process that wrote empties the log when it closes the catalog
//!   (see `Drop`), so the next one, alone, opens it without reading a log.
//!
//! `catalog.json` (the format of earlier releases) is imported once, under
//! `catalog.lock`, and replaced by a marker that earlier releases refuse to
//! parse (never removed: a release that found no catalog would take every
//! image for an orphan).

use super::{Record, SnapRecord};
use crate::{Error, Result};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The file name of the database under volumePath.
pub const DB: &str = "catalog.db";
/// The file name of the earlier releases' catalog.
pub const JSON: &str = "catalog.json";

/// What stands in place of `catalog.json` once its volumes are in
/// `catalog.db`: earlier releases expect `volumes` to be a list and refuse
/// this, naming the file.
pub const MOVED_MARKER: &str =
    "{\"volumes\":\"moved to catalog.db by a newer rexray; downgrade is not supported\"}\n";

/// `user_version` of a database whose schema is made and whose import of
/// `catalog.json` is committed, and of one whose marker is written too
/// and whose schema is the current one. (2 and 3: the marker written,
/// with the eight or three triggers earlier builds made, removed by
/// `migrate`.)
const IMPORTED: i64 = 1;
const READY: i64 = 4;

/// What earlier builds of this release had in the schema, and this one
/// does not: checks that the claim of a name makes anyway, a generation
/// and a total kept by triggers. Each cost every process that opens the
/// catalog its parse. The total is counted again.
const OLD_TRIGGERS: &str = "
DROP TRIGGER IF EXISTS volume_name_is_no_id;
DROP TRIGGER IF EXISTS snapshot_name_is_no_id;
DROP TRIGGER IF EXISTS snapshots_ins;
DROP TRIGGER IF EXISTS snapshots_del;
DROP TRIGGER IF EXISTS snapshots_upd;
DROP TRIGGER IF EXISTS volumes_ins;
DROP TRIGGER IF EXISTS volumes_del;
DROP TRIGGER IF EXISTS volumes_upd;
DELETE FROM meta WHERE key = 'generation';
UPDATE meta SET value = (SELECT coalesce(sum(size), 0) FROM volumes) WHERE key = 'total_gib';
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes(
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL UNIQUE,
  size INTEGER NOT NULL,
  type TEXT NOT NULL DEFAULT '',
  iops INTEGER NOT NULL DEFAULT 0,
  availability_zone TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL DEFAULT '',
  fields TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL DEFAULT 'ready'
);
CREATE INDEX IF NOT EXISTS volumes_unfinished ON volumes(state) WHERE state <> 'ready';
CREATE TABLE IF NOT EXISTS snapshots(
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL UNIQUE,
  volume_id TEXT NOT NULL,
  volume_size INTEGER NOT NULL,
  created_at TEXT NOT NULL DEFAULT '',
  fields TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL DEFAULT 'ready'
);
CREATE INDEX IF NOT EXISTS snapshots_unfinished ON snapshots(state) WHERE state <> 'ready';
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES('total_gib', 0);
";

const VOLUME_COLS: &str = "id, name, size, type, iops, availability_zone, created_at, fields";
const SNAP_COLS: &str = "id, name, volume_id, volume_size, created_at, fields";

/// The open catalog.
pub struct Catalog {
    root: PathBuf,
    path: PathBuf,
    lock_timeout: Duration,
    conn: Mutex<Connection>,
    /// A second connection that never writes (so its `data_version`
    /// changes with every commit, this process's too) and never waits
    /// (busy timeout 0), for the service's cache checks.
    probe: OnceLock<Option<Mutex<Connection>>>,
    /// Whether this process committed a write (then it empties the log
    /// when it closes the catalog).
    wrote: AtomicBool,
}

/// A volume or snapshot row that a killed writer left unfinished.
pub struct Unfinished {
    pub id: String,
    pub snapshot: bool,
}

impl Catalog {
    /// Open `<root>/catalog.db`, making it (0600, so its `-wal` and `-shm`
    /// are too) and importing `catalog.json` when there is none yet.
    pub fn open(root: &Path, lock_timeout: Duration) -> Result<Catalog> {
        let path = root.join(DB);
        match crate::files::create_new(&path, crate::files::PRIVATE_FILE, "catalog") {
            Ok(_) => {}
            Err(e) if e.kind() == crate::Kind::AlreadyExists => {}
            Err(e) => return Err(e.context("opening the loop catalog")),
        }
        let mut c = Catalog {
            root: root.to_path_buf(),
            path: path.clone(),
            lock_timeout,
            conn: Mutex::new(
                Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| Self::error_at(&path, root, lock_timeout, "opening", e))?,
            ),
            probe: OnceLock::new(),
            wrote: AtomicBool::new(false),
        };
        c.prepare()?;
        Ok(c)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An SQLite error as one of ours: names the file, what was being
    /// done, and the fix.
    fn error_at(
        path: &Path,
        root: &Path,
        timeout: Duration,
        what: &str,
        e: rusqlite::Error,
    ) -> Error {
        let p = path.display();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::busy(format!(
                "the loop catalog {p} is locked by another process: waited rexray.lockTimeout ({}) while {what}; try again, or raise rexray.lockTimeout (nothing was changed)",
                humantime::format_duration(timeout)
            )),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Error::backend(format!(
                "the loop catalog {p} is damaged ({e}) while {what}; restore it from a backup (the volume images stay in {}, untouched; nothing was changed)",
                root.display()
            )),
            Some(ErrorCode::DiskFull) => Self::full(path, root, what),
            Some(ErrorCode::SystemIoFailure) if super::free_bytes(root) < 1 << 20 => {
                Self::full(path, root, what)
            }
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
                Error::system(format!(
                    "cannot write the loop catalog {p} while {what} ({e}); check that it and loop.volumePath {} are writable by root and the filesystem is not read-only",
                    root.display()
                ))
            }
            _ => Error::backend(format!(
                "the loop catalog {p} failed while {what}: {e}"
            )),
        }
    }

    fn full(path: &Path, root: &Path, what: &str) -> Error {
        Error::system(format!(
            "the filesystem of loop.volumePath {} is full: cannot write the loop catalog {} while {what}; free space there and try again (nothing was changed)",
            root.display(),
            path.display()
        ))
    }

    fn err(&self, what: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| Self::error_at(&self.path, &self.root, self.lock_timeout, &what, e)
    }

    /// Settings, schema, and the import of `catalog.json`, once.
    fn prepare(&mut self) -> Result<()> {
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        conn.busy_timeout(self.lock_timeout)
            .map_err(|e| Self::error_at(&self.path, &self.root, self.lock_timeout, "opening", e))?;
        // No checkpoint (and no removal of -wal and -shm) when a process
        // that only read closes: that would be a write and an fsync per
        // command, and the next reader would need space to make them
        // again. A writer empties the log itself (see `Drop`).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| Self::error_at(&self.path, &self.root, self.lock_timeout, "opening", e))?;
        // (Durability is set per write: see `write_as`.)
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| Self::error_at(&self.path, &self.root, self.lock_timeout, "opening", e))?;
        if version >= READY {
            return Ok(());
        }
        self.migrate()
    }

    /// Make the schema and import `catalog.json` under `catalog.lock`:
    /// exactly once, however many processes start at the same time.
    fn migrate(&mut self) -> Result<()> {
        let _lock = crate::state::FileLock::acquire(
            &self.root.join("catalog.lock"),
            self.lock_timeout,
            "the loop volume catalog",
        )?;
        let json = self.root.join(JSON);
        let (path, root, timeout) = (self.path.clone(), self.root.clone(), self.lock_timeout);
        let err = |what: &str| {
            let (path, root) = (path.clone(), root.clone());
            let what = what.to_string();
            move |e| Self::error_at(&path, &root, timeout, &what, e)
        };
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        // WAL is a property of the file: set once, kept.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err("setting WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::system(format!(
                "the loop catalog {} cannot use WAL mode (it is {mode}); loop.volumePath must be on a local filesystem",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(err("making the schema"))?;
        self.wrote.store(true, Ordering::Relaxed);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("making the schema"))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("making the schema"))?;
        if version < IMPORTED {
            tx.execute_batch(SCHEMA).map_err(err("making the schema"))?;
            let (nv, ns) = import_json(&tx, &json, &path, &root)?;
            tx.execute_batch(&format!("PRAGMA user_version = {IMPORTED}"))
                .map_err(err("importing catalog.json"))?;
            fail::fail_point!("loop::catalog-import-before-commit", |_| crate::crash_here(
            ));
            tx.commit().map_err(err("importing catalog.json"))?;
            if nv + ns > 0 {
                tracing::warn!(
                    "imported {nv} volumes and {ns} snapshots from {} into {}; {} now only tells earlier releases that the catalog moved (downgrade is not supported)",
                    json.display(),
                    path.display(),
                    json.display()
                );
            }
        } else {
            tx.commit().map_err(err("making the schema"))?;
        }
        fail::fail_point!("loop::catalog-import-before-marker", |_| crate::crash_here(
        ));
        // Committed: now (and only now) the old file gives way to the
        // marker. A crash before this line leaves version IMPORTED, and the
        // next open writes it.
        let is_marker = std::fs::read(&json)
            .map(|b| b == MOVED_MARKER.as_bytes())
            .unwrap_or(false);
        if !is_marker {
            crate::state::atomic::write(&json, MOVED_MARKER.as_bytes())
                .map_err(|e| e.context("leaving the downgrade marker in place of catalog.json"))?;
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("finishing the import"))?;
        tx.execute_batch(OLD_TRIGGERS)
            .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {READY}")))
            .and_then(|_| tx.commit())
            .map_err(err("finishing the import"))?;
        Ok(())
    }

    fn probe(&self) -> Option<MutexGuard<'_, Connection>> {
        self.probe
            .get_or_init(|| {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .ok()?;
                c.busy_timeout(Duration::ZERO).ok()?;
                c.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                    .ok()?;
                Some(Mutex::new(c))
            })
            .as_ref()?
            .try_lock()
            .ok()
    }

    /// The generation (changed by every commit), without waiting: `None`
    /// when another thread or process holds what it would wait for.
    pub fn generation_now(&self) -> Option<i64> {
        let c = self.probe()?;
        generation(&c).ok()
    }

    /// The generation, waiting (up to the lock timeout) as any read does.
    pub fn generation(&self) -> Result<i64> {
        let deadline = std::time::Instant::now() + self.lock_timeout;
        loop {
            if let Some(g) = self.generation_now() {
                return Ok(g);
            }
            if std::time::Instant::now() >= deadline {
                // Say why, from the connection that waits.
                return generation(&self.conn()).map_err(self.err("reading the generation"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The sum of all volume sizes, in GiB.
    pub fn total_gib(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = 'total_gib'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v.max(0) as u64)
            .map_err(self.err("reading the total size"))
    }

    /// Whether a row of `table` (in any state) has id `id`.
    pub fn known(&self, table: &str, id: &str) -> Result<bool> {
        self.conn()
            .prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = ?1"))
            .and_then(|mut st| st.exists([id]))
            .map_err(self.err("looking up an image's row"))
    }

    /// A finished volume by id.
    pub fn by_id(&self, id: &str) -> Result<Option<Record>> {
        volume_where(&self.conn(), "id", id).map_err(self.err("looking up a volume by id"))
    }

    /// A finished volume by name.
    pub fn by_name(&self, name: &str) -> Result<Option<Record>> {
        volume_where(&self.conn(), "name", name).map_err(self.err("looking up a volume by name"))
    }

    /// Every finished volume, in creation order, handed to `f` one by one.
    pub fn each_volume(&self, mut f: impl FnMut(Record)) -> Result<()> {
        let c = self.conn();
        let mut read = || -> rusqlite::Result<()> {
            let mut st = c.prepare_cached(&format!(
                "SELECT {VOLUME_COLS} FROM volumes WHERE state = 'ready' ORDER BY seq"
            ))?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                f(volume_row(r)?);
            }
            Ok(())
        };
        read().map_err(self.err("listing volumes"))
    }

    /// Every finished snapshot, in creation order.
    pub fn snapshots(&self) -> Result<Vec<SnapRecord>> {
        let c = self.conn();
        let read = || -> rusqlite::Result<Vec<SnapRecord>> {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SNAP_COLS} FROM snapshots WHERE state = 'ready' ORDER BY seq"
            ))?;
            let rows = st.query_map([], snap_row)?;
            rows.collect()
        };
        read().map_err(self.err("listing snapshots"))
    }

    /// A finished snapshot by id.
    pub fn snapshot(&self, id: &str) -> Result<Option<SnapRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {SNAP_COLS} FROM snapshots WHERE id = ?1 AND state = 'ready'"),
                [id],
                snap_row,
            )
            .optional()
            .map_err(self.err("looking up a snapshot"))
    }

    /// Run `f` in a write transaction (waiting up to the lock timeout for
    /// other writers) and commit it, durably.
    pub fn write<T>(&self, what: &str, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_as(what, true, f)
    }

    /// [`write`](Self::write), or, with `durable` false, a commit that a
    /// power loss may take back (no fsync; the next durable commit makes
    /// it durable too, the log being sequential). For a claim only: its
    /// loss can leave an image without a row, never a row without its
    /// image, and `tidy` removes such images.
    pub fn write_as<T>(
        &self,
        what: &str,
        durable: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.conn();
        let sync = if durable {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        c.execute_batch(sync).map_err(self.err(what))?;
        self.wrote.store(true, Ordering::Relaxed);
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.err(what))?;
        let out = f(&tx)?;
        fail::fail_point!("loop::catalog-before-commit", |_| crate::crash_here());
        tx.commit().map_err(self.err(what))?;
        Ok(out)
    }

    /// Rows that writers left unfinished (to check against their locks).
    pub fn unfinished(tx: &Transaction<'_>) -> rusqlite::Result<Vec<Unfinished>> {
        let mut out = Vec::new();
        for (table, snapshot) in [("volumes", false), ("snapshots", true)] {
            let mut st =
                tx.prepare_cached(&format!("SELECT id FROM {table} WHERE state <> 'ready'"))?;
            let ids = st.query_map([], |r| r.get::<_, String>(0))?;
            for id in ids {
                out.push(Unfinished { id: id?, snapshot });
            }
        }
        Ok(out)
    }

    /// The wrapping of an SQLite error inside [`write`](Self::write).
    pub fn sql(&self, what: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
        self.err(what)
    }
}

/// A log this long (bytes) is emptied by whoever closes the catalog, even
/// a reader: one left by a writer that was killed, or by the service.
const LONG_LOG: u64 = 256 << 10;

impl Drop for Catalog {
    /// A process that wrote moves the log into the database and empties
    /// it before it goes (durably: the database is synced before the log
    /// is cut), so that the next process to open the catalog, alone,
    /// rebuilds the log's index from an empty log rather than reading it
    /// whole. Never waits: when another process is reading or writing,
    /// the log stays as it is (it is as safe either way), and the next
    /// writer to close empties it.
    fn drop(&mut self) {
        let wal = self.path.with_extension("db-wal");
        let long = || std::fs::metadata(&wal).is_ok_and(|m| m.len() > LONG_LOG);
        if !self.wrote.load(Ordering::Relaxed) && !long() {
            return;
        }
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = conn.busy_timeout(Duration::ZERO);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(catalog = %self.path.display(), error = %e, "the catalog's log was left for the next writer");
        }
    }
}

fn generation(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// The `fields` column (a JSON object), read in place: most rows hold
/// `{}`, and `ls` reads 100,000 of them.
fn fields(r: &rusqlite::Row<'_>, col: usize) -> rusqlite::Result<BTreeMap<String, String>> {
    let text = r.get_ref(col)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(match text {
        "{}" => BTreeMap::new(),
        _ => serde_json::from_str(text).unwrap_or_default(),
    })
}

fn volume_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let fields = fields(r, 7)?;
    Ok(Record {
        id: r.get(0)?,
        name: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        volume_type: r.get(3)?,
        iops: r.get(4)?,
        availability_zone: r.get(5)?,
        created_at: r.get(6)?,
        fields,
    })
}

fn snap_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapRecord> {
    let fields = fields(r, 5)?;
    Ok(SnapRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        volume_id: r.get(2)?,
        volume_size: r.get::<_, i64>(3)? as u64,
        created_at: r.get(4)?,
        fields,
    })
}

fn volume_where(c: &Connection, col: &str, v: &str) -> rusqlite::Result<Option<Record>> {
    c.prepare_cached(&format!(
        "SELECT {VOLUME_COLS} FROM volumes WHERE {col} = ?1 AND state = 'ready'"
    ))?
    .query_row([v], volume_row)
    .optional()
}

/// Whether `id` is taken as a volume id or name (in any state).
pub fn volume_taken(tx: &Transaction<'_>, s: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM volumes WHERE id = ?1 OR name = ?1")?
        .exists([s])
}

/// The name of the volume (any state) with id `id`, and whether a volume
/// is named `name`.
pub fn name_check(
    tx: &Transaction<'_>,
    table: &str,
    name: &str,
) -> rusqlite::Result<(bool, Option<String>)> {
    let named = tx
        .prepare_cached(&format!("SELECT 1 FROM {table} WHERE name = ?1"))?
        .exists([name])?;
    let id_of = tx
        .prepare_cached(&format!("SELECT name FROM {table} WHERE id = ?1"))?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok((named, id_of))
}

/// Whether `s` is taken as a snapshot id or name.
pub fn snapshot_taken(tx: &Transaction<'_>, s: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM snapshots WHERE id = ?1 OR name = ?1")?
        .exists([s])
}

/// Add `gib` (negative: take) to the total of all volume sizes.
fn add_to_total(tx: &Transaction<'_>, gib: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = 'total_gib'")?
        .execute([gib])?;
    Ok(())
}

/// The size of the volume row `id` (any state).
fn size_of(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT size FROM volumes WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

/// Insert a volume row in `state`.
pub fn insert_volume(tx: &Transaction<'_>, r: &Record, state: &str) -> rusqlite::Result<()> {
    add_to_total(tx, r.size as i64)?;
    tx.prepare_cached(&format!(
        "INSERT INTO volumes({VOLUME_COLS}, state) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        r.id,
        r.name,
        r.size as i64,
        r.volume_type,
        r.iops,
        r.availability_zone,
        r.created_at,
        serde_json::to_string(&r.fields).expect("fields serialise"),
        state
    ])?;
    Ok(())
}

/// Insert a snapshot row in `state`.
pub fn insert_snapshot(tx: &Transaction<'_>, r: &SnapRecord, state: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO snapshots({SNAP_COLS}, state) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![
        r.id,
        r.name,
        r.volume_id,
        r.volume_size as i64,
        r.created_at,
        serde_json::to_string(&r.fields).expect("fields serialise"),
        state
    ])?;
    Ok(())
}

/// Set the state of a row; false when there is none.
pub fn set_state(
    tx: &Transaction<'_>,
    table: &str,
    id: &str,
    from: &str,
    to: &str,
) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(&format!(
            "UPDATE {table} SET state = ?3 WHERE id = ?1 AND state = ?2"
        ))?
        .execute([id, from, to])?
        == 1)
}

/// Delete a row.
pub fn delete(tx: &Transaction<'_>, table: &str, id: &str) -> rusqlite::Result<()> {
    if table == "volumes" {
        if let Some(old) = size_of(tx, id)? {
            add_to_total(tx, -old)?;
        }
    }
    tx.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?
        .execute([id])?;
    Ok(())
}

/// Set a volume's size.
pub fn set_size(tx: &Transaction<'_>, id: &str, gib: u64) -> rusqlite::Result<()> {
    if let Some(old) = size_of(tx, id)? {
        add_to_total(tx, gib as i64 - old)?;
    }
    tx.prepare_cached("UPDATE volumes SET size = ?2 WHERE id = ?1")?
        .execute(params![id, gib as i64])?;
    Ok(())
}

/// The shape of the earlier releases' `catalog.json`.
#[derive(serde::Deserialize)]
pub struct OldCatalog {
    pub volumes: Vec<Record>,
    #[serde(default)]
    pub snapshots: Vec<SnapRecord>,
}

/// Import `json` (an earlier release's catalog) into `tx`; returns how
/// many volumes and snapshots. A missing file is an empty catalog; the
/// marker without a database means the database was lost.
fn import_json(
    tx: &Transaction<'_>,
    json: &Path,
    db: &Path,
    root: &Path,
) -> Result<(usize, usize)> {
    let bytes = match std::fs::read(json) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::from_io(format!("reading {}", json.display()), &e)),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::backend(format!(
            "the loop catalog {} is unreadable ({e}); restore it from a backup (the images stay in {}); nothing was imported into {}",
            json.display(),
            root.display(),
            db.display()
        ))
    })?;
    if value.get("volumes").is_some_and(|v| v.is_string()) {
        return Err(Error::backend(format!(
            "the loop catalog {} is missing or empty, but {} says the catalog moved there: restore {} from a backup (the images stay in {}, untouched)",
            db.display(),
            json.display(),
            db.display(),
            root.display()
        )));
    }
    let old: OldCatalog = serde_json::from_value(value).map_err(|e| {
        Error::backend(format!(
            "the loop catalog {} is unreadable ({e}); restore it from a backup (the images stay in {}); nothing was imported into {}",
            json.display(),
            root.display(),
            db.display()
        ))
    })?;
    let fail = |e: rusqlite::Error| {
        Error::backend(format!(
            "importing {} into {}: {e}; the old catalog is unchanged, fix or restore it and try again",
            json.display(),
            db.display()
        ))
    };
    for r in &old.volumes {
        insert_volume(tx, r, "ready").map_err(fail)?;
    }
    for r in &old.snapshots {
        insert_snapshot(tx, r, "ready").map_err(fail)?;
    }
    for (table, what) in [("volumes", "volume"), ("snapshots", "snapshot")] {
        let clash: Option<(String, String)> = tx
            .query_row(
                &format!(
                    "SELECT a.name, b.name FROM {table} a JOIN {table} b ON a.name = b.id AND a.seq <> b.seq LIMIT 1"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(fail)?;
        if let Some((named, other)) = clash {
            return Err(Error::backend(format!(
                "importing {} into {}: {what} {named} is named after the id of {what} {other}, and a {what} name must never be another {what}'s id; the old catalog is unchanged, fix or restore it and try again",
                json.display(),
                db.display()
            )));
        }
    }
    Ok((old.volumes.len(), old.snapshots.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The marker left in place of catalog.json is refused by the shape
    /// earlier releases parse (a list of records under `volumes`).
    #[test]
    fn earlier_releases_refuse_the_marker() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Earlier {
            volumes: Vec<Record>,
        }
        let e = serde_json::from_str::<Earlier>(MOVED_MARKER)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("invalid type"), "{e}");
        assert!(serde_json::from_str::<OldCatalog>(MOVED_MARKER).is_err());
        // And it is JSON, so the refusal is about the shape, with the
        // reason in the text.
        let v: serde_json::Value = serde_json::from_str(MOVED_MARKER).unwrap();
        assert!(v["volumes"]
            .as_str()
            .unwrap()
            .contains("downgrade is not supported"));
    }

    fn record(id: &str, name: &str, size: u64) -> Record {
        Record {
            id: id.into(),
            name: name.into(),
            size,
            volume_type: String::new(),
            iops: 0,
            availability_zone: String::new(),
            created_at: String::new(),
            fields: Default::default(),
        }
    }

    fn wal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("catalog.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// A process that wrote leaves an empty log behind, so that the next
    /// one, alone, has no log to read; one that only read leaves a short
    /// log as it found it (emptying it would cost it an fsync).
    #[test]
    fn writers_empty_the_log_when_they_close() {
        let t = tempfile::tempdir().unwrap();
        let c = Catalog::open(t.path(), Duration::from_secs(5)).unwrap();
        c.write("test", |tx| {
            insert_volume(tx, &record("i1", "v1", 1), "ready").map_err(c.sql("test"))
        })
        .unwrap();
        assert!(wal_len(t.path()) > 0, "the commit is in the log");
        drop(c);
        assert_eq!(wal_len(t.path()), 0);
        // A writer killed before it could empty the log (here: a
        // connection that does not checkpoint) leaves a short log, which
        // a reader leaves alone, and a long one, which a reader empties.
        let raw = || {
            let r = Connection::open(t.path().join(DB)).unwrap();
            r.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                .unwrap();
            r
        };
        raw().execute("UPDATE volumes SET size = 2", []).unwrap();
        let short = wal_len(t.path());
        assert!(short > 0 && short < LONG_LOG);
        let c = Catalog::open(t.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(c.by_name("v1").unwrap().unwrap().size, 2);
        drop(c);
        assert_eq!(wal_len(t.path()), short);
        let r = raw();
        for i in 0..200 {
            r.execute(
                "INSERT INTO volumes(id, name, size) VALUES(?1, ?1, 1)",
                [format!("x{i}")],
            )
            .unwrap();
        }
        drop(r);
        assert!(wal_len(t.path()) > LONG_LOG);
        let c = Catalog::open(t.path(), Duration::from_secs(5)).unwrap();
        assert!(c.by_name("x199").unwrap().is_some());
        drop(c);
        assert_eq!(wal_len(t.path()), 0);
    }

    /// A catalog an earlier build made (user_version 2, eight triggers; 3
    /// had the last three) loses them all, once, and its total is
    /// counted again; from then on the statements keep the total, and
    /// every commit changes the generation.
    #[test]
    fn the_earlier_schema_is_trimmed_once() {
        let t = tempfile::tempdir().unwrap();
        drop(Catalog::open(t.path(), Duration::from_secs(5)).unwrap());
        let raw = Connection::open(t.path().join(DB)).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER volume_name_is_no_id BEFORE INSERT ON volumes
               WHEN EXISTS(SELECT 1 FROM volumes WHERE id = NEW.name OR name = NEW.id)
               BEGIN SELECT RAISE(ABORT, 'a volume name must never be another volume''s id'); END;
             CREATE TRIGGER snapshot_name_is_no_id BEFORE INSERT ON snapshots
               WHEN EXISTS(SELECT 1 FROM snapshots WHERE id = NEW.name OR name = NEW.id)
               BEGIN SELECT RAISE(ABORT, 'a snapshot name must never be another snapshot''s id'); END;
             CREATE TRIGGER snapshots_ins AFTER INSERT ON snapshots BEGIN
               UPDATE meta SET value = value + 1 WHERE key = 'generation'; END;
             CREATE TRIGGER snapshots_del AFTER DELETE ON snapshots BEGIN
               UPDATE meta SET value = value + 1 WHERE key = 'generation'; END;
             CREATE TRIGGER snapshots_upd AFTER UPDATE ON snapshots BEGIN
               UPDATE meta SET value = value + 1 WHERE key = 'generation'; END;
             INSERT INTO meta VALUES('generation', 0);
             CREATE TRIGGER volumes_ins AFTER INSERT ON volumes BEGIN
               UPDATE meta SET value = value + 1 WHERE key = 'generation';
               UPDATE meta SET value = value + NEW.size WHERE key = 'total_gib'; END;
             CREATE TRIGGER volumes_del AFTER DELETE ON volumes BEGIN
               UPDATE meta SET value = value + 1 WHERE key = 'generation';
               UPDATE meta SET value = value - OLD.size WHERE key = 'total_gib'; END;
             CREATE TRIGGER volumes_upd AFTER UPDATE ON volumes BEGIN
               UPDATE meta SET value = value + 1 WHERE key = 'generation';
               UPDATE meta SET value = value + NEW.size - OLD.size WHERE key = 'total_gib'; END;
             INSERT INTO volumes(id, name, size) VALUES('i0', 'v0', 2);
             UPDATE meta SET value = 7 WHERE key = 'total_gib';
             PRAGMA user_version = 2;",
        )
        .unwrap();
        let triggers = |c: &Connection| -> Vec<String> {
            let mut st = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
                .unwrap();
            let names = st.query_map([], |r| r.get(0)).unwrap();
            names.map(|n| n.unwrap()).collect()
        };
        assert_eq!(triggers(&raw).len(), 8);
        let c = Catalog::open(t.path(), Duration::from_secs(5)).unwrap();
        assert!(triggers(&raw).is_empty());
        let version: i64 = raw
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, READY);
        assert_eq!(c.total_gib().unwrap(), 2, "counted again");
        let g = c.generation().unwrap();
        c.write("test", |tx| {
            insert_volume(tx, &record("i1", "v1", 3), "ready").map_err(c.sql("test"))?;
            set_size(tx, "i1", 5).map_err(c.sql("test"))?;
            set_size(tx, "none", 9).map_err(c.sql("test"))
        })
        .unwrap();
        let g2 = c.generation().unwrap();
        assert_ne!(g2, g, "its own commit changes the generation");
        assert_eq!(c.generation_now(), Some(g2));
        assert_eq!(c.total_gib().unwrap(), 7);
        c.write("test", |tx| {
            delete(tx, "volumes", "i1").map_err(c.sql("test"))?;
            delete(tx, "volumes", "none").map_err(c.sql("test"))
        })
        .unwrap();
        assert_eq!(c.total_gib().unwrap(), 2);
        // Another connection's commit changes it too.
        let g3 = c.generation().unwrap();
        raw.execute("UPDATE volumes SET name = 'w0' WHERE id = 'i0'", [])
            .unwrap();
        assert_ne!(c.generation().unwrap(), g3);
    }

    /// An earlier release's catalog in which a name is another volume's
    /// id is refused whole, naming both; nothing is imported.
    #[test]
    fn an_import_refuses_a_name_that_is_another_id() {
        let t = tempfile::tempdir().unwrap();
        let vols = |b_name: &str| {
            serde_json::json!({"volumes": [
                {"id": "aaaa", "name": "first", "size": 1},
                {"id": "bbbb", "name": b_name, "size": 1},
            ]})
            .to_string()
        };
        std::fs::write(t.path().join(JSON), vols("aaaa")).unwrap();
        let e = Catalog::open(t.path(), Duration::from_secs(5))
            .err()
            .expect("refused");
        assert!(
            e.message()
                .contains("volume aaaa is named after the id of volume first"),
            "{e}"
        );
        assert_ne!(
            std::fs::read_to_string(t.path().join(JSON)).unwrap(),
            MOVED_MARKER
        );
        std::fs::write(t.path().join(JSON), vols("second")).unwrap();
        let c = Catalog::open(t.path(), Duration::from_secs(5)).unwrap();
        assert_eq!(c.by_name("second").unwrap().unwrap().id, "bbbb");
        assert_eq!(c.total_gib().unwrap(), 2);
    }
}
