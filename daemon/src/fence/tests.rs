//! Fence levels, driven through the fake fence agent (tests/fixtures/fake-agent.sh):
//! the order devices run in, where a level stops, and what is recorded.

use super::*;
use crate::config::{AgentDevice, XapiDevice, XapiTls};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Node {
    state: PathBuf,
}

impl Node {
    fn new(dir: &Path, name: &str, power: &str) -> Node {
        let state = dir.join(name);
        std::fs::write(&state, format!("{power}\n")).unwrap();
        Node { state }
    }

    fn power(&self) -> String {
        std::fs::read_to_string(&self.state).unwrap().trim().to_string()
    }
}

fn agent(node: &Node, record: &Path, extra: &[(&str, &str)]) -> FenceDevice {
    let mut options = BTreeMap::new();
    options.insert("state".to_string(), node.state.display().to_string());
    options.insert("record".to_string(), record.display().to_string());
    for (k, v) in extra {
        options.insert(k.to_string(), v.to_string());
    }
    FenceDevice::Agent(AgentDevice {
        agent: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-agent.sh"),
        options,
        password: None,
        timeout_ms: 5000,
    })
}

/// The actions other than status, in the order the agents ran them, with the
/// node each was for.
fn actions(record: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut out = Vec::new();
    let (mut action, mut state) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("action=") {
            action = a.to_string();
        } else if let Some(s) = line.strip_prefix("state=") {
            state = Path::new(s).file_name().unwrap().to_string_lossy().into_owned();
        } else if line.starts_with("argc=") && action != "status" {
            out.push((action.clone(), state.clone()));
        }
    }
    out
}

#[tokio::test]
async fn a_level_needs_every_device_and_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let (a, b) = (Node::new(dir.path(), "a", "on"), Node::new(dir.path(), "b", "on"));
    let levels = FenceLevels::new(
        "peer",
        &[FenceLevel {
            devices: vec![agent(&a, &record, &[("fail", "1")]), agent(&b, &record, &[])],
        }],
    );
    match levels.run_level(0, FenceAction::Off).await {
        Err(FenceError::Device {
            level: 1,
            position: 1,
            count: 2,
            source,
            ..
        }) => assert!(matches!(source.kind, DeviceErrorKind::AgentFailed { .. }), "{source}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(b.power(), "on", "the second device never ran");
    assert_eq!(levels.history().len(), 1);
}

#[tokio::test]
async fn a_level_of_two_devices_turns_both_off() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let (a, b) = (Node::new(dir.path(), "a", "on"), Node::new(dir.path(), "b", "on"));
    let levels = FenceLevels::new(
        "peer",
        &[FenceLevel {
            devices: vec![agent(&a, &record, &[]), agent(&b, &record, &[])],
        }],
    );
    let outcome = levels.run_level(0, FenceAction::Off).await.unwrap();
    assert_eq!(
        (outcome.level, outcome.state, outcome.node.as_str()),
        (1, PowerState::Off, "peer")
    );
    assert_eq!((a.power().as_str(), b.power().as_str()), ("off", "off"));
    let records = levels.history().records();
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r.kind == "agent" && r.result == Ok(PowerState::Off)));

    // Status is on when any feed is on.
    std::fs::write(&b.state, "on\n").unwrap();
    let status = levels.run_level(0, FenceAction::Status).await.unwrap();
    assert_eq!(status.state, PowerState::On);
}

#[tokio::test]
async fn a_reboot_of_several_devices_cuts_all_power_before_restoring_any() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let (a, b) = (Node::new(dir.path(), "a", "on"), Node::new(dir.path(), "b", "on"));
    let levels = FenceLevels::new(
        "peer",
        &[FenceLevel {
            devices: vec![agent(&a, &record, &[]), agent(&b, &record, &[])],
        }],
    );
    let outcome = levels.run_level(0, FenceAction::Reboot).await.unwrap();
    assert_eq!(outcome.state, PowerState::On);
    let seen = actions(&record);
    let want: Vec<(String, String)> = [("off", "a"), ("off", "b"), ("on", "a"), ("on", "b")]
        .iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_direct_fence_walks_the_levels_and_reports_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let node = Node::new(dir.path(), "n", "on");
    let xapi = FenceDevice::Xapi(XapiDevice {
        url: "https://pool.example".into(),
        username: "root".into(),
        password: crate::config::Secret::file("/nonexistent"),
        vm: "node-b".into(),
        tls: XapiTls::SystemRoots,
        timeout_ms: 1000,
    });
    let failing = [
        FenceLevel { devices: vec![xapi] },
        FenceLevel {
            devices: vec![agent(&node, &record, &[("fail", "1")])],
        },
    ];
    match fence_direct(&FenceLevels::new("peer", &failing), FenceAction::Off).await {
        Err(e @ FenceError::AllLevelsFailed { .. }) => {
            let text = e.to_string();
            assert!(text.contains("all 2 fence levels failed"), "{text}");
            assert!(text.contains("cannot read the password"), "{text}");
            assert!(matches!(
                e.device_error().map(|d| &d.kind),
                Some(DeviceErrorKind::AgentFailed { .. })
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(node.power(), "on");

    let working = [
        failing[1].clone(),
        FenceLevel {
            devices: vec![agent(&node, &record, &[])],
        },
    ];
    let outcome = fence_direct(&FenceLevels::new("peer", &working), FenceAction::Off)
        .await
        .unwrap();
    assert_eq!((outcome.level, outcome.state), (2, PowerState::Off));

    let none = FenceLevels::new("peer", &[]);
    assert!(matches!(
        fence_direct(&none, FenceAction::Off).await,
        Err(FenceError::NoLevels { .. })
    ));
}

#[tokio::test]
async fn levels_share_a_history_when_given_one() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let node = Node::new(dir.path(), "n", "off");
    let history = FenceHistory::with_capacity(10);
    let config = [FenceLevel {
        devices: vec![agent(&node, &record, &[])],
    }];
    let levels = FenceLevels::new("peer", &config).with_history(history.clone());
    levels.run_level(0, FenceAction::Status).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.node.as_str(), last.level, last.action),
        ("peer", 1, FenceAction::Status)
    );
    assert_eq!(last.result, Ok(PowerState::Off));
}

#[tokio::test]
async fn an_empty_level_never_counts_as_fenced() {
    let levels = FenceLevels::new("peer", &[FenceLevel { devices: vec![] }]);
    assert!(matches!(
        levels.run_level(0, FenceAction::Off).await,
        Err(FenceError::EmptyLevel { level: 1, .. })
    ));
}
