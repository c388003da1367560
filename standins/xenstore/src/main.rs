//! `tandem-xenstore-standin`: acts as `xenstore-read`, `-write`, `-exists`,
//! `-rm` or `-list` by the name it runs under (see README.md).
use std::io::Write;
use std::path::PathBuf;

fn main() {
    // Arguments that are not UTF-8 cannot be xenstore paths; they are passed on
    // lossily and then fail the path check like any other bad character.
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let tree = std::env::var_os(tandem_xenstore_standin::FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let out = tandem_xenstore_standin::run(&args, tree.as_deref());
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    std::process::exit(out.code);
}
