use super::*;
use crate::config::Secret;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn password_file(dir: &Path, password: &str) -> Secret {
    let path = dir.join("password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Secret::file(path)
}

fn device(agent: &str, opts: BTreeMap<String, String>, password: Option<Secret>, timeout_ms: u64) -> AgentFencer {
    AgentFencer::new(AgentDevice {
        agent: fixture(agent),
        options: opts,
        password,
        timeout_ms,
    })
}

#[test]
fn stdin_carries_action_options_and_password_but_debug_hides_the_password() {
    let opts = options(&[("ip", "10.0.0.9"), ("lanplus", "1"), ("username", "admin")]);
    let password = SecretString::new("s3cr3t-pw".to_string());
    let input = AgentInput::new(FenceAction::Off, &opts, Some(&password));
    let text = std::str::from_utf8(input.as_bytes()).unwrap();
    assert_eq!(
        text,
        "action=off\nip=10.0.0.9\nlanplus=1\nusername=admin\npassword=s3cr3t-pw\n"
    );
    let debug = format!("{input:?}");
    assert!(!debug.contains("s3cr3t-pw"), "{debug}");
    assert!(
        debug.contains("password=<redacted>") && debug.contains("action=off"),
        "{debug}"
    );

    let none = AgentInput::new(FenceAction::Status, &BTreeMap::new(), None);
    assert_eq!(none.as_bytes(), b"action=status\n");
}

#[test]
fn exit_codes_follow_fence_agents() {
    use FenceAction::*;
    assert_eq!(interpret_exit(Status, Some(0)), Ok(Some(PowerState::On)));
    assert_eq!(interpret_exit(Status, Some(2)), Ok(Some(PowerState::Off)));
    assert!(interpret_exit(Status, Some(1)).is_err());
    for action in [Off, On, Reboot] {
        assert_eq!(interpret_exit(action, Some(0)), Ok(None));
        assert!(interpret_exit(action, Some(1)).is_err());
        assert!(interpret_exit(action, Some(2)).is_err(), "2 means off only for status");
        assert!(interpret_exit(action, None).is_err());
    }
}

#[tokio::test]
async fn off_is_confirmed_and_the_password_only_goes_to_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("power");
    let record = dir.path().join("record");
    std::fs::write(&state, "on\n").unwrap();
    let opts = options(&[("state", state.to_str().unwrap()), ("record", record.to_str().unwrap())]);
    let agent = device("fake-agent.sh", opts, Some(password_file(dir.path(), "hunter2")), 5000);

    assert_eq!(agent.status().await.unwrap(), PowerState::On);
    assert_eq!(agent.off().await.unwrap(), PowerState::Off);
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "off");
    assert_eq!(agent.reboot().await.unwrap(), PowerState::On);

    let seen = std::fs::read_to_string(&record).unwrap();
    assert!(seen.contains("password=hunter2"), "{seen}");
    assert!(seen.contains("action=off"), "{seen}");
    assert!(
        seen.lines().filter(|l| l.starts_with("argc=")).all(|l| l == "argc=0"),
        "no command-line arguments: {seen}"
    );
    assert!(!format!("{agent:?}").contains("hunter2"));
}

#[tokio::test]
async fn an_agent_that_claims_success_without_effect_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("power");
    std::fs::write(&state, "on\n").unwrap();
    let opts = options(&[("state", state.to_str().unwrap()), ("lie", "1")]);
    let agent = device("fake-agent.sh", opts, None, 5000);
    let err = agent.off().await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            DeviceErrorKind::NotConfirmed {
                wanted: PowerState::Off,
                seen: PowerState::On,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_agent_reports_its_exit_code_and_last_words_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("power");
    std::fs::write(&state, "on\n").unwrap();
    let opts = options(&[("state", state.to_str().unwrap()), ("fail", "1")]);
    let agent = device("fake-agent.sh", opts, Some(password_file(dir.path(), "hunter2")), 5000);
    let err = agent.off().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err.kind, DeviceErrorKind::AgentFailed { .. }), "{text}");
    assert!(text.contains("exit code 1"), "{text}");
    assert!(text.contains("Unable to obtain correct plug status"), "{text}");
    assert!(text.contains("agent fake-agent.sh"), "names the device: {text}");
    assert!(!text.contains("hunter2"));
}

#[tokio::test]
async fn a_missing_agent_is_a_spawn_error() {
    let agent = device("no-such-agent", BTreeMap::new(), None, 1000);
    let err = agent.status().await.unwrap_err();
    assert!(matches!(err.kind, DeviceErrorKind::Spawn { .. }), "{err}");
}

/// Dead, or a zombie nobody reaps (PID 1 here is not an init).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_agent_is_killed_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let opts = options(&[("pidfile", pidfile.to_str().unwrap())]);
    let agent = device("hanging-agent.sh", opts, None, 700);
    let started = std::time::Instant::now();
    let err = agent.off().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err.kind, DeviceErrorKind::Timeout { ms: 700, .. }), "{err}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let pids = std::fs::read_to_string(&pidfile).unwrap();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // SIGKILL is delivered at once, but the kernel may take a moment to reap.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while !pids.iter().all(|p| gone(p)) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in pids {
        assert!(gone(pid), "process {pid} still runs");
    }
}
