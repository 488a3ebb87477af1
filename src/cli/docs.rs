//! `rexray completion` and `rexray man`: shell completion scripts and man
//! pages, generated from the argument definitions so they never drift.

use crate::error::IoContext;
use crate::{Error, Result};
use std::path::Path;

/// The completion script of `program` (rexray or dvdcli; flexrex is run by
/// kubelet only) for `shell`.
pub(crate) fn completion(shell: clap_complete::Shell, program: &str) -> Result<String> {
    let mut cmd = match program {
        "rexray" => super::command(),
        "dvdcli" => crate::dvdi::args::doc_command(),
        other => {
            return Err(Error::invalid(format!(
                "no completions for {}: use rexray or dvdcli",
                crate::input::quote(other)
            )))
        }
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, program, &mut script);
    Ok(String::from_utf8_lossy(&script).into_owned())
}

/// Write rexray.1 plus one page per sub-command (rexray-volume-mount.1,
/// ...), and one page each for dvdcli and flexrex, into `dir`.
pub(crate) fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut cmd = super::command();
    cmd.build();
    write_command_pages(&cmd, "rexray".into(), dir)?;
    // One page each: their sub-commands are protocol verbs, not commands
    // people type, and their argv is not parsed by clap.
    for (page, sections) in [
        (
            crate::dvdi::args::doc_command(),
            crate::dvdi::args::MAN_SECTIONS,
        ),
        (
            crate::flex::args::doc_command(),
            crate::flex::args::MAN_SECTIONS,
        ),
    ] {
        let name = page.get_name().to_string();
        let buf = protocol_man_page(page, sections)
            .ctx(|| format!("rendering the man page of {name}"))?;
        write_page(dir, &name, &buf)?;
    }
    Ok(())
}

/// The page of `cmd` as `name`, then those of its visible sub-commands.
fn write_command_pages(cmd: &clap::Command, name: String, dir: &Path) -> Result<()> {
    let page = cmd.clone().name(name.clone());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .ctx(|| format!("rendering the man page of {name}"))?;
    write_page(dir, &name, &buf)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_command_pages(sub, format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

/// Man pages are for every user: 0644, replaced, never written through a
/// link.
fn write_page(dir: &Path, name: &str, page: &[u8]) -> Result<()> {
    crate::files::atomic::write_mode(&dir.join(format!("{name}.1")), page, 0o644)
}

/// A single man page: name, synopsis, description, options, then every
/// command with its usage, then `sections`.
fn protocol_man_page(
    mut cmd: clap::Command,
    sections: &[(&str, &str)],
) -> std::io::Result<Vec<u8>> {
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().next().is_some() {
        man.render_options_section(&mut buf)?;
    }
    let mut text = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands_mut() {
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        text.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(usage), roff(&about)));
    }
    for (title, body) in sections {
        text.push_str(&format!(".SH \"{title}\"\n{}\n", roff(body)));
    }
    buf.extend_from_slice(text.as_bytes());
    man.render_version_section(&mut buf)?;
    Ok(buf)
}

/// Text as roff reads it literally: backslashes and hyphens escaped, and a
/// leading `.` or `'` kept from being taken for a request.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    match t.chars().next() {
        Some('.') | Some('\'') => format!("\\&{t}"),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn roff_escapes_what_roff_would_interpret() {
        assert_eq!(roff("a-b"), "a\\-b");
        assert_eq!(roff("c:\\x"), "c:\\ex");
        assert_eq!(roff(".TH"), "\\&.TH");
        assert_eq!(roff("'q"), "\\&'q");
        assert_eq!(roff("plain"), "plain");
    }

    #[test]
    fn completions_exist_for_rexray_and_dvdcli_only() {
        let s = completion(clap_complete::Shell::Bash, "rexray").unwrap();
        assert!(s.contains("_rexray()"), "{s}");
        assert!(s.contains("volume"), "{s}");
        let s = completion(clap_complete::Shell::Zsh, "dvdcli").unwrap();
        assert!(s.contains("#compdef dvdcli"), "{s}");
        let e = completion(clap_complete::Shell::Bash, "flexrex").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("\"flexrex\""), "{e}");
    }

    #[test]
    fn man_pages_cover_every_visible_command_and_are_world_readable() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("man1");
        write_man_pages(&dir).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for want in [
            "rexray.1",
            "rexray-volume.1",
            "rexray-volume-mount.1",
            "rexray-snapshot-create.1",
            "rexray-service-start.1",
            "rexray-env.1",
            "dvdcli.1",
            "flexrex.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        // Hidden commands, help and protocol verbs get no page.
        for absent in ["rexray-man.1", "rexray-help.1", "rexray-volume-help.1"] {
            assert!(!names.iter().any(|n| n == absent), "{absent} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("dvdcli-")), "{names:?}");
        for n in &names {
            let meta = std::fs::metadata(dir.join(n)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{n}");
        }
        let dvdcli = std::fs::read_to_string(dir.join("dvdcli.1")).unwrap();
        assert!(dvdcli.contains(".SH COMMANDS"), "{dvdcli}");
        let mount = std::fs::read_to_string(dir.join("rexray-volume-mount.1")).unwrap();
        assert!(mount.contains("overwriteFS"), "{mount}");
    }
}
