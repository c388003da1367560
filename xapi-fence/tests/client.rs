//! The library against the XenAPI stand-in (standins/xapi), in process: power
//! changes confirmed, VM lookup rules, sessions (always logged out, re-login
//! once on SESSION_INVALID), HOST_IS_SLAVE, VM_BAD_POWER_STATE, slow answers
//! and TLS. Every server is on 127.0.0.1 and stops when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tandem_xapi_standin::{PoolConfig, Standin, VmSpec};
use xapi_fence::{Client, Config, Error, Password, PowerState, TlsMode};

const PASSWORD: &str = "s3cret-Pool-pw";

fn pool() -> PoolConfig {
    PoolConfig::default()
        .user("root", PASSWORD)
        .vm("node-a", "Running")
        .vm("node-b", "Halted")
}

fn client_for(url: &str, password: &str) -> Client {
    let mut c = Config::new(url, "root", Password::new(password));
    c.call_timeout = Duration::from_secs(2);
    c.power_timeout = Duration::from_secs(2);
    c.poll_interval = Duration::from_millis(20);
    Client::new(c).unwrap()
}

fn client(s: &Standin) -> Client {
    client_for(&s.url(), PASSWORD)
}

/// Sessions are logged out in the background when a call is cut short; give
/// that a moment.
async fn all_logged_out(s: &Standin) {
    for _ in 0..100 {
        if s.stats().open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("sessions left open: {:?}", s.stats());
}

#[tokio::test]
async fn off_on_reboot_and_status_are_confirmed_and_every_session_is_logged_out() {
    let s = Standin::start(pool()).unwrap();
    let c = client(&s);
    assert_eq!(c.status("node-a").await.unwrap(), PowerState::Running);
    assert_eq!(c.power_off("node-a").await.unwrap(), PowerState::Halted);
    assert_eq!(s.power_state("node-a").unwrap(), "Halted");
    // Already off: nothing to do, still confirmed.
    assert_eq!(
        c.run_reporting(xapi_fence::Action::Off, "node-a").await.unwrap(),
        (PowerState::Halted, false)
    );
    assert_eq!(c.power_on("node-a").await.unwrap(), PowerState::Running);
    assert_eq!(c.reboot("node-a").await.unwrap(), PowerState::Running);
    let stats = s.stats();
    assert_eq!(stats.calls.get("VM.hard_shutdown"), Some(&2), "{stats:?}");
    assert_eq!(stats.calls.get("VM.start"), Some(&2), "{stats:?}");
    assert_eq!(stats.calls.get("VM.hard_reboot"), None, "reboot is off + on");
    assert_eq!(stats.logins, 5);
    assert_eq!(stats.logouts, 5);
    assert_eq!(stats.open, 0);
    assert_eq!(stats.last_login, Some(("1.0".to_string(), "tandem".to_string())));
}

#[tokio::test]
async fn vms_are_found_by_uuid_or_by_a_unique_name_and_templates_and_dom0_are_refused() {
    let s = Standin::start(pool().vm("twin", "Running").vm("twin", "Halted").vm_spec(VmSpec {
        name_label: "tmpl".into(),
        uuid: None,
        power_state: "Halted".into(),
        is_a_template: true,
        is_control_domain: false,
        host: None,
    }))
    .unwrap();
    let c = client(&s);
    let uuid = s.uuid("node-b").unwrap();
    assert_eq!(c.status(&uuid).await.unwrap(), PowerState::Halted);
    assert_eq!(c.status(&uuid.to_uppercase()).await.unwrap(), PowerState::Halted);
    match c.power_off("twin").await {
        Err(Error::AmbiguousVm { count: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.power_off("tmpl").await, Err(Error::Template { .. })));
    let dom0 = "Control domain on host: host0";
    assert!(matches!(c.power_off(dom0).await, Err(Error::ControlDomain { .. })));
    assert!(matches!(c.status("nope").await, Err(Error::NoSuchVm { .. })));
    // A UUID nobody has: UUID_INVALID, then no name either.
    let e = c.status("00000000-0000-4000-8000-000000000000").await.unwrap_err();
    assert!(matches!(e, Error::NoSuchVm { .. }), "{e}");
    assert_eq!(s.power_state("twin"), Some("Running".into()), "nothing was touched");
    assert_eq!(s.stats().open, 0);
}

#[tokio::test]
async fn host_is_slave_leads_to_the_master_which_is_remembered() {
    let s = Standin::start(pool().hosts(3)).unwrap();
    let c = client_for(&s.host_url(2), PASSWORD);
    assert_eq!(c.power_off("node-a").await.unwrap(), PowerState::Halted);
    assert_eq!(s.stats().host_is_slave, 1);
    assert_eq!(c.remembered_master(), Some(format!("{}/", s.host_url(0))));
    // The next operation goes straight to the master.
    c.status("node-a").await.unwrap();
    assert_eq!(s.stats().host_is_slave, 1);
    // The pool fails over to host 1: the old master now says HOST_IS_SLAVE too.
    s.set_master(1);
    assert_eq!(c.power_on("node-a").await.unwrap(), PowerState::Running);
    assert_eq!(c.remembered_master(), Some(format!("{}/", s.host_url(1))));
    assert_eq!(s.stats().host_is_slave, 2);
    assert_eq!(s.stats().open, 0);
}

#[tokio::test]
async fn an_expired_session_is_replaced_once() {
    let s = Standin::start(pool().delay("VM.get_by_name_label", 300)).unwrap();
    let c = client(&s);
    let work = c.power_off("node-a");
    let s2 = &s;
    let (r, ()) = tokio::join!(work, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s2.expire_sessions();
    });
    assert_eq!(r.unwrap(), PowerState::Halted);
    let stats = s.stats();
    assert_eq!(stats.logins, 2, "one login again after SESSION_INVALID: {stats:?}");
    assert_eq!(stats.open, 0);

    // Sessions that expire at once: one retry, then the error, code kept.
    s.set_session_ttl(Duration::ZERO);
    s.set_delay("VM.get_by_name_label", 0);
    let before = s.stats().logins;
    let e = c.status("node-a").await.unwrap_err();
    assert_eq!(e.api_code(), Some("SESSION_INVALID"), "{e}");
    assert_eq!(s.stats().logins - before, 2);
}

#[tokio::test]
async fn bad_power_state_counts_as_done_only_when_a_fresh_read_says_so() {
    let s = Standin::start(pool().delay("VM.hard_shutdown", 300)).unwrap();
    let c = client(&s);
    let s2 = &s;
    // Someone else halts the VM while our hard_shutdown is on its way.
    let (r, ()) = tokio::join!(c.power_off("node-a"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s2.set_power_state("node-a", "Halted");
    });
    assert_eq!(r.unwrap(), PowerState::Halted);
    assert_eq!(s.stats().calls.get("VM.hard_shutdown"), Some(&1));

    // Paused or suspended: off works, on refuses to resume old memory.
    s.set_delay("VM.hard_shutdown", 0);
    s.set_power_state("node-b", "Paused");
    match c.power_on("node-b").await {
        Err(Error::WrongState {
            state: PowerState::Paused,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    s.set_power_state("node-b", "Suspended");
    assert_eq!(c.power_off("node-b").await.unwrap(), PowerState::Halted);
    assert_eq!(s.stats().open, 0);
}

#[tokio::test]
async fn a_wrong_password_keeps_the_xenapi_code_and_never_shows_the_password() {
    let s = Standin::start(pool()).unwrap();
    let wrong = "Wr0ng-Pa55word";
    let c = client_for(&s.url(), wrong);
    let e = c.power_off("node-a").await.unwrap_err();
    assert!(e.is_auth_failure(), "{e}");
    match &e {
        Error::Api { code, params, .. } => {
            assert_eq!(code, "SESSION_AUTHENTICATION_FAILED");
            assert_eq!(params.first().map(String::as_str), Some("root"));
        }
        other => panic!("{other:?}"),
    }
    for text in [e.to_string(), format!("{e:?}"), format!("{c:?}")] {
        assert!(!text.contains(wrong), "{text}");
    }
    assert_eq!(s.power_state("node-a").unwrap(), "Running");
}

#[tokio::test]
async fn slow_answers_time_out_with_a_clear_error_and_the_session_is_still_logged_out() {
    let s = Standin::start(pool().delay("VM.get_record", 1500)).unwrap();
    let mut cfg = Config::new(s.url(), "root", Password::new(PASSWORD));
    cfg.call_timeout = Duration::from_millis(300);
    let c = Client::new(cfg).unwrap();
    let started = std::time::Instant::now();
    let e = c.status("node-a").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, Error::Timeout { ms: 300, .. }), "{e}");
    assert!(e.to_string().contains("VM.get_record"), "{e}");
    all_logged_out(&s).await;

    // Cancelled from outside (the daemon's deadline): logged out in the background.
    s.set_delay("VM.get_record", 400);
    let c = client(&s);
    assert!(tokio::time::timeout(Duration::from_millis(150), c.status("node-a"))
        .await
        .is_err());
    all_logged_out(&s).await;
}

#[tokio::test]
async fn tls_pinned_fingerprint_ca_file_and_insecure() {
    let s = Standin::start(pool().tls(true)).unwrap();
    let tls = s.tls().unwrap().clone();
    let run = |mode: TlsMode| {
        let mut cfg = Config::new(s.url(), "root", Password::new(PASSWORD));
        cfg.tls = mode;
        cfg.call_timeout = Duration::from_secs(2);
        async move { Client::new(cfg)?.status("node-a").await }
    };
    assert_eq!(
        run(TlsMode::Fingerprint(tls.fingerprint)).await.unwrap(),
        PowerState::Running
    );
    assert_eq!(run(TlsMode::Insecure).await.unwrap(), PowerState::Running);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    assert_eq!(run(TlsMode::CaFile(ca)).await.unwrap(), PowerState::Running);

    let e = run(TlsMode::Fingerprint([0x11; 32])).await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert!(e.to_string().contains("not the pinned 11:11"), "{e}");
    let e = run(TlsMode::SystemRoots).await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. } | Error::TlsSetup { .. }), "{e}");
    let e = run(TlsMode::CaFile(dir.path().join("missing.pem"))).await.unwrap_err();
    assert!(matches!(e, Error::TlsSetup { .. }), "{e}");
    // https to a plain-http server, and plain http to a TLS server.
    let plain = Standin::start(pool()).unwrap();
    let mut cfg = Config::new(
        plain.url().replace("http://", "https://"),
        "root",
        Password::new(PASSWORD),
    );
    cfg.tls = TlsMode::Insecure;
    let e = Client::new(cfg).unwrap().status("node-a").await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    let e = client_for(&s.url().replace("https://", "http://"), PASSWORD)
        .status("node-a")
        .await
        .unwrap_err();
    assert!(e.is_protocol(), "{e}");
    assert_eq!(s.stats().failed_logins, 0);
}

#[tokio::test]
async fn list_shows_vms_but_not_templates_or_control_domains() {
    let s = Standin::start(pool()).unwrap();
    let vms = client(&s).list().await.unwrap();
    let names: Vec<_> = vms
        .iter()
        .map(|v| (v.name_label.as_str(), v.power_state.clone()))
        .collect();
    assert_eq!(names, [("node-a", PowerState::Running), ("node-b", PowerState::Halted)]);
    assert_eq!(s.stats().open, 0);
}

#[tokio::test]
async fn unreachable_pool_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = client_for(&format!("http://127.0.0.1:{port}"), PASSWORD)
        .status("x")
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
}
