//! Whole loads: syntax errors, robustness, many errors at once, fragments.

use super::*;

#[test]
fn syntax_errors() {
    let text = BASE.replace("name = \"pair1\"", "name = \"pair1");
    let e = one_error(&text);
    assert_eq!(e.line, 2, "{e}");
    assert!(!e.message.contains('\n'));

    let text = BASE.replace(
        "username = \"admin\"\npassword_file = \"/etc/tandem/bmc-beta.pass\"",
        "username = \"admin\"\nusername = \"root\"\npassword_file = \"/etc/tandem/bmc-beta.pass\"",
    );
    let e = one_error(&text);
    assert_at(&e, pos(&text, "username = \"root\""), "duplicate key");

    let text = "[cluster\nname = 1\n";
    let e = one_error(text);
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn never_panics() {
    // Every prefix of a full file, and some byte soup.
    let mut cut = 0;
    while cut <= EXAMPLE.len() {
        if EXAMPLE.is_char_boundary(cut) {
            let _ = check_str(FILE, &EXAMPLE[..cut]);
        }
        cut += 1;
    }
    for text in [
        "",
        "\u{feff}",
        "=",
        "[[[",
        "a.b.c.d = 1\na.b = 2",
        "node = []",
        "[node]\nalpha = 1",
        "é = \"\u{0}\"",
    ] {
        let errs = check_str(FILE, text).unwrap_err();
        assert!(!errs.is_empty());
        for e in &errs {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
    }
}

#[test]
fn multiple_errors_reported_together() {
    let text = BASE
        .replace("name = \"pair1\"", "name = \"pair1\"\ncontrol_prot = 1")
        .replace("\"198.51.100.2\"", "\"not-an-ip\"")
        .replace("resources = [\"r0\"]", "resources = [\"r0\", \"-x\"]")
        .replace(
            "address = \"10.0.0.11\"",
            "address = \"10.0.0.11\"\nport = \"x\"\ncipher_suite = 300",
        )
        + "\n[timing]\nheartbeat_interval_ms = \"fast\"\nretry_ms = -1\nfence_delay_ms = 0\n";
    let errs = errors(&text);
    let shown = ConfigErrors(errs.clone()).to_string();
    let expect = [
        (pos(&text, "control_prot"), "control_prot is not a known key"),
        (pos(&text, "\"x\""), "port must be"),
        (pos(&text, "300"), "cipher_suite must be an integer from 0 to 255"),
        (pos(&text, "\"not-an-ip\""), "not an IPv4 or IPv6 address"),
        (pos(&text, "\"-x\""), "not a resource name"),
        (pos(&text, "\"fast\""), "heartbeat_interval_ms must be"),
        (pos(&text, "-1"), "retry_ms must be"),
    ];
    assert_eq!(errs.len(), expect.len(), "{shown}");
    for (e, (at, msg)) in errs.iter().zip(expect) {
        assert_at(e, at, msg);
    }
    // One per line, in order.
    assert_eq!(shown.lines().count(), expect.len());
    assert!(shown.lines().all(|l| l.starts_with(&format!("{FILE}:"))));
}

#[test]
fn fragments_merge_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("tandem.toml");
    let frag = dir.path().join("tandem.d");
    std::fs::create_dir(&frag).unwrap();
    let nodes_start = BASE.find("[node.alpha]").unwrap();
    let drbd_start = BASE.find("[drbd]").unwrap();
    std::fs::write(
        &main,
        format!(
            "{}{}\n[timing]\ndead_after_ms = 1500\n",
            &BASE[..nodes_start],
            &BASE[drbd_start..]
        ),
    )
    .unwrap();
    std::fs::write(frag.join("20-nodes.toml"), &BASE[nodes_start..drbd_start]).unwrap();
    std::fs::write(frag.join("30-timing.toml"), "[timing]\nretry_ms = 500\n").unwrap();
    // Not fragments: wrong extension, hidden, a directory.
    std::fs::write(frag.join("10-old.toml.dpkg-old"), "garbage [").unwrap();
    std::fs::write(frag.join(".10-edit.toml"), "garbage [").unwrap();
    std::fs::create_dir(frag.join("sub.toml")).unwrap();

    let c = load(&main, Some(&frag)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.timing.dead_after_ms, 1500);
    assert_eq!(c.timing.retry_ms, 500);
    assert_eq!(c.nodes[1].name, "beta");
    assert_eq!(
        c.sources,
        vec![main.clone(), frag.join("20-nodes.toml"), frag.join("30-timing.toml")]
    );

    // Without the fragments directory, the nodes are missing.
    let errs = load(&main, None).unwrap_err();
    assert!(errs.iter().any(|e| e.message.contains("exactly two nodes")), "{errs}");

    // The same key in two files: reported at the later one, naming the first.
    let dup = "[timing]\ndead_after_ms = 2000\n";
    std::fs::write(frag.join("40-dup.toml"), dup).unwrap();
    let errs = load(&main, Some(&frag)).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    let e = &errs.0[0];
    assert_eq!(e.file, frag.join("40-dup.toml"));
    assert_eq!((e.line, e.column), (2, 1));
    let main_text = std::fs::read_to_string(&main).unwrap();
    let (line, col) = pos(&main_text, "dead_after_ms");
    assert!(
        e.message.contains(&format!(
            "timing.dead_after_ms is set here and also at {}:{line}:{col}",
            main.display()
        )),
        "{e}"
    );
    // An array (of tables) in two files is a duplicate too, not an append.
    std::fs::write(
        frag.join("40-dup.toml"),
        "[[node.beta.fence]]\n[[node.beta.fence.device]]\nkind = \"agent\"\nagent = \"/x\"\n",
    )
    .unwrap();
    let errs = load(&main, Some(&frag)).unwrap_err();
    assert!(
        errs.0[0].message.contains("node.beta.fence is set here and also at"),
        "{errs}"
    );

    // A syntax error in a fragment names the fragment.
    std::fs::write(frag.join("40-dup.toml"), "[timing\n").unwrap();
    let errs = load(&main, Some(&frag)).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.0[0].file, frag.join("40-dup.toml"));
    assert_eq!(errs.0[0].line, 1);
}

#[test]
fn unreadable_main_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let errs = load(&missing, None).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs.0[0].line, errs.0[0].column), (0, 0));
    assert!(
        errs.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{errs}"
    );
}

#[test]
fn local_node() {
    let mut c = check_str(FILE, EXAMPLE).unwrap();
    assert_eq!(c.local(Some("beta")).unwrap(), NodeId(1));
    assert_eq!(c.local(Some("beta.example.org")).unwrap(), NodeId(1));
    let e = c.local(Some("gamma")).unwrap_err();
    assert!(e.to_string().contains("\"alpha\" and \"beta\""), "{e}");
    c.nodes[0].name = "alpha.example.org".into();
    assert_eq!(c.local(Some("alpha")).unwrap(), NodeId(0));
    // Whatever this machine is called, the lookup does not panic.
    let _ = c.local(None);
}
