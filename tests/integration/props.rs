//! Property tests at the workflow level: any name and size an operator or a
//! scheduler can send is either accepted or rejected with an error that
//! names the bad field — and a rejected input changes nothing on disk.

use crate::common::*;
use proptest::prelude::*;
use rexray::model::CreateOptions;
use rexray::volume::Created;
use std::collections::BTreeMap;
use std::path::Path;

/// Every file under `dir` with its content (the catalog, records, images' sizes).
fn snapshot(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                let sum = if key.ends_with(".json") {
                    std::fs::read(&p)
                        .unwrap()
                        .iter()
                        .map(|b| *b as u64)
                        .sum::<u64>()
                } else {
                    m.len()
                };
                out.insert(key, sum);
            }
        }
    }
    out
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,10}",
        "[a-z./ -]{0,6}",
        "\\PC{0,12}",
        Just("..".to_string()),
        Just("../etc".to_string()),
        Just("a/b".to_string()),
        "x{250,260}",
    ]
}

fn size_strategy() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9]{1,2}", "-?[0-9]{1,12}", "[a-z0-9.]{0,4}", "\\PC{0,6}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn rejected_creates_change_nothing(name in name_strategy(), size in size_strategy()) {
        thread_local! {
            static HOME: Home = Home::new();
        }
        HOME.with(|h| {
            let vols = h.volumes();
            let before = snapshot(&h.dir);
            let parsed = rexray::input::size_gib("size", &size);
            let result = match parsed {
                Ok(n) => vols.create(&name, &CreateOptions { size: Some(n.min(1)), ..Default::default() }),
                Err(e) => Err(e),
            };
            match result {
                Ok(Created::New(v)) => {
                    prop_assert_eq!(&v.name, &name);
                    vols.remove(rexray::volume::VolumeRef::Id(&v.id)).unwrap();
                }
                Ok(_) => prop_assert_eq!(snapshot(&h.dir), before),
                Err(e) => {
                    let m = e.to_string();
                    prop_assert!(m.contains("volume name") || m.contains("size"), "{}", m);
                    prop_assert_eq!(snapshot(&h.dir), before);
                }
            }
            Ok(())
        })?;
    }
}
