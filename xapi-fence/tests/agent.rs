//! The `xapi-fence` program as Pacemaker and RHCS run it: options on the
//! command line or `key=value` lines on stdin, fence-agents exit codes, the
//! metadata XML, and no password in anything it prints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use tandem_xapi_standin::{PoolConfig, Standin};

const PASSWORD: &str = "Agent-pw-9";
const BIN: &str = env!("CARGO_BIN_EXE_xapi-fence");

fn standin(hosts: usize) -> Standin {
    Standin::start(
        PoolConfig::default()
            .user("root", PASSWORD)
            .vm("node-a", "Running")
            .vm("node-b", "Halted")
            .hosts(hosts),
    )
    .unwrap()
}

fn args(url: &str, extra: &[&str]) -> Output {
    let mut a = vec!["-s", url, "-l", "root", "-p", PASSWORD];
    a.extend_from_slice(extra);
    let out = Command::new(BIN).args(&a).output().unwrap();
    no_password(&out);
    out
}

fn stdin(lines: &str) -> Output {
    let mut child = Command::new(BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    no_password(&out);
    out
}

fn no_password(out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn command_line_actions_and_exit_codes() {
    let s = standin(1);
    let url = s.url();
    let out = args(&url, &["-n", "node-a", "-o", "status"]);
    assert_eq!((out.status.code(), text(&out).as_str()), (Some(0), "Status: ON\n"));
    let out = args(&url, &["-n", "node-a", "--action=off"]);
    assert_eq!(
        (out.status.code(), text(&out).as_str()),
        (Some(0), "Success: Powered OFF\n")
    );
    assert_eq!(s.power_state("node-a").unwrap(), "Halted");
    let out = args(&url, &["-nnode-a", "-ooff"]);
    assert_eq!(text(&out), "Success: Already OFF\n");
    let out = args(&url, &["-n", "node-a", "-o", "status"]);
    assert_eq!((out.status.code(), text(&out).as_str()), (Some(2), "Status: OFF\n"));
    let out = args(&url, &["-n", "node-a", "-o", "on"]);
    assert_eq!(
        (out.status.code(), text(&out).as_str()),
        (Some(0), "Success: Powered ON\n")
    );
    let out = args(&url, &["-n", "node-a", "-o", "reboot"]);
    assert_eq!(
        (out.status.code(), text(&out).as_str()),
        (Some(0), "Success: Rebooted\n")
    );
    let uuid = s.uuid("node-b").unwrap();
    let out = args(&url, &["-o", "list-status"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains(&format!("{uuid},node-b,OFF\n")), "{}", text(&out));
    assert!(!text(&out).contains("Control domain"), "{}", text(&out));
    let out = args(&url, &["-o", "list", "-C", ";"]);
    assert!(text(&out).contains(&format!("{uuid};node-b\n")), "{}", text(&out));
    assert_eq!(args(&url, &["-o", "monitor"]).status.code(), Some(0));
    let out = args(&url, &["--uuid", &uuid, "-o", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let stats = s.stats();
    assert_eq!(stats.logins, stats.logouts, "{stats:?}");
    assert_eq!(stats.last_login, Some(("1.0".into(), "tandem".into())));
}

#[test]
fn stdin_options_with_old_names_and_a_slave_address() {
    let s = standin(2);
    let out = stdin(&format!(
        "# from stonith-ng\naction=off\nsession_url={}\nlogin=root\npasswd={PASSWORD}\nport=node-a\n\
         nodename=node-a\nsomething_new=1\npower_timeout=5\n",
        s.host_url(1)
    ));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert_eq!(text(&out), "Success: Powered OFF\n");
    assert!(
        err(&out).contains("Ignoring unknown option 'something_new'"),
        "{}",
        err(&out)
    );
    assert_eq!(s.power_state("node-a").unwrap(), "Halted");
    assert_eq!(s.stats().host_is_slave, 1);
    // password_script, ip + ipport (https), ssl_insecure.
    let tls = Standin::start(
        PoolConfig::default()
            .user("root", PASSWORD)
            .vm("node-a", "Running")
            .tls(true),
    )
    .unwrap();
    let out = stdin(&format!(
        "action=status\nip=127.0.0.1\nipport={}\nusername=root\npassword_script=echo {PASSWORD}\nplug=node-a\n\
         ssl_insecure=1\n",
        tls.port()
    ));
    assert_eq!(
        (out.status.code(), text(&out).as_str()),
        (Some(0), "Status: ON\n"),
        "{}",
        err(&out)
    );
    // Without ssl_insecure the self-signed certificate is refused; pinned, it is taken.
    let base = format!(
        "action=status\nip=127.0.0.1\nipport={}\nusername=root\npasswd={PASSWORD}\nplug=node-a\n",
        tls.port()
    );
    let out = stdin(&base);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("TLS"), "{}", err(&out));
    let pin = xapi_fence::format_fingerprint(&tls.tls().unwrap().fingerprint);
    let out = stdin(&format!("{base}ssl_fingerprint={pin}\n"));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
}

#[test]
fn failures_exit_1_with_one_clear_line_and_no_password() {
    let s = standin(1);
    let url = s.url();
    let out = Command::new(BIN)
        .args([
            "-s",
            &url,
            "-l",
            "root",
            "-p",
            "not-the-password",
            "-n",
            "node-a",
            "-o",
            "off",
            "-v",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!err(&out).contains("not-the-password"), "{}", err(&out));
    assert!(err(&out).contains("SESSION_AUTHENTICATION_FAILED"), "{}", err(&out));
    assert_eq!(s.power_state("node-a").unwrap(), "Running");
    let out = args(&url, &["-n", "Control domain on host: host0", "-o", "off"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("control domain"), "{}", err(&out));
    let out = args(&url, &["-n", "ghost", "-o", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("no VM has the UUID or name label \"ghost\""),
        "{}",
        err(&out)
    );
    let out = args(&url, &["-o", "off"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("set plug"), "{}", err(&out));
    let out = args(&url, &["-n", "node-a", "-o", "dance"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("Unrecognised action 'dance'"), "{}", err(&out));
    let out = args(&url, &["--bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("unknown option --bogus"), "{}", err(&out));
    let out = Command::new(BIN)
        .args(["-s", &url, "-l", "root", "-n", "x", "-o", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("password"), "{}", err(&out));
    assert_eq!(
        args(&url, &["-n", "node-a", "-o", "validate-all"]).status.code(),
        Some(0)
    );
    let stats = s.stats();
    assert_eq!(stats.logins, stats.logouts, "{stats:?}");
}

#[test]
fn metadata_is_fence_agents_xml() {
    let out = Command::new(BIN).args(["-o", "metadata"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let xml = text(&out);
    assert!(
        xml.starts_with("<?xml version=\"1.0\" ?>\n<resource-agent name=\"xapi-fence\""),
        "{xml}"
    );
    for needle in [
        "<parameter name=\"action\" unique=\"0\" required=\"1\" obsoletes=\"option\">",
        "<parameter name=\"plug\" unique=\"0\" required=\"1\" obsoletes=\"port\">",
        "<parameter name=\"port\" unique=\"0\" required=\"0\" deprecated=\"1\">",
        "<getopt mixed=\"-s, --session-url=[url]\" />",
        "<parameter name=\"ssl_insecure\"",
        "<content type=\"second\" default=\"20\" />",
        "<action name=\"on\" automatic=\"0\"/>",
        "<action name=\"list-status\" />",
        "<action name=\"validate-all\" />",
    ] {
        assert!(xml.contains(needle), "missing {needle}");
    }
    // Well-formed: every start tag closes.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut depth = 0i32;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(_) => depth += 1,
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0);
    // Stdin form and the OCF spelling.
    assert_eq!(text(&stdin("action=meta-data\n")), xml);
}
