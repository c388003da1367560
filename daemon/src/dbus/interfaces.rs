//! The four tandem interfaces. Each is a thin adapter: check the arguments from
//! the bus, hand a [`Call`] to the core through the [`Handle`], turn the answer
//! into a reply or a named error. Properties read the shared [`Snapshot`].

use super::snapshot::Snapshot;
use crate::core::{CoreError, DomainName, FencePeerVerdict, ResourceName};
use crate::runtime::{Call, Handle, Reply};
use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use tandem_api::{domain_path, resource_path, Error, FenceRecord, Link, Window};
use zbus::object_server::SignalEmitter;
use zbus::{interface, OwnedObjectPath};

/// What every interface object shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) handle: Handle,
    /// `[drbd] resources`: what a hook may name.
    pub(crate) resources: BTreeSet<String>,
    pub(crate) snapshot: RwLock<Snapshot>,
}

impl Shared {
    pub(crate) fn new(handle: Handle, resources: BTreeSet<String>) -> Shared {
        Shared {
            handle,
            resources,
            snapshot: RwLock::new(Snapshot::default()),
        }
    }

    /// The current snapshot. A panic elsewhere while writing it cannot leave it
    /// half-written (it is replaced whole), so a poisoned lock is still good.
    pub(crate) fn snap(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the snapshot; returns the previous one.
    pub(crate) fn replace(&self, new: Snapshot) -> Snapshot {
        let mut g = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *g, new)
    }

    async fn ask(&self, call: Call) -> Result<Reply, Error> {
        self.handle
            .call(call)
            .await
            .map_err(|e| Error::ShuttingDown(e.to_string()))
    }

    /// A hook's domain and resources, checked: malformed → InvalidArgs, not a
    /// managed resource → NotFound. The core never sees either.
    fn hook_args(&self, domain: &str, resources: &[String]) -> Result<(DomainName, Vec<ResourceName>), Error> {
        tandem_api::validate_domain(domain).map_err(|e| Error::InvalidArgs(e.to_string()))?;
        tandem_api::validate_resources(resources).map_err(|e| Error::InvalidArgs(e.to_string()))?;
        let resources = resources.iter().map(|r| self.managed(r)).collect::<Result<_, _>>()?;
        Ok((DomainName(domain.to_owned()), resources))
    }

    /// `name`, if it is a managed resource (`name` is already checked well-formed).
    fn managed(&self, name: &str) -> Result<ResourceName, Error> {
        if self.resources.contains(name) {
            Ok(ResourceName(name.to_owned()))
        } else {
            Err(Error::NotFound(format!(
                "resource {name} is not managed by tandem (it is not in [drbd] resources)"
            )))
        }
    }

    async fn hook(&self, call: Call) -> Result<(), Error> {
        done(self.ask(call).await?)
    }

    pub(crate) async fn migrate(&self, domain: &str) -> Result<(), Error> {
        self.domain_call(domain, |domain| Call::Migrate { domain }).await
    }

    pub(crate) async fn start(&self, domain: &str) -> Result<(), Error> {
        self.domain_call(domain, |domain| Call::Start { domain }).await
    }

    pub(crate) async fn stop(&self, domain: &str, force: bool) -> Result<(), Error> {
        self.domain_call(domain, |domain| Call::Stop { domain, force }).await
    }

    /// An operator's call about one domain, answered when the core is done with it.
    async fn domain_call(&self, domain: &str, call: impl FnOnce(DomainName) -> Call) -> Result<(), Error> {
        tandem_api::validate_domain(domain).map_err(|e| Error::InvalidArgs(e.to_string()))?;
        let domain = DomainName(domain.to_owned());
        match self.ask(call(domain.clone())).await? {
            // The core's own words for this refusal, compared whole: the one case
            // that is "no such domain" rather than "not now".
            Reply::Done(Err(e)) if e == CoreError::UnknownDomain(domain.clone()).to_string() => {
                Err(Error::NotFound(format!("tandem knows no domain {domain}")))
            }
            reply => done(reply),
        }
    }
}

fn done(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Done(Ok(())) => Ok(()),
        Reply::Done(Err(e)) => Err(Error::Refused(e)),
        Reply::FencePeer(v) => Err(Error::Refused(format!("unexpected answer from the core: {v:?}"))),
    }
}

/// `org.tandem.Tandem1.Cluster` at `/org/tandem/Tandem1`.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) shared: Arc<Shared>,
}

#[interface(name = "org.tandem.Tandem1.Cluster")]
impl Cluster {
    async fn migrate(&self, domain: &str) -> Result<(), Error> {
        self.shared.migrate(domain).await
    }

    async fn start(&self, domain: &str) -> Result<(), Error> {
        self.shared.start(domain).await
    }

    async fn stop(&self, domain: &str, force: bool) -> Result<(), Error> {
        self.shared.stop(domain, force).await
    }

    async fn standby(&self, on: bool) -> Result<(), Error> {
        done(self.shared.ask(Call::Standby { on }).await?)
    }

    async fn fence(&self) -> Result<(), Error> {
        done(self.shared.ask(Call::FencePeerNow).await?)
    }

    async fn cleanup(&self) -> Result<(), Error> {
        done(self.shared.ask(Call::Cleanup).await?)
    }

    // Node, peer and boot never change while the daemon runs: the first status is
    // read before anything is registered (see mod.rs).
    #[zbus(property(emits_changed_signal = "const"))]
    fn node(&self) -> String {
        self.shared.snap().node.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn peer(&self) -> String {
        self.shared.snap().peer.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn boot(&self) -> String {
        self.shared.snap().boot.clone()
    }

    #[zbus(property)]
    fn peer_state(&self) -> String {
        self.shared.snap().peer_state.clone()
    }

    #[zbus(property)]
    fn peer_since(&self) -> u64 {
        self.shared.snap().peer_since
    }

    #[zbus(property)]
    fn arbiter(&self) -> String {
        self.shared.snap().arbiter.clone()
    }

    #[zbus(property)]
    fn control_connected(&self) -> bool {
        self.shared.snap().control_connected
    }

    #[zbus(property)]
    fn links(&self) -> Vec<Link> {
        self.shared.snap().links.clone()
    }

    #[zbus(property)]
    fn windows(&self) -> Vec<Window> {
        self.shared.snap().windows.clone()
    }

    #[zbus(property)]
    fn fence_history(&self) -> Vec<FenceRecord> {
        self.shared.snap().fence_history.clone()
    }

    #[zbus(property)]
    fn domains(&self) -> Vec<OwnedObjectPath> {
        self.shared.snap().domains().iter().map(|d| domain_path(d)).collect()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn resources(&self) -> Vec<OwnedObjectPath> {
        self.shared.resources.iter().map(|r| resource_path(r)).collect()
    }

    // Rewritten on every status tick (ages, counters, a timestamp): a change
    // signal would fire five times a second, so readers poll it instead.
    #[zbus(property(emits_changed_signal = "false"))]
    fn status_json(&self) -> String {
        self.shared.snap().json.clone()
    }

    #[zbus(signal)]
    pub(crate) async fn event(emitter: &SignalEmitter<'_>, json: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub(crate) async fn fenced(emitter: &SignalEmitter<'_>, json: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub(crate) async fn failover_started(emitter: &SignalEmitter<'_>, json: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub(crate) async fn migration_finished(emitter: &SignalEmitter<'_>, json: &str) -> zbus::Result<()>;
}

/// `org.tandem.Tandem1.Hooks` at `/org/tandem/Tandem1` (root only, by the bus
/// policy). Each call waits for the core; the caller's timeout bounds it.
#[derive(Debug)]
pub(crate) struct Hooks {
    pub(crate) shared: Arc<Shared>,
}

#[interface(name = "org.tandem.Tandem1.Hooks")]
impl Hooks {
    async fn prepare_incoming(&self, domain: &str, resources: Vec<String>) -> Result<(), Error> {
        let (domain, resources) = self.shared.hook_args(domain, &resources)?;
        self.shared.hook(Call::PrepareIncoming { domain, resources }).await
    }

    async fn prepare_start(&self, domain: &str, resources: Vec<String>) -> Result<(), Error> {
        let (domain, resources) = self.shared.hook_args(domain, &resources)?;
        self.shared.hook(Call::PrepareStart { domain, resources }).await
    }

    async fn release(&self, domain: &str, resources: Vec<String>) -> Result<(), Error> {
        let (domain, resources) = self.shared.hook_args(domain, &resources)?;
        self.shared.hook(Call::Release { domain, resources }).await
    }

    async fn fence_peer(&self, resource: &str) -> Result<i32, Error> {
        tandem_api::validate_resource(resource).map_err(|e| Error::InvalidArgs(e.to_string()))?;
        let resource = self.shared.managed(resource)?;
        match self.shared.ask(Call::FencePeer { resource }).await? {
            Reply::FencePeer(v @ (FencePeerVerdict::PeerOutdated | FencePeerVerdict::PeerFenced)) => Ok(v.exit_code()),
            Reply::FencePeer(FencePeerVerdict::Undecided(reason)) => Err(Error::Refused(reason)),
            Reply::Done(Err(e)) => Err(Error::Refused(e)),
            Reply::Done(Ok(())) => Err(Error::Refused("the core answered without a verdict".into())),
        }
    }
}

/// `org.tandem.Tandem1.Domain` at `/org/tandem/Tandem1/domain/<escaped name>`.
#[derive(Debug)]
pub(crate) struct DomainObject {
    pub(crate) name: String,
    pub(crate) shared: Arc<Shared>,
}

#[interface(name = "org.tandem.Tandem1.Domain")]
impl DomainObject {
    async fn migrate(&self) -> Result<(), Error> {
        self.shared.migrate(&self.name).await
    }

    async fn start(&self) -> Result<(), Error> {
        self.shared.start(&self.name).await
    }

    async fn stop(&self, force: bool) -> Result<(), Error> {
        self.shared.stop(&self.name, force).await
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn window(&self) -> String {
        self.shared.snap().window_of(&self.name)
    }
}

/// `org.tandem.Tandem1.Resource` at `/org/tandem/Tandem1/resource/<escaped name>`.
// TODO(core): role, disk state and connection of the resource, once the status
// carries the DRBD observations.
#[derive(Debug)]
pub(crate) struct ResourceObject {
    pub(crate) name: String,
}

#[interface(name = "org.tandem.Tandem1.Resource")]
impl ResourceObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::object_server::Interface;

    #[test]
    fn interface_names_are_the_api_crates() {
        assert_eq!(<Cluster as Interface>::name().as_str(), tandem_api::interface::CLUSTER);
        assert_eq!(<Hooks as Interface>::name().as_str(), tandem_api::interface::HOOKS);
        assert_eq!(
            <DomainObject as Interface>::name().as_str(),
            tandem_api::interface::DOMAIN
        );
        assert_eq!(
            <ResourceObject as Interface>::name().as_str(),
            tandem_api::interface::RESOURCE
        );
    }
}
