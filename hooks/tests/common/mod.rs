//! Helpers shared by the hook's integration tests.
// Not every test file uses every helper; a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use quick_xml::events::Event;
use quick_xml::Reader;
use std::ops::Range;
use std::path::{Path, PathBuf};
use tandem_hooks::DrbdMap;

/// libvirt 9.0.0's test-suite domain XML (see /work/shared/corpus/README.md);
/// `TANDEM_LIBVIRT_CORPUS` points elsewhere.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("TANDEM_LIBVIRT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus/libvirt-xml"))
}

/// Every corpus file, sorted, with its text.
pub fn corpus() -> Vec<(String, String)> {
    let dir = corpus_dir();
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("libvirt XML corpus {}: {e} (set TANDEM_LIBVIRT_CORPUS)", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            (name, text)
        })
        .filter(|(name, _)| name.ends_with(".xml"))
        .collect();
    files.sort();
    assert!(
        files.len() > 1000,
        "corpus {} looks incomplete: {} files",
        dir.display(),
        files.len()
    );
    files
}

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

pub fn read_data(rel: &str) -> String {
    std::fs::read_to_string(data(rel)).unwrap()
}

/// The map of tests/data/drbd/two-node.conf: r0 = minor 0 on /dev/vg0/r0, r7 =
/// /dev/drbd3 on /dev/vg0/lv7, vm-web = minors 10 and 11.
pub fn two_node_map() -> DrbdMap {
    DrbdMap::from_dump_xml(&read_data("drbd/dump-xml-two-node.xml")).unwrap()
}

/// The XML of the corpus file `name`.
pub fn corpus_file(name: &str) -> String {
    std::fs::read_to_string(corpus_dir().join(name)).unwrap()
}

/// A disk found by [`disks_for_rewrite`]: where its `<source>` tag is, and its target.
#[derive(Debug)]
pub struct SourceTag {
    pub range: Range<usize>,
    pub empty: bool,
    pub local: bool,
    pub target: Option<String>,
}

/// Independently of the parser under test: the `<source>` tags of
/// `/domain/devices/disk`, and where a new disk could go.
pub fn disks_for_rewrite(xml: &str) -> (Vec<SourceTag>, Option<usize>, Option<Range<usize>>) {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut out: Vec<SourceTag> = Vec::new();
    let mut devices_open_end = None;
    let mut devices_empty = None;
    loop {
        let start = reader.buffer_position() as usize;
        let ev = reader.read_event().unwrap();
        let end = reader.buffer_position() as usize;
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let here: Vec<&str> = path.iter().map(String::as_str).collect();
                let is_empty = matches!(ev, Event::Empty(_));
                match (here.as_slice(), name.as_str()) {
                    (["domain"], "devices") if is_empty => devices_empty = Some(start..end),
                    (["domain"], "devices") if devices_open_end.is_none() => devices_open_end = Some(end),
                    (["domain", "devices"], "disk") => out.push(SourceTag {
                        range: 0..0,
                        empty: false,
                        local: false,
                        target: None,
                    }),
                    (["domain", "devices", "disk"], "source") => {
                        let disk = out.last_mut().unwrap();
                        if disk.range.is_empty() {
                            disk.range = start..end;
                            disk.empty = is_empty;
                            disk.local = e.try_get_attribute("dev").unwrap().is_some()
                                || e.try_get_attribute("file").unwrap().is_some();
                        }
                    }
                    (["domain", "devices", "disk"], "target") => {
                        let disk = out.last_mut().unwrap();
                        if disk.target.is_none() {
                            disk.target = e
                                .try_get_attribute("dev")
                                .unwrap()
                                .map(|a| a.unescape_value().unwrap().into_owned());
                        }
                    }
                    _ => {}
                }
                if !is_empty {
                    path.push(name);
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (out, devices_open_end, devices_empty)
}

/// `xml` with one disk's source set to `path`: the first disk with a local
/// (`dev`/`file`) source is rewritten, or a new disk `vdz` is added. Returns
/// the new XML and the target the DRBD disk should report.
pub fn with_drbd_source(xml: &str, path: &str) -> (String, Option<String>) {
    let (disks, devices_end, devices_empty) = disks_for_rewrite(xml);
    if let Some(disk) = disks.iter().find(|d| d.local) {
        let tag = if disk.empty {
            format!("<source dev='{path}'/>")
        } else {
            format!("<source dev='{path}'>")
        };
        let mut out = xml.to_owned();
        out.replace_range(disk.range.clone(), &tag);
        return (out, disk.target.clone());
    }
    let disk =
        format!("<disk type='block' device='disk'><source dev='{path}'/><target dev='vdz' bus='virtio'/></disk>");
    let mut out = xml.to_owned();
    if let Some(at) = devices_end {
        out.insert_str(at, &disk);
    } else if let Some(range) = devices_empty {
        out.replace_range(range, &format!("<devices>{disk}</devices>"));
    } else {
        let at = out.rfind("</domain>").expect("a <domain> document");
        out.insert_str(at, &format!("<devices>{disk}</devices>"));
    }
    (out, Some("vdz".to_owned()))
}
