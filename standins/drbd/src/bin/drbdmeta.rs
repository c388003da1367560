//! `drbdmeta`, played by the DRBD stand-in (see README.md).
fn main() {
    std::process::exit(tandem_drbd_standin::main_as(tandem_drbd_standin::Personality::Drbdmeta));
}
