//! Fence levels and devices: `[[node.NAME.fence]]` and its `[[...device]]`s.

use super::de::Ctx;
use super::model::{AgentDevice, FenceDevice, FenceLevel, IpmiDevice, IpmiPrivilege, Timing, XapiDevice, XapiTls};
use super::raw::{DeviceKind, OptionValue, RawDevice, RawLevel, RawPrivilege, S};
use super::secret::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn at<T>(s: &S<T>) -> usize {
    s.span().start
}

pub(crate) fn check_levels(
    node_path: &str,
    levels: &S<Vec<S<RawLevel>>>,
    timing: Option<&Timing>,
    ctx: &Ctx,
) -> Option<Vec<FenceLevel>> {
    let before = ctx.reports();
    let mut out = Vec::new();
    for (i, level) in levels.get_ref().iter().enumerate() {
        let path = format!("{node_path}.fence[{}]", i + 1);
        let devices = level.get_ref().device.get_ref();
        if devices.is_empty() {
            ctx.report(
                at(&level.get_ref().device),
                format!("{path}.device is empty; a fence level needs at least one device"),
            );
            continue;
        }
        let checked: Vec<Option<FenceDevice>> = devices
            .iter()
            .enumerate()
            .map(|(j, d)| check_device(&format!("{path}.device[{}]", j + 1), d, ctx))
            .collect();
        let Some(devices) = checked.into_iter().collect::<Option<Vec<_>>>() else {
            continue;
        };
        let level_out = FenceLevel { devices };
        if let Some(t) = timing {
            let worst = level_out.worst_case_ms();
            if worst > t.fence_timeout_ms {
                let parts: Vec<String> = level_out.devices.iter().map(|d| d.timeout_ms().to_string()).collect();
                ctx.report(
                    at(level),
                    format!(
                        "{path}: its devices may take {worst} ms together ({}), longer than \
                         timing.fence_timeout_ms ({}), after which the level counts as failed; \
                         raise fence_timeout_ms or lower the devices' timeout_ms",
                        parts.join(" + "),
                        t.fence_timeout_ms
                    ),
                );
            }
        }
        out.push(level_out);
    }
    (ctx.reports() == before).then_some(out)
}

const IPMI_KEYS: &[&str] = &[
    "kind",
    "timeout_ms",
    "username",
    "password_file",
    "password_script",
    "address",
    "port",
    "cipher_suite",
    "privilege",
];
const AGENT_KEYS: &[&str] = &[
    "kind",
    "timeout_ms",
    "password_file",
    "password_script",
    "agent",
    "options",
];
const XAPI_KEYS: &[&str] = &[
    "kind",
    "timeout_ms",
    "username",
    "password_file",
    "password_script",
    "url",
    "vm",
    "ca_file",
    "fingerprint",
    "insecure",
];

/// The keys a device sets, with their places.
fn present(d: &RawDevice) -> Vec<(&'static str, usize)> {
    fn p<T>(name: &'static str, v: &Option<S<T>>) -> Option<(&'static str, usize)> {
        v.as_ref().map(|v| (name, at(v)))
    }
    [
        p("timeout_ms", &d.timeout_ms),
        p("username", &d.username),
        p("password_file", &d.password_file),
        p("password_script", &d.password_script),
        p("address", &d.address),
        p("port", &d.port),
        p("cipher_suite", &d.cipher_suite),
        p("privilege", &d.privilege),
        p("agent", &d.agent),
        p("options", &d.options),
        p("url", &d.url),
        p("vm", &d.vm),
        p("ca_file", &d.ca_file),
        p("fingerprint", &d.fingerprint),
        p("insecure", &d.insecure),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn kind_name(k: DeviceKind) -> &'static str {
    match k {
        DeviceKind::Ipmi => "ipmi",
        DeviceKind::Agent => "agent",
        DeviceKind::Xapi => "xapi",
    }
}

fn check_device(path: &str, d: &S<RawDevice>, ctx: &Ctx) -> Option<FenceDevice> {
    let before = ctx.reports();
    let dev = d.get_ref();
    let kind = *dev.kind.get_ref();
    let keys = match kind {
        DeviceKind::Ipmi => IPMI_KEYS,
        DeviceKind::Agent => AGENT_KEYS,
        DeviceKind::Xapi => XAPI_KEYS,
    };
    for (key, offset) in present(dev) {
        if keys.contains(&key) {
            continue;
        }
        let owners: Vec<&str> = [(IPMI_KEYS, "ipmi"), (AGENT_KEYS, "agent"), (XAPI_KEYS, "xapi")]
            .iter()
            .filter(|(k, _)| k.contains(&key))
            .map(|(_, n)| *n)
            .collect();
        let hint = if kind == DeviceKind::Agent && matches!(key, "address" | "port" | "username") {
            "; an agent gets its settings through options, e.g. options = { ip = \"...\", username = \"...\" }"
                .to_string()
        } else {
            format!("; it is a key of kind = \"{}\"", owners.join("\" and \""))
        };
        ctx.report(
            offset,
            format!("{path}.{key} does not apply to kind = \"{}\"{hint}", kind_name(kind)),
        );
    }
    let timeout_ms = timeout(path, dev, kind, ctx);
    let device = match kind {
        DeviceKind::Ipmi => ipmi(path, d, timeout_ms, ctx).map(FenceDevice::Ipmi),
        DeviceKind::Agent => agent(path, d, timeout_ms, ctx).map(FenceDevice::Agent),
        DeviceKind::Xapi => xapi(path, d, timeout_ms, ctx).map(FenceDevice::Xapi),
    };
    if ctx.reports() == before {
        device
    } else {
        None
    }
}

fn timeout(path: &str, dev: &RawDevice, kind: DeviceKind, ctx: &Ctx) -> u64 {
    let default = match kind {
        DeviceKind::Ipmi => IpmiDevice::DEFAULT_TIMEOUT_MS,
        DeviceKind::Agent => AgentDevice::DEFAULT_TIMEOUT_MS,
        DeviceKind::Xapi => XapiDevice::DEFAULT_TIMEOUT_MS,
    };
    match &dev.timeout_ms {
        None => default,
        Some(t) => {
            let v = *t.get_ref();
            if !(100..=600_000).contains(&v) {
                ctx.report(
                    at(t),
                    format!("{path}.timeout_ms is {v}; it must be from 100 to 600000 ms"),
                );
            }
            v
        }
    }
}

/// A required key: reports its absence at the device's header.
fn required<'a, T>(path: &str, d: &S<RawDevice>, v: &'a Option<S<T>>, key: &str, ctx: &Ctx) -> Option<&'a S<T>> {
    if v.is_none() {
        let kind = kind_name(*d.get_ref().kind.get_ref());
        ctx.report(at(d), format!("{path}.{key} is required for kind = \"{kind}\""));
    }
    v.as_ref()
}

fn non_empty(path: &str, key: &str, s: &S<String>, ctx: &Ctx) -> Option<String> {
    let v = s.get_ref();
    if v.trim().is_empty() || v.chars().any(char::is_control) {
        ctx.report(
            at(s),
            format!("{path}.{key} must not be empty or contain control characters"),
        );
        None
    } else {
        Some(v.clone())
    }
}

/// password_file or password_script, at most one; `needed` when the device
/// cannot work without a password.
fn secret(path: &str, d: &S<RawDevice>, needed: bool, ctx: &Ctx) -> Option<Option<Secret>> {
    let dev = d.get_ref();
    match (&dev.password_file, &dev.password_script) {
        (Some(_), Some(script)) => {
            ctx.report(
                at(script),
                format!("{path}: set password_file or password_script, not both"),
            );
            None
        }
        (Some(file), None) => {
            let v = file.get_ref();
            if v.starts_with('/') {
                Some(Some(Secret::file(PathBuf::from(v))))
            } else {
                ctx.report(
                    at(file),
                    format!("{path}.password_file must be an absolute path, not \"{v}\""),
                );
                None
            }
        }
        (None, Some(script)) => {
            if script.get_ref().trim().is_empty() {
                ctx.report(at(script), format!("{path}.password_script is empty"));
                None
            } else {
                Some(Some(Secret::script(script.get_ref().clone())))
            }
        }
        (None, None) if needed => {
            let kind = kind_name(*dev.kind.get_ref());
            ctx.report(
                at(d),
                format!(
                    "{path} needs a password for kind = \"{kind}\": set password_file (a file \
                     of mode 0600) or password_script"
                ),
            );
            None
        }
        (None, None) => Some(None),
    }
}

fn ipmi(path: &str, d: &S<RawDevice>, timeout_ms: u64, ctx: &Ctx) -> Option<IpmiDevice> {
    let dev = d.get_ref();
    let address = required(path, d, &dev.address, "address", ctx);
    let address = address.and_then(|a| {
        let v = non_empty(path, "address", a, ctx)?;
        if v.chars().any(char::is_whitespace) {
            ctx.report(at(a), format!("{path}.address \"{v}\" must not contain spaces"));
            return None;
        }
        Some(v)
    });
    // An empty user name is IPMI's "null user"; it is allowed when written out.
    let username = required(path, d, &dev.username, "username", ctx).map(|u| u.get_ref().clone());
    let password = secret(path, d, true, ctx).flatten();
    let port = match &dev.port {
        None => IpmiDevice::DEFAULT_PORT,
        Some(p) if *p.get_ref() == 0 => {
            ctx.report(at(p), format!("{path}.port must be from 1 to 65535, not 0"));
            0
        }
        Some(p) => *p.get_ref(),
    };
    let cipher_suite = match &dev.cipher_suite {
        None => IpmiDevice::DEFAULT_CIPHER_SUITE,
        Some(c) => {
            let v = *c.get_ref();
            if v == 0 {
                ctx.report(
                    at(c),
                    format!(
                        "{path}.cipher_suite 0 has no authentication: anyone who can reach the \
                         BMC could power the node off; use 3 (or 17 where the BMC supports it)"
                    ),
                );
            } else if v > 17 {
                ctx.report(
                    at(c),
                    format!("{path}.cipher_suite is {v}; IPMI v2.0 cipher suites go from 1 to 17"),
                );
            }
            v
        }
    };
    let privilege = match dev.privilege.as_ref().map(|p| *p.get_ref()) {
        None | Some(RawPrivilege::Admin) => IpmiPrivilege::Admin,
        Some(RawPrivilege::Operator) => IpmiPrivilege::Operator,
    };
    Some(IpmiDevice {
        address: address?,
        port,
        username: username?,
        password: password?,
        cipher_suite,
        privilege,
        timeout_ms,
    })
}

/// Options tandem sets itself, or that would put a password on the agent's stdin
/// from the configuration file.
const AGENT_RESERVED: &[(&str, &str)] = &[
    ("action", "tandem sets the action itself (off, status, monitor)"),
    ("option", "it is the old name of action, which tandem sets itself"),
    (
        "password",
        "put the password in a file of mode 0600 and name it with password_file",
    ),
    (
        "passwd",
        "put the password in a file of mode 0600 and name it with password_file",
    ),
];

fn agent(path: &str, d: &S<RawDevice>, timeout_ms: u64, ctx: &Ctx) -> Option<AgentDevice> {
    let dev = d.get_ref();
    let agent = required(path, d, &dev.agent, "agent", ctx).and_then(|a| {
        let v = a.get_ref();
        if v.starts_with('/') {
            Some(PathBuf::from(v))
        } else {
            ctx.report(
                at(a),
                format!("{path}.agent must be the agent's absolute path, such as /usr/sbin/fence_ipmilan, not \"{v}\""),
            );
            None
        }
    });
    let password = secret(path, d, false, ctx);
    let mut options = BTreeMap::new();
    let mut options_ok = true;
    for (key, value) in dev.options.as_ref().map(|o| o.get_ref().iter()).into_iter().flatten() {
        let k = key.get_ref();
        let here = format!("{path}.options.{k}");
        if let Some((_, why)) = AGENT_RESERVED.iter().find(|(r, _)| r == k) {
            ctx.report(at(key), format!("{here}: not allowed here; {why}"));
            options_ok = false;
            continue;
        }
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            ctx.report(
                at(key),
                format!("{path}.options: \"{k}\" is not an agent option name (letters, digits, '_', '-')"),
            );
            options_ok = false;
            continue;
        }
        let rendered = match value.get_ref() {
            OptionValue::Str(s) => s.clone(),
            OptionValue::Int(i) => i.to_string(),
            // fence-agents read "1" as set and "0" as unset for flags.
            OptionValue::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        };
        // The agent reads one option per line: a line break would smuggle in another.
        if rendered.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
            ctx.report(at(value), format!("{here} must not contain line breaks or NUL bytes"));
            options_ok = false;
            continue;
        }
        options.insert(k.clone(), rendered);
    }
    Some(AgentDevice {
        agent: agent?,
        options: options_ok.then_some(options)?,
        password: password?,
        timeout_ms,
    })
}

fn xapi(path: &str, d: &S<RawDevice>, timeout_ms: u64, ctx: &Ctx) -> Option<XapiDevice> {
    let dev = d.get_ref();
    let url = required(path, d, &dev.url, "url", ctx);
    let username = required(path, d, &dev.username, "username", ctx).and_then(|u| non_empty(path, "username", u, ctx));
    let vm = required(path, d, &dev.vm, "vm", ctx).and_then(|v| non_empty(path, "vm", v, ctx));
    let password = secret(path, d, true, ctx).flatten();
    let insecure = dev.insecure.as_ref().is_some_and(|i| *i.get_ref());

    let mut ok = true;
    let plain_http = match url {
        Some(u) if u.get_ref().starts_with("https://") && u.get_ref().len() > "https://".len() => false,
        Some(u) if u.get_ref().starts_with("http://") && u.get_ref().len() > "http://".len() => true,
        Some(u) => {
            ctx.report(
                at(u),
                format!(
                    "{path}.url \"{}\" must be an https:// (or, with insecure = true, http://) URL",
                    u.get_ref()
                ),
            );
            ok = false;
            false
        }
        None => false,
    };
    if let (Some(u), true, false) = (url, plain_http, insecure) {
        ctx.report(
            at(u),
            format!(
                "{path}.url is plain http://, which would send the pool password in clear text; \
                 use https://, or set insecure = true if the network is trusted"
            ),
        );
        ok = false;
    }
    let fingerprint = dev.fingerprint.as_ref().and_then(|f| {
        let parsed = parse_fingerprint(f.get_ref());
        if parsed.is_none() {
            ctx.report(
                at(f),
                format!(
                    "{path}.fingerprint must be the SHA-256 fingerprint of the server certificate: \
                     64 hex digits, colons allowed (openssl x509 -noout -fingerprint -sha256)"
                ),
            );
            ok = false;
        }
        parsed
    });
    let ca_file = dev.ca_file.as_ref().and_then(|c| {
        let v = c.get_ref();
        if v.starts_with('/') {
            Some(PathBuf::from(v))
        } else {
            ctx.report(at(c), format!("{path}.ca_file must be an absolute path, not \"{v}\""));
            ok = false;
            None
        }
    });
    if let (Some(_), Some(f)) = (&dev.ca_file, &dev.fingerprint) {
        ctx.report(
            at(f),
            format!("{path}: set ca_file or fingerprint, not both; each is a complete way to check the server"),
        );
        ok = false;
    }
    if let (true, Some(i)) = (
        insecure && (dev.ca_file.is_some() || dev.fingerprint.is_some()),
        &dev.insecure,
    ) {
        ctx.report(
            at(i),
            format!("{path}: insecure = true turns certificate checks off, so ca_file or fingerprint would be ignored; remove one or the other"),
        );
        ok = false;
    }
    let tls = if insecure || plain_http {
        XapiTls::Insecure
    } else if let Some(f) = fingerprint {
        XapiTls::Fingerprint(f)
    } else if let Some(c) = ca_file {
        XapiTls::CaFile(c)
    } else {
        XapiTls::SystemRoots
    };
    if !ok {
        return None;
    }
    Some(XapiDevice {
        url: url?.get_ref().clone(),
        username: username?,
        password: password?,
        vm: vm?,
        tls,
        timeout_ms,
    })
}

fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}
