//! Inputs the core refuses. Each leaves the core's state exactly as it was.

use super::protocol::WindowId;
use super::types::{ActionId, DomainName, LinkId, NodeId, RequestId, ResourceName};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    #[error("message from {0}, which is not this node's peer")]
    NotThePeer(NodeId),
    #[error("heartbeat on link {} which is not configured", .0 .0)]
    UnknownLink(LinkId),
    #[error("heartbeat (boot {boot:x}, counter {counter}) is not newer than counter {last}: replayed, duplicated or reordered")]
    StaleHeartbeat { boot: u64, counter: u64, last: u64 },
    #[error("heartbeat from boot {boot:x}, the incarnation of the peer that was fenced")]
    FencedIncarnation { boot: u64 },
    #[error("control message seq {seq} from boot {boot:x} is not newer than seq {last}: duplicate or out of order")]
    DuplicateMessage { boot: u64, seq: u64, last: u64 },
    #[error("unknown resource {0}")]
    UnknownResource(ResourceName),
    #[error("unknown domain {0}")]
    UnknownDomain(DomainName),
    #[error("domain {domain} uses resource {resource}, which is not configured")]
    DomainUsesUnknownResource { domain: DomainName, resource: ResourceName },
    #[error("unknown migration window {0}")]
    UnknownWindow(WindowId),
    #[error("result for action {} which is not pending", .0 .0)]
    UnexpectedResult(ActionId),
    #[error("fence result for action {} which is not a pending fence", .0 .0)]
    UnexpectedFenceResult(ActionId),
    #[error("request id {} is already in use", .0 .0)]
    DuplicateRequest(RequestId),
    #[error("answer for Outdate token {0} which was never asked")]
    UnexpectedOutdateAnswer(u64),
}
