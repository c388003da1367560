//! `tandem-drbd-standin`: the stand-in's own commands (see README.md).
fn main() {
    std::process::exit(tandem_drbd_standin::main_as(tandem_drbd_standin::Personality::Standin));
}
