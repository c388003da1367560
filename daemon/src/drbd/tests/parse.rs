use super::sample;
use crate::core::{DiskState, ResourceName, Role};
use crate::drbd::*;
use std::collections::BTreeMap;

fn all_lines(text: &str) -> Vec<Event2> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_events2_line(l).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn every_captured_and_documented_events2_line_parses() {
    for text in [
        sample!("events2-9-create-change.txt"),
        sample!("events2-9-create-change-statistics.txt"),
        sample!("events2-9-create-change-full.txt"),
        sample!("events2-9-sync.txt"),
        sample!("events2-9-helper.txt"),
        sample!("events2-9-peer-role.txt"),
        sample!("events2-9-create-destroy.txt"),
        sample!("events2-9-resource-create-destroy.txt"),
        sample!("events2-9-fence-sequence.txt"),
        sample!("events2-84-now-connected-inconsistent.txt"),
        sample!("events2-84-now-dual-primary-statistics.txt"),
        sample!("events2-84-now-standalone-outdated.txt"),
        sample!("events2-84-now-peer-fenced.txt"),
        sample!("events2-84-now-connecting.txt"),
    ] {
        assert!(!all_lines(text).is_empty());
    }
}

#[test]
fn resource_line_with_statistics() {
    let ev = parse_events2_line(
        "create resource name:some-resource role:Secondary suspended:no force-io-failures:no \
         write-ordering:none may_promote:no promotion_score:0",
    )
    .unwrap();
    assert_eq!(
        ev,
        Event2::Resource(
            EventAction::Create,
            ResourceEv {
                name: "some-resource".into(),
                role: Some(DrbdRole::Secondary),
                suspended: Some("no".into()),
                may_promote: Some(false),
                new_name: None,
            }
        )
    );
}

#[test]
fn partial_change_lines_leave_absent_fields_none() {
    // drbd-utils 9.22 prints only what changed: here the peer's role, not the
    // connection state.
    let ev = parse_events2_line("change connection name:some-resource peer-node-id:1 conn-name:some-peer role:Primary")
        .unwrap();
    let Event2::Connection(EventAction::Change, c) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(c.peer_node_id, Some(1));
    assert_eq!(c.peer_role, Some(DrbdRole::Primary));
    assert_eq!(c.connection, None);
}

#[test]
fn path_values_keep_their_colons_and_helpers_their_status() {
    let ev = parse_events2_line(
        "create path name:r0 peer-node-id:1 conn-name:p local:ipv4:1.2.3.4:7789 peer:ipv4:5.6.7.8:7790 established:no",
    )
    .unwrap();
    let Event2::Path(_, p) = ev else { panic!() };
    assert_eq!(p.local.as_deref(), Some("ipv4:1.2.3.4:7789"));
    assert_eq!(p.established, Some(false));
    let ev = parse_events2_line("response helper name:r0 peer-node-id:1 conn-name:beta helper:fence-peer status:1792")
        .unwrap();
    let Event2::Helper(EventAction::Response, h) = ev else {
        panic!()
    };
    assert_eq!(h.helper, "fence-peer");
    assert_eq!(h.exit_code(), Some(7));
}

#[test]
fn timestamps_are_skipped_and_the_end_of_the_dump_is_recognised() {
    let ev = parse_events2_line("2024-03-01T10:00:00.123456+01:00 change resource name:r0 role:Primary").unwrap();
    assert!(matches!(ev, Event2::Resource(EventAction::Change, ref r) if r.role == Some(DrbdRole::Primary)));
    assert_eq!(parse_events2_line("exists -").unwrap(), Event2::InitialStateDone);
}

#[test]
fn garbage_is_an_error_not_a_guess() {
    for bad in [
        "",
        "frobnicate resource name:r0",
        "change widget name:r0",
        "change resource role:Primary",
        "change resource name:r0 role:Boss",
        "change device name:r0 volume:x disk:UpToDate",
        "change device name:r0 volume:0 disk:Sparkly",
        "change resource name:r0 justaword",
    ] {
        assert!(parse_events2_line(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn status_json_connected() {
    let res = parse_status_json(sample!("status-json-9-connected.json")).unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].name, "r0");
    let o = res[0].observation();
    assert_eq!(o.role, Role::Primary);
    assert!(o.replicating_up_to_date());
    assert_eq!(o.peer_role, Role::Secondary);
}

#[test]
fn status_json_fenced_and_multivolume() {
    let res = parse_status_json(sample!("status-json-9-fenced-multivolume.json")).unwrap();
    assert_eq!(res.len(), 2);
    assert!(res[0].suspended_fencing);
    assert_eq!(res[0].devices.len(), 2);
    let o = res[0].observation();
    assert_eq!(
        (o.role, o.disk, o.connected),
        (Role::Primary, DiskState::UpToDate, false)
    );
    assert_eq!((o.peer_role, o.peer_disk), (Role::Unknown, DiskState::Unknown));
    let o = res[1].observation();
    assert_eq!(
        (o.role, o.disk, o.connected),
        (Role::Secondary, DiskState::Outdated, false)
    );
}

#[test]
fn status_json_rejects_unknown_states_and_non_json() {
    assert!(parse_status_json("# No currently configured DRBD found.").is_err());
    let bad = sample!("status-json-9-connected.json").replace("\"UpToDate\"", "\"Shiny\"");
    assert!(parse_status_json(&bad).is_err());
    assert_eq!(parse_status_json("[\n]\n").unwrap(), vec![]);
}

fn proc_obs(text: &str) -> crate::core::ResourceObservation {
    let p = parse_proc_drbd(text).unwrap();
    let minors = BTreeMap::from([(0, ResourceName::from("r0"))]);
    p.observations(&minors)[&ResourceName::from("r0")]
}

#[test]
fn proc_drbd_real_84_states() {
    let o = proc_obs(sample!("proc-84-primary-secondary.txt"));
    assert!(o.replicating_up_to_date());
    assert_eq!((o.role, o.peer_role), (Role::Primary, Role::Secondary));

    let o = proc_obs(sample!("proc-84-primary-primary.txt"));
    assert_eq!((o.role, o.peer_role), (Role::Primary, Role::Primary));

    let o = proc_obs(sample!("proc-84-wfconnection-inconsistent.txt"));
    assert!(!o.connected);
    assert_eq!((o.disk, o.peer_disk), (DiskState::Inconsistent, DiskState::Unknown));

    // Syncing is connected, but not up to date on both sides.
    let p = parse_proc_drbd(sample!("proc-84-syncsource.txt")).unwrap();
    let st = p.minors[0].state.as_ref().unwrap();
    assert_eq!(p.minors[0].cs, "SyncSource");
    assert_eq!(st.synced_percent, Some(6.3));
    assert_eq!(st.out_of_sync_kib, Some(65496));
    let o = proc_obs(sample!("proc-84-syncsource.txt"));
    assert!(o.connected && !o.replicating_up_to_date());

    let o = proc_obs(sample!("proc-84-standalone-outdated.txt"));
    assert_eq!((o.disk, o.connected), (DiskState::Outdated, false));
}

#[test]
fn proc_drbd_fencing_freeze_and_its_outcome() {
    let p = parse_proc_drbd(sample!("proc-84-fencing-frozen.txt")).unwrap();
    assert!(p.minors[0].state.as_ref().unwrap().suspended);
    let p = parse_proc_drbd(sample!("proc-84-peer-fenced.txt")).unwrap();
    assert!(!p.minors[0].state.as_ref().unwrap().suspended);
    // Exit 7 of the handler: the peer's disk is Outdated while disconnected.
    let o = proc_obs(sample!("proc-84-peer-fenced.txt"));
    assert_eq!(
        (o.connected, o.peer_disk, o.peer_role),
        (false, DiskState::Outdated, Role::Unknown)
    );
}

#[test]
fn proc_drbd_standalone_has_no_protocol_letter_and_unconfigured_means_down() {
    let p = parse_proc_drbd(sample!("proc-84-standalone.txt")).unwrap();
    assert_eq!(p.version.as_deref(), Some("8.4.11"));
    assert_eq!(p.minors[0].state.as_ref().unwrap().protocol, None);
    let p = parse_proc_drbd(sample!("proc-84-primary-secondary.txt")).unwrap();
    assert_eq!(p.minors[0].state.as_ref().unwrap().protocol, Some('C'));
    let p = parse_proc_drbd(sample!("proc-84-unconfigured.txt")).unwrap();
    assert!(p.minors.is_empty());
    assert_eq!(proc_obs(sample!("proc-84-unconfigured.txt")), DOWN);
    let p = parse_proc_drbd("version: 8.4.11 (api:1/proto:86-101)\n 3: cs:Unconfigured\n").unwrap();
    assert_eq!(p.minors[0].state, None);
    assert!(parse_proc_drbd("hello\n").is_err());
    assert!(parse_proc_drbd("version: 8.4.11\n 0: cs:Connected ro:Primary ds:UpToDate/UpToDate C r-----\n").is_err());
}

#[test]
fn real_84_refusals_are_read_with_their_codes() {
    let f = parse_failure(sample!("stderr-84-two-primaries.txt")).unwrap();
    assert_eq!((f.code, f.refusal), (-1, Refusal::TwoPrimaries));
    assert_eq!(f.message, "Multiple primaries not allowed by config");
    let f = parse_failure(sample!("stderr-84-held-open.txt")).unwrap();
    assert_eq!((f.code, f.refusal), (-12, Refusal::DeviceInUse));
    let f = parse_failure(sample!("stderr-84-no-uptodate.txt")).unwrap();
    assert_eq!((f.code, f.refusal), (-2, Refusal::NoUpToDateDisk));
    let f = parse_failure(sample!("stderr-84-primary-nop.txt")).unwrap();
    assert_eq!((f.code, f.refusal), (-7, Refusal::PrimaryNop));
}

#[test]
fn drbd9_refusal_with_kernel_info_and_config_failures() {
    let stderr = "r0: State change failed: (-12) Device is held open by someone\n\
                  additional info from kernel:\n\
                  /dev/drbd0 opened by qemu-system-x86 (pid 4242) at 2024-01-01 10:00:00.000\n\
                  Command 'drbdsetup secondary r0' terminated with exit code 11\n";
    let f = parse_failure(stderr).unwrap();
    assert_eq!(f.refusal, Refusal::DeviceInUse);
    assert_eq!(
        f.info,
        vec!["/dev/drbd0 opened by qemu-system-x86 (pid 4242) at 2024-01-01 10:00:00.000"]
    );
    assert!(f.to_string().contains("(-12) Device is held open by someone"));
    let f = parse_failure("r0: Failure: (139) Protocol C required\n").unwrap();
    assert_eq!((f.code, f.refusal), (139, Refusal::NotProtocolC));
    assert_eq!(
        parse_failure("'r9' not defined in your config (for this host).\n"),
        None
    );
}
