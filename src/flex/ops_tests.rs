//! flexrex's calls over a fake node and backend (see
//! `volume::tests`): binds, unmounts and detaches without root.

use super::*;
use crate::model::AttachmentState;
use crate::volume::tests::{world, FakeDriver, World};
use std::path::PathBuf;

fn opts(name: &str, pv: &str) -> Options {
    Options {
        volume_id: name.into(),
        pv_or_volume_name: Some(pv.into()),
        ..Default::default()
    }
}

fn global(w: &World, pv: &str) -> PathBuf {
    w._tmp.path().join(format!("kubelet/{pv}/globalmount"))
}

fn mount_device(f: &Flex, path: &Path, name: &str, pv: &str) -> Result<Reply> {
    f.call(Call::MountDevice {
        path: path.to_path_buf(),
        device: FakeDriver::dev(name).display().to_string(),
        opts: opts(name, pv),
    })
}

fn at(w: &World, p: &Path) -> Vec<crate::node::Mount> {
    w.node
        .mount_table()
        .into_iter()
        .filter(|m| m.mount_point == p)
        .collect()
}

#[test]
fn kubelets_calls_bind_the_content_dir_once_and_release_it() {
    let w = world();
    w.create("vol");
    let f = Flex::new(w.volumes());
    let r = f
        .call(Call::Attach {
            opts: opts("vol", "pv1"),
            node: None,
        })
        .unwrap();
    assert_eq!(r.device.as_deref(), Some("/dev/fake-vol"));
    let path = global(&w, "pv1");
    mount_device(&f, &path, "vol", "pv1").unwrap();
    mount_device(&f, &path, "vol", "pv1").unwrap();
    let binds = at(&w, &path);
    assert_eq!(binds.len(), 1, "one bind, however often kubelet asks");
    assert_eq!(binds[0].root, "/data", "the content dir, not the root");
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), vec![consumer(&path)]);

    f.call(Call::UnmountDevice { path: path.clone() }).unwrap();
    assert!(at(&w, &path).is_empty());
    assert_eq!(w.mounts_at("vol"), 0);
    // kubelet's attach holds it until its detach.
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    f.call(Call::Detach {
        name: "pv1".into(),
        node: None,
    })
    .unwrap();
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    // Repeated calls find nothing to do.
    f.call(Call::UnmountDevice { path: path.clone() }).unwrap();
    f.call(Call::Detach {
        name: "pv1".into(),
        node: None,
    })
    .unwrap();
}

#[test]
fn a_path_showing_another_filesystem_is_refused_before_anything_is_done() {
    let w = world();
    w.create("vol");
    // A disk of the host's, no volume of rexray's.
    let disk = Path::new("/dev/sdz");
    let fs = crate::node::fs::Probe::Filesystem("ext4".into());
    w.node.plug(disk, fs, &w._tmp.path().join("sdz"));
    let path = global(&w, "pv1");
    std::fs::create_dir_all(&path).unwrap();
    w.node.add_mount(disk, &path);
    let f = Flex::new(w.volumes());
    let e = mount_device(&f, &path, "vol", "pv1").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert_eq!(w.mounts_at("vol"), 0);
    // Nor is a mount flexrex did not make unmounted.
    let e = f
        .call(Call::UnmountDevice { path: path.clone() })
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(at(&w, &path).len(), 1);
}

#[test]
fn a_bind_that_cannot_be_made_undoes_the_mount() {
    let w = world();
    w.create("vol");
    let path = global(&w, "pv1");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/tmp", &path).unwrap();
    let f = Flex::new(w.volumes());
    let e = mount_device(&f, &path, "vol", "pv1").unwrap_err();
    assert!(e.message().contains("symbolic link"), "{e}");
    assert!(w.node.mount_table().is_empty());
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert!(w.consumers("vol").is_empty());
}

#[test]
fn detach_releases_paths_that_are_no_longer_mounted() {
    let w = world();
    w.create("vol");
    let f = Flex::new(w.volumes());
    f.call(Call::Attach {
        opts: opts("vol", "pv1"),
        node: None,
    })
    .unwrap();
    let path = global(&w, "pv1");
    mount_device(&f, &path, "vol", "pv1").unwrap();
    // A reboot (or an administrator) took the bind away; kubelet skips
    // unmountdevice and detaches.
    crate::node::Node::unmount_all(w.node.as_ref(), &path).unwrap();
    f.call(Call::Detach {
        name: "pv1".into(),
        node: None,
    })
    .unwrap();
    assert_eq!(w.mounts_at("vol"), 0);
    assert!(w.consumers("vol").is_empty());
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
}

#[test]
fn detach_refuses_while_another_front_end_uses_the_volume() {
    let w = world();
    w.create("vol");
    let f = Flex::new(w.volumes());
    f.call(Call::Attach {
        opts: opts("vol", "pv1"),
        node: None,
    })
    .unwrap();
    w.vols
        .mount(
            VolumeRef::Name("vol"),
            Consumer::Docker("c1"),
            &MountOptions::default(),
        )
        .unwrap();
    let e = f
        .call(Call::Detach {
            name: "pv1".into(),
            node: None,
        })
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert!(e.message().contains("docker:c1"), "{e}");
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
}
