//! The stand-in run as the commands hotplug scripts run: symlinks named
//! `xenstore-read`, ... to the one binary. Expected output, messages and exit
//! codes are those of Xen 4.17's tools/xs-clients/xenstore_client.c.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tandem-xenstore-standin");

struct Xs {
    dir: tempfile::TempDir,
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Xs {
    fn new() -> Xs {
        let dir = tempfile::tempdir().unwrap();
        for m in ["read", "write", "exists", "rm", "list"] {
            std::os::unix::fs::symlink(BIN, dir.path().join(format!("xenstore-{m}"))).unwrap();
        }
        std::os::unix::fs::symlink(BIN, dir.path().join("xenstore")).unwrap();
        Xs { dir }
    }

    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree.json")
    }

    fn cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.dir.path().join(name));
        c.args(args).env("TANDEM_XENSTORE_FILE", self.tree());
        c
    }

    fn run(&self, name: &str, args: &[&str]) -> Run {
        let out = self.cmd(name, args).output().unwrap();
        Run {
            code: out.status.code().unwrap(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn run(code: i32, stdout: &str, stderr: &str) -> Run {
    Run {
        code,
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

#[test]
fn read_write_exists_list_rm_as_the_real_clients() {
    let xs = Xs::new();
    let be = "backend/vbd/1/51712";
    assert_eq!(
        xs.run(
            "xenstore-write",
            &[&format!("{be}/params"), "r0", &format!("{be}/mode"), "w"]
        ),
        run(0, "", "")
    );
    // Relative paths are dom0's home.
    assert_eq!(
        xs.run("xenstore-read", &["/local/domain/0/backend/vbd/1/51712/params"]),
        run(0, "r0\n", "")
    );
    assert_eq!(
        xs.run("xenstore-read", &["-p", &format!("{be}/params"), &format!("{be}/mode")]),
        run(0, &format!("{be}/params: r0\n{be}/mode: w\n"), "")
    );
    // Parents exist, with empty values; a missing key fails after the output so far.
    assert_eq!(xs.run("xenstore-read", &["backend/vbd/1"]), run(0, "\n", ""));
    assert_eq!(
        xs.run("xenstore-read", &[&format!("{be}/params"), "nothere"]),
        run(1, "r0\n", "xenstore-read: couldn't read path nothere\n")
    );
    assert_eq!(xs.run("xenstore-exists", &[be]), run(0, "", ""));
    assert_eq!(xs.run("xenstore-exists", &[be, "nothere"]), run(1, "", ""));
    // Children in creation order; -p prefixes the path ("/" prefixes nothing).
    assert_eq!(xs.run("xenstore-list", &[be]), run(0, "params\nmode\n", ""));
    assert_eq!(xs.run("xenstore-list", &["-p", "/"]), run(0, "/local\n", ""));
    assert_eq!(
        xs.run("xenstore-list", &["nothere"]),
        run(1, "", "xenstore-list: could not list path nothere\n")
    );
    // rm takes subtrees; a missing node under an existing parent is fine.
    assert_eq!(xs.run("xenstore-rm", &[&format!("{be}/mode")]), run(0, "", ""));
    assert_eq!(xs.run("xenstore-rm", &[&format!("{be}/mode")]), run(0, "", ""));
    assert_eq!(
        xs.run("xenstore-rm", &["backend/x/y"]),
        run(1, "", "xenstore-rm: could not remove path backend/x/y\n")
    );
    // -t also removes parents left empty, up to the first element of a relative path.
    assert_eq!(xs.run("xenstore-rm", &["-t", &format!("{be}/params")]), run(0, "", ""));
    assert_eq!(xs.run("xenstore-list", &["/local/domain/0"]), run(0, "", ""));
    // `xenstore MODE ...` works too.
    assert_eq!(xs.run("xenstore", &["write", "a", "1"]), run(0, "", ""));
    assert_eq!(xs.run("xenstore", &["read", "a"]), run(0, "1\n", ""));
}

#[test]
fn values_are_quoted_as_the_real_clients_quote_them() {
    let xs = Xs::new();
    assert_eq!(xs.run("xenstore-write", &["v", "a\\tb\\\\c\\x01\\101"]), run(0, "", ""));
    assert_eq!(xs.run("xenstore-read", &["v"]), run(0, "a\\tb\\\\c\\001A\n", ""));
    assert_eq!(xs.run("xenstore-read", &["-R", "v"]), run(0, "a\tb\\c\x01A", ""));
    assert_eq!(xs.run("xenstore-write", &["-R", "raw", "x\\ny"]), run(0, "", ""));
    assert_eq!(xs.run("xenstore-read", &["raw"]), run(0, "x\\\\ny\n", ""));
}

#[test]
fn bad_paths_and_arguments_fail_as_the_real_clients_do() {
    let xs = Xs::new();
    for bad in ["/a/", "a//b", "a b", "a.b", "/"] {
        let expect = if bad == "/" {
            run(1, "", "xenstore-rm: could not remove path /\n")
        } else {
            run(1, "", &format!("xenstore-rm: could not remove path {bad}\n"))
        };
        assert_eq!(xs.run("xenstore-rm", &[bad]), expect, "{bad:?}");
        if bad != "/" {
            assert_eq!(
                xs.run("xenstore-write", &[bad, "1"]),
                run(1, "", &format!("xenstore-write: could not write path {bad}\n"))
            );
        }
    }
    // A value too big for one xenstore message.
    let big = "x".repeat(4096);
    assert_eq!(
        xs.run("xenstore-write", &["k", &big]),
        run(1, "", "xenstore-write: could not write path k\n")
    );
    // Several pairs are one transaction: all or none.
    assert_eq!(
        xs.run("xenstore-write", &["ok", "1", "bad path", "2"]),
        run(1, "", "xenstore-write: could not write path bad path\n")
    );
    assert_eq!(xs.run("xenstore-exists", &["ok"]).code, 1);
    // Usage errors print the program as called; -h exits 0.
    let w = xs.path().join("xenstore-write").display().to_string();
    assert_eq!(
        xs.run("xenstore-write", &["k"]),
        run(
            1,
            "",
            &format!("xenstore-write: Usage: {w} [-h] [-R] key value [...]\n")
        )
    );
    let r = xs.path().join("xenstore-read").display().to_string();
    assert_eq!(
        xs.run("xenstore-read", &["-h"]),
        run(0, "", &format!("xenstore-read: Usage: {r} [-h] [-p] [-R] key [...]\n"))
    );
    // Unknown options are reported and ignored; options known to other modes are usage errors.
    assert_eq!(xs.run("xenstore-write", &["k", "1"]).code, 0);
    assert_eq!(
        xs.run("xenstore-read", &["-z", "k"]),
        run(0, "1\n", &format!("{r}: invalid option -- 'z'\n"))
    );
    assert_eq!(
        xs.run("xenstore-read", &["-t", "k"]),
        run(1, "", &format!("xenstore-read: Usage: {r} [-h] [-p] [-R] key [...]\n"))
    );
    // Options anywhere (GNU permutation), `--` ends them.
    assert_eq!(xs.run("xenstore-read", &["k", "-p"]), run(0, "k: 1\n", ""));
    assert_eq!(xs.run("xenstore-write", &["--", "-k", "2"]), run(0, "", ""));
    assert_eq!(xs.run("xenstore-read", &["--", "-k"]), run(0, "2\n", ""));
    // No store to talk to.
    let out = xs
        .cmd("xenstore-read", &["k"])
        .env_remove("TANDEM_XENSTORE_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("xenstore-read: xs_open: "));
}

#[test]
fn concurrent_writers_serialize_on_the_lock() {
    let xs = Xs::new();
    let children: Vec<_> = (0..24)
        .map(|i| {
            xs.cmd("xenstore-write", &[&format!("k/{i}"), &i.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let listed = xs.run("xenstore-list", &["k"]);
    let mut names: Vec<u32> = listed.stdout.lines().map(|l| l.parse().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, (0..24).collect::<Vec<_>>(), "no write was lost");
}
