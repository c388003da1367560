//! A stand-in for DRBD's `drbdadm`, `drbdsetup` and `drbdmeta`, for tests on
//! machines without the DRBD kernel module. Two test "hosts" share one state
//! directory (`TANDEM_DRBD_STATE`); each invocation says which host it is
//! (`TANDEM_DRBD_NODE=0|1`). It enforces DRBD's role rules across both nodes,
//! runs fence-peer handlers like the kernel does, and prints the real output
//! formats, so the daemon reaches it through the same command paths it uses
//! with the real tools. README.md says what it models and what it does not.

pub mod check;
mod cli;
pub mod cmds;
pub mod follow;
mod handler;
pub mod render;
pub mod rules;
mod standin_cli;
pub mod state;

/// Set for the detached process that runs a fence-peer handler after a link
/// break: "RESOURCE NODE EPOCH".
pub const RUN_HANDLER_ENV: &str = "TANDEM_DRBD_STANDIN_RUN_HANDLER";

/// Which tool this invocation plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Drbdadm,
    Drbdsetup,
    Drbdmeta,
    Standin,
}

/// Runs the program; returns the exit code. The name it was called by
/// (a copy or symlink named drbdadm, drbdsetup, drbdmeta) wins over `default`.
pub fn main_as(default: Personality) -> i32 {
    if let Ok(spec) = std::env::var(RUN_HANDLER_ENV) {
        return handler::run_detached(&spec);
    }
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let personality = match name.as_str() {
        "drbdadm" => Personality::Drbdadm,
        "drbdsetup" => Personality::Drbdsetup,
        "drbdmeta" => Personality::Drbdmeta,
        _ => default,
    };
    match personality {
        Personality::Drbdadm => cli::drbdadm(&rest),
        Personality::Drbdsetup => cli::drbdsetup(&rest),
        Personality::Drbdmeta => cli::drbdmeta(&rest),
        Personality::Standin => standin_cli::main(&rest),
    }
}
