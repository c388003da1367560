//! The command line of Xen's `xenstore_client.c` (tools/xs-clients, Xen 4.17):
//! the mode comes from the program name (`xenstore-read`, ...) or, for
//! `xenstore MODE`, from the first argument; options are parsed as
//! `getopt_long(..., "hfspturn:Rd:")` parses them (GNU permutation, `--` ends
//! them, unknown options are reported and ignored); messages and exit codes are
//! the C program's (`err`/`errx`/`warnx` prefix the program's short name).

use crate::store::{canonical, sanitise, unsanitise, Store};
use std::path::Path;

/// What a run printed and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
    Exists,
    Rm,
    List,
    /// Known to the real program, not modeled here.
    Other(&'static str),
}

#[derive(Debug, Default)]
struct Flags {
    prefix: bool,
    raw: bool,
    tidy: bool,
}

struct Run {
    /// `argv[0]` as given (usage messages print it).
    argv0: String,
    /// Its last path element (`err`/`warnx` prefix it).
    short: String,
    out: Outcome,
}

impl Run {
    fn warn(&mut self, msg: &str) {
        self.out.stderr.push_str(&format!("{}: {msg}\n", self.short));
    }

    fn fail(mut self, code: i32, msg: &str) -> Outcome {
        self.warn(msg);
        self.out.code = code;
        self.out
    }

    fn usage(self, code: i32, mode: Mode, with_mode: bool) -> Outcome {
        let (name, rest) = match mode {
            Mode::Read => ("read ", "[-h] [-p] [-R] key [...]"),
            Mode::Write => ("write ", "[-h] [-R] key value [...]"),
            Mode::Rm => ("rm ", "[-h] [-t] key [...]"),
            Mode::Exists => ("exists ", "[-h] key"),
            Mode::List => ("list ", "[-h] [-p] key [...]"),
            Mode::Other(_) => ("", "<mode> [-h] [...]"),
        };
        let mstr = if with_mode { name } else { "" };
        let msg = format!("Usage: {} {mstr}{rest}", self.argv0);
        self.fail(code, &msg)
    }
}

fn lookup(mode: &str) -> Option<Mode> {
    Some(match mode {
        "read" => Mode::Read,
        "write" => Mode::Write,
        "exists" => Mode::Exists,
        "rm" => Mode::Rm,
        "list" => Mode::List,
        "chmod" => Mode::Other("chmod"),
        "ls" => Mode::Other("ls"),
        "watch" => Mode::Other("watch"),
        _ => return None,
    })
}

/// Runs one invocation: `args[0]` is the program name. `tree` is the tree file
/// (`None`: no store to talk to, as when xenstored is not running).
pub fn run(args: &[String], tree: Option<&Path>) -> Outcome {
    let argv0 = args.first().cloned().unwrap_or_else(|| "xenstore".to_owned());
    let short = argv0.rsplit('/').next().unwrap_or(&argv0).to_owned();
    let mut r = Run {
        argv0,
        short: short.clone(),
        out: Outcome::default(),
    };
    let (mode_name, rest, with_mode) = match short.strip_prefix("xenstore-") {
        Some(m) => (m.to_owned(), args.get(1..).unwrap_or(&[]), false),
        None => match args.get(1) {
            Some(m) => (m.clone(), args.get(2..).unwrap_or(&[]), true),
            None => return r.usage(1, Mode::Other(""), false),
        },
    };
    let Some(mode) = lookup(&mode_name) else {
        // errx(1, "unknown mode %s\n", m): the format's newline and errx's own.
        return r.fail(1, &format!("unknown mode {mode_name}\n"));
    };
    if let Mode::Other(m) = mode {
        return r.fail(1, &format!("xenstore {m} is not modeled by the stand-in"));
    }
    let mut flags = Flags::default();
    let mut operands: Vec<&str> = Vec::new();
    // getopt reports with the argv[0] of the vector it was given.
    let getopt_name = if with_mode { mode_name.clone() } else { r.argv0.clone() };
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            operands.extend(iter.by_ref().map(String::as_str));
            break;
        }
        let letters: Vec<char> = if let Some(long) = arg.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            let known = [
                ("help", 'h'),
                ("flat", 'f'),
                ("prefix", 'p'),
                ("tidy", 't'),
                ("upto", 'u'),
                ("recurse", 'r'),
                ("number", 'n'),
                ("raw", 'R'),
                ("depth", 'd'),
            ];
            let hits: Vec<&(&str, char)> = known.iter().filter(|(n, _)| n.starts_with(name)).collect();
            match hits.as_slice() {
                [(n, c)] if !name.is_empty() => {
                    if matches!(c, 'n' | 'd') && !long.contains('=') && iter.next().is_none() {
                        r.out
                            .stderr
                            .push_str(&format!("{getopt_name}: option '--{n}' requires an argument\n"));
                        continue;
                    }
                    vec![*c]
                }
                _ => {
                    r.out
                        .stderr
                        .push_str(&format!("{getopt_name}: unrecognized option '{arg}'\n"));
                    continue;
                }
            }
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut letters = Vec::new();
            for (i, c) in shorts.char_indices() {
                if !"hfspturnRd".contains(c) {
                    r.out
                        .stderr
                        .push_str(&format!("{getopt_name}: invalid option -- '{c}'\n"));
                    continue;
                }
                letters.push(c);
                if matches!(c, 'n' | 'd') {
                    // The rest of the word, or the next argument, is its value.
                    if i + 1 == shorts.len() && iter.next().is_none() {
                        letters.pop();
                        r.out
                            .stderr
                            .push_str(&format!("{getopt_name}: option requires an argument -- '{c}'\n"));
                    }
                    break;
                }
            }
            letters
        } else {
            operands.push(arg);
            continue;
        };
        for c in letters {
            match c {
                'h' => return r.usage(0, mode, with_mode),
                's' => {}
                'p' if matches!(mode, Mode::Read | Mode::List) => flags.prefix = true,
                'R' if matches!(mode, Mode::Read | Mode::Write) => flags.raw = true,
                't' if mode == Mode::Rm => flags.tidy = true,
                _ => return r.usage(1, mode, with_mode),
            }
        }
    }
    if operands.is_empty() || (mode == Mode::Write && operands.len() % 2 == 1) {
        return r.usage(1, mode, with_mode);
    }
    let Some(tree) = tree else {
        return r.fail(
            1,
            "xs_open: No such file or directory (TANDEM_XENSTORE_FILE is not set)",
        );
    };
    let writes = matches!(mode, Mode::Write | Mode::Rm);
    let mut store = match Store::open(tree, writes) {
        Ok(s) => s,
        Err(e) => return r.fail(1, &format!("xs_open: {e}")),
    };
    let ok = perform(&mut r, mode, &flags, &operands, &mut store);
    if ok && writes {
        if let Err(e) = store.save() {
            return r.fail(1, &format!("couldn't end transaction: {e}"));
        }
    }
    r.out.code = if ok { 0 } else { 1 };
    r.out
}

/// The operations, in order, on the in-memory tree; `false` at the first
/// failure (a multi-key write or rm is one transaction: nothing is saved then).
/// Output gathered before a failure is still printed, as the C program does.
fn perform(r: &mut Run, mode: Mode, flags: &Flags, ops: &[&str], store: &mut Store) -> bool {
    let root = &mut store.root;
    match mode {
        Mode::Read => {
            for key in ops {
                let Ok(value) = canonical(key).and_then(|p| root.read(&p).map(<[u8]>::to_vec)) else {
                    r.warn(&format!("couldn't read path {key}"));
                    return false;
                };
                if flags.prefix {
                    r.out.stdout.extend_from_slice(format!("{key}: ").as_bytes());
                }
                if flags.raw {
                    r.out.stdout.extend_from_slice(&value);
                } else {
                    r.out.stdout.extend_from_slice(sanitise(&value).as_bytes());
                    r.out.stdout.push(b'\n');
                }
            }
        }
        Mode::Write => {
            for pair in ops.chunks(2) {
                let (key, spec) = (pair[0], pair.get(1).copied().unwrap_or(""));
                let value = if flags.raw {
                    spec.as_bytes().to_vec()
                } else {
                    unsanitise(spec)
                };
                if canonical(key).and_then(|p| root.write(&p, &value)).is_err() {
                    r.warn(&format!("could not write path {key}"));
                    return false;
                }
            }
        }
        Mode::Exists => {
            for key in ops {
                if canonical(key).and_then(|p| root.read(&p).map(|_| ())).is_err() {
                    return false;
                }
            }
        }
        Mode::Rm => {
            for key in ops {
                // With -t the path as given is cut back one element at a time
                // (so a relative path stops at its first element).
                let mut path = (*key).to_owned();
                loop {
                    if canonical(&path).and_then(|p| root.rm(&p)).is_err() {
                        r.warn(&format!("could not remove path {path}"));
                        return false;
                    }
                    let Some(cut) = path.rfind('/').filter(|_| flags.tidy) else {
                        break;
                    };
                    path.truncate(cut);
                    let Ok(parent) = canonical(&path) else { break };
                    let empty = root.read(&parent).is_ok_and(<[u8]>::is_empty)
                        && root.list(&parent).is_ok_and(|c| c.is_empty());
                    if !empty {
                        break;
                    }
                }
            }
        }
        Mode::List => {
            for key in ops {
                let Ok(children) = canonical(key).and_then(|p| root.list(&p)) else {
                    r.warn(&format!("could not list path {key}"));
                    return false;
                };
                let pref = if *key == "/" { "" } else { key };
                for c in children {
                    if flags.prefix {
                        r.out.stdout.extend_from_slice(format!("{pref}/").as_bytes());
                    }
                    r.out.stdout.extend_from_slice(c.as_bytes());
                    r.out.stdout.push(b'\n');
                }
            }
        }
        Mode::Other(_) => return false,
    }
    true
}
