//! Requests from clients (the D-Bus adapter: hooks, the DRBD handler,
//! tandemctl) to the core, and their answers. The event loop owns the core;
//! a client holds a cloneable [`Handle`].

use crate::core::{DomainName, FencePeerVerdict, Input, RequestId, ResourceName};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Hook, destination `migrate begin`.
    PrepareIncoming {
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// Hook `prepare begin`.
    PrepareStart {
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// Hook `release end` or block script `remove`.
    Release {
        domain: DomainName,
        resources: Vec<ResourceName>,
    },
    /// DRBD's fence-peer handler.
    FencePeer { resource: ResourceName },
    /// Operator: live-migrate a domain to the peer.
    Migrate { domain: DomainName },
    /// Operator: start a domain here.
    Start { domain: DomainName },
    /// Operator: stop a domain that runs here.
    Stop { domain: DomainName, force: bool },
    /// Operator: drain this host, or end the drain.
    Standby { on: bool },
    /// Operator: fence the peer now.
    FencePeerNow,
    /// Operator: forget failures, retry failed takeovers.
    Cleanup,
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Ok, or the one line the user sees.
    Done(Result<(), String>),
    /// How the fence-peer handler exits.
    FencePeer(FencePeerVerdict),
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) call: Call,
    pub(crate) reply: oneshot::Sender<Reply>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandleError {
    #[error("tandemd is shutting down")]
    ShuttingDown,
}

/// A client's way into the running daemon.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<Value>,
    events: broadcast::Sender<Value>,
    /// Whether the D-Bus service owns its name (systemd readiness waits for it).
    bus_ready: Arc<watch::Sender<bool>>,
}

impl Handle {
    /// The D-Bus service says it owns its name (`true`) or lost the bus.
    pub fn set_bus_ready(&self, ready: bool) {
        self.bus_ready.send_replace(ready);
    }

    /// Asks the core and waits for its answer (hooks wait until DRBD is done).
    pub async fn call(&self, call: Call) -> Result<Reply, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { call, reply })
            .await
            .map_err(|_| HandleError::ShuttingDown)?;
        rx.await.map_err(|_| HandleError::ShuttingDown)
    }

    /// The daemon's status (the same JSON as the status file), updated live.
    pub fn status(&self) -> watch::Receiver<Value> {
        self.status.clone()
    }

    /// Cluster events as they happen (`{"unix_ms": .., "event": ..}`).
    pub fn events(&self) -> broadcast::Receiver<Value> {
        self.events.subscribe()
    }
}

/// The event loop's side of the handles.
#[derive(Debug)]
pub(crate) struct Requests {
    pub(crate) rx: mpsc::Receiver<Request>,
    pub(crate) status: watch::Sender<Value>,
    pub(crate) events: broadcast::Sender<Value>,
    /// See [`Handle::set_bus_ready`].
    pub(crate) bus_ready: watch::Receiver<bool>,
    waiting: BTreeMap<RequestId, oneshot::Sender<Reply>>,
    next: u64,
}

impl Requests {
    pub(crate) fn new() -> (Requests, Handle) {
        let (tx, rx) = mpsc::channel(64);
        let (status, status_rx) = watch::channel(Value::Null);
        let (events, _) = broadcast::channel(256);
        let (bus_ready, bus_ready_rx) = watch::channel(false);
        let handle = Handle {
            tx,
            status: status_rx,
            events: events.clone(),
            bus_ready: Arc::new(bus_ready),
        };
        let requests = Requests {
            rx,
            status,
            events,
            bus_ready: bus_ready_rx,
            waiting: BTreeMap::new(),
            next: 1,
        };
        (requests, handle)
    }

    /// Turns a request into the core's input. Operator calls are answered at
    /// once (their outcome shows as events); the others wait for the core.
    pub(crate) fn admit(&mut self, req: Request) -> (Input, Option<oneshot::Sender<Reply>>) {
        let request = RequestId(self.next);
        self.next += 1;
        let input = match req.call {
            Call::PrepareIncoming { domain, resources } => Input::PrepareIncoming {
                request,
                domain,
                resources,
            },
            Call::PrepareStart { domain, resources } => Input::PrepareStart {
                request,
                domain,
                resources,
            },
            Call::Release { domain, resources } => Input::Release {
                request,
                domain,
                resources,
            },
            Call::FencePeer { resource } => Input::FencePeer { request, resource },
            Call::Migrate { domain } => Input::OperatorMigrate {
                request: Some(request),
                domain,
            },
            Call::Start { domain } => Input::OperatorStart { request, domain },
            Call::Stop { domain, force } => Input::OperatorStop { request, domain, force },
            Call::Standby { on } => return (Input::OperatorStandby { on }, Some(req.reply)),
            Call::FencePeerNow => return (Input::OperatorFence, Some(req.reply)),
            Call::Cleanup => return (Input::OperatorCleanup, Some(req.reply)),
        };
        self.waiting.insert(request, req.reply);
        (input, None)
    }

    /// The core refused the input of `request` outright.
    pub(crate) fn refused(&mut self, input: &Input, error: String) {
        let id = match input {
            Input::PrepareIncoming { request, .. }
            | Input::PrepareStart { request, .. }
            | Input::Release { request, .. }
            | Input::FencePeer { request, .. } => *request,
            Input::OperatorMigrate {
                request: Some(request), ..
            }
            | Input::OperatorStart { request, .. }
            | Input::OperatorStop { request, .. } => *request,
            _ => return,
        };
        if let Some(reply) = self.waiting.remove(&id) {
            let _ = reply.send(Reply::Done(Err(error)));
        }
    }

    pub(crate) fn answer(&mut self, request: RequestId, reply: Reply) {
        if let Some(tx) = self.waiting.remove(&request) {
            // The client may have given up (its own timeout); nothing to do then.
            let _ = tx.send(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hook_calls_wait_for_the_core_and_operator_calls_do_not() {
        let (mut reqs, handle) = Requests::new();
        let call = tokio::spawn({
            let h = handle.clone();
            async move {
                h.call(Call::PrepareStart {
                    domain: "vm0".into(),
                    resources: vec!["r0".into()],
                })
                .await
            }
        });
        let req = reqs.rx.recv().await.unwrap();
        let (input, immediate) = reqs.admit(req);
        assert!(immediate.is_none(), "a hook waits for the core's answer");
        let Input::PrepareStart { request, .. } = input else {
            panic!("wrong input {input:?}")
        };
        reqs.answer(request, Reply::Done(Err("refused: it runs on the peer".into())));
        assert_eq!(
            call.await.unwrap(),
            Ok(Reply::Done(Err("refused: it runs on the peer".into())))
        );

        let call = tokio::spawn({
            let h = handle.clone();
            async move { h.call(Call::Standby { on: true }).await }
        });
        let req = reqs.rx.recv().await.unwrap();
        let (input, immediate) = reqs.admit(req);
        assert_eq!(input, Input::OperatorStandby { on: true });
        immediate.unwrap().send(Reply::Done(Ok(()))).unwrap();
        assert_eq!(call.await.unwrap(), Ok(Reply::Done(Ok(()))));
    }

    #[tokio::test]
    async fn an_input_the_core_refuses_answers_the_caller_and_a_gone_loop_is_an_error() {
        let (mut reqs, handle) = Requests::new();
        let call = tokio::spawn({
            let h = handle.clone();
            async move { h.call(Call::FencePeer { resource: "r9".into() }).await }
        });
        let req = reqs.rx.recv().await.unwrap();
        let (input, _) = reqs.admit(req);
        reqs.refused(&input, "unknown resource r9".into());
        assert_eq!(call.await.unwrap(), Ok(Reply::Done(Err("unknown resource r9".into()))));
        drop(reqs);
        assert_eq!(handle.call(Call::FencePeerNow).await, Err(HandleError::ShuttingDown));
    }
}
