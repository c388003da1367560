//! `tandem-drbd-standin SUBCOMMAND`: what tests do to the stand-in that no
//! DRBD command does (set up resources, break the link, hold a device open,
//! read the history).

use crate::cmds::{self, CmdError, Ctx, Init};
use crate::follow;
use crate::render;
use crate::state::{self, Fencing, Holder, ResConfig};

const USAGE: &str = "\
usage: tandem-drbd-standin COMMAND   (TANDEM_DRBD_STATE=DIR; TANDEM_DRBD_NODE=0|1 or --node N)
  init --resource R [--minor N] [--volumes N] [--hosts A,B] [--addresses IP:PORT,IP:PORT]
       [--fencing dont-care|resource-only|resource-and-stonith]
       [--fence-peer CMD | --fence-peer-0 CMD --fence-peer-1 CMD]
       [--allow-two-primaries] [--disk-0 S] [--disk-1 S] [--primary N] [--disconnected]
  hold R [--node N] [--pid PID] [--name NAME]      a process holds the device open
  unhold R [--node N] [--pid PID] [--name NAME]    (no --pid/--name: every holder)
  net-cut R [--wait] | net-heal R                  break / repair the replication link
  node-down R --node N                             host N loses power (link broken, no handler there)
  node-up R --node N                               host N is back: up, connects, resyncs
  proc-drbd [--node N]                             the node's 8.4 /proc/drbd
  state | history                                  the raw state / history.jsonl
  check                                            history invariants (exit 1 if broken)
  kill-events2 [--node N]                          end running events2 followers";

fn value(args: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let eq = format!("--{name}=");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == flag {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v.to_owned());
        }
    }
    None
}

fn has(args: &[String], name: &str) -> bool {
    args.iter().any(|a| *a == format!("--{name}"))
}

fn node(args: &[String]) -> Result<usize, CmdError> {
    match value(args, "node") {
        Some(n) if n == "0" => Ok(0),
        Some(n) if n == "1" => Ok(1),
        Some(n) => Err(CmdError::Usage(format!("--node {n}: 0 or 1"))),
        None => Ok(state::node_from_env()?),
    }
}

fn pair(args: &[String], name: &str, default: [String; 2]) -> Result<[String; 2], CmdError> {
    match value(args, name) {
        None => Ok(default),
        Some(v) => match v.split_once(',') {
            Some((a, b)) => Ok([a.to_owned(), b.to_owned()]),
            None => Err(CmdError::Usage(format!("--{name} wants two values, comma separated"))),
        },
    }
}

fn init(args: &[String]) -> Result<(), CmdError> {
    let dir = state::state_dir()?;
    let name = value(args, "resource").ok_or_else(|| CmdError::Usage("init needs --resource R".into()))?;
    let num = |n: &str, d: u32| -> Result<u32, CmdError> {
        value(args, n).map_or(Ok(d), |v| {
            v.parse()
                .map_err(|_| CmdError::Usage(format!("--{n} {v}: not a number")))
        })
    };
    let minor = num("minor", 0)?;
    let volumes = num("volumes", 1)?.max(1);
    let fencing = match value(args, "fencing") {
        None => Fencing::DontCare,
        Some(f) => cmds::fencing(&f).ok_or_else(|| CmdError::Usage(format!("--fencing {f}")))?,
    };
    let both = value(args, "fence-peer");
    let fence_peer = [
        value(args, "fence-peer-0").or_else(|| both.clone()),
        value(args, "fence-peer-1").or(both),
    ];
    let port = 7789 + minor;
    let config = ResConfig {
        minor,
        volumes,
        hosts: pair(args, "hosts", ["node0".into(), "node1".into()])?,
        addresses: pair(
            args,
            "addresses",
            [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")],
        )?,
        fencing,
        fence_peer,
    };
    let mut roles = ["Secondary".to_owned(), "Secondary".to_owned()];
    if let Some(p) = value(args, "primary") {
        let i: usize = p.parse().map_err(|_| CmdError::Usage("--primary 0|1".into()))?;
        *roles
            .get_mut(i)
            .ok_or_else(|| CmdError::Usage("--primary 0|1".into()))? = "Primary".into();
    }
    cmds::init(
        &dir,
        Init {
            name,
            config,
            disks: [
                value(args, "disk-0").unwrap_or_else(|| "UpToDate".into()),
                value(args, "disk-1").unwrap_or_else(|| "UpToDate".into()),
            ],
            roles,
            allow_two_primaries: has(args, "allow-two-primaries"),
            connected: !has(args, "disconnected"),
        },
    )
}

pub fn main(args: &[String]) -> i32 {
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return 20;
    };
    let rest = &args[1..];
    let res = rest.first().filter(|r| !r.starts_with("--")).cloned();
    let out: Result<(), CmdError> = (|| {
        let dir = state::state_dir()?;
        let need_res = || {
            res.clone()
                .ok_or_else(|| CmdError::Usage(format!("{cmd} needs a resource")))
        };
        match cmd.as_str() {
            "init" => init(rest),
            "hold" => {
                let ctx = Ctx { dir, node: node(rest)? };
                let pid = value(rest, "pid").and_then(|p| p.parse().ok());
                let name = value(rest, "name").unwrap_or_else(|| "qemu-system-x86".into());
                cmds::hold(&ctx, &need_res()?, Holder { name, pid })
            }
            "unhold" => {
                let ctx = Ctx { dir, node: node(rest)? };
                let pid = value(rest, "pid").and_then(|p| p.parse().ok());
                cmds::unhold(&ctx, &need_res()?, pid, value(rest, "name").as_deref())
            }
            "net-cut" => cmds::net_cut(&dir, &need_res()?, has(rest, "wait")),
            "node-down" => cmds::node_down(&dir, &need_res()?, node(rest)?),
            "node-up" => cmds::node_up(&dir, &need_res()?, node(rest)?),
            "net-heal" => cmds::net_heal(&dir, &need_res()?),
            "proc-drbd" => {
                let st = state::read(&dir)?.unwrap_or_default();
                print!("{}", render::proc_drbd(&st, node(rest)?));
                Ok(())
            }
            "state" => {
                let st = state::read(&dir)?.unwrap_or_default();
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
                Ok(())
            }
            "history" => {
                print!(
                    "{}",
                    std::fs::read_to_string(dir.join("history.jsonl")).unwrap_or_default()
                );
                Ok(())
            }
            "check" => {
                let text = std::fs::read_to_string(dir.join("history.jsonl")).unwrap_or_default();
                let bad = crate::check::violations(&text);
                for b in &bad {
                    println!("{b}");
                }
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(CmdError::Usage(format!("{} invariant violation(s)", bad.len())))
                }
            }
            "kill-events2" => {
                let only = match value(rest, "node") {
                    Some(_) => Some(node(rest)?),
                    None => None,
                };
                println!("{}", follow::kill_followers(&dir, only));
                Ok(())
            }
            "help" | "--help" | "-h" => {
                println!("{USAGE}");
                Ok(())
            }
            other => Err(CmdError::Usage(format!("unknown command {other}\n{USAGE}"))),
        }
    })();
    match out {
        Ok(()) => 0,
        Err(CmdError::Refused(r)) => {
            eprint!("{}", r.render(res.as_deref().unwrap_or("standin")));
            r.exit
        }
        Err(e) => {
            eprintln!("tandem-drbd-standin: {e}");
            if matches!(e, CmdError::Usage(_)) {
                1
            } else {
                e.exit_code()
            }
        }
    }
}
