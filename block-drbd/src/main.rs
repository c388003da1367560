//! `block-drbd add|remove`, as libxl and xend's hotplug run it (see lib.rs and
//! docs/xen.md). Exit 0 when done; 1 with one line on stderr (and, for add, in
//! the backend's `hotplug-error`) otherwise.

use block_drbd::xs::Xenstore;
use block_drbd::{run, Action, Failure, Settings};
use tandem_hooks::loader::Drbdadm;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match Action::from_args(&args) {
        Some(action) => run(
            action,
            &Settings::from_env(),
            &Xenstore::default(),
            &Drbdadm::from_env(),
        ),
        None => Err(Failure::Usage),
    };
    if let Err(failure) = result {
        eprintln!("{}", tandem_hooks::one_line(&failure.to_string(), 1000));
        std::process::exit(1);
    }
}
