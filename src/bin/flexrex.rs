//! `flexrex`: the Kubernetes FlexVolume driver kubelet execs.

fn main() {
    println!("{{\"status\":\"Not supported\",\"message\":\"flexrex is not implemented yet\"}}");
}
