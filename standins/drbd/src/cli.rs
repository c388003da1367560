//! Command lines, as the real tools take them.
//!
//! drbdadm: `drbdadm [-c FILE|--config-file FILE] [-d] CMD [--opts] RES`;
//! it turns each command into the drbdsetup call the real drbdadm 9.22 makes
//! (`drbdadm -d` shows them) and reports a failure the same way:
//! drbdsetup's stderr, then `Command 'drbdsetup ...' terminated with exit code N`.
//! drbdsetup: `primary RES [--force]`, `secondary RES [--force]`,
//! `net-options RES PEER_ID [--opt=val...]`, `connect|disconnect RES PEER_ID`,
//! `outdate [RES] MINOR`, `resume-io [RES] MINOR`,
//! `status [RES|all] [--json] [--verbose]`,
//! `events2 [RES|all] [--now] [--statistics] [--full] [--timestamps]`.

use crate::cmds::{self, CmdError, Ctx};
use crate::follow;
use crate::render;
use crate::state::{self, State};

/// Options (`--x`, `--x=y`) and positional words of a command line.
#[derive(Debug, Default)]
struct Parsed {
    words: Vec<String>,
    opts: Vec<(String, Option<String>)>,
}

impl Parsed {
    fn new(args: &[String]) -> Self {
        let mut p = Parsed::default();
        for a in args {
            if let Some(o) = a.strip_prefix("--") {
                match o.split_once('=') {
                    Some((k, v)) => p.opts.push((k.to_owned(), Some(v.to_owned()))),
                    None => p.opts.push((o.to_owned(), None)),
                }
            } else if a.len() > 1 && a.starts_with('-') && !a[1..].bytes().all(|b| b.is_ascii_digit()) {
                p.opts.push((a[1..].to_owned(), None));
            } else {
                p.words.push(a.clone());
            }
        }
        p
    }

    fn flag(&self, names: &[&str]) -> bool {
        self.opts.iter().any(|(k, _)| names.contains(&k.as_str()))
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

fn ctx() -> Result<Ctx, CmdError> {
    Ok(Ctx {
        dir: state::state_dir()?,
        node: state::node_from_env()?,
    })
}

fn load(ctx: &Ctx) -> Result<State, CmdError> {
    Ok(state::read(&ctx.dir)?.unwrap_or_default())
}

fn yes_no(v: &str) -> Option<bool> {
    match v {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// Prints a failure the way drbdsetup does and returns its exit code.
fn report(objname: &str, e: CmdError) -> i32 {
    match &e {
        CmdError::Refused(r) => eprint!("{}", r.render(objname)),
        _ => eprintln!("{e}"),
    }
    e.exit_code()
}

pub fn drbdsetup(args: &[String]) -> i32 {
    let p = Parsed::new(args);
    if p.flag(&["version", "V"]) || p.words.first().is_some_and(|w| w == "version") {
        println!("DRBDADM_VERSION=9.22.0-tandem-standin\nDRBD_KERNEL_VERSION_CODE=0x090200");
        return 0;
    }
    let Some(cmd) = p.words.first().cloned() else {
        eprintln!("USAGE: drbdsetup command {{arguments}} [options]");
        return 20;
    };
    let ctx = match ctx() {
        Ok(c) => c,
        Err(e) => return report("drbdsetup", e),
    };
    let st = match load(&ctx) {
        Ok(s) => s,
        Err(e) => return report("drbdsetup", e),
    };
    let arg = |i: usize| p.words.get(i).cloned();
    // Commands taking a minor: `outdate 0` or, as drbdadm 9.22 writes it, `outdate r0 0`.
    let by_minor = || -> Option<String> {
        let m: u32 = p.words.last()?.parse().ok()?;
        st.resources
            .iter()
            .find(|(_, r)| m >= r.config.minor && m < r.config.minor + r.config.volumes)
            .map(|(n, _)| n.clone())
    };
    let named = |want: Option<String>| -> Result<String, i32> {
        match want {
            Some(r) if st.resources.contains_key(&r) => Ok(r),
            Some(r) => Err(report(&r, CmdError::Refused(crate::rules::Refused::failure(158)))),
            None => {
                eprintln!("{cmd}: missing resource argument");
                Err(20)
            }
        }
    };
    let only = |w: Option<String>| w.filter(|r| r != "all");
    let result = match cmd.as_str() {
        "primary" | "secondary" | "net-options" | "connect" | "disconnect" => {
            let res = match named(arg(1)) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let force = p.flag(&["force"]);
            let r = match cmd.as_str() {
                "primary" => cmds::primary(&ctx, &res, force),
                "secondary" => cmds::secondary(&ctx, &res, force),
                "connect" => cmds::connect(&ctx, &res),
                "disconnect" => cmds::disconnect(&ctx, &res),
                _ => {
                    let allow = match p.value("allow-two-primaries").map(yes_no) {
                        Some(None) => return report(&res, CmdError::Usage("allow-two-primaries: yes or no".into())),
                        Some(Some(v)) => Some(v),
                        None => None,
                    };
                    cmds::net_options(&ctx, &res, p.value("protocol"), allow)
                }
            };
            r.map_err(|e| report(&res, e))
        }
        "outdate" | "resume-io" => {
            let Some(res) = by_minor() else {
                let m = p.words.last().cloned().unwrap_or_default();
                eprintln!("{m}: Failure: (127) Device minor not allocated");
                return 10;
            };
            // drbdsetup names the object by its first argument (the resource,
            // as drbdadm passes it).
            let objname = p.words.get(1).cloned().unwrap_or_default();
            let r = if cmd == "outdate" {
                cmds::outdate(&ctx, &res)
            } else {
                cmds::resume_io(&ctx, &res)
            };
            r.map_err(|e| report(&objname, e))
        }
        "status" => {
            let only = only(arg(1));
            if let Some(r) = &only {
                if !st.resources.contains_key(r) {
                    eprintln!("{r}: No such resource");
                    return 10;
                }
            }
            if p.flag(&["json", "j"]) {
                print!("{}", render::status_json(&st, ctx.node, only.as_deref()));
            } else {
                print!(
                    "{}",
                    render::status_text(&st, ctx.node, only.as_deref(), p.flag(&["verbose", "v"]))
                );
            }
            Ok(())
        }
        "events2" => {
            let flags = follow::Flags {
                now: p.flag(&["now"]),
                statistics: p.flag(&["statistics", "s"]),
                full: p.flag(&["full", "f"]),
                timestamps: p.flag(&["timestamps"]),
            };
            return follow::events2(&ctx.dir, ctx.node, only(arg(1)).as_deref(), &flags);
        }
        other => {
            eprintln!("{other}: not modelled by the DRBD stand-in");
            return 20;
        }
    };
    match result {
        Ok(()) => 0,
        Err(code) => code,
    }
}

/// The drbdsetup argument list real drbdadm 9.22 builds for `cmd` on `res`.
fn drbdsetup_argv(cmd: &str, p: &Parsed, res: &str, st: &State, node: usize) -> Result<Vec<Vec<String>>, String> {
    let r = st
        .resources
        .get(res)
        .ok_or_else(|| format!("'{res}' not defined in your config (for this host)."))?;
    let peer = (1 - node).to_string();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
    Ok(match cmd {
        "primary" | "secondary" => {
            let mut v = s(&[cmd, res]);
            if p.flag(&["force"]) {
                v.push("--force".into());
            }
            vec![v]
        }
        "net-options" => {
            let mut v = s(&["net-options", res, &peer]);
            v.push(format!("--_name={}", r.config.hosts[1 - node]));
            for (k, val) in &p.opts {
                if k != "c" && k != "config-file" && k != "d" && k != "dry-run" {
                    v.push(match val {
                        Some(val) => format!("--{k}={val}"),
                        None => format!("--{k}"),
                    });
                }
            }
            vec![v]
        }
        "connect" | "disconnect" => vec![s(&[cmd, res, &peer])],
        "outdate" | "resume-io" => (0..r.config.volumes)
            .map(|v| s(&[cmd, res, &(r.config.minor + v).to_string()]))
            .collect(),
        "status" => vec![s(&["status", res])],
        other => return Err(format!("{other}: not modelled by the DRBD stand-in")),
    })
}

pub fn drbdadm(args: &[String]) -> i32 {
    // `-c FILE` takes the next word; everything else is options and words.
    let mut rest = Vec::new();
    let mut config_file = "/etc/drbd.conf".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-c" || a == "--config-file" {
            if let Some(f) = it.next() {
                config_file = f.clone();
            }
        } else if let Some(f) = a.strip_prefix("--config-file=") {
            config_file = f.to_owned();
        } else {
            rest.push(a.clone());
        }
    }
    let p = Parsed::new(&rest);
    let dry_run = p.flag(&["d", "dry-run"]);
    if p.flag(&["version", "V"]) || p.words.first().is_some_and(|w| w == "version") {
        println!(
            "DRBDADM_VERSION_CODE=0x091600\nDRBDADM_VERSION=9.22.0-tandem-standin\nDRBD_KERNEL_VERSION_CODE=0x090200"
        );
        return 0;
    }
    let Some(cmd) = p.words.first().cloned() else {
        eprintln!("USAGE: drbdadm COMMAND [OPTION...] {{all|RESOURCE...}}");
        return 20;
    };
    let ctx = match ctx() {
        Ok(c) => c,
        Err(e) => return report("drbdadm", e),
    };
    let st = match load(&ctx) {
        Ok(s) => s,
        Err(e) => return report("drbdadm", e),
    };
    let res = p.words.get(1).cloned();
    match cmd.as_str() {
        "dump-xml" => {
            print!(
                "{}",
                render::dump_xml(&st, res.as_deref().filter(|r| *r != "all"), &config_file)
            );
            return 0;
        }
        "sh-minor" | "sh-dev" => {
            let Some(r) = res.as_deref().and_then(|r| st.resources.get(r)) else {
                eprintln!(
                    "'{}' not defined in your config (for this host).",
                    res.unwrap_or_default()
                );
                return 1;
            };
            for v in 0..r.config.volumes {
                let m = r.config.minor + v;
                if cmd == "sh-minor" {
                    println!("{m}");
                } else {
                    println!("/dev/drbd{m}");
                }
            }
            return 0;
        }
        "net-cut" | "net-heal" => {
            let Some(r) = res.filter(|r| st.resources.contains_key(r)) else {
                eprintln!("{cmd}: unknown resource");
                return 1;
            };
            let out = if cmd == "net-cut" {
                cmds::net_cut(&ctx.dir, &r, p.flag(&["wait"]))
            } else {
                cmds::net_heal(&ctx.dir, &r)
            };
            return out.map_or_else(|e| report(&r, e), |_| 0);
        }
        _ => {}
    }
    let Some(res) = res else {
        eprintln!("{cmd}: missing resource name");
        return 20;
    };
    let calls = match drbdsetup_argv(&cmd, &p, &res, &st, ctx.node) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return 1;
        }
    };
    for call in calls {
        let shown = format!("drbdsetup {}", call.join(" "));
        if dry_run {
            println!("{shown}");
            continue;
        }
        let code = drbdsetup(&call);
        if code != 0 {
            eprintln!("Command '{shown}' terminated with exit code {code}");
            return code;
        }
    }
    0
}

/// drbdmeta, as far as drbdadm's fallbacks reach it: the stand-in's devices
/// are always attached, which is what drbdmeta refuses to touch.
pub fn drbdmeta(args: &[String]) -> i32 {
    let minor = args.first().cloned().unwrap_or_default();
    eprintln!("Device '{minor}' is configured!");
    20
}
