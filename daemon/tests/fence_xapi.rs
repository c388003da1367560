//! The daemon's `xapi` fence device (XapiFencer, through the xapi-fence crate)
//! against the XenAPI stand-in (standins/xapi) on 127.0.0.1: off and on
//! confirmed by the pool, a fence level, wrong passwords, TLS checks, a pool
//! member that is not the master, and a pool that does not answer in time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tandem::config::{FenceDevice, FenceLevel, Secret, XapiDevice, XapiTls};
use tandem::fence::{DeviceErrorKind, FenceAction, FenceLevels, Fencer, PowerState, XapiFencer};
use tandem_xapi_standin::{PoolConfig, Standin};

const PASSWORD: &str = "Pool-admin-7";

fn pool() -> PoolConfig {
    PoolConfig::default()
        .user("root", PASSWORD)
        .vm("node-b", "Running")
        .hosts(2)
}

fn secret(dir: &Path, password: &str) -> Secret {
    let path = dir.join("xapi-password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Secret::file(path)
}

fn device(url: String, password: Secret, tls: XapiTls) -> XapiDevice {
    XapiDevice {
        url,
        username: "root".into(),
        password,
        vm: "node-b".into(),
        tls,
        timeout_ms: 3000,
    }
}

#[tokio::test]
async fn off_status_on_and_reboot_are_confirmed_by_the_pool() {
    let s = Standin::start(pool()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = XapiFencer::new(device(s.url(), secret(dir.path(), PASSWORD), XapiTls::Insecure));
    assert_eq!(f.status().await.unwrap(), PowerState::On);
    assert_eq!(f.off().await.unwrap(), PowerState::Off);
    assert_eq!(s.power_state("node-b").unwrap(), "Halted");
    assert_eq!(f.status().await.unwrap(), PowerState::Off);
    assert_eq!(f.on().await.unwrap(), PowerState::On);
    assert_eq!(f.reboot().await.unwrap(), PowerState::On);
    assert_eq!(s.power_state("node-b").unwrap(), "Running");
    let stats = s.stats();
    assert_eq!(stats.logins, stats.logouts, "{stats:?}");
    assert_eq!(stats.last_login, Some(("1.0".into(), "tandem".into())));
}

#[tokio::test]
async fn a_fence_level_of_an_xapi_device_through_a_pool_member() {
    let s = Standin::start(pool()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Configured with the slave's address: HOST_IS_SLAVE leads to the master.
    let d = device(s.host_url(1), secret(dir.path(), PASSWORD), XapiTls::Insecure);
    let levels = FenceLevels::new(
        "node-b",
        &[FenceLevel {
            devices: vec![FenceDevice::Xapi(d)],
        }],
    );
    let outcome = levels.run_level(0, FenceAction::Off).await.unwrap();
    assert_eq!((outcome.level, outcome.state), (1, PowerState::Off));
    assert_eq!(s.power_state("node-b").unwrap(), "Halted");
    assert_eq!(levels.history().len(), 1);
    // The master is remembered: the second action asks no slave.
    levels.run_level(0, FenceAction::On).await.unwrap();
    assert_eq!(s.stats().host_is_slave, 1);
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_such_and_never_shown() {
    let s = Standin::start(pool()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = XapiFencer::new(device(s.url(), secret(dir.path(), "Wrong-pw-1"), XapiTls::Insecure));
    let e = f.off().await.unwrap_err();
    assert!(
        matches!(&e.kind, DeviceErrorKind::WrongPassword { user, .. } if user == "root"),
        "{e:?}"
    );
    assert!(!e.to_string().contains("Wrong-pw-1") && !format!("{e:?}").contains("Wrong-pw-1"));
    assert_eq!(s.power_state("node-b").unwrap(), "Running");
    // A missing password file: a secret error, nothing sent.
    let f = XapiFencer::new(device(s.url(), Secret::file("/nonexistent/pw"), XapiTls::Insecure));
    assert!(matches!(f.off().await.unwrap_err().kind, DeviceErrorKind::Secret(_)));
    assert_eq!(s.stats().failed_logins, 1);
}

#[tokio::test]
async fn tls_pins_are_checked() {
    let s = Standin::start(pool().tls(true)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pin = s.tls().unwrap().fingerprint;
    let f = XapiFencer::new(device(s.url(), secret(dir.path(), PASSWORD), XapiTls::Fingerprint(pin)));
    assert_eq!(f.off().await.unwrap(), PowerState::Off);
    let f = XapiFencer::new(device(
        s.url(),
        secret(dir.path(), PASSWORD),
        XapiTls::Fingerprint([7; 32]),
    ));
    let e = f.on().await.unwrap_err();
    assert!(matches!(e.kind, DeviceErrorKind::Refused { .. }), "{e:?}");
    assert!(e.to_string().contains("fingerprint"), "{e}");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &s.tls().unwrap().ca_pem).unwrap();
    let f = XapiFencer::new(device(s.url(), secret(dir.path(), PASSWORD), XapiTls::CaFile(ca)));
    assert_eq!(f.on().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn a_pool_that_does_not_answer_in_time_is_a_timeout_within_the_budget() {
    let s = Standin::start(pool().delay("VM.hard_shutdown", 5000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut d = device(s.url(), secret(dir.path(), PASSWORD), XapiTls::Insecure);
    d.timeout_ms = 500;
    let started = std::time::Instant::now();
    let e = XapiFencer::new(d).off().await.unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e.kind, DeviceErrorKind::Timeout { .. }), "{e:?}");
    assert!(e.kind.is_transient());
    // Nobody is left logged in, even though the call was cut short.
    for _ in 0..100 {
        if s.stats().open == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("a session was left open: {:?}", s.stats());
}
