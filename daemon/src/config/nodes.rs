//! The `[node.NAME]` tables: exactly two nodes, their links and their fence levels.

use super::de::{field, Ctx};
use super::fence::check_levels;
use super::model::{FenceLevel, Node, Timing};
use super::raw::{RawLevel, NODE_KEYS, S};
use super::source::{join_key, Raw};
use super::validate::{at, plain_name};
use crate::core::NodeId;
use std::net::IpAddr;

/// Most links a cluster may have; more would only multiply heartbeat traffic.
pub(crate) const MAX_LINKS: usize = 8;

/// One node while the pair is being checked.
struct Draft {
    name: String,
    addresses: Option<Vec<(IpAddr, usize)>>,
    addresses_at: usize,
    fence: Option<Vec<FenceLevel>>,
    libvirt_uri: Option<String>,
    migration_uri: Option<String>,
    migration_host: Option<String>,
}

/// The outcome for `[node]`: the names are known (for `cluster.preferred`) as
/// soon as there are exactly two nodes, even when something inside them is wrong.
pub(crate) struct Nodes {
    pub names: Option<[String; 2]>,
    pub nodes: Option<[Node; 2]>,
}

pub(crate) fn check_nodes(root: &Raw, ctx: &Ctx, timing: Option<&Timing>) -> Nodes {
    let before = ctx.reports();
    let mut names = None;
    let nodes = check_pair(root, ctx, timing, &mut names);
    Nodes {
        names,
        nodes: nodes.filter(|_| ctx.reports() == before),
    }
}

fn check_pair(
    root: &Raw,
    ctx: &Ctx,
    timing: Option<&Timing>,
    names_out: &mut Option<[String; 2]>,
) -> Option<[Node; 2]> {
    let Some((node_key, table)) = root.get("node") else {
        ctx.report(
            root.span.start,
            "no [node.NAME] sections; tandem needs exactly two nodes".into(),
        );
        return None;
    };
    if !table.is_table() {
        ctx.report(
            table.span.start,
            format!(
                "node must be a table of nodes ([node.alpha], [node.beta]), not {}",
                table.kind_name()
            ),
        );
        return None;
    }
    let mut drafts: Vec<Draft> = Vec::new();
    let mut complete = true;
    for (key, raw) in table.entries() {
        match check_node(&key.name, key.span.start, raw, ctx, timing) {
            Some(d) => drafts.push(d),
            None => complete = false,
        }
    }
    let entries = table.entries();
    if entries.len() != 2 {
        let names: Vec<String> = entries.iter().map(|(k, _)| join_key("node", &k.name)).collect();
        match entries {
            [] => ctx.report(
                node_key.span.start,
                "node has no nodes; tandem needs exactly two, [node.NAME] each".into(),
            ),
            [(k, _)] => ctx.report(
                k.span.start,
                format!("{} is the only node; tandem needs exactly two", names[0]),
            ),
            [_, _, extra @ ..] => {
                for (k, _) in extra {
                    ctx.report(
                        k.span.start,
                        format!(
                            "{}: tandem joins exactly two nodes, and {} and {} are already configured",
                            join_key("node", &k.name),
                            names[0],
                            names[1]
                        ),
                    );
                }
            }
        }
        return None;
    }
    let mut sorted: Vec<String> = entries.iter().map(|(k, _)| k.name.clone()).collect();
    sorted.sort();
    *names_out = sorted.try_into().ok();
    if !complete {
        return None;
    }
    drafts.sort_by(|a, b| a.name.cmp(&b.name));
    let [a, b]: [Draft; 2] = drafts.try_into().ok()?;
    check_links(&a, &b, ctx);
    let node = |d: Draft, id: u8| -> Option<Node> {
        Some(Node {
            id: NodeId(id),
            name: d.name,
            addresses: d.addresses?.into_iter().map(|(ip, _)| ip).collect(),
            fence: d.fence?,
            libvirt_uri: d.libvirt_uri,
            migration_uri: d.migration_uri,
            migration_host: d.migration_host,
        })
    };
    Some([node(a, 0)?, node(b, 1)?])
}

fn check_node(name: &str, key_at: usize, raw: &Raw, ctx: &Ctx, timing: Option<&Timing>) -> Option<Draft> {
    let path = join_key("node", name);
    if !plain_name(name, 64) {
        ctx.report(
            key_at,
            format!(
                "{path}: a node name must be 1 to 64 letters, digits, '_', '.' or '-', starting \
                 with a letter or digit (it is matched against the host name)"
            ),
        );
    }
    if !raw.is_table() {
        ctx.report(
            raw.span.start,
            format!("{path} must be a table, not {}", raw.kind_name()),
        );
        return None;
    }
    ctx.unknown_keys(raw, &path, NODE_KEYS);
    let addresses = match field::<S<Vec<S<String>>>>(raw, &path, "addresses", ctx) {
        Some(Ok(list)) => check_addresses(&path, &list, ctx).map(|a| (a, at(&list))),
        Some(Err(())) => None,
        None => {
            ctx.report(
                raw.span.start,
                format!("{path}.addresses is required: one address per link, in the same link order on both nodes"),
            );
            None
        }
    };
    let fence = match field::<S<Vec<S<RawLevel>>>>(raw, &path, "fence", ctx) {
        Some(Ok(levels)) => check_levels(&path, &levels, timing, ctx),
        Some(Err(())) => None,
        None => {
            ctx.report(
                raw.span.start,
                format!(
                    "{path} has no fence level, so tandem could never take over its domains after \
                     it fails; add [[{path}.fence]] with a [[{path}.fence.device]], or write \
                     fence = [] to run without automatic failover"
                ),
            );
            None
        }
    };
    let (addresses, addresses_at) = match addresses {
        Some((a, at)) => (Some(a), at),
        None => (None, raw.span.start),
    };
    let uri = |key: &str| match field::<S<String>>(raw, &path, key, ctx) {
        Some(Ok(v)) => {
            let text = v.get_ref().trim();
            if text.is_empty() || text.chars().any(char::is_whitespace) || !text.contains("://") {
                ctx.report(
                    at(&v),
                    format!(
                        "{path}.{key} is {:?}: expected a URI such as qemu+ssh://root@host/system or tcp://host",
                        v.get_ref()
                    ),
                );
                None
            } else {
                Some(text.to_owned())
            }
        }
        _ => None,
    };
    let libvirt_uri = uri("libvirt_uri");
    let migration_uri = uri("migration_uri");
    let migration_host = match field::<S<String>>(raw, &path, "migration_host", ctx) {
        Some(Ok(v)) => {
            let text = v.get_ref().trim();
            let ok = !text.is_empty()
                && text.len() <= 253
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'));
            if ok {
                Some(text.to_owned())
            } else {
                ctx.report(
                    at(&v),
                    format!(
                        "{path}.migration_host is {:?}: expected a host name or address such as beta.example or 192.0.2.2",
                        v.get_ref()
                    ),
                );
                None
            }
        }
        _ => None,
    };
    Some(Draft {
        name: name.to_string(),
        addresses,
        addresses_at,
        fence,
        libvirt_uri,
        migration_uri,
        migration_host,
    })
}

fn check_addresses(path: &str, list: &S<Vec<S<String>>>, ctx: &Ctx) -> Option<Vec<(IpAddr, usize)>> {
    let before = ctx.reports();
    let n = list.get_ref().len();
    if n == 0 {
        ctx.report(
            at(list),
            format!("{path}.addresses is empty; every node needs one address per link, at least one"),
        );
    } else if n > MAX_LINKS {
        ctx.report(
            at(list),
            format!("{path}.addresses has {n} addresses; tandem supports at most {MAX_LINKS} links"),
        );
    }
    let mut out: Vec<(IpAddr, usize)> = Vec::new();
    for (i, s) in list.get_ref().iter().enumerate() {
        let here = format!("{path}.addresses[{}]", i + 1);
        let text = s.get_ref();
        let ip = match text.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if text.contains('%') => {
                ctx.report(
                    at(s),
                    format!(
                        "{here} \"{text}\" has a zone; link-local addresses are not supported, \
                         use a global or unique local (fd00::/8) address"
                    ),
                );
                continue;
            }
            Err(_) => {
                ctx.report(
                    at(s),
                    format!(
                        "{here} \"{text}\" is not an IPv4 or IPv6 address; host names are not \
                         accepted, so that the cluster never depends on name resolution"
                    ),
                );
                continue;
            }
        };
        let unusable = match ip {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
        };
        if unusable {
            ctx.report(at(s), format!("{here} {ip} is not a unicast address of a host"));
        } else if let Some(j) = out.iter().position(|(other, _)| *other == ip) {
            ctx.report(
                at(s),
                format!(
                    "{here} {ip} is the same as {path}.addresses[{}]; every link needs its own address",
                    j + 1
                ),
            );
        }
        out.push((ip, at(s)));
    }
    (ctx.reports() == before).then_some(out)
}

/// The two nodes' addresses, link by link.
fn check_links(a: &Draft, b: &Draft, ctx: &Ctx) {
    let (Some(aa), Some(ba)) = (&a.addresses, &b.addresses) else {
        return;
    };
    let pa = join_key("node", &a.name);
    let pb = join_key("node", &b.name);
    if aa.len() != ba.len() {
        let plural = |n: usize| if n == 1 { "address" } else { "addresses" };
        ctx.report(
            b.addresses_at,
            format!(
                "{pb}.addresses has {} {} but {pa} has {}; both nodes need one address per link",
                ba.len(),
                plural(ba.len()),
                aa.len()
            ),
        );
        return;
    }
    for (i, ((ipa, _), (ipb, atb))) in aa.iter().zip(ba).enumerate() {
        let link = i + 1;
        if ipa.is_ipv4() != ipb.is_ipv4() {
            let fam = |ip: &IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            ctx.report(
                *atb,
                format!(
                    "{pb}.addresses[{link}] is {} but {pa}.addresses[{link}] is {}; the two ends \
                     of link {link} must be of the same family",
                    fam(ipb),
                    fam(ipa)
                ),
            );
        }
        if let Some(j) = aa.iter().position(|(ip, _)| ip == ipb) {
            ctx.report(
                *atb,
                format!(
                    "{pb}.addresses[{link}] {ipb} is also {pa}.addresses[{}]; the nodes need \
                     different addresses",
                    j + 1
                ),
            );
        }
    }
}
