//! SIGHUP: re-read the configuration and apply what may change in a running
//! daemon (config/reload.rs decides which fields). A file with errors, or a
//! change that needs a restart, leaves the running configuration as it was
//! and says why in the log, the status file and `systemctl status`.

use super::drivers::Drivers;
use super::Options;
use crate::config::reload::{plan, ReloadPlan};
use crate::config::{self, Config, ConfigErrors};
use crate::core::{Core, NodeId};
use serde_json::{json, Value};
use tracing::{error, info, warn};

/// How a reload ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The new configuration runs.
    Applied(ReloadPlan),
    /// The files say what the running configuration says.
    Unchanged,
    /// Some change needs a restart: nothing was applied.
    Refused(ReloadPlan),
    /// The files do not load.
    Invalid(ConfigErrors),
}

impl Outcome {
    /// One line for `systemctl status` (`STATUS=`).
    pub(super) fn summary(&self) -> String {
        match self {
            Outcome::Applied(p) => format!("configuration reloaded: {}", p.live_fields()),
            Outcome::Unchanged => "configuration reloaded: nothing changed".into(),
            Outcome::Refused(p) => format!("reload refused, running configuration kept: {}", p.refusals()),
            Outcome::Invalid(e) => format!(
                "reload refused, running configuration kept: {} error(s) in the configuration",
                e.len()
            ),
        }
    }

    /// The status file's `config.last_reload`.
    pub(super) fn to_json(&self, unix_ms: u64) -> Value {
        let (result, changed, refused, errors): (&str, Vec<String>, Vec<Value>, Vec<String>) = match self {
            Outcome::Applied(p) => (
                "applied",
                p.live.iter().map(|c| c.field.clone()).collect(),
                vec![],
                vec![],
            ),
            Outcome::Unchanged => ("unchanged", vec![], vec![], vec![]),
            Outcome::Refused(p) => (
                "refused",
                p.live.iter().map(|c| c.field.clone()).collect(),
                p.refused
                    .iter()
                    .map(|r| json!({"field": r.field, "reason": r.reason}))
                    .collect(),
                vec![],
            ),
            Outcome::Invalid(e) => ("invalid", vec![], vec![], e.iter().map(ToString::to_string).collect()),
        };
        json!({
            "unix_ms": unix_ms,
            "result": result,
            "changed": changed,
            "refused": refused,
            "errors": errors,
        })
    }
}

/// Reads the configuration files again and applies the new configuration to
/// `cfg`, the core and the drivers when every change may be made live.
pub(super) fn reload(opts: &Options, me: NodeId, cfg: &mut Config, core: &mut Core, drivers: &Drivers) -> Outcome {
    let files = opts.config.display().to_string();
    info!(config = %files, "reloading the configuration (SIGHUP)");
    let new = match config::load(&opts.config, super::fragments_dir(opts).as_deref()) {
        Ok(new) => new,
        Err(errors) => {
            for e in &errors {
                error!(error = %e, "configuration error");
            }
            warn!(
                errors = errors.len(),
                "reload refused: the configuration has errors; the running configuration stays"
            );
            return Outcome::Invalid(errors);
        }
    };
    let p = plan(cfg, &new, me);
    if !p.accepted() {
        for r in &p.refused {
            warn!(field = %r.field, reason = r.reason, "reload refused: this change needs a restart");
        }
        warn!(
            refused = %p.refused.iter().map(|r| r.field.as_str()).collect::<Vec<_>>().join(", "),
            "reload refused; the running configuration stays (nothing of the new file was applied)"
        );
        return Outcome::Refused(p);
    }
    if p.is_empty() {
        // New fragment files or comments only: the running configuration
        // takes the new list of files.
        cfg.sources = new.sources;
        info!("configuration reloaded: nothing changed");
        return Outcome::Unchanged;
    }
    for c in &p.live {
        match &c.values {
            Some((old, new)) => info!(field = %c.field, old = %old, new = %new, "configuration change applied"),
            None => info!(field = %c.field, "configuration change applied"),
        }
    }
    if p.core_changed {
        core.reconfigure(&new.core_config(me));
    }
    if p.peer_fence_changed {
        drivers.replace_peer_fence(&new, me);
    }
    *cfg = new;
    info!(changed = %p.live_fields(), "configuration reloaded");
    Outcome::Applied(p)
}
