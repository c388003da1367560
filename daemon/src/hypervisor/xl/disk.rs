//! xl's disk specifications (xl-disk-configuration(5)) and the domain they
//! make up for the watcher: which disks are DRBD devices through tandem's
//! `block-drbd`, read with the block script's own rules
//! ([`tandem_hooks::xen::parse_params`]) so the daemon and the script agree.
//!
//! A spec is comma-separated `key=value` parameters and positional ones
//! (target, format, vdev, access, in that order); `target=` is last and takes
//! the rest of the string, commas included. The deprecated prefixes of the
//! target are understood: `phy:`, `file:`, `tap:`, `aio:`, ... are dropped;
//! `raw:`, `qcow:`, `qcow2:`, `vhd:` set the format; `drbd:`, `iscsi:`,
//! `nbd:`, `enbd:` set the script (`drbd:` means `/etc/xen/scripts/block-drbd`),
//! and after such a prefix the positional parameters are vdev and access.

use super::cfg::XlConfig;
use tandem_hooks::{Disk, DiskSource, DomainInfo};

/// One disk of a domain, as far as tandem cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskSpec {
    pub target: Option<String>,
    pub vdev: Option<String>,
    pub script: Option<String>,
    pub format: Option<String>,
}

const POSITIONAL: [&str; 4] = ["target", "format", "vdev", "access"];
const DROPPED_PREFIXES: [&str; 6] = ["phy", "file", "tap", "tap2", "aio", "tapdisk"];
const FORMAT_PREFIXES: [&str; 4] = ["raw", "qcow", "qcow2", "vhd"];
const SCRIPT_PREFIXES: [&str; 4] = ["drbd", "iscsi", "nbd", "enbd"];

impl DiskSpec {
    pub fn parse(spec: &str) -> Result<DiskSpec, String> {
        let mut out = DiskSpec::default();
        let mut filled: Vec<&str> = Vec::new();
        let mut rest = spec;
        let mut deprecated_prefix = false;
        while !rest.is_empty() {
            let (item, tail) = if rest.trim_start().starts_with("target=") {
                (rest, "")
            } else {
                match rest.split_once(',') {
                    Some((i, t)) => (i, t),
                    None => (rest, ""),
                }
            };
            rest = tail;
            let item = item.trim();
            if let Some((key, value)) = item.split_once('=') {
                let key = key.trim();
                if filled.contains(&key) {
                    return Err(format!("disk {spec:?}: {key} is given twice"));
                }
                filled.push(key);
                out.set(key, value.trim(), &mut deprecated_prefix);
                continue;
            }
            // A bare flag (cdrom, direct-io-safe, ...) or a positional one.
            if matches!(
                item,
                "cdrom" | "direct-io-safe" | "discard" | "no-discard" | "trusted" | "untrusted"
            ) {
                continue;
            }
            // After a deprecated prefix the format is taken: vdev and access follow.
            let skipped = |p: &&str| filled.contains(p) || (deprecated_prefix && *p == "format");
            let Some(slot) = POSITIONAL.iter().find(|p| !skipped(p)) else {
                return Err(format!("disk {spec:?}: too many positional parameters ({item:?})"));
            };
            filled.push(slot);
            if !item.is_empty() {
                out.set(slot, item, &mut deprecated_prefix);
            }
        }
        if out.target.as_deref().is_none_or(str::is_empty) && out.vdev.is_none() {
            return Err(format!("disk {spec:?} names neither a target nor a vdev"));
        }
        Ok(out)
    }

    fn set(&mut self, key: &str, value: &str, deprecated_prefix: &mut bool) {
        match key {
            "target" => {
                let mut t = value;
                while let Some((prefix, tail)) = t.split_once(':') {
                    if DROPPED_PREFIXES.contains(&prefix) {
                        t = tail;
                    } else if FORMAT_PREFIXES.contains(&prefix) {
                        self.format = Some(prefix.to_owned());
                        *deprecated_prefix = true;
                        t = tail;
                    } else if SCRIPT_PREFIXES.contains(&prefix) {
                        self.script = Some(prefix.to_owned());
                        *deprecated_prefix = true;
                        t = tail;
                        break;
                    } else {
                        break;
                    }
                    *deprecated_prefix = true;
                }
                self.target = Some(t.to_owned());
            }
            "vdev" => self.vdev = Some(value.split(':').next().unwrap_or(value).to_owned()),
            "script" => self.script = Some(value.to_owned()),
            "format" => self.format = Some(value.to_owned()),
            _ => {}
        }
    }

    /// Whether the disk goes through the `block-drbd` script.
    pub fn uses_block_drbd(&self) -> bool {
        let Some(script) = &self.script else { return false };
        let base = script.rsplit('/').next().unwrap_or(script);
        base == "block-drbd" || base == "drbd"
    }

    /// The disk as the hooks' DRBD rules read disks: a `block-drbd` target
    /// becomes its device path (`/dev/drbd/by-res/R[/V]`, `/dev/drbdN`); a
    /// plain target is the path it names.
    pub fn to_disk(&self) -> Result<Disk, String> {
        let target = self.target.clone().unwrap_or_default();
        let path = if self.uses_block_drbd() {
            let t = tandem_hooks::xen::parse_params(&target)
                .ok_or_else(|| format!("disk {target:?} for block-drbd names no DRBD resource"))?;
            match (t.resource, t.volume, t.minor) {
                (Some(r), Some(v), _) => format!("/dev/drbd/by-res/{r}/{v}"),
                (Some(r), None, _) => format!("/dev/drbd/by-res/{r}"),
                (None, _, Some(m)) => format!("/dev/drbd{m}"),
                (None, _, None) => return Err(format!("disk {target:?} for block-drbd names no DRBD resource")),
            }
        } else {
            target
        };
        Ok(Disk {
            disk_type: Some("block".into()),
            source: Some(DiskSource {
                dev: Some(path).filter(|p| !p.is_empty()),
                ..DiskSource::default()
            }),
            target: self.vdev.clone(),
            ..Disk::default()
        })
    }
}

/// The name and disks of a domain's configuration file.
pub fn domain_of(cfg: &XlConfig) -> Result<DomainInfo, String> {
    let name = cfg.string("name")?.ok_or("the file sets no name")?;
    let mut disks = Vec::new();
    for spec in cfg.strings("disk")? {
        disks.push(DiskSpec::parse(&spec)?.to_disk()?);
    }
    Ok(DomainInfo {
        name: Some(name),
        uuid: cfg.string("uuid").ok().flatten(),
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> DiskSpec {
        DiskSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn deprecated_drbd_prefix_means_block_drbd() {
        let d = spec("drbd:r0,xvda,w");
        assert_eq!(d.target.as_deref(), Some("r0"));
        assert_eq!(d.vdev.as_deref(), Some("xvda"));
        assert!(d.uses_block_drbd());
        let d = spec("script=block-drbd,vdev=xvdb,target=r1/0");
        assert_eq!((d.target.as_deref(), d.vdev.as_deref()), (Some("r1/0"), Some("xvdb")));
        assert!(d.uses_block_drbd());
        assert!(spec(
            "format=raw, vdev=xvdc, access=w, script=/etc/xen/scripts/block-drbd, target=drbd:/dev/drbd/by-res/r2"
        )
        .uses_block_drbd());
    }

    #[test]
    fn positional_and_prefixed_plain_disks() {
        let d = spec("/dev/vg/guest-volume,,hda");
        assert_eq!(
            (d.target.as_deref(), d.vdev.as_deref(), d.format.as_deref()),
            (Some("/dev/vg/guest-volume"), Some("hda"), None)
        );
        let d = spec("/dev/vg/guest-volume,raw,hda,rw");
        assert_eq!((d.vdev.as_deref(), d.format.as_deref()), (Some("hda"), Some("raw")));
        let d = spec("raw:/root/image.iso,hdc:cdrom,ro");
        assert_eq!(
            (d.target.as_deref(), d.vdev.as_deref()),
            (Some("/root/image.iso"), Some("hdc"))
        );
        let d = spec("phy:/dev/drbd0,xvda,w");
        assert_eq!(
            (d.target.as_deref(), d.vdev.as_deref()),
            (Some("/dev/drbd0"), Some("xvda"))
        );
        assert!(!d.uses_block_drbd());
        let d = spec("tap:aio:/images/x.img,xvda,w");
        assert_eq!(d.target.as_deref(), Some("/images/x.img"));
        // target= takes the rest, commas included.
        assert_eq!(spec("vdev=xvda, target=/a,b").target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn a_domain_file_makes_drbd_device_paths() {
        let cfg = XlConfig::parse(
            "name = \"g1\"\ndisk = [ 'drbd:r0,xvda,w', 'script=block-drbd,vdev=xvdb,target=r1/1', \
             'drbd:/dev/drbd7,xvdc,w', 'phy:/dev/vg/swap,xvdd,w' ]\n",
        )
        .unwrap();
        let info = domain_of(&cfg).unwrap();
        assert_eq!(info.name.as_deref(), Some("g1"));
        let devs: Vec<_> = info
            .disks
            .iter()
            .map(|d| d.source.as_ref().and_then(|s| s.dev.clone()))
            .collect();
        assert_eq!(
            devs,
            [
                Some("/dev/drbd/by-res/r0".to_owned()),
                Some("/dev/drbd/by-res/r1/1".to_owned()),
                Some("/dev/drbd7".to_owned()),
                Some("/dev/vg/swap".to_owned())
            ]
        );
        let drbd = tandem_hooks::drbd_disks(&info, &tandem_hooks::DrbdMap::empty());
        let resources: Vec<_> = drbd.iter().map(|d| d.resource.as_ref().map(|r| r.0.clone())).collect();
        assert_eq!(resources, [Some("r0".to_owned()), Some("r1".to_owned()), None]);
    }

    #[test]
    fn bad_disks_and_files_say_what_is_wrong() {
        for (text, what) in [
            ("disk = [ 'drbd:r0,xvda,w' ]\n", "sets no name"),
            (
                "name = \"g\"\ndisk = [ 'drbd:/dev/vg/x,xvda,w' ]\n",
                "names no DRBD resource",
            ),
            ("name = \"g\"\ndisk = [ 'a,raw,xvda,w,extra' ]\n", "too many positional"),
            ("name = \"g\"\ndisk = [ 'vdev=xvda,vdev=xvdb' ]\n", "given twice"),
            ("name = \"g\"\ndisk = [ ',,' ]\n", "neither a target nor a vdev"),
            ("name = \"g\"\ndisk = 3\n", "list of strings"),
        ] {
            let e = domain_of(&XlConfig::parse(text).unwrap()).unwrap_err();
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }
}
