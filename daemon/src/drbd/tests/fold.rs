use super::sample;
use crate::core::{DiskState, ResourceName, ResourceObservation, Role};
use crate::drbd::*;

fn feed(fold: &mut Events2Fold, text: &str) -> Vec<ObservationChange> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| fold.apply(&parse_events2_line(l).unwrap()))
        .collect()
}

const CONNECTED_SECONDARY: &str = "\
exists resource name:r0 role:Secondary suspended:no force-io-failures:no may_promote:no promotion_score:10102
exists connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary
exists device name:r0 volume:0 minor:0 backing_dev:/dev/vg/r0 disk:UpToDate client:no quorum:yes
exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
exists -
";

const BOTH_UP_TO_DATE: ResourceObservation = ResourceObservation {
    role: Role::Secondary,
    disk: DiskState::UpToDate,
    connected: true,
    peer_role: Role::Secondary,
    peer_disk: DiskState::UpToDate,
};

fn r0() -> ResourceName {
    ResourceName::from("r0")
}

#[test]
fn nothing_is_reported_before_the_dump_is_complete() {
    let mut fold = Events2Fold::new();
    let (dump, end) = CONNECTED_SECONDARY.split_at(CONNECTED_SECONDARY.find("exists -").unwrap());
    assert!(feed(&mut fold, dump).is_empty());
    assert!(!fold.is_initialized());
    let changes = feed(&mut fold, end);
    assert_eq!(
        changes,
        vec![ObservationChange {
            resource: r0(),
            old: None,
            new: BOTH_UP_TO_DATE
        }]
    );
    assert!(BOTH_UP_TO_DATE.replicating_up_to_date());
}

#[test]
fn a_change_of_role_from_secondary_to_primary() {
    let mut fold = Events2Fold::new();
    feed(&mut fold, CONNECTED_SECONDARY);
    let changes = feed(
        &mut fold,
        "change resource name:r0 role:Primary may_promote:no promotion_score:10102\n",
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].old.map(|o| o.role), Some(Role::Secondary));
    assert_eq!(changes[0].new.role, Role::Primary);
    assert_eq!(changes[0].new.disk, DiskState::UpToDate);
    // A line that changes nothing the core sees reports nothing.
    assert!(feed(
        &mut fold,
        "change resource name:r0 may_promote:yes promotion_score:10103\n"
    )
    .is_empty());
}

#[test]
fn the_peer_becoming_primary() {
    let mut fold = Events2Fold::new();
    feed(&mut fold, CONNECTED_SECONDARY);
    let changes = feed(
        &mut fold,
        "change connection name:r0 peer-node-id:1 conn-name:beta role:Primary\n",
    );
    assert_eq!(changes[0].new.peer_role, Role::Primary);
    assert!(changes[0].new.connected);
}

#[test]
fn connection_lost_means_peer_unknown_and_not_connected_from_the_first_line() {
    let mut fold = Events2Fold::new();
    feed(&mut fold, CONNECTED_SECONDARY);
    // DRBD prints the connection first; the peer device's DUnknown comes later.
    let changes = feed(
        &mut fold,
        "change connection name:r0 peer-node-id:1 conn-name:beta connection:NetworkFailure role:Unknown\n",
    );
    let lost = ResourceObservation {
        connected: false,
        peer_role: Role::Unknown,
        peer_disk: DiskState::Unknown,
        ..BOTH_UP_TO_DATE
    };
    assert_eq!(changes[0].new, lost);
    assert!(feed(
        &mut fold,
        "change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Off peer-disk:DUnknown\n"
    )
    .is_empty());
    // Coming back: Connected, then the peer's disk.
    let back = feed(
        &mut fold,
        "change connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary\n\
         change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Established peer-disk:UpToDate\n",
    );
    assert_eq!(back.last().unwrap().new, BOTH_UP_TO_DATE);
}

#[test]
fn fence_sequence_freezes_then_outdates_the_peer() {
    let mut fold = Events2Fold::new();
    let changes = feed(&mut fold, sample!("events2-9-fence-sequence.txt"));
    assert_eq!(fold.suspended("r0"), Some("no"));
    let seen: Vec<(bool, DiskState)> = changes.iter().map(|c| (c.new.connected, c.new.peer_disk)).collect();
    assert_eq!(
        seen,
        vec![
            (true, DiskState::UpToDate),
            (false, DiskState::Unknown),
            (false, DiskState::Outdated)
        ]
    );
    let last = changes.last().unwrap().new;
    assert_eq!(
        (last.role, last.disk, last.peer_role),
        (Role::Primary, DiskState::UpToDate, Role::Unknown)
    );
}

#[test]
fn drbd_utils_create_change_sample_ends_primary_and_replicating() {
    // drbd-utils' own test output: `exists -` first, then create and change lines.
    for text in [
        sample!("events2-9-create-change.txt"),
        sample!("events2-9-create-change-statistics.txt"),
        sample!("events2-9-create-change-full.txt"),
    ] {
        let mut fold = Events2Fold::new();
        let changes = feed(&mut fold, text);
        let last = changes.last().unwrap();
        assert_eq!(last.old.map(|o| o.role), Some(Role::Secondary));
        assert_eq!(last.new.role, Role::Primary);
        assert!(last.new.replicating_up_to_date());
        // The first report is the freshly created, diskless, standalone resource.
        assert_eq!(changes[0].new.disk, DiskState::Diskless);
        assert!(!changes[0].new.connected);
        assert_eq!(fold.minors("some-resource"), vec![(0, 1000)]);
    }
}

#[test]
fn syncing_peer_is_connected_but_not_up_to_date() {
    let mut fold = Events2Fold::new();
    let last = feed(&mut fold, sample!("events2-9-sync.txt")).pop().unwrap().new;
    assert!(last.connected);
    assert_eq!(last.peer_disk, DiskState::Inconsistent);
    assert!(!last.replicating_up_to_date());
}

#[test]
fn destroyed_and_missing_resources_are_reported_down() {
    let mut fold = Events2Fold::new();
    let changes = feed(&mut fold, sample!("events2-9-resource-create-destroy.txt"));
    assert_eq!(changes.last().unwrap().new, DOWN);

    let mut fold = Events2Fold::with_resources([r0(), ResourceName::from("r1")]);
    let changes = feed(&mut fold, CONNECTED_SECONDARY);
    assert_eq!(changes.len(), 2);
    assert_eq!(fold.observation(&ResourceName::from("r1")), Some(DOWN));
    // Resources nobody asked for are not reported.
    assert!(feed(&mut fold, "create resource name:other role:Secondary suspended:no\n").is_empty());
}

#[test]
fn a_restart_reports_only_what_changed_meanwhile() {
    let mut fold = Events2Fold::new();
    feed(&mut fold, CONNECTED_SECONDARY);
    fold.restart();
    assert!(feed(&mut fold, CONNECTED_SECONDARY).is_empty());
    fold.restart();
    let changes = feed(
        &mut fold,
        &CONNECTED_SECONDARY.replace("name:r0 role:Secondary", "name:r0 role:Primary"),
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].new.role, Role::Primary);
    // A resource gone during the gap is reported down after the refresh.
    fold.restart();
    let changes = feed(&mut fold, "exists -\n");
    assert_eq!(changes[0].new, DOWN);
}

#[test]
fn the_worst_volume_counts() {
    let mut fold = Events2Fold::new();
    let two = format!(
        "{}exists device name:r0 volume:1 minor:1 disk:Inconsistent\n\
         exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:1 replication:Established peer-disk:UpToDate\n\
         exists -\n",
        CONNECTED_SECONDARY.replace("exists -\n", "")
    );
    let o = feed(&mut fold, &two)[0].new;
    assert_eq!(o.disk, DiskState::Inconsistent);
    assert!(!o.replicating_up_to_date());
}

#[test]
fn real_84_events2_dumps() {
    let obs = |text: &str| {
        let mut fold = Events2Fold::new();
        feed(&mut fold, text).pop().unwrap().new
    };
    let o = obs(sample!("events2-84-now-dual-primary-statistics.txt"));
    assert_eq!((o.role, o.peer_role), (Role::Primary, Role::Primary));
    assert!(o.replicating_up_to_date());
    let o = obs(sample!("events2-84-now-peer-fenced.txt"));
    assert_eq!((o.connected, o.peer_disk), (false, DiskState::Outdated));
    let o = obs(sample!("events2-84-now-standalone-outdated.txt"));
    assert_eq!((o.disk, o.connected), (DiskState::Outdated, false));
    let o = obs(sample!("events2-84-now-connecting.txt"));
    assert_eq!(
        (o.role, o.disk, o.peer_disk),
        (Role::Secondary, DiskState::UpToDate, DiskState::Unknown)
    );
}
