//! `xapi-fence`: a fence-agents compatible agent for XenServer / XCP-ng VMs.
//! Options on the command line (`-o off -s https://pool -l root -p ... -n vm`)
//! or, with no arguments, `key=value` lines on stdin, as Pacemaker and RHCS
//! pass them. Exit codes as fence-agents: 0 success (status: on), 2 status
//! off, 1 any failure.

mod metadata;
mod options;

use anyhow::{anyhow, bail, Context, Result};
use options::Options;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;
use xapi_fence::{parse_fingerprint, Action, Client, Config, Password, PowerState, TlsMode};

const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_STATUS_OFF: u8 = 2;
/// Longest stdin read: options are a few lines.
const MAX_STDIN: u64 = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let program = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "xapi-fence".into());
    let opts = if args.len() > 1 {
        Options::from_args(args.get(1..).unwrap_or_default())
    } else {
        let mut text = String::new();
        match std::io::stdin().take(MAX_STDIN).read_to_string(&mut text) {
            Ok(_) => Ok(Options::from_stdin(&text)),
            Err(e) => Err(anyhow!("cannot read options from stdin: {e}")),
        }
    };
    let opts = match opts {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{program}: {e:#}\nPlease use '-h' for usage");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    ExitCode::from(run(&program, opts))
}

fn run(program: &str, opts: Options) -> u8 {
    if opts.flag("help") {
        print!("{}", options::usage(program));
        return EXIT_OK;
    }
    if opts.flag("version") {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return EXIT_OK;
    }
    let action = opts.get("action").unwrap_or("reboot").to_ascii_lowercase();
    let action = match action.as_str() {
        "meta-data" => "metadata".to_string(),
        "enable" => "on".to_string(),
        "disable" => "off".to_string(),
        _ => action,
    };
    if action == "metadata" {
        print!("{}", metadata::metadata(program));
        return EXIT_OK;
    }
    logging(&opts);
    for name in &opts.ignored {
        tracing::warn!("Parse error: Ignoring unknown option '{name}'");
    }
    if !metadata::ACTIONS.contains(&action.as_str()) {
        eprintln!("Failed: Unrecognised action '{action}'");
        return EXIT_FAILED;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Failed: cannot start: {e}");
            return EXIT_FAILED;
        }
    };
    match runtime.block_on(act(&action, &opts)) {
        Ok(code) => code,
        Err(e) => {
            // Even with quiet: the one line that says why.
            eprintln!("Failed: {e:#}");
            EXIT_FAILED
        }
    }
}

fn logging(opts: &Options) {
    let level = if opts.flag("quiet") {
        "off"
    } else if opts.flag("verbose") || opts.get("verbose_level").is_some_and(|l| l != "0") {
        "debug"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("{level},rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    let _ = match opts.get("debug_file") {
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
            Err(e) => {
                eprintln!("Failed: Unable to create file {path}: {e}");
                builder.with_writer(std::io::stderr).try_init()
            }
        },
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

fn seconds(opts: &Options, name: &str) -> Result<Duration> {
    let v = opts.get(name).unwrap_or("0");
    let s: f64 = v
        .trim()
        .parse()
        .with_context(|| format!("{name} {v:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&s) {
        bail!("{name} {v:?} is out of range (0 to 86400 seconds)");
    }
    Ok(Duration::from_secs_f64(s))
}

/// The password: given, or the first line of password_script's output.
async fn password(opts: &Options) -> Result<Password> {
    if let Some(p) = opts.get("password") {
        return Ok(Password::new(p));
    }
    let Some(script) = opts.get("password_script") else {
        bail!("You have to set login password (password or password_script)");
    };
    let run = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| anyhow!("password_script did not finish within 10 s"))?
        .context("cannot run password_script")?;
    if !out.status.success() {
        bail!("password_script failed ({})", out.status);
    }
    let text = String::from_utf8(out.stdout).map_err(|_| anyhow!("password_script printed something not UTF-8"))?;
    Ok(Password::new(text.lines().next().unwrap_or_default().to_string()))
}

/// The client the options describe.
async fn client(opts: &Options) -> Result<Client> {
    let url = match (opts.get("session_url"), opts.get("ip")) {
        (Some(u), _) => u.to_string(),
        (None, Some(ip)) => {
            let host = if ip.contains(':') && !ip.starts_with('[') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            match opts.get("ipport") {
                Some(port) => format!("https://{host}:{port}"),
                None => format!("https://{host}"),
            }
        }
        (None, None) => bail!("set session_url (-s) or ip (-a)"),
    };
    let username = opts.get("username").context("set username (-l)")?.to_string();
    let mut config = Config::new(url.clone(), username, password(opts).await?);
    let chosen = [
        opts.flag("ssl_insecure"),
        opts.get("ssl_ca_file").is_some(),
        opts.get("ssl_fingerprint").is_some(),
    ];
    if chosen.iter().filter(|c| **c).count() > 1 {
        bail!("set at most one of ssl_insecure, ssl_ca_file and ssl_fingerprint");
    }
    config.tls = if opts.flag("ssl_insecure") {
        TlsMode::Insecure
    } else if let Some(f) = opts.get("ssl_fingerprint") {
        TlsMode::Fingerprint(parse_fingerprint(f).context(
            "ssl_fingerprint must be the SHA-256 fingerprint of the certificate: 64 hex digits, colons allowed",
        )?)
    } else if let Some(f) = opts.get("ssl_ca_file") {
        TlsMode::CaFile(f.into())
    } else {
        TlsMode::SystemRoots
    };
    if url.starts_with("http://") {
        tracing::warn!("{url} is plain http: the password crosses the network in clear text");
    }
    config.call_timeout = seconds(opts, "login_timeout")?.max(Duration::from_millis(100));
    config.power_timeout = seconds(opts, "power_timeout")?.max(Duration::from_millis(100));
    config.power_wait = seconds(opts, "power_wait")?;
    Ok(Client::new(config)?)
}

fn plug(opts: &Options) -> Result<String> {
    opts.get("uuid")
        .or_else(|| opts.get("plug"))
        .map(str::to_string)
        .context("set plug (-n): the VM's UUID or name label")
}

async fn act(action: &str, opts: &Options) -> Result<u8> {
    let client = client(opts).await?;
    let mut out = std::io::stdout().lock();
    match action {
        "validate-all" => {
            plug(opts)?;
            return Ok(EXIT_OK);
        }
        "monitor" => {
            client.check().await?;
            return Ok(EXIT_OK);
        }
        "list" | "list-status" => {
            let sep = opts.get("separator").unwrap_or(",");
            for vm in client.list().await? {
                if action == "list" {
                    writeln!(out, "{}{sep}{}", vm.uuid, vm.name_label)?;
                } else {
                    let state = if vm.power_state.is_off() { "OFF" } else { "ON" };
                    writeln!(out, "{}{sep}{}{sep}{state}", vm.uuid, vm.name_label)?;
                }
            }
            return Ok(EXIT_OK);
        }
        _ => {}
    }
    let vm = plug(opts)?;
    if matches!(action, "off" | "reboot") {
        let delay = seconds(opts, "delay")?;
        if !delay.is_zero() {
            tracing::info!("Delay {} second(s) before the {action}", delay.as_secs_f64());
            tokio::time::sleep(delay).await;
        }
    }
    let word = |s: &PowerState| if s.is_off() { "OFF" } else { "ON" };
    match action {
        "status" => {
            let state = client.status(&vm).await?;
            writeln!(out, "Status: {}", word(&state))?;
            Ok(if state.is_off() { EXIT_STATUS_OFF } else { EXIT_OK })
        }
        "off" => {
            let (_, changed) = client.run_reporting(Action::Off, &vm).await?;
            writeln!(
                out,
                "{}",
                if changed {
                    "Success: Powered OFF"
                } else {
                    "Success: Already OFF"
                }
            )?;
            Ok(EXIT_OK)
        }
        "on" => {
            let attempts: u32 = opts
                .get("retry_on")
                .unwrap_or("1")
                .parse()
                .context("retry_on must be a whole number")?;
            let mut last = None;
            for attempt in 0..attempts.max(1) {
                match client.run_reporting(Action::On, &vm).await {
                    Ok((_, changed)) => {
                        writeln!(
                            out,
                            "{}",
                            if changed {
                                "Success: Powered ON"
                            } else {
                                "Success: Already ON"
                            }
                        )?;
                        return Ok(EXIT_OK);
                    }
                    Err(e) => {
                        tracing::warn!(attempt = attempt + 1, error = %e, "power on failed");
                        last = Some(e);
                    }
                }
            }
            Err(last
                .map(anyhow::Error::from)
                .unwrap_or_else(|| anyhow!("power on failed")))
        }
        "reboot" => {
            client.run(Action::Reboot, &vm).await?;
            writeln!(out, "Success: Rebooted")?;
            Ok(EXIT_OK)
        }
        other => bail!("Unrecognised action '{other}'"),
    }
}
