//! `dvdcli`: the CLI Mesos' mesos-module-dvdi and docker/volume isolator exec.

fn main() {
    eprintln!("dvdcli: not implemented yet");
    std::process::exit(1);
}
