//! Writes tandemctl's man pages (`tandemctl.1.gz`, `tandemctl-SUBCOMMAND.1.gz`) and
//! shell completions (bash, zsh, fish) from the same clap definition the
//! binary parses with (src/cli.rs), into OUT_DIR and into
//! `<target>/<profile>/tandemctl-assets/{man,completions}`, where the
//! packages (`make deb`, `make rpm`) take them from.

use clap::CommandFactory;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        // Only ever run by cargo, which sets it.
        return Ok(());
    };
    let assets = out_dir.join("tandemctl-assets");
    generate(&assets)?;
    // OUT_DIR is <target>/<profile>/build/tandemctl-<hash>/out: the packages
    // name the assets by the profile directory, which cargo-deb maps to the
    // real target directory. Another layout (a separate build-dir) keeps them
    // in OUT_DIR only.
    match profile_dir(&out_dir) {
        Some(profile) => generate(&profile.join("tandemctl-assets"))?,
        None => println!(
            "cargo:warning=OUT_DIR {} is not under <target>/<profile>/build; man pages and completions are only in OUT_DIR",
            out_dir.display()
        ),
    }
    Ok(())
}

fn profile_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    (build.file_name()? == "build").then(|| build.parent().map(Path::to_path_buf))?
}

fn generate(dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    // No page of a subcommand that is gone.
    if man.is_dir() {
        std::fs::remove_dir_all(&man)?;
    }
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    // No page for clap's `help` subcommand, nor a mention of it.
    let mut pages = cli::Cli::command().disable_help_subcommand(true);
    pages.build();
    man_pages(&pages, "tandemctl", &man)?;
    let mut cmd = cli::Cli::command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd, "tandemctl", &completions)?;
    }
    Ok(())
}

/// `NAME.1.gz` for `cmd`, then `NAME-SUB.1.gz` for each subcommand, down the tree.
fn man_pages(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    let page = cmd.clone().name(name.to_owned());
    let file = std::fs::File::create(dir.join(format!("{name}.1.gz")))?;
    // No name and no time in the gzip header: the same page gives the same bytes.
    let mut gz = flate2::GzBuilder::new().write(file, flate2::Compression::best());
    clap_mangen::Man::new(page).render(&mut gz)?;
    gz.finish()?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
