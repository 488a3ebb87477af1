//! The `rexray volume` commands over the vfs driver and the fake node: no
//! root, no mounts. Each test parses real argv, so flags, rendering, notes
//! and exit codes are checked as an operator meets them.

use super::*;
use crate::cli::{Cli, Command};
use crate::config::{keys, Config, LoadOptions};
use crate::node::fake::FakeNode;
use crate::state::StateDir;
use crate::Kind;
use clap::Parser;
use std::sync::Arc;

/// A host: the vfs driver under a temporary home, and the fake node.
struct Host {
    _tmp: tempfile::TempDir,
    vols: Volumes,
}

/// Workflows over the vfs driver and a fresh fake node under `home`.
fn volumes_at(home: &std::path::Path, settings: &[(&str, &str)]) -> Volumes {
    let mut env = vec![
        ("REXRAY_HOME".to_string(), home.display().to_string()),
        (keys::env_name(keys::SERVICE), "vfs".to_string()),
    ];
    env.extend(
        settings
            .iter()
            .map(|(k, v)| (keys::env_name(k), v.to_string())),
    );
    let cfg = Config::load(LoadOptions {
        env: Some(env.into_iter().collect()),
        ..Default::default()
    })
    .unwrap();
    let state = StateDir::open(&cfg.dirs.lib, cfg.duration(keys::LOCK_TIMEOUT)).unwrap();
    let ctl = crate::storage::open_controller(&cfg).unwrap();
    let exe = crate::storage::open_executor(&cfg).unwrap();
    Volumes::with(cfg, state, ctl, exe, Arc::new(FakeNode::default()))
}

fn host_with(settings: &[(&str, &str)]) -> Host {
    let tmp = tempfile::tempdir().unwrap();
    let vols = volumes_at(tmp.path(), settings);
    Host { _tmp: tmp, vols }
}

fn host() -> Host {
    host_with(&[])
}

/// What `rexray volume <args>` did: its answer (or error) and its stderr.
struct Run {
    result: Result<Answer>,
    notes: String,
}

impl Run {
    fn answer(self) -> Answer {
        match self.result {
            Ok(a) => a,
            Err(e) => panic!("error: {e}; notes: {}", self.notes),
        }
    }
    fn error(self) -> Error {
        match self.result {
            Ok(a) => panic!("answered {a:?}"),
            Err(e) => e,
        }
    }
}

impl Host {
    fn volume(&self, args: &[&str]) -> Run {
        let argv = ["rexray", "volume"].iter().chain(args).copied();
        let cmd = match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Volume(cmd),
                ..
            }) => cmd,
            Ok(_) => panic!("{args:?} is not a volume command"),
            Err(e) => panic!("{args:?}: {e}"),
        };
        let mut notes = Vec::new();
        let result = run(cmd, &self.vols, &mut Notes(&mut notes));
        Run {
            result,
            notes: String::from_utf8(notes).unwrap(),
        }
    }
    /// Names of the volumes there are.
    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .vols
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        n.sort();
        n
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let a = self.volume(args).answer();
        assert_eq!(a.code, 0, "{args:?}");
        serde_json::from_str(&a.out).unwrap()
    }
}

fn names_in(json: &serde_json::Value) -> Vec<&str> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect()
}

#[test]
fn create_prints_the_new_volumes_as_a_table_or_json() {
    let h = host();
    let a = h.volume(&["create", "b", "a", "--size", "2"]).answer();
    assert_eq!(a.code, 0);
    let lines: Vec<&str> = a.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", a.out);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("Name"),
        "{}",
        a.out
    );
    // Sorted by name.
    assert!(
        lines[1].contains(" a ") && lines[1].ends_with(" 2"),
        "{}",
        a.out
    );
    assert!(lines[2].contains(" b "), "{}", a.out);
    let quiet = h.volume(&["create", "c", "-q"]).answer();
    assert_eq!(quiet.out.lines().count(), 1, "{}", quiet.out);
    let json = h.json(&["create", "d", "-f", "json"]);
    assert_eq!(names_in(&json), ["d"]);
    assert_eq!(h.names(), ["a", "b", "c", "d"]);
}

#[test]
fn bad_create_options_are_refused_by_flag_and_nothing_is_made() {
    let h = host();
    for (flag, value, why) in [
        ("--size", "x", "whole number of GiB"),
        ("--size", "1.5", "whole number of GiB"),
        ("--iops", "many", "IOPS"),
        ("--fsType", "ntfs", "ext4 or xfs"),
    ] {
        let e = h.volume(&["create", "v", flag, value]).error();
        assert_eq!(e.kind(), Kind::InvalidInput, "{flag} {value}: {e}");
        let m = e.message();
        assert!(
            m.contains(&format!("{flag} \"{value}\"")) && m.contains(why),
            "{m}"
        );
    }
    // Every name is checked before the first volume is made.
    let e = h.volume(&["create", "good", "bad name"]).error();
    assert!(
        e.message().contains("invalid volume name \"bad name\""),
        "{e}"
    );
    let e = h.volume(&["create", "good", "-f", "xml"]).error();
    assert!(e.message().contains("invalid format \"xml\""), "{e}");
    assert!(h.names().is_empty(), "{:?}", h.names());
}

#[test]
fn an_existing_name_stops_the_batch_unless_asked_to_go_on() {
    let h = host();
    h.volume(&["create", "a"]).answer();
    let r = h.volume(&["create", "a", "b"]);
    assert_eq!(
        r.notes,
        "rexray: error: volume a already exists; nothing was changed\n"
    );
    let a = r.answer();
    assert_eq!(a.code, 1);
    assert_eq!(a.out, "", "nothing succeeded, nothing is printed");
    assert_eq!(h.names(), ["a"]);

    let r = h.volume(&["create", "a", "b", "--continueOnError", "-f", "json"]);
    assert!(r.notes.contains("volume a already exists"), "{}", r.notes);
    let a = r.answer();
    assert_eq!(a.code, 1);
    let json: serde_json::Value = serde_json::from_str(&a.out).unwrap();
    assert_eq!(names_in(&json), ["b"], "only what succeeded");
    assert_eq!(h.names(), ["a", "b"]);
}

#[test]
fn create_disable_is_a_note_not_an_error() {
    let h = host_with(&[(keys::CREATE_DISABLE, "true")]);
    let r = h.volume(&["create", "v"]);
    assert_eq!(
        r.notes,
        "rexray: create.disable is set: volume v was not created\n"
    );
    let a = r.answer();
    assert_eq!(a.code, 0);
    assert_eq!(a.out.lines().count(), 1, "just the header: {}", a.out);
    assert!(h.names().is_empty());
}

#[test]
fn ls_filters_by_name_and_state() {
    let h = host();
    h.volume(&["create", "a", "b", "c"]).answer();
    h.volume(&["attach", "b"]).answer();
    let all = h.json(&["ls", "-f", "json"]);
    assert_eq!(names_in(&all), ["a", "b", "c"]);
    let id_of_c = all[2]["id"].as_str().unwrap().to_string();
    // By name or id, each once, unknown ones left out, sorted by name.
    let some = h.json(&["ls", "c", "a", &id_of_c, "zz", "-f", "json"]);
    assert_eq!(names_in(&some), ["a", "c"]);
    assert_eq!(
        names_in(&h.json(&["ls", "--attached", "-f", "json"])),
        ["b"]
    );
    assert_eq!(
        names_in(&h.json(&["ls", "--available", "-f", "json"])),
        ["a", "c"]
    );
    assert_eq!(
        names_in(&h.json(&["ls", "--available", "b", "c", "-f", "json"])),
        ["c"]
    );
    let e = h.volume(&["ls", "id:a"]).error();
    assert!(e.message().contains("invalid volume name \"id:a\""), "{e}");
    let quiet = h.volume(&["ls", "-q"]).answer();
    assert_eq!(quiet.out.lines().count(), 3, "{}", quiet.out);
}

#[test]
fn mount_path_and_unmount_follow_consumers() {
    let h = host();
    h.volume(&["create", "v"]).answer();
    let mounted = h.json(&["mount", "v", "-f", "json"]);
    let path = mounted[0]["Path"].as_str().unwrap().to_string();
    assert_eq!(mounted[0]["name"], "v");
    assert!(path.ends_with("/v/data"), "{path}");
    h.volume(&["mount", "v", "--consumer", "job1"]).answer();

    let p = h.volume(&["path", "v"]).answer();
    assert_eq!(p.out, format!("{path}\n"));
    let p = h.json(&["path", "v", "-f", "json"]);
    assert_eq!(p[0]["Path"], path);
    let with_path = h.json(&["ls", "--path", "-f", "json"]);
    assert_eq!(with_path[0]["Path"], path);

    // The anonymous consumer leaves; job1 keeps the mount.
    let r = h.volume(&["unmount", "v"]);
    assert_eq!(
        r.notes,
        "rexray: volume v stays mounted: still used by cli:job1 (unmount.ignoreUsedCount unmounts it whoever uses it)\n"
    );
    assert_eq!(r.answer().code, 0);
    assert_eq!(h.volume(&["path", "v"]).answer().out, format!("{path}\n"));

    let r = h.volume(&["unmount", "v", "--consumer", "job1", "-f", "json"]);
    assert_eq!(r.notes, "");
    let after: serde_json::Value = serde_json::from_str(&r.answer().out).unwrap();
    assert_eq!(after[0]["attachmentState"], 3, "unmounted and detached");
    let e = h.volume(&["path", "v"]).error();
    assert_eq!(e.kind(), Kind::NotFound);
    assert_eq!(
        e.message(),
        "volume v is not mounted on this host (mount it with `rexray volume mount v`)"
    );
}

#[test]
fn a_bad_mount_option_is_refused_before_anything_is_done() {
    let h = host();
    h.volume(&["create", "v"]).answer();
    let e = h.volume(&["mount", "v", "--fsType", "zfs"]).error();
    assert!(e.message().contains("--fsType \"zfs\""), "{e}");
    let e = h.volume(&["mount", "v", "-f", "xml"]).error();
    assert!(e.message().contains("\"xml\""), "{e}");
    assert_eq!(
        h.json(&["ls", "v", "-f", "json"])[0]["attachmentState"],
        3,
        "still detached"
    );
}

#[test]
fn attach_and_detach_print_the_volumes_and_stop_at_an_unknown_one() {
    let h = host();
    h.volume(&["create", "a", "b"]).answer();
    let r = h.volume(&["attach", "a", "zz", "b"]);
    assert_eq!(
        r.notes,
        "rexray: error: volume \"zz\" not found (see `rexray volume ls`)\n"
    );
    let a = r.answer();
    assert_eq!(a.code, 1);
    assert_eq!(a.out.lines().count(), 2, "header and a: {}", a.out);
    assert_eq!(
        names_in(&h.json(&["ls", "--attached", "-f", "json"])),
        ["a"]
    );

    let r = h.volume(&["attach", "zz", "b", "--continueOnError", "-q"]);
    assert_eq!(r.notes.lines().count(), 1, "{}", r.notes);
    assert_eq!(r.answer().code, 1);
    assert_eq!(
        names_in(&h.json(&["ls", "--attached", "-f", "json"])),
        ["a", "b"]
    );

    let detached = h.json(&["detach", "a", "b", "-f", "json"]);
    assert_eq!(names_in(&detached), ["a", "b"]);
    assert!(detached
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["attachmentState"] == 3));
}

#[test]
fn rm_prints_the_names_removed_even_when_none_was() {
    let h = host();
    h.volume(&["create", "b", "a", "c"]).answer();
    let a = h.volume(&["rm", "b", "a"]).answer();
    assert_eq!(a.out, "a\nb\n", "sorted names");
    let r = h.volume(&["rm", "zz", "-f", "json"]);
    assert!(r.notes.contains("volume \"zz\" not found"), "{}", r.notes);
    let a = r.answer();
    assert_eq!((a.code, a.out.as_str()), (1, "[]\n"));
    assert_eq!(h.names(), ["c"]);
}

#[test]
fn rm_refuses_a_volume_in_use() {
    let h = host();
    h.volume(&["create", "v"]).answer();
    h.volume(&["mount", "v"]).answer();
    let r = h.volume(&["rm", "v", "--force"]);
    assert!(r.notes.contains("cannot remove volume v"), "{}", r.notes);
    assert_eq!(
        r.answer(),
        Answer {
            out: String::new(),
            code: 1
        }
    );
    assert_eq!(h.names(), ["v"]);
}

#[test]
fn remove_disable_is_a_note_not_an_error() {
    let h = host();
    h.volume(&["create", "v"]).answer();
    let disabled = Host {
        _tmp: tempfile::tempdir().unwrap(),
        vols: volumes_at(
            &h.vols.config().dirs.home,
            &[(keys::REMOVE_DISABLE, "true")],
        ),
    };
    let r = disabled.volume(&["rm", "v"]);
    assert_eq!(
        r.notes,
        "rexray: remove.disable is set: volume v was not removed\n"
    );
    assert_eq!(r.answer(), Answer::ok(String::new()));
    assert_eq!(h.names(), ["v"]);
}

#[test]
fn an_argument_both_an_id_and_a_name_is_refused_until_the_operator_says_which() {
    let h = host();
    let created = h.json(&["create", "a", "-f", "json"]);
    let id = created[0]["id"].as_str().unwrap().to_string();
    // A pair an earlier release could make: b renamed to a's id, behind
    // the workflow's back (in the vfs driver's record of b).
    let b = h.json(&["create", "b", "-f", "json"]);
    let record = h
        .vols
        .config()
        .path(keys::VFS_ROOT)
        .join("vol")
        .join(format!("{}.json", b[0]["id"].as_str().unwrap()));
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    meta["volume"]["name"] = id.clone().into();
    std::fs::write(&record, serde_json::to_vec(&meta).unwrap()).unwrap();
    assert_eq!(h.names().len(), 2);

    for cmd in ["rm", "attach", "mount", "path"] {
        let r = h.volume(&[cmd, &id]);
        let e = match r.result {
            Err(e) => e,
            // The batch commands report the error per volume.
            Ok(a) => {
                assert_eq!(a.code, 1, "{cmd}");
                assert!(r.notes.contains("is ambiguous"), "{cmd}: {}", r.notes);
                assert!(r.notes.contains(&format!("`id:{id}`")), "{}", r.notes);
                continue;
            }
        };
        assert_eq!(e.kind(), Kind::InvalidInput, "{cmd}: {e}");
        assert!(e.message().contains("is ambiguous"), "{cmd}: {e}");
    }
    assert_eq!(h.names().len(), 2, "nothing was removed");

    let by_id = h.json(&["attach", &format!("id:{id}"), "-f", "json"]);
    assert_eq!(names_in(&by_id), ["a"]);
    let by_name = h.json(&["attach", &format!("name:{id}"), "-f", "json"]);
    assert_eq!(by_name[0]["name"], id.as_str());
    h.volume(&["detach", &format!("id:{id}"), &format!("name:{id}")])
        .answer();
    assert_eq!(
        h.volume(&["rm", &format!("name:{id}")]).answer().out,
        format!("{id}\n")
    );
    assert_eq!(h.names(), ["a"]);
}
