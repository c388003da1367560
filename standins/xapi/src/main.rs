//! `tandem-xapi-standin`: the XenAPI test server as a program. Prints
//! `port N` (the master's), then `host I port N` for every host, and with
//! --tls `fingerprint AA:BB:...`, then serves until SIGINT or SIGTERM.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use tandem_xapi_standin::{PoolConfig, Standin};

#[derive(Parser, Debug)]
#[command(about = "A XenAPI (XML-RPC) test server on 127.0.0.1")]
struct Args {
    /// The pool as a TOML file (see the crate's config module).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A user, NAME:PASSWORD (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// A VM, NAME or NAME=STATE (Halted, Running, Paused, Suspended; repeatable).
    #[arg(long = "vm")]
    vms: Vec<String>,
    /// Number of hosts; host 0 is the master.
    #[arg(long)]
    hosts: Option<usize>,
    /// Answer METHOD late: METHOD=MS ("*" for every method; repeatable).
    #[arg(long = "delay")]
    delays: Vec<String>,
    /// Serve https with a fresh certificate.
    #[arg(long)]
    tls: bool,
    /// With --tls: write the CA certificate (PEM) here.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    #[arg(long)]
    session_ttl_ms: Option<u64>,
    #[arg(long)]
    max_sessions: Option<usize>,
}

fn build(args: &Args) -> Result<PoolConfig> {
    let mut c = match &args.config {
        Some(p) => PoolConfig::load(p)?,
        None => PoolConfig::default(),
    };
    for u in &args.users {
        let Some((name, password)) = u.split_once(':') else {
            bail!("--user {u:?}: expected NAME:PASSWORD");
        };
        c = c.user(name, password);
    }
    for v in &args.vms {
        let (name, state) = v.split_once('=').unwrap_or((v.as_str(), "Running"));
        c = c.vm(name, state);
    }
    for d in &args.delays {
        let (m, ms) = d
            .split_once('=')
            .with_context(|| format!("--delay {d:?}: expected METHOD=MS"))?;
        c = c.delay(m, ms.parse().with_context(|| format!("--delay {d:?}: not a number"))?);
    }
    if let Some(h) = args.hosts {
        c = c.hosts(h);
    }
    if args.tls {
        c = c.tls(true);
    }
    if let Some(t) = args.session_ttl_ms {
        c.session_ttl_ms = t;
    }
    if let Some(m) = args.max_sessions {
        c.max_sessions = m;
    }
    c.validate()?;
    Ok(c)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = build(&args)?;
    let hosts = config.hosts;
    let standin = Standin::start(config)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "port {}", standin.port())?;
    for h in 0..hosts {
        writeln!(out, "host {h} port {}", standin.host_port(h))?;
    }
    if let Some(tls) = standin.tls() {
        writeln!(out, "fingerprint {}", fingerprint(&tls.fingerprint))?;
        if let Some(p) = &args.ca_out {
            std::fs::write(p, &tls.ca_pem).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    out.flush()?;
    drop(out);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(standin);
    Ok(())
}

fn fingerprint(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}
