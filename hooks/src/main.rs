//! `tandem-libvirt-hook`: libvirt's qemu/libxl hook for tandem, installed as
//! `/etc/libvirt/hooks/qemu.d/tandem` and `/etc/libvirt/hooks/libxl.d/tandem`.
//!
//! ```text
//! tandem-libvirt-hook DOMAIN OPERATION SUBOP [EXTRA] < domain.xml   (run by libvirt)
//! tandem-libvirt-hook --explain < domain.xml                        (for an admin)
//! ```
//!
//! Exit codes: 0 done, or nothing to do; 1 refused or failed (one line on
//! stderr says why; for `prepare`/`migrate` libvirt aborts the start or the
//! migration and virsh shows the line); 2 the arguments are wrong.
//!
//! As a hook it never writes to stdout: after `migrate begin` and `restore
//! begin` libvirt would take any output as replacement domain XML. Operations
//! that need nothing from tandem exit before stdin is even read.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tandem_hooks::drbd::{drbd_disks, needs_drbd_map, DrbdMap};
use tandem_hooks::loader::Drbdadm;
use tandem_hooks::plan::{classify, parse_args, plan, HookPlan};
use tandem_hooks::{daemon_call, explain, parse_domain_xml_bytes, DomainInfo};

const PROG: &str = "tandem-libvirt-hook";
/// Domain XML is kilobytes; a megabyte-sized stdin is not libvirt talking.
const MAX_INPUT: u64 = 64 << 20;
/// How much sooner than the watchdog the daemon call gives up, so that its
/// line (which says what could not be reached) is the one printed.
const CALL_MARGIN: Duration = Duration::from_millis(250);
/// Options; anything else starting with `-` is an option too when there are
/// fewer than three arguments (a hook call has at least three, and a domain
/// may be named `-x`).
const OPTIONS: [&str; 5] = ["--explain", "--help", "-h", "--version", "-V"];

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// One line on stderr: libvirt shows it as the error message. Whatever it
/// quotes (a domain name, a daemon's answer) cannot break it into several. A
/// closed stderr must not turn into a panic.
fn say(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{}", tandem_hooks::one_line(line, 2000));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let option_mode = args.first().is_some_and(|first| {
        OPTIONS.contains(&first.as_str()) || (first.starts_with('-') && first != "-" && args.len() < 3)
    });
    if option_mode {
        options(&args)
    } else {
        hook(&args)
    }
}

fn options(args: &[String]) -> ExitCode {
    let cmd = clap::Command::new(PROG)
        .version(env!("CARGO_PKG_VERSION"))
        .about("tandem's libvirt hook: admits starts and migrations of DRBD-backed domains")
        .override_usage(format!(
            "{PROG} DOMAIN OPERATION SUBOP [EXTRA] < domain.xml   (as libvirt runs it)\n       {PROG} --explain < domain.xml"
        ))
        .after_help("Exit codes: 0 done or nothing to do, 1 refused or failed (reason on stderr), 2 usage.")
        .arg(
            clap::Arg::new("explain")
                .long("explain")
                .action(clap::ArgAction::SetTrue)
                .help("Read domain XML on stdin, print its DRBD disks as a JSON array; contacts nobody"),
        );
    let matches = match cmd.try_get_matches_from(std::iter::once(PROG.to_owned()).chain(args.iter().cloned())) {
        Ok(m) => m,
        Err(e) => {
            // --help and --version end up here too, with exit code 0 and stdout.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    if !matches.get_flag("explain") {
        say(&format!("{PROG}: nothing to do; see --help"));
        return ExitCode::from(EXIT_USAGE);
    }
    let info = match read_domain_xml("") {
        Ok(info) => info,
        Err(line) => {
            say(&line);
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let disks = drbd_disks(&info, &drbd_map(&info));
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{}", explain::to_json(&disks)).and_then(|()| out.flush()) {
        say(&format!("{PROG}: cannot write to stdout: {e}"));
        return ExitCode::from(EXIT_REFUSED);
    }
    ExitCode::SUCCESS
}

/// Stdin, parsed; `Err` is the line to print. `context` ("DOMAIN OP SUBOP: ")
/// tells an admin reading libvirt's log which call failed.
fn read_domain_xml(context: &str) -> Result<DomainInfo, String> {
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("{PROG}: {context}domain XML on stdin: cannot read it: {e}"))?;
    if input.len() as u64 > MAX_INPUT {
        return Err(format!(
            "{PROG}: {context}domain XML on stdin: more than {} MiB, not libvirt domain XML",
            MAX_INPUT >> 20
        ));
    }
    parse_domain_xml_bytes(&input).map_err(|e| format!("{PROG}: {context}domain XML on stdin: {e}"))
}

/// The DRBD configuration, run only when a disk path needs it.
fn drbd_map(info: &DomainInfo) -> DrbdMap {
    if !needs_drbd_map(info) {
        return DrbdMap::empty();
    }
    let (map, warning) = Drbdadm::from_env().load_or_empty();
    if let Some(w) = warning {
        say(&format!(
            "{PROG}: warning: {w}; /dev/drbdN and by-disk paths stay unresolved"
        ));
    }
    map
}

fn hook(args: &[String]) -> ExitCode {
    let call = match parse_args(args) {
        Ok(call) => call,
        Err(e) => {
            say(&format!("{PROG}: {e}; see --help"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !classify(&call.operation, &call.subop).needs_disks() {
        // Decided by the arguments alone: stdin stays unread (libvirt ignores
        // the EPIPE of a hook that closes it early).
        if let Ok(p) = plan(args, &[]) {
            if let Some(w) = p.warning() {
                say(&w);
            }
        }
        return ExitCode::SUCCESS;
    }
    let what = format!("{} {} {}", call.domain, call.operation, call.subop);
    let budget = daemon_call::timeout_from_env();
    let deadline = Instant::now() + budget.saturating_sub(CALL_MARGIN);
    start_watchdog(what.clone(), budget);
    let info = match read_domain_xml(&format!("{what}: ")) {
        Ok(info) => info,
        Err(line) => {
            say(&line);
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let disks = drbd_disks(&info, &drbd_map(&info));
    let p = match plan(args, &disks) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("{PROG}: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match p {
        HookPlan::None(_) | HookPlan::Nothing { .. } => ExitCode::SUCCESS,
        HookPlan::PrepareIncoming(_) | HookPlan::PrepareStart(_) | HookPlan::Release(_) => {
            match daemon_call::call_daemon_until(&p, deadline) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    say(&e.to_string());
                    ExitCode::from(EXIT_REFUSED)
                }
            }
        }
    }
}

/// Bounds the whole run: a hook that hangs holds libvirt (and every virsh
/// command on the domain) with it. Timing out refuses, which is safe. The
/// daemon call has its own deadline just before this one; this catches the
/// rest (a stdin that never ends, a drbdadm that hangs past its own timeout).
fn start_watchdog(what: String, budget: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        say(&format!("{PROG}: {what}: timed out after {} s", budget.as_secs()));
        std::process::exit(i32::from(EXIT_REFUSED));
    });
}
