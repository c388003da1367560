//! Inputs the core must refuse with a typed error, leaving its state exactly
//! as it was (compared through the full Debug rendering of the core).

use super::*;

fn core() -> Core {
    let cfg = CoreConfig::with_defaults(NodeId(0), vec!["r0".into(), "r1".into()]);
    let mut c = Core::new(cfg, 0xb007, Persisted::default());
    c.handle(
        Millis(0),
        Input::DomainDefined {
            domain: "vm0".into(),
            resources: vec!["r0".into()],
        },
    )
    .unwrap();
    c.handle(Millis(1), heartbeat(0, 1)).unwrap();
    c
}

fn heartbeat(link: u8, counter: u64) -> Input {
    Input::Heartbeat {
        link: LinkId(link),
        heartbeat: Heartbeat {
            from: NodeId(1),
            boot: 0xbeef,
            counter,
            summary: Summary::default(),
        },
    }
}

fn peer(seq: u64, body: PeerBody) -> Input {
    Input::Peer(PeerMessage {
        from: NodeId(1),
        boot: 0xbeef,
        seq,
        body,
    })
}

/// Feeds `input` and checks it is refused with `expected` and changes nothing.
fn refused(c: &mut Core, input: Input, expected: impl Fn(&CoreError) -> bool) {
    let before = format!("{c:?}");
    let err = c.handle(Millis(5), input).expect_err("the input must be refused");
    assert!(expected(&err), "unexpected error: {err}");
    assert!(!err.to_string().is_empty());
    assert_eq!(before, format!("{c:?}"), "refused input changed the core ({err})");
}

#[test]
fn unknown_resource_and_domain() {
    let mut c = core();
    let obs = ResourceObservation {
        role: Role::Secondary,
        disk: DiskState::UpToDate,
        connected: true,
        peer_role: Role::Secondary,
        peer_disk: DiskState::UpToDate,
    };
    refused(
        &mut c,
        Input::ResourceObserved {
            resource: "r9".into(),
            observation: obs,
        },
        |e| matches!(e, CoreError::UnknownResource(r) if r.0 == "r9"),
    );
    refused(
        &mut c,
        Input::DomainObserved {
            domain: "nope".into(),
            run: DomainRun::Running,
        },
        |e| matches!(e, CoreError::UnknownDomain(_)),
    );
    refused(
        &mut c,
        Input::PrepareStart {
            request: RequestId(1),
            domain: "vm7".into(),
            resources: vec!["r0".into(), "r9".into()],
        },
        |e| matches!(e, CoreError::DomainUsesUnknownResource { .. }),
    );
    refused(
        &mut c,
        Input::FencePeer {
            request: RequestId(2),
            resource: "r9".into(),
        },
        |e| matches!(e, CoreError::UnknownResource(_)),
    );
}

#[test]
fn duplicate_and_out_of_order_messages() {
    let mut c = core();
    c.handle(
        Millis(2),
        peer(
            5,
            PeerBody::Outdate {
                token: 1,
                resource: "r1".into(),
            },
        ),
    )
    .unwrap();
    let again = || {
        peer(
            5,
            PeerBody::Outdate {
                token: 1,
                resource: "r1".into(),
            },
        )
    };
    refused(&mut c, again(), |e| {
        matches!(e, CoreError::DuplicateMessage { seq: 5, .. })
    });
    refused(
        &mut c,
        peer(
            4,
            PeerBody::Outdate {
                token: 2,
                resource: "r1".into(),
            },
        ),
        |e| matches!(e, CoreError::DuplicateMessage { seq: 4, last: 5, .. }),
    );
    refused(&mut c, heartbeat(0, 1), |e| {
        matches!(e, CoreError::StaleHeartbeat { .. })
    });
}

#[test]
fn results_nobody_asked_for() {
    let mut c = core();
    refused(
        &mut c,
        Input::FenceDone {
            action: ActionId(77),
            result: Ok(()),
        },
        |e| matches!(e, CoreError::UnexpectedFenceResult(ActionId(77))),
    );
    refused(
        &mut c,
        Input::ActionDone {
            action: ActionId(78),
            result: Ok(()),
        },
        |e| matches!(e, CoreError::UnexpectedResult(ActionId(78))),
    );
    let window = WindowId {
        opener: NodeId(1),
        boot: 0xbeef,
        n: 1,
    };
    refused(&mut c, peer(9, PeerBody::LeaveDual { window }), |e| {
        matches!(e, CoreError::UnknownWindow(_))
    });
    refused(
        &mut c,
        peer(
            10,
            PeerBody::OutdateAnswer {
                token: 99,
                resource: "r0".into(),
                result: Ok(()),
            },
        ),
        |e| matches!(e, CoreError::UnexpectedOutdateAnswer(99)),
    );
}

#[test]
fn messages_from_a_node_that_is_not_the_peer() {
    let mut c = core();
    refused(
        &mut c,
        Input::Peer(PeerMessage {
            from: NodeId(0),
            boot: 1,
            seq: 1,
            body: PeerBody::LeaveDual {
                window: WindowId {
                    opener: NodeId(0),
                    boot: 1,
                    n: 1,
                },
            },
        }),
        |e| matches!(e, CoreError::NotThePeer(NodeId(0))),
    );
    refused(
        &mut c,
        Input::Heartbeat {
            link: LinkId(0),
            heartbeat: Heartbeat {
                from: NodeId(0),
                boot: 3,
                counter: 1,
                summary: Summary::default(),
            },
        },
        |e| matches!(e, CoreError::NotThePeer(_)),
    );
}

#[test]
fn a_request_id_in_use_is_refused() {
    let mut c = core();
    // A fence-peer request waits for the peer's answer, so its id stays in use.
    c.handle(
        Millis(3),
        Input::FencePeer {
            request: RequestId(4),
            resource: "r0".into(),
        },
    )
    .unwrap();
    refused(
        &mut c,
        Input::FencePeer {
            request: RequestId(4),
            resource: "r1".into(),
        },
        |e| matches!(e, CoreError::DuplicateRequest(RequestId(4))),
    );
}

#[test]
fn start_is_refused_while_the_peer_is_unknown() {
    let cfg = CoreConfig::with_defaults(NodeId(1), vec!["r0".into()]);
    let mut c = Core::new(cfg, 1, Persisted::default());
    let out = c
        .handle(
            Millis(0),
            Input::PrepareStart {
                request: RequestId(1),
                domain: "vm0".into(),
                resources: vec!["r0".into()],
            },
        )
        .unwrap();
    let refusal = out.iter().find_map(|a| match a {
        Action::Answer { result: Err(e), .. } => Some(e.clone()),
        _ => None,
    });
    assert!(refusal.is_some_and(|e| e.contains("wait-for-all")));
    assert!(!out.iter().any(|a| matches!(a, Action::Drbd { .. })));
}

#[test]
fn operator_start_and_stop() {
    let mut c = core();
    refused(
        &mut c,
        Input::OperatorStart {
            request: RequestId(7),
            domain: "vm9".into(),
        },
        |e| matches!(e, CoreError::UnknownDomain(_)),
    );
    // vm0 does not run here: a stop is answered with the reason, nothing else.
    let out = c
        .handle(
            Millis(6),
            Input::OperatorStop {
                request: RequestId(8),
                domain: "vm0".into(),
                force: true,
            },
        )
        .unwrap();
    assert!(
        matches!(&out[..], [Action::Answer { request: RequestId(8), result: Err(e) }] if e.contains("does not run on this host")),
        "{out:?}"
    );
    // The peer is online (one heartbeat) and holds nothing, r0 is UpToDate: a
    // start goes to the hypervisor, and its result answers the request.
    c.handle(
        Millis(6),
        Input::ResourceObserved {
            resource: "r0".into(),
            observation: ResourceObservation {
                role: Role::Secondary,
                disk: DiskState::UpToDate,
                connected: true,
                peer_role: Role::Secondary,
                peer_disk: DiskState::UpToDate,
            },
        },
    )
    .unwrap();
    let out = c
        .handle(
            Millis(7),
            Input::OperatorStart {
                request: RequestId(9),
                domain: "vm0".into(),
            },
        )
        .unwrap();
    let action = match &out[..] {
        [Action::StartDomain { action, domain }] if domain.0 == "vm0" => *action,
        other => panic!("expected a start, got {other:?}"),
    };
    refused(
        &mut c,
        Input::OperatorStart {
            request: RequestId(9),
            domain: "vm0".into(),
        },
        |e| matches!(e, CoreError::DuplicateRequest(RequestId(9))),
    );
    let out = c
        .handle(
            Millis(8),
            Input::ActionDone {
                action,
                result: Err("cannot start domain \"vm0\": no memory".into()),
            },
        )
        .unwrap();
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Answer { request: RequestId(9), result: Err(e) } if e.contains("no memory"))),
        "{out:?}"
    );
}

#[test]
fn definitions_go_to_the_peer_and_come_from_it() {
    let mut c = core();
    refused(
        &mut c,
        Input::DomainDefinition {
            domain: "vm9".into(),
            definition: "<domain/>".into(),
        },
        |e| matches!(e, CoreError::UnknownDomain(_)),
    );
    // The peer is online (its heartbeat): a new definition goes to it.
    let def = |definition: &str| Input::DomainDefinition {
        domain: "vm0".into(),
        definition: definition.into(),
    };
    let out = c.handle(Millis(6), def("<domain>v1</domain>")).unwrap();
    let sent = |out: &[Action]| {
        out.iter()
            .filter_map(|a| match a {
                Action::Send(m) => match &m.body {
                    PeerBody::Definition { domain, definition } => Some((domain.0.clone(), definition.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(c.peer_state(), PeerState::Online);
    assert_eq!(sent(&out), vec![("vm0".to_string(), "<domain>v1</domain>".to_string())]);
    // The same definition again: nothing new to say.
    let out = c.handle(Millis(7), def("<domain>v1</domain>")).unwrap();
    assert!(sent(&out).is_empty(), "{out:?}");
    // The peer's definition of a domain that does not run here is defined here.
    let out = c
        .handle(
            Millis(8),
            peer(
                1,
                PeerBody::Definition {
                    domain: "vm0".into(),
                    definition: "<domain>v2</domain>".into(),
                },
            ),
        )
        .unwrap();
    assert!(
        out.iter().any(
            |a| matches!(a, Action::DefineDomain { domain, definition } if domain.0 == "vm0" && definition == "<domain>v2</domain>")
        ),
        "{out:?}"
    );
    // Not while it runs here: the running host's definition counts.
    c.handle(
        Millis(9),
        Input::DomainObserved {
            domain: "vm0".into(),
            run: DomainRun::Running,
        },
    )
    .unwrap();
    let out = c
        .handle(
            Millis(10),
            peer(
                2,
                PeerBody::Definition {
                    domain: "vm0".into(),
                    definition: "<domain>v3</domain>".into(),
                },
            ),
        )
        .unwrap();
    assert!(!out.iter().any(|a| matches!(a, Action::DefineDomain { .. })), "{out:?}");
}
