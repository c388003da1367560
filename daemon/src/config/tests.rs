#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::core::{NodeId, ResourceName};
use std::net::IpAddr;

mod load;
mod secrets;

const EXAMPLE: &str = include_str!("../../../packaging/tandem.toml.example");

pub(super) const BASE: &str = r#"[cluster]
name = "pair1"

[node.alpha]
addresses = ["192.0.2.1", "198.51.100.1"]
[[node.alpha.fence]]
[[node.alpha.fence.device]]
kind = "ipmi"
address = "10.0.0.11"
username = "admin"
password_file = "/etc/tandem/bmc-alpha.pass"

[node.beta]
addresses = ["192.0.2.2", "198.51.100.2"]
[[node.beta.fence]]
[[node.beta.fence.device]]
kind = "ipmi"
address = "10.0.0.12"
username = "admin"
password_file = "/etc/tandem/bmc-beta.pass"

[drbd]
resources = ["r0"]
"#;

const FILE: &str = "/etc/tandem/tandem.toml";

/// 1-based line and column of the `n`th (from 0) occurrence of `needle`.
fn nth_pos(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(n)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        .0;
    source::line_col(text, offset)
}

fn pos(text: &str, needle: &str) -> (usize, usize) {
    nth_pos(text, needle, 0)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match check_str(FILE, text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// The single error `text` produces.
fn one_error(text: &str) -> ConfigError {
    let errs = errors(text);
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got:\n{}",
        ConfigErrors(errs.clone())
    );
    errs.into_iter().next().unwrap()
}

fn assert_at(e: &ConfigError, (line, column): (usize, usize), contains: &str) {
    assert_eq!(e.file, Path::new(FILE), "{e}");
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(e.message.contains(contains), "{e}\nshould contain: {contains}");
}
#[test]
fn example_parses() {
    let c = check_str("tandem.toml.example", EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.cluster.name, "pair1");
    assert_eq!(c.cluster.preferred, NodeId(0));
    assert_eq!((c.cluster.heartbeat_port, c.cluster.control_port), (5405, 5406));
    assert_eq!(c.timing, Timing::default());
    assert_eq!(c.nodes[0].name, "alpha");
    assert_eq!(c.nodes[1].name, "beta");
    assert_eq!(c.links(), 2);
    assert_eq!(c.nodes[1].addresses[1], "198.51.100.2".parse::<IpAddr>().unwrap());
    assert_eq!(c.nodes[0].fence.len(), 2);
    match &c.nodes[0].fence[0].devices[0] {
        FenceDevice::Ipmi(d) => {
            assert_eq!(d.address, "10.0.0.11");
            assert_eq!(d.port, 623);
            assert_eq!(d.cipher_suite, 3);
            assert_eq!(d.privilege, IpmiPrivilege::Admin);
            assert_eq!(d.timeout_ms, 5000);
            assert_eq!(d.password, Secret::file("/etc/tandem/bmc-alpha.pass"));
        }
        other => panic!("{other:?}"),
    }
    match &c.nodes[0].fence[1].devices[0] {
        FenceDevice::Agent(d) => {
            assert_eq!(d.agent, Path::new("/usr/sbin/fence_ipmilan"));
            assert_eq!(d.options.get("lanplus").map(String::as_str), Some("1"));
            assert_eq!(d.options.get("ip").map(String::as_str), Some("10.0.0.11"));
            assert_eq!(d.password, Some(Secret::file("/etc/tandem/bmc-alpha.pass")));
        }
        other => panic!("{other:?}"),
    }
    match &c.nodes[1].fence[0].devices[0] {
        FenceDevice::Ipmi(d) => {
            assert_eq!(d.timeout_ms, IpmiDevice::DEFAULT_TIMEOUT_MS);
            assert_eq!(d.password, Secret::script("/usr/local/bin/get-bmc-password beta"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.drbd.resources,
        vec![ResourceName::from("r0"), ResourceName::from("r1")]
    );
    assert_eq!(
        c.hypervisor,
        Hypervisor::Libvirt {
            uri: "qemu:///system".into(),
            migration_bandwidth_mib: 0,
        }
    );
}

#[test]
fn core_config_for_each_node() {
    let c = check_str(FILE, EXAMPLE).unwrap();
    let alpha = c.core_config(NodeId(0));
    assert_eq!(alpha.me, NodeId(0));
    assert_eq!(alpha.links, 2);
    assert_eq!(alpha.arbiter.fence_delay_ms, 0, "the preferred node waits none");
    assert_eq!(alpha.peer_fence_levels, 1, "beta has one level");
    assert_eq!(alpha.window_deadline_ms, 600_000);
    let beta = c.core_config(NodeId(1));
    assert_eq!(beta.arbiter.fence_delay_ms, 2000);
    assert_eq!(beta.peer_fence_levels, 2, "alpha has two levels");
    // With the defaults, the mapping is the core's own notion of the defaults.
    let mut expected = crate::core::CoreConfig::with_defaults(NodeId(1), c.drbd.resources.clone());
    expected.peer_fence_levels = 2;
    assert_eq!(beta, expected);
}

#[test]
fn defaults_and_node_order() {
    // beta written first: ids still follow the names.
    let text = BASE
        .replace("[node.alpha]", "[node.zeta]")
        .replace("node.alpha.", "node.zeta.");
    let c = check_str(FILE, &text).unwrap();
    assert_eq!(c.nodes[0].name, "beta");
    assert_eq!(c.nodes[0].id, NodeId(0));
    assert_eq!(c.nodes[1].name, "zeta");
    assert_eq!(c.cluster.preferred, NodeId(0), "default: first node by name");
    assert_eq!(c.cluster.authkey, Path::new("/etc/tandem/authkey"));
    assert_eq!(c.drbd.drbdadm, Path::new("/usr/sbin/drbdadm"));
    assert_eq!(
        c.hypervisor,
        Hypervisor::Libvirt {
            uri: "qemu:///system".into(),
            migration_bandwidth_mib: 0,
        }
    );
    let with_preferred = text.replace("name = \"pair1\"", "name = \"pair1\"\npreferred = \"zeta\"");
    let c = check_str(FILE, &with_preferred).unwrap();
    assert_eq!(c.cluster.preferred, NodeId(1));
    assert_eq!(c.core_config(NodeId(1)).arbiter.fence_delay_ms, 0);
    assert_eq!(c.core_config(NodeId(0)).arbiter.fence_delay_ms, 2000);
}

#[test]
fn address_count_mismatch() {
    let text = BASE.replace(
        "addresses = [\"192.0.2.2\", \"198.51.100.2\"]",
        "addresses = [\"192.0.2.2\"]",
    );
    let e = one_error(&text);
    assert_at(&e, pos(&text, "[\"192.0.2.2\"]"), "");
    assert_eq!(
        e.to_string(),
        format!(
            "{FILE}:{}:{}: node.beta.addresses has 1 address but node.alpha has 2; both nodes need one address per link",
            e.line, e.column
        )
    );
}

#[test]
fn timing_relations() {
    let text = format!("{BASE}\n[timing]\nheartbeat_interval_ms = 500\ndead_after_ms = 1000\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "1000\n"), "more than twice timing.heartbeat_interval_ms");

    // Only heartbeat_interval_ms is set: the error points at it.
    let text = format!("{BASE}\n[timing]\nheartbeat_interval_ms = 600\n");
    let errs = errors(&text);
    assert!(errs.iter().all(|e| (e.line, e.column) == pos(&text, "600")), "{errs:?}");
    assert!(errs.iter().any(|e| e.message.contains("dead_after_ms is 1000")));

    let text = format!("{BASE}\n[timing]\nfence_delay_ms = 0\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "0\n"), "both nodes would fence each other");

    let text = format!("{BASE}\n[timing]\nfence_backoff_initial_ms = 5000\nfence_backoff_max_ms = 2000\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "2000"), "at least timing.fence_backoff_initial_ms");

    let text = format!("{BASE}\n[timing]\nmigration_window_s = 10\nrequest_timeout_ms = 10000\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "10000"), "shorter than the migration window");

    let text = format!("{BASE}\n[timing]\nheartbeat_interval_ms = 1\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "1\n"), "from 10 to 10000 ms");
}

#[test]
fn cluster_errors() {
    let text = BASE.replace("name = \"pair1\"", "name = \"pair1\"\npreferred = \"gamma\"");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "\"gamma\""), "must be \"alpha\" or \"beta\"");

    // A broken device in a node does not hide a wrong preferred node.
    let text = text.replace("address = \"10.0.0.12\"", "address = \"10.0.0.12\"\ncipher_suite = 0");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{}", ConfigErrors(errs.clone()));
    assert_at(&errs[0], pos(&text, "\"gamma\""), "not a node");

    let text = BASE.replace("name = \"pair1\"", "name = \"pair 1\"");
    assert_at(&one_error(&text), pos(&text, "\"pair 1\""), "cluster.name");

    let text = BASE.replace("name = \"pair1\"", "name = \"pair1\"\nauthkey = \"authkey\"");
    assert_at(&one_error(&text), pos(&text, "\"authkey\""), "absolute path");

    let text = BASE.replace("name = \"pair1\"\n", "");
    assert_at(&one_error(&text), (1, 1), "cluster.name is required");
}

#[test]
fn unknown_keys() {
    let text = BASE.replace("name = \"pair1\"", "name = \"pair1\"\nheartbeat_prot = 1");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "heartbeat_prot"), "did you mean heartbeat_port?");

    let text = format!("{BASE}\n[logging]\nlevel = \"debug\"\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "logging"), "logging is not a known key");
    assert!(e.message.contains("cluster, timing, node, drbd, hypervisor"), "{e}");

    let text = BASE.replace("[node.beta]\n", "[node.beta]\nweight = 3\n");
    assert_at(
        &one_error(&text),
        pos(&text, "weight"),
        "node.beta.weight is not a known key",
    );
}

#[test]
fn node_count() {
    let beta_start = BASE.find("[node.beta]").unwrap();
    let drbd_start = BASE.find("[drbd]").unwrap();
    let only_alpha = format!("{}{}", &BASE[..beta_start], &BASE[drbd_start..]);
    let e = one_error(&only_alpha);
    assert_at(
        &e,
        pos(&only_alpha, "alpha"),
        "node.alpha is the only node; tandem needs exactly two",
    );

    let text = format!("{BASE}\n[node.gamma]\naddresses = [\"192.0.2.3\", \"198.51.100.3\"]\nfence = []\n");
    let e = one_error(&text);
    assert_at(&e, pos(&text, "gamma"), "tandem joins exactly two nodes");

    let no_nodes = format!("{}{}", &BASE[..BASE.find("[node.alpha]").unwrap()], &BASE[drbd_start..]);
    assert_at(&one_error(&no_nodes), (1, 1), "tandem needs exactly two nodes");
}

#[test]
fn address_errors() {
    let text = BASE.replace("\"198.51.100.2\"", "\"beta-link2\"");
    assert_at(
        &one_error(&text),
        pos(&text, "\"beta-link2\""),
        "node.beta.addresses[2] \"beta-link2\" is not an IPv4 or IPv6 address",
    );

    let text = BASE.replace("\"198.51.100.2\"", "\"2001:db8::2\"");
    assert_at(
        &one_error(&text),
        pos(&text, "\"2001:db8::2\""),
        "must be of the same family",
    );

    let text = BASE.replace("\"198.51.100.2\"", "\"192.0.2.2\"");
    assert_at(
        &one_error(&text),
        nth_pos(&text, "\"192.0.2.2\"", 1),
        "every link needs its own address",
    );

    let text = BASE.replace("\"198.51.100.2\"", "\"198.51.100.1\"");
    assert_at(
        &one_error(&text),
        nth_pos(&text, "\"198.51.100.1\"", 1),
        "the nodes need different addresses",
    );

    let many: Vec<String> = (1..=9).map(|i| format!("\"10.9.0.{i}\"")).collect();
    let text = BASE.replace("[\"192.0.2.1\", \"198.51.100.1\"]", &format!("[{}]", many.join(", ")));
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.message.contains("at most 8 links")), "{errs:?}");

    let text = BASE.replace("[\"192.0.2.1\", \"198.51.100.1\"]", "[]");
    assert!(errors(&text).iter().any(|e| e.message.contains("addresses is empty")));
}

#[test]
fn fence_errors() {
    // No fence key at all is refused; an explicit empty list is allowed.
    let beta_fence = &BASE[BASE.find("[[node.beta.fence]]").unwrap()..BASE.find("[drbd]").unwrap()];
    let text = BASE.replace(beta_fence, "\n");
    assert_at(
        &one_error(&text),
        pos(&text, "[node.beta]"),
        "node.beta has no fence level",
    );
    let text = BASE.replace(beta_fence, "fence = []\n\n");
    let c = check_str(FILE, &text).unwrap();
    assert!(c.nodes[1].fence.is_empty());
    assert_eq!(c.core_config(NodeId(0)).peer_fence_levels, 0);

    // A key of another kind.
    let text = BASE.replace("address = \"10.0.0.12\"", "address = \"10.0.0.12\"\nvm = \"beta\"");
    assert_at(
        &one_error(&text),
        pos(&text, "\"beta\""),
        "node.beta.fence[1].device[1].vm does not apply to kind = \"ipmi\"; it is a key of kind = \"xapi\"",
    );

    let text = BASE.replace(
        "kind = \"ipmi\"\naddress = \"10.0.0.12\"",
        "kind = \"ilo\"\naddress = \"10.0.0.12\"",
    );
    assert_at(
        &one_error(&text),
        pos(&text, "\"ilo\""),
        "node.beta.fence[1].device[1].kind is \"ilo\"; it must be one of \"ipmi\", \"agent\" or \"xapi\"",
    );

    let text = BASE.replace("address = \"10.0.0.12\"\n", "");
    assert_at(
        &one_error(&text),
        nth_pos(&text, "[[node.beta.fence.device]]", 0),
        "address is required for kind = \"ipmi\"",
    );

    let text = BASE.replace("address = \"10.0.0.12\"", "address = \"10.0.0.12\"\ncipher_suite = 0");
    assert_at(
        &one_error(&text),
        pos(&text, "0\n"),
        "cipher_suite 0 has no authentication",
    );

    // Level timeouts add up beyond fence_timeout_ms.
    let text = BASE.replace(
        "password_file = \"/etc/tandem/bmc-beta.pass\"\n",
        "password_file = \"/etc/tandem/bmc-beta.pass\"\ntimeout_ms = 25000\n\
         [[node.beta.fence.device]]\nkind = \"agent\"\nagent = \"/usr/sbin/fence_apc\"\n",
    );
    let e = one_error(&text);
    assert_at(
        &e,
        pos(&text, "[[node.beta.fence]]"),
        "45000 ms together (25000 + 20000)",
    );
}

#[test]
fn agent_options() {
    let agent = "[[node.beta.fence]]\n[[node.beta.fence.device]]\nkind = \"agent\"\nagent = \"/usr/sbin/fence_apc\"\n";
    let text = BASE.replace(
        "\n[drbd]",
        &format!("{agent}options = {{ ip = \"10.0.0.99\", plug = 4, ssl = true, action = \"reboot\" }}\n\n[drbd]"),
    );
    assert_at(&one_error(&text), pos(&text, "action"), "tandem sets the action itself");

    let text = BASE.replace(
        "\n[drbd]",
        &format!("{agent}options = {{ passwd = \"hunter2\" }}\n\n[drbd]"),
    );
    let e = one_error(&text);
    assert_at(&e, pos(&text, "passwd"), "password_file");
    assert!(!e.message.contains("hunter2"));

    let text = BASE.replace(
        "\n[drbd]",
        &format!("{agent}options = {{ ip = \"10.0.0.99\\nport=7\" }}\n\n[drbd]"),
    );
    assert_at(&one_error(&text), pos(&text, "\"10.0.0.99"), "line breaks");

    let text = BASE.replace(
        "\n[drbd]",
        &format!("{agent}options = {{ plug = 4, ssl = true, quiet = false }}\n\n[drbd]"),
    );
    let c = check_str(FILE, &text).unwrap();
    match &c.nodes[1].fence[1].devices[0] {
        FenceDevice::Agent(d) => {
            let o: Vec<(&str, &str)> = d.options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(o, [("plug", "4"), ("quiet", "0"), ("ssl", "1")]);
            assert_eq!(d.password, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn xapi_devices() {
    let xapi = |extra: &str| {
        BASE.replace(
            "\n[drbd]",
            &format!(
                "[[node.beta.fence]]\n[[node.beta.fence.device]]\nkind = \"xapi\"\n\
                 username = \"root\"\npassword_file = \"/etc/tandem/xapi.pass\"\nvm = \"beta\"\n{extra}\n[drbd]"
            ),
        )
    };
    let fp = "AB:".repeat(31) + "AB";
    let c = check_str(
        FILE,
        &xapi(&format!("url = \"https://pool\"\nfingerprint = \"{fp}\"\n")),
    )
    .unwrap();
    match &c.nodes[1].fence[1].devices[0] {
        FenceDevice::Xapi(d) => {
            assert_eq!(d.tls, XapiTls::Fingerprint([0xab; 32]));
            assert_eq!(d.vm, "beta");
        }
        other => panic!("{other:?}"),
    }

    let text = xapi("url = \"http://pool\"\n");
    assert_at(&one_error(&text), pos(&text, "\"http://pool\""), "clear text");
    let c = check_str(FILE, &xapi("url = \"http://pool\"\ninsecure = true\n")).unwrap();
    assert!(matches!(&c.nodes[1].fence[1].devices[0], FenceDevice::Xapi(d) if d.tls == XapiTls::Insecure));

    let text = xapi("url = \"https://pool\"\nca_file = \"/etc/ca.pem\"\ninsecure = true\n");
    assert_at(
        &one_error(&text),
        pos(&text, "true"),
        "insecure = true turns certificate checks off",
    );

    let text = xapi("url = \"https://pool\"\nfingerprint = \"abc\"\n");
    assert_at(&one_error(&text), pos(&text, "\"abc\""), "64 hex digits");

    let text = xapi("");
    assert!(errors(&text)[0].message.contains("url is required for kind = \"xapi\""));
}

#[test]
fn inline_password_refused() {
    let text = BASE.replace(
        "password_file = \"/etc/tandem/bmc-beta.pass\"",
        "password = \"s3cret-value\"",
    );
    let e = one_error(&text);
    assert_at(
        &e,
        pos(&text, "password = "),
        "node.beta.fence[1].device[1].password: passwords are not written in the configuration",
    );
    assert!(!e.message.contains("s3cret-value"), "{e}");

    let text = BASE.replace(
        "password_file = \"/etc/tandem/bmc-beta.pass\"",
        "password_file = \"/etc/tandem/bmc-beta.pass\"\npassword_script = \"/bin/get\"",
    );
    assert_at(&one_error(&text), pos(&text, "\"/bin/get\""), "not both");

    let text = BASE.replace("password_file = \"/etc/tandem/bmc-beta.pass\"\n", "");
    assert_at(
        &one_error(&text),
        pos(&text, "[[node.beta.fence.device]]"),
        "needs a password",
    );
}

#[test]
fn drbd_and_hypervisor() {
    let text = BASE.replace("resources = [\"r0\"]", "resources = [\"r0\", \"-r1\", \"r0\", \"all\"]");
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{}", ConfigErrors(errs.clone()));
    assert_at(&errs[0], pos(&text, "\"-r1\""), "not a resource name");
    assert_at(&errs[1], nth_pos(&text, "\"r0\"", 1), "listed twice");
    assert_at(&errs[2], pos(&text, "\"all\""), "list the resources by name");

    let text = BASE.replace("resources = [\"r0\"]", "resources = []");
    assert_at(&one_error(&text), pos(&text, "[]"), "drbd.resources is empty");

    let text = format!("{BASE}\n[hypervisor]\nkind = \"xl\"\nuri = \"xen:///system\"\n");
    assert_at(
        &one_error(&text),
        pos(&text, "\"xen:///system\""),
        "applies to kind = \"libvirt\" only",
    );

    let c = check_str(FILE, &format!("{BASE}\n[hypervisor]\nkind = \"xl\"\n")).unwrap();
    assert_eq!(
        c.hypervisor,
        Hypervisor::Xl {
            xl: "/usr/sbin/xl".into(),
            config_dir: "/etc/xen".into(),
            transport: XlTransport::Ssh,
        }
    );
    let tcp = format!(
        "{BASE}\n[hypervisor]\nkind = \"xl\"\nconfig_dir = \"/etc/xen/tandem\"\nmigration_transport = \"tcp\"\n"
    );
    assert_eq!(
        check_str(FILE, &tcp).unwrap().hypervisor,
        Hypervisor::Xl {
            xl: "/usr/sbin/xl".into(),
            config_dir: "/etc/xen/tandem".into(),
            transport: XlTransport::Tcp { port: 8002 },
        }
    );
    let text = format!("{BASE}\n[hypervisor]\nkind = \"xl\"\nmigration_port = 9000\n");
    assert_at(
        &one_error(&text),
        pos(&text, "9000"),
        "applies to migration_transport = \"tcp\" only",
    );
    let text = format!("{BASE}\n[hypervisor]\nkind = \"xl\"\nmigration_transport = \"tcp\"\nmigration_port = 0\n");
    assert_at(&one_error(&text), pos(&text, "0\n"), "from 1 to 65535");
    let text = format!("{BASE}\n[hypervisor]\nconfig_dir = \"/etc/xen\"\n");
    assert_at(
        &one_error(&text),
        pos(&text, "\"/etc/xen\""),
        "hypervisor.config_dir applies to kind = \"xl\" only",
    );
    let text = format!("{BASE}\n[hypervisor]\nkind = \"xl\"\nconfig_dir = \"etc/xen\"\n");
    assert_at(&one_error(&text), pos(&text, "\"etc/xen\""), "hypervisor.config_dir");

    let capped = format!("{BASE}\n[hypervisor]\nmigration_bandwidth_mib = 100\n");
    assert_eq!(
        check_str(FILE, &capped).unwrap().hypervisor,
        Hypervisor::Libvirt {
            uri: "qemu:///system".into(),
            migration_bandwidth_mib: 100,
        }
    );
    let text = format!("{BASE}\n[hypervisor]\nmigration_bandwidth_mib = 2000000\n");
    assert_at(
        &one_error(&text),
        pos(&text, "2000000"),
        "from 0 (unlimited) to 1000000 MiB/s",
    );
    let text = format!("{BASE}\n[hypervisor]\nkind = \"none\"\nmigration_bandwidth_mib = 5\n");
    assert_at(
        &one_error(&text),
        pos(&text, "5\n"),
        "applies to kind = \"libvirt\" only",
    );

    let no_drbd = BASE.replace("[drbd]\nresources = [\"r0\"]\n", "");
    assert_at(&one_error(&no_drbd), (1, 1), "the [drbd] section is missing");
}

#[test]
fn type_errors() {
    let text = BASE.replace("address = \"10.0.0.12\"", "address = \"10.0.0.12\"\nport = \"623\"");
    assert_at(
        &one_error(&text),
        pos(&text, "\"623\""),
        "node.beta.fence[1].device[1].port must be an integer from 0 to 65535, not the string \"623\"",
    );

    let text = format!("{BASE}\n[timing]\ndead_after_ms = -5\n");
    assert_at(
        &one_error(&text),
        pos(&text, "-5"),
        "timing.dead_after_ms must be a non-negative integer, not -5",
    );

    let text = BASE.replace("name = \"pair1\"", "name = 1979-05-27");
    assert_at(
        &one_error(&text),
        pos(&text, "1979"),
        "cluster.name must be a string, not a date-time",
    );

    let text = BASE.replace("resources = [\"r0\"]", "resources = \"r0\"");
    assert_at(
        &one_error(&text),
        pos(&text, "\"r0\""),
        "drbd.resources must be an array, not the string \"r0\"",
    );

    let text = format!("{BASE}\ntiming = 5\n")
        .replace("[cluster]", "timing = 5\n[cluster]")
        .replacen("\ntiming = 5\n", "\n", 1);
    assert_at(&one_error(&text), pos(&text, "5"), "timing must be a table, not 5");
}

#[test]
fn migration_targets_of_a_node() {
    let c = check_str(FILE, BASE).unwrap();
    let beta = c.node(crate::core::NodeId(1));
    assert_eq!(beta.libvirt_uri(), "qemu+ssh://root@192.0.2.2/system");
    assert_eq!(beta.migration_uri().as_deref(), Some("tcp://192.0.2.2"));

    let text = BASE.replace(
        "[node.beta]\n",
        "[node.beta]\nlibvirt_uri = \"qemu+tls://beta.example/system\"\nmigration_uri = \"tcp://10.9.9.2:49152\"\n",
    );
    let c = check_str(FILE, &text).unwrap();
    let beta = c.node(crate::core::NodeId(1));
    assert_eq!(beta.libvirt_uri(), "qemu+tls://beta.example/system");
    assert_eq!(beta.migration_uri().as_deref(), Some("tcp://10.9.9.2:49152"));

    let text = BASE.replace("[node.beta]\n", "[node.beta]\nlibvirt_uri = \"beta\"\n");
    assert_at(
        &one_error(&text),
        pos(&text, "\"beta\""),
        "node.beta.libvirt_uri is \"beta\": expected a URI",
    );

    assert_eq!(beta.migration_host(), "192.0.2.2");
    let text = BASE.replace("[node.beta]\n", "[node.beta]\nmigration_host = \"beta-mig.example\"\n");
    let c = check_str(FILE, &text).unwrap();
    assert_eq!(c.node(crate::core::NodeId(1)).migration_host(), "beta-mig.example");
    let text = BASE.replace("[node.beta]\n", "[node.beta]\nmigration_host = \"beta; rm -rf /\"\n");
    assert_at(
        &one_error(&text),
        pos(&text, "\"beta; rm -rf /\""),
        "node.beta.migration_host is \"beta; rm -rf /\": expected a host name or address",
    );
}
