//! Two hosts, `alpha` and `beta`, as two network namespaces joined by two veth
//! links, with link faults made by iptables on the receiving side.
//!
//! | link | interface (both ends) | alpha          | beta           |
//! |------|-----------------------|----------------|----------------|
//! | 0    | `tdl0`                | 192.0.2.1/24   | 192.0.2.2/24   |
//! | 1    | `tdl1`                | 198.51.100.1/24| 198.51.100.2/24|
//!
//! There is no netem in the test kernel: every fault is a rule in the
//! receiver's INPUT chain (dropping on the sender's OUTPUT would make `sendto`
//! fail instead of losing the datagram). Each namespace has one chain per link,
//! `TDM-L<i>`, jumped to from INPUT for traffic arriving on `tdl<i>`; faults are
//! rules in that chain and healing flushes it.

use crate::netns::{sweep_leftovers, NetNs, VethLink};
use anyhow::{bail, Context, Result};
use std::fmt;

/// One of the two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Alpha,
    Beta,
}

impl Node {
    pub const BOTH: [Node; 2] = [Node::Alpha, Node::Beta];

    /// The node's name in the cluster configuration.
    pub fn name(self) -> &'static str {
        match self {
            Node::Alpha => "alpha",
            Node::Beta => "beta",
        }
    }

    pub fn other(self) -> Node {
        match self {
            Node::Alpha => Node::Beta,
            Node::Beta => Node::Alpha,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Node::Alpha => 0,
            Node::Beta => 1,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which traffic of a link a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only what arrives at this node.
    Into(Node),
    /// Both ways.
    Both,
}

impl Direction {
    /// The receiving nodes, whose INPUT chains get the rule.
    pub fn receivers(self) -> Vec<Node> {
        match self {
            Direction::Into(n) => vec![n],
            Direction::Both => Node::BOTH.to_vec(),
        }
    }
}

/// Number of links in a [`Lab2`].
pub const LINKS: usize = 2;

/// Each link's addresses: `[alpha, beta]`; all /24.
pub const ADDRESSES: [[&str; 2]; LINKS] = [["192.0.2.1", "192.0.2.2"], ["198.51.100.1", "198.51.100.2"]];

/// Two namespaces joined by two veth pairs. Dropping it removes everything.
#[derive(Debug)]
pub struct Lab2 {
    // Dropped in this order: links, then namespaces.
    links: Vec<VethLink>,
    alpha: NetNs,
    beta: NetNs,
}

impl Lab2 {
    /// Sweeps leftovers of dead test runs, then builds the two hosts and links,
    /// with an empty fault chain per link in each namespace.
    pub fn new() -> Result<Lab2> {
        crate::env::preflight()?;
        sweep_leftovers().context("sweeping leftover test namespaces")?;
        let alpha = NetNs::new("alpha")?;
        let beta = NetNs::new("beta")?;
        let mut lab = Lab2 {
            links: Vec::with_capacity(LINKS),
            alpha,
            beta,
        };
        for (i, [a, b]) in ADDRESSES.iter().enumerate() {
            let ifname = Lab2::ifname(i);
            let link = VethLink::new(
                &lab.alpha,
                &ifname,
                &format!("{a}/24"),
                &lab.beta,
                &ifname,
                &format!("{b}/24"),
            )
            .with_context(|| format!("creating link {i}"))?;
            lab.links.push(link);
            for node in Node::BOTH {
                let ns = lab.ns(node);
                let chain = Lab2::chain(i);
                ns.iptables(&["-N", &chain])?;
                ns.iptables(&["-A", "INPUT", "-i", &ifname, "-j", &chain])?;
            }
        }
        Ok(lab)
    }

    pub fn ns(&self, node: Node) -> &NetNs {
        match node {
            Node::Alpha => &self.alpha,
            Node::Beta => &self.beta,
        }
    }

    /// `node`'s address on `link` (without prefix length).
    pub fn addr(node: Node, link: usize) -> Result<&'static str> {
        match ADDRESSES.get(link) {
            Some(pair) => Ok(pair[node.index()]),
            None => bail!("no link {link}: the lab has {LINKS}"),
        }
    }

    /// The interface of `link`, the same name in both namespaces.
    pub fn ifname(link: usize) -> String {
        format!("tdl{link}")
    }

    fn chain(link: usize) -> String {
        format!("TDM-L{link}")
    }

    fn check_link(link: usize) -> Result<()> {
        if link >= LINKS {
            bail!("no link {link}: the lab has {LINKS}");
        }
        Ok(())
    }

    /// Drops everything on `link` in `dir`, on top of any fault already there.
    pub fn cut(&self, link: usize, dir: Direction) -> Result<()> {
        Lab2::check_link(link)?;
        for node in dir.receivers() {
            self.ns(node)
                .iptables(&["-A", &Lab2::chain(link), "-j", "DROP"])
                .with_context(|| format!("cutting link {link} into {node}"))?;
        }
        Ok(())
    }

    /// Drops each datagram arriving at `into` on `link` with `probability`.
    pub fn loss(&self, link: usize, into: Node, probability: f64) -> Result<()> {
        Lab2::check_link(link)?;
        if !(0.0..=1.0).contains(&probability) {
            bail!("loss probability {probability} is not between 0 and 1");
        }
        let p = format!("{probability:.4}");
        self.ns(into)
            .iptables(&[
                "-A",
                &Lab2::chain(link),
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ])
            .with_context(|| format!("adding {p} loss on link {link} into {into}"))?;
        Ok(())
    }

    /// Removes every fault of `link`, both ways.
    pub fn heal(&self, link: usize) -> Result<()> {
        Lab2::check_link(link)?;
        for node in Node::BOTH {
            self.ns(node)
                .iptables(&["-F", &Lab2::chain(link)])
                .with_context(|| format!("healing link {link} into {node}"))?;
        }
        Ok(())
    }

    /// Cuts every link into `node` in one iptables transaction, so the node's
    /// last datagram arrives before one instant.
    pub fn isolate(&self, node: Node) -> Result<()> {
        let mut rules = String::from("*filter\n");
        for link in 0..LINKS {
            rules.push_str(&format!("-A {} -j DROP\n", Lab2::chain(link)));
        }
        rules.push_str("COMMIT\n");
        self.ns(node)
            .iptables_restore(&rules)
            .with_context(|| format!("cutting every link into {node}"))?;
        Ok(())
    }

    /// Cuts every link both ways (one transaction per node: alpha, then beta).
    pub fn cut_all(&self) -> Result<()> {
        for node in Node::BOTH {
            self.isolate(node)?;
        }
        Ok(())
    }

    /// Removes every fault of every link.
    pub fn heal_all(&self) -> Result<()> {
        for link in 0..LINKS {
            self.heal(link)?;
        }
        Ok(())
    }

    /// `iptables -S` of both namespaces, for failure messages.
    pub fn rules(&self) -> String {
        let mut s = String::new();
        for node in Node::BOTH {
            let rules = self
                .ns(node)
                .iptables(&["-S"])
                .unwrap_or_else(|e| format!("(cannot list: {e:#})"));
            s.push_str(&format!("{node} ({}):\n{rules}", self.ns(node).name()));
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The harness alone, without `tandemd`: needs root, `ip` and `iptables`.

    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::path::Path;
    use std::time::Duration;

    struct Probe {
        tx: UdpSocket,
        rx: UdpSocket,
        to: SocketAddr,
    }

    impl Probe {
        /// A sender in `from`'s namespace and a receiver at `from.other()`'s address on `link`.
        fn new(lab: &Lab2, link: usize, from: Node) -> Probe {
            let src: SocketAddr = format!("{}:0", Lab2::addr(from, link).unwrap()).parse().unwrap();
            let to: SocketAddr = format!("{}:7000", Lab2::addr(from.other(), link).unwrap())
                .parse()
                .unwrap();
            let tx = lab.ns(from).udp_bind(src).unwrap();
            let rx = lab.ns(from.other()).udp_bind(to).unwrap();
            rx.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            Probe { tx, rx, to }
        }

        /// Sends `n` datagrams; how many arrived.
        fn delivered(&self, n: usize) -> usize {
            for i in 0..n {
                self.tx.send_to(&i.to_be_bytes(), self.to).unwrap();
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let mut got = 0;
            let mut buf = [0u8; 64];
            while self.rx.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        }
    }

    #[test]
    fn links_carry_traffic_and_faults_hit_the_receiver_side() {
        let lab = Lab2::new().expect("lab");
        let probes: Vec<[Probe; 2]> = (0..LINKS)
            .map(|l| [Probe::new(&lab, l, Node::Alpha), Probe::new(&lab, l, Node::Beta)])
            .collect();
        for p in probes.iter().flatten() {
            assert_eq!(p.delivered(20), 20, "clean link to {}", p.to);
        }

        // Link 0 into beta only: alpha→beta lost, beta→alpha and link 1 fine.
        lab.cut(0, Direction::Into(Node::Beta)).unwrap();
        assert_eq!(probes[0][0].delivered(20), 0, "alpha→beta on a cut link 0");
        assert_eq!(probes[0][1].delivered(20), 20, "beta→alpha on link 0");
        assert_eq!(probes[1][0].delivered(20), 20, "alpha→beta on link 1");
        lab.heal(0).unwrap();
        assert_eq!(probes[0][0].delivered(20), 20, "healed link 0");

        lab.cut(1, Direction::Both).unwrap();
        assert_eq!(probes[1][0].delivered(10), 0);
        assert_eq!(probes[1][1].delivered(10), 0);
        assert_eq!(probes[0][0].delivered(10), 10);
        lab.heal_all().unwrap();

        lab.cut_all().unwrap();
        for p in probes.iter().flatten() {
            assert_eq!(p.delivered(10), 0, "cut_all, to {}", p.to);
        }
        lab.heal_all().unwrap();
        lab.isolate(Node::Alpha).unwrap();
        assert_eq!(probes[0][1].delivered(10), 0);
        assert_eq!(probes[1][1].delivered(10), 0);
        assert_eq!(probes[0][0].delivered(10), 10);
        lab.heal_all().unwrap();

        // 50% loss into alpha on link 1: 400 sent, mean 200, sd 10.
        lab.loss(1, Node::Alpha, 0.5).unwrap();
        let got = probes[1][1].delivered(400);
        assert!((140..=260).contains(&got), "{got} of 400 arrived with 50% loss");
        assert_eq!(probes[1][0].delivered(50), 50, "the other direction has no loss");
        lab.heal(1).unwrap();
        assert_eq!(probes[1][1].delivered(50), 50);

        assert!(lab.loss(0, Node::Alpha, 1.5).is_err());
        assert!(lab.cut(2, Direction::Both).is_err());
    }

    #[test]
    fn everything_is_removed_on_drop() {
        let lab = Lab2::new().expect("lab");
        let names: Vec<String> = Node::BOTH.iter().map(|n| lab.ns(*n).name().to_owned()).collect();
        for n in &names {
            assert!(n.starts_with(&format!("tdm-{}-", std::process::id())), "{n}");
            assert!(Path::new("/run/netns").join(n).exists());
        }
        drop(lab);
        for n in &names {
            assert!(!Path::new("/run/netns").join(n).exists(), "{n} still there");
        }
    }

    #[test]
    fn leftovers_of_dead_runs_are_swept() {
        crate::preflight().expect("preflight");
        // A pid that runs nothing: the highest a default kernel hands out, or below.
        let dead = (1..=4_194_304u32)
            .rev()
            .find(|p| !Path::new("/proc").join(p.to_string()).exists())
            .unwrap();
        let name = format!("tdm-{dead}-0-left");
        crate::cmd::run("ip", &["netns", "add", &name]).unwrap();
        let mine = crate::netns::NetNs::new("mine").unwrap();
        let removed = crate::netns::sweep_leftovers().unwrap();
        assert!(removed.contains(&name), "{removed:?}");
        assert!(!Path::new("/run/netns").join(&name).exists());
        assert!(
            Path::new("/run/netns").join(mine.name()).exists(),
            "a live run's namespace was swept"
        );
        assert_eq!(crate::netns::owner_pid("tdm-12-3-alpha"), Some(12));
        assert_eq!(crate::netns::owner_pid("other-12-3"), None);
    }
}
