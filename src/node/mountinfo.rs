//! What is mounted where, read from `/proc/self/mountinfo`.

use crate::{Error, Result};
use std::collections::HashSet;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device numbers of the mounted filesystem.
    pub dev: (u32, u32),
    /// Root of the mount within its filesystem (`/` unless a bind of a subdir).
    pub root: String,
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (device path or other).
    pub source: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Every mount in this process's mount namespace.
///
/// Parsed here rather than with a general /proc parser: every workflow step
/// reads the table, and a Kubernetes node can have thousands of mounts, so
/// only the six fields used are extracted, without building option maps.
pub fn mounts() -> Result<Vec<Mount>> {
    let text = read_table()?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(parse_line)
        .collect())
}

/// `/proc/self/mountinfo` whole. The kernel reports its size as 0, so
/// `fs::read` would start with a 32-byte probe and double from there (8
/// reads for a short table, more for a node's thousands of mounts); the
/// kernel fills as much of a read as it is given, here up to 8 KiB at a
/// time into room made once (only the pages written are touched).
fn read_table() -> Result<Vec<u8>> {
    use std::io::Read;
    let err = |e: std::io::Error| Error::from_io("reading /proc/self/mountinfo", &e);
    let f = std::fs::File::open("/proc/self/mountinfo").map_err(err)?;
    let mut buf = Vec::with_capacity(64 << 10);
    // Through `Take`: a plain `File` would first ask the size (statx) and
    // its position (lseek) to size the buffer, for nothing here.
    f.take(u64::MAX).read_to_end(&mut buf).map_err(err)?;
    Ok(buf)
}

/// One line of mountinfo (proc(5)):
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
/// Fields never contain a raw space: the kernel writes it as `\040`.
fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let (_id, _parent) = (l.next()?, l.next()?);
    let (major, minor) = l.next()?.split_once(':')?;
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let read_only = l.next()?.split(',').any(|o| o == "ro");
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_string();
    let source = unescape(r.next().unwrap_or(""));
    Some(Mount {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        root,
        mount_point,
        fs_type,
        source,
        read_only,
    })
}

/// Undo the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash), as text.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    String::from_utf8_lossy(&unescape_octal(s.as_bytes())).into_owned()
}

/// Mounts whose mount point is exactly `path` (several if stacked).
/// Only the matching lines are parsed: the mount point is compared as the
/// kernel writes it, so a node's thousands of other mounts cost a scan,
/// not a parse each.
///
/// A path reached through a link (a kubelet root that is a link to a
/// bigger disk, say) is mounted where the link leads, and the kernel
/// writes that: when nothing is mounted at the path as given, it is
/// looked up again with its parent resolved (its last component is never
/// followed: a mount point that is a link is refused before it is used).
pub fn mounts_at(path: &Path) -> Result<Vec<Mount>> {
    // By components, as `Path` compares: `/a//b/` is `/a/b`.
    let path: PathBuf = path.components().collect();
    let at = |p: &Path| {
        let want = escaped(p.as_os_str().as_bytes());
        mounts_where(|_, mp| mp == want.as_slice())
    };
    let found = at(&path)?;
    if !found.is_empty() {
        return Ok(found);
    }
    match path
        .parent()
        .zip(path.file_name())
        .and_then(|(parent, name)| Some(kernel_path(parent)?.join(name)))
    {
        Some(real) if real != path => at(&real),
        _ => Ok(found),
    }
}

/// Where `path` is as the kernel names it, every link on it followed:
/// what mountinfo writes for a mount there. `None` when it cannot be
/// opened (or is no longer reachable).
pub fn kernel_path(path: &Path) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
    let deleted = real.as_os_str().as_bytes().ends_with(b" (deleted)");
    (real.is_absolute() && !deleted).then_some(real)
}

/// Mounts of the filesystem on device `dev` (major, minor); as
/// [`mounts_at`], only the matching lines are parsed.
pub fn mounts_of(dev: (u32, u32)) -> Result<Vec<Mount>> {
    let want = format!("{}:{}", dev.0, dev.1);
    mounts_where(|d, _| d == want.as_bytes())
}

/// The mounts of the lines whose raw device (`major:minor`) and mount
/// point fields `keep` accepts.
fn mounts_where(keep: impl Fn(&[u8], &[u8]) -> bool) -> Result<Vec<Mount>> {
    let text = read_table()?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter(|l| {
            let mut f = l.split(|&b| b == b' ');
            matches!((f.nth(2), f.nth(1)), (Some(d), Some(mp)) if keep(d, mp))
        })
        .filter_map(|l| parse_line(&String::from_utf8_lossy(l)))
        .collect())
}

/// A path as mountinfo writes it: space, tab, newline and backslash as
/// octal escapes (`\040`, `\011`, `\012`, `\134`), every other byte as
/// it is.
fn escaped(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// The (major, minor) numbers of a block device node.
pub fn device_numbers(dev: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(dev)
        .map_err(|e| Error::from_io(format!("stat {}", dev.display()), &e))?;
    if !m.file_type().is_block_device() {
        return Err(Error::system(format!(
            "{} is not a block device",
            dev.display()
        )));
    }
    let rdev = m.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// Whether `path` is the root of a mount in this mount namespace, from one
/// `statx` (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8): unlike the mount table,
/// its cost does not grow with the host's mounts. A missing path is not a
/// mount point; `None` when the kernel does not tell (then read the table).
/// A symlink is not followed: the kernel never mounts on one.
pub fn is_mount_root(path: &Path) -> Result<Option<bool>> {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Ok(Some(false));
    };
    let mut st = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the size statx writes.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC,
            0,
            st.as_mut_ptr(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(Some(false)),
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(Error::from_io(format!("stat {}", path.display()), &e)),
        };
    }
    // SAFETY: statx succeeded and filled the buffer.
    let st = unsafe { st.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok((st.stx_attributes_mask & bit != 0).then_some(st.stx_attributes & bit != 0))
}

/// Every mount point of this mount namespace, raw from
/// `/proc/self/mountinfo` (no parsing of mount options): for kernels whose
/// `statx` does not tell mount roots.
fn mount_points() -> Result<HashSet<Vec<u8>>> {
    let text = read_table()?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(unescape_octal)
        .collect())
}

/// Whether something is mounted at `mp`, asked of the kernel on every call:
/// mounts change behind the service's back (the CLI, an administrator).
pub fn is_mounted(mp: &Path) -> Result<bool> {
    match is_mount_root(mp)? {
        Some(m) => Ok(m),
        None => Ok(mount_points()?.contains(mp.as_os_str().as_bytes())),
    }
}

/// The names under `base` that something is mounted on. Mount points are
/// removed at unmount, so this is a listing of `base` and a `statx` per
/// mounted volume, whatever the number of volumes or of the host's mounts.
pub fn mounted_under(base: &Path) -> Result<HashSet<String>> {
    let from_table = || -> Result<HashSet<String>> {
        Ok(mount_points()?
            .into_iter()
            .map(|m| PathBuf::from(std::ffi::OsString::from_vec(m)))
            .filter(|m| m.parent() == Some(base))
            .filter_map(|m| Some(m.file_name()?.to_str()?.to_owned()))
            .collect())
    };
    let dir = match std::fs::read_dir(base) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(_) => return from_table(),
    };
    let mut out = HashSet::new();
    for e in dir {
        let Ok(e) = e else { return from_table() };
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        match is_mount_root(&e.path()) {
            Ok(Some(true)) => {
                out.insert(name);
            }
            Ok(Some(false)) => {}
            Ok(None) => return from_table(),
            // One unreadable entry (a dead FUSE mount, say) must not fail
            // the whole List; it is not a volume of ours mounted.
            Err(err) => {
                tracing::warn!(path = %e.path().display(), "cannot tell whether it is a mount point: {err}")
            }
        }
    }
    Ok(out)
}

/// Undo the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        // Three octal digits of a byte (`\377` at most: anything larger
        // is taken as it is written).
        let octal = (s[i] == b'\\' && i + 3 < s.len())
            .then(|| &s[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_root() {
        let m = mounts().unwrap();
        assert!(m.iter().any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn mount_roots() {
        assert_eq!(is_mount_root(Path::new("/")).unwrap(), Some(true));
        assert_eq!(is_mount_root(Path::new("/proc")).unwrap(), Some(true));
        assert_eq!(is_mount_root(Path::new("/proc/self")).unwrap(), Some(false));
        let t = tempfile::tempdir().unwrap();
        assert_eq!(is_mount_root(t.path()).unwrap(), Some(false));
        assert_eq!(is_mount_root(&t.path().join("none")).unwrap(), Some(false));
        let f = t.path().join("f");
        std::fs::write(&f, "").unwrap();
        assert_eq!(is_mount_root(&f.join("x")).unwrap(), Some(false));
    }

    /// The filtered reads find exactly what the full parse does, for
    /// every mount point and device of this host's table; paths are
    /// compared as the kernel escapes them.
    #[test]
    fn filtered_reads_agree_with_the_full_table() {
        let all = mounts().unwrap();
        for m in &all {
            let at: Vec<_> = all
                .iter()
                .filter(|o| o.mount_point == m.mount_point)
                .cloned()
                .collect();
            assert_eq!(
                mounts_at(&m.mount_point).unwrap(),
                at,
                "{}",
                m.mount_point.display()
            );
            let of: Vec<_> = all.iter().filter(|o| o.dev == m.dev).cloned().collect();
            assert_eq!(mounts_of(m.dev).unwrap(), of, "{:?}", m.dev);
        }
        assert!(mounts_at(Path::new("/no/such/mount point"))
            .unwrap()
            .is_empty());
        // Compared by components, as paths are: a trailing or doubled
        // slash names the same mount point.
        assert_eq!(
            mounts_at(Path::new("//proc/")).unwrap(),
            mounts_at(Path::new("/proc")).unwrap()
        );
        assert!(!mounts_at(Path::new("/proc")).unwrap().is_empty());
        assert_eq!(
            escaped(b"/a b\\c\td\ne"),
            b"/a\\040b\\134c\\011d\\012e".to_vec()
        );
        assert_eq!(
            unescape_octal(&escaped(b"/x \\134 y")),
            b"/x \\134 y".to_vec()
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_octal(b"/a\\040b\\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape_octal(b"/plain"), b"/plain".to_vec());
        // Past a byte: not an escape, kept as written.
        assert_eq!(unescape_octal(b"/a\\777"), b"/a\\777".to_vec());
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert!(mount_points().unwrap().contains(b"/".as_slice()));
    }

    #[test]
    fn parses_the_kernel_format() {
        let m = parse_line(
            "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.dev, (98, 0));
        assert_eq!(m.root, "/mnt1");
        assert_eq!(m.mount_point, PathBuf::from("/mnt 2"));
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert!(!m.read_only);
        let ro = parse_line("1 2 7:3 / /x ro,relatime shared:5 - xfs /dev/loop3 ro").unwrap();
        assert!(ro.read_only);
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert!(parse_line("garbage").is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,120}") {
            let _ = parse_line(&line);
            let _ = unescape(&line);
            let _ = unescape_octal(line.as_bytes());
        }

        /// What the kernel's escape writes, the unescape reads back.
        #[test]
        fn escapes_round_trip(path in proptest::collection::vec(1u8.., 0..64)) {
            proptest::prop_assert_eq!(unescape_octal(&escaped(&path)), path);
        }
    }
}
