//! The fence-agents option table: one table gives the command line (getopt
//! style: `-o off`, `-ooff`, `--action=off`, `--action off`), the stdin
//! `key=value` names (with the old names fence-agents still accepts) and the
//! metadata.

use anyhow::{bail, Result};
use std::collections::BTreeMap;

pub struct Opt {
    /// The metadata / stdin name.
    pub name: &'static str,
    /// Older stdin names for the same option.
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub long: &'static str,
    /// `Some(placeholder)` when the option takes a value.
    pub value: Option<&'static str>,
    pub default: Option<&'static str>,
    pub required: bool,
    pub desc: &'static str,
}

const fn opt(
    name: &'static str,
    short: Option<char>,
    long: &'static str,
    value: Option<&'static str>,
    desc: &'static str,
) -> Opt {
    Opt {
        name,
        aliases: &[],
        short,
        long,
        value,
        default: None,
        required: false,
        desc,
    }
}

pub const OPTIONS: &[Opt] = &[
    Opt {
        aliases: &["option"],
        default: Some("reboot"),
        required: true,
        ..opt("action", Some('o'), "action", Some("action"), "Fencing action")
    },
    Opt {
        aliases: &["ipaddr"],
        ..opt(
            "ip",
            Some('a'),
            "ip",
            Some("ip"),
            "IP address or hostname of a pool member (https://IP)",
        )
    },
    opt(
        "ipport",
        Some('u'),
        "ipport",
        Some("port"),
        "TCP port of the XenAPI (default 443)",
    ),
    opt(
        "session_url",
        Some('s'),
        "session-url",
        Some("url"),
        "URL of the XenAPI, https://host[:port] (instead of ip)",
    ),
    Opt {
        aliases: &["login"],
        ..opt("username", Some('l'), "username", Some("name"), "Login name")
    },
    Opt {
        aliases: &["passwd"],
        ..opt(
            "password",
            Some('p'),
            "password",
            Some("password"),
            "Login password or passphrase",
        )
    },
    Opt {
        aliases: &["passwd_script"],
        ..opt(
            "password_script",
            Some('S'),
            "password-script",
            Some("script"),
            "Script to run to retrieve password",
        )
    },
    Opt {
        aliases: &["port"],
        required: true,
        ..opt("plug", Some('n'), "plug", Some("id"), "UUID or name label of the VM")
    },
    opt(
        "uuid",
        Some('U'),
        "uuid",
        Some("uuid"),
        "UUID of the VM (instead of plug)",
    ),
    opt(
        "ssl",
        Some('z'),
        "ssl",
        None,
        "Use SSL connection with verifying certificate (the default)",
    ),
    opt(
        "ssl_secure",
        None,
        "ssl-secure",
        None,
        "Use SSL connection with verifying certificate",
    ),
    opt(
        "ssl_insecure",
        None,
        "ssl-insecure",
        None,
        "Use SSL connection without verifying certificate",
    ),
    opt(
        "ssl_ca_file",
        None,
        "ssl-ca-file",
        Some("file"),
        "Check the certificate against the CAs in this PEM file",
    ),
    opt(
        "ssl_fingerprint",
        None,
        "ssl-fingerprint",
        Some("sha256"),
        "Accept only the certificate with this SHA-256 fingerprint",
    ),
    Opt {
        default: Some("0"),
        ..opt(
            "delay",
            None,
            "delay",
            Some("seconds"),
            "Wait X seconds before fencing is started",
        )
    },
    Opt {
        default: Some("5"),
        ..opt(
            "login_timeout",
            None,
            "login-timeout",
            Some("seconds"),
            "Wait X seconds for each XenAPI call",
        )
    },
    Opt {
        default: Some("20"),
        ..opt(
            "power_timeout",
            None,
            "power-timeout",
            Some("seconds"),
            "Test X seconds for status change after ON/OFF",
        )
    },
    Opt {
        default: Some("0"),
        ..opt(
            "power_wait",
            None,
            "power-wait",
            Some("seconds"),
            "Wait X seconds after issuing ON/OFF",
        )
    },
    Opt {
        default: Some("3"),
        ..opt(
            "shell_timeout",
            None,
            "shell-timeout",
            Some("seconds"),
            "Accepted for compatibility",
        )
    },
    Opt {
        default: Some("1"),
        ..opt(
            "retry_on",
            None,
            "retry-on",
            Some("attempts"),
            "Count of attempts to retry power on",
        )
    },
    Opt {
        default: Some("1"),
        ..opt(
            "stonith_status_sleep",
            None,
            "stonith-status-sleep",
            Some("seconds"),
            "Accepted for compatibility",
        )
    },
    opt(
        "disable_timeout",
        None,
        "disable-timeout",
        Some("true/false"),
        "Accepted for compatibility",
    ),
    Opt {
        default: Some(","),
        ..opt(
            "separator",
            Some('C'),
            "separator",
            Some("char"),
            "Separator for CSV created by 'list' operation",
        )
    },
    Opt {
        default: Some(","),
        ..opt(
            "plug_separator",
            None,
            "plug-separator",
            Some("char"),
            "Accepted for compatibility",
        )
    },
    opt("verbose", Some('v'), "verbose", None, "Verbose mode"),
    opt(
        "verbose_level",
        None,
        "verbose-level",
        Some("level"),
        "Level of debugging detail",
    ),
    opt("quiet", Some('q'), "quiet", None, "Disable logging to stderr"),
    Opt {
        aliases: &["debug"],
        ..opt(
            "debug_file",
            Some('D'),
            "debug-file",
            Some("debugfile"),
            "Write debug information to given file",
        )
    },
    opt(
        "version",
        Some('V'),
        "version",
        None,
        "Display version information and exit",
    ),
    opt("help", Some('h'), "help", None, "Display help and exit"),
];

/// Parsed options, by metadata name; flags hold "1".
#[derive(Default)]
pub struct Options {
    values: BTreeMap<&'static str, String>,
    /// Stdin lines that were ignored, to warn about.
    pub ignored: Vec<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        let shown: Vec<(&str, &str)> = self
            .values
            .iter()
            .map(|(k, v)| (*k, if *k == "password" { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("Options").field("values", &shown).finish()
    }
}

fn find_long(long: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.long == long)
}

fn find_name(name: &str) -> Option<&'static Opt> {
    let n = name.replace('-', "_");
    OPTIONS.iter().find(|o| o.name == n || o.aliases.contains(&n.as_str()))
}

impl Options {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .or_else(|| OPTIONS.iter().find(|o| o.name == name).and_then(|o| o.default))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v == "1")
    }

    fn put(&mut self, o: &'static Opt, value: Option<String>) {
        self.values.insert(o.name, value.unwrap_or_else(|| "1".to_string()));
    }

    /// getopt_long-style arguments (without the program name).
    pub fn from_args(args: &[String]) -> Result<Options> {
        let mut out = Options::default();
        let mut i = 0;
        while let Some(arg) = args.get(i) {
            i += 1;
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let Some(o) = find_long(name) else {
                    bail!("unknown option --{name}");
                };
                let value = match (o.value, inline) {
                    (Some(_), Some(v)) => Some(v),
                    (Some(_), None) => {
                        i += 1;
                        Some(
                            args.get(i - 1)
                                .cloned()
                                .ok_or_else(|| anyhow::anyhow!("--{name} needs a value"))?,
                        )
                    }
                    (None, Some(_)) => bail!("--{name} takes no value"),
                    (None, None) => None,
                };
                out.put(o, value);
            } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                for (at, c) in shorts.char_indices() {
                    let Some(o) = OPTIONS.iter().find(|o| o.short == Some(c)) else {
                        bail!("unknown option -{c}");
                    };
                    if o.value.is_some() {
                        let rest = shorts.get(at + c.len_utf8()..).unwrap_or_default();
                        let value = if rest.is_empty() {
                            i += 1;
                            args.get(i - 1)
                                .cloned()
                                .ok_or_else(|| anyhow::anyhow!("-{c} needs a value"))?
                        } else {
                            rest.to_string()
                        };
                        out.put(o, Some(value));
                        break;
                    }
                    out.put(o, None);
                }
            } else {
                bail!("unexpected argument {arg:?} (options start with - or --)");
            }
        }
        Ok(out)
    }

    /// fence-agents' stdin: `name=value` lines, `#` comments, flags as
    /// 1/yes/on/true (0/no/off/false clear them); unknown names are ignored
    /// with a warning, as fence-agents does (`nodename` silently).
    pub fn from_stdin(text: &str) -> Options {
        let mut out = Options::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            let Some(o) = find_name(name.trim()) else {
                if name.trim() != "nodename" {
                    out.ignored.push(name.trim().chars().take(60).collect());
                }
                continue;
            };
            if o.value.is_some() {
                out.put(o, Some(value.to_string()));
            } else {
                match value.to_ascii_lowercase().as_str() {
                    "1" | "yes" | "on" | "true" => out.put(o, None),
                    "0" | "no" | "off" | "false" => {
                        out.values.remove(o.name);
                    }
                    _ => out.ignored.push(format!("{} (a flag without 1 or 0)", o.name)),
                }
            }
        }
        out
    }
}

pub fn usage(program: &str) -> String {
    let mut s = format!("Usage:\n\t{program} [options]\nOptions:\n");
    for o in OPTIONS {
        let mut left = String::new();
        if let Some(c) = o.short {
            left.push_str(&format!("-{c}, "));
        }
        left.push_str(&format!("--{}", o.long));
        if let Some(v) = o.value {
            left.push_str(&format!("=[{v}]"));
        }
        s.push_str(&format!("   {left:<40} {}\n", o.desc));
    }
    s
}
