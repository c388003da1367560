//! `-o metadata`: the fence-agents metadata XML, as fencing.py prints it, so
//! Pacemaker (`stonith_admin --metadata`) and pcs can read it.

use crate::options::{Opt, OPTIONS};
use quick_xml::escape::escape;
use std::fmt::Write as _;

pub const ACTIONS: &[&str] = &[
    "on",
    "off",
    "reboot",
    "status",
    "list",
    "list-status",
    "monitor",
    "metadata",
    "validate-all",
];

fn content_type(o: &Opt) -> &'static str {
    match o.value {
        None => "boolean",
        Some("seconds") => "second",
        Some("port" | "attempts" | "level") => "integer",
        Some(_) => "string",
    }
}

fn getopt(o: &Opt) -> String {
    let mut s = String::new();
    if let Some(c) = o.short {
        let _ = write!(s, "-{c}, ");
    }
    let _ = write!(s, "--{}", o.long);
    if let Some(v) = o.value {
        let _ = write!(s, "=[{v}]");
    }
    s
}

/// One `<parameter>`: the option under `name` (its own or an alias), with
/// `extra` attributes (`deprecated`, `obsoletes`).
fn parameter(out: &mut String, o: &Opt, name: &str, required: bool, extra: &str) {
    let _ = writeln!(
        out,
        "\t<parameter name=\"{name}\" unique=\"0\" required=\"{}\"{extra}>",
        u8::from(required)
    );
    let _ = writeln!(out, "\t\t<getopt mixed=\"{}\" />", escape(getopt(o)));
    let default = o
        .default
        .map(|d| format!(" default=\"{}\"", escape(d)))
        .unwrap_or_default();
    let _ = writeln!(out, "\t\t<content type=\"{}\"{default} />", content_type(o));
    let _ = writeln!(out, "\t\t<shortdesc lang=\"en\">{}</shortdesc>", escape(o.desc));
    out.push_str("\t</parameter>\n");
}

pub fn metadata(program: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\" ?>\n");
    let _ = writeln!(
        out,
        "<resource-agent name=\"{}\" shortdesc=\"Fence agent for XenServer / XCP-ng VMs over the XenAPI\" >",
        escape(program)
    );
    out.push_str(
        "<longdesc>Fences a virtual machine of a XenServer or XCP-ng pool through the XenAPI (XML-RPC over \
         HTTPS): off is a hard shutdown confirmed by reading the power state back, on starts the VM (not \
         paused), reboot is off and on, each confirmed. It logs in to any pool member and follows \
         HOST_IS_SLAVE to the master, logs in again once on SESSION_INVALID, and always logs out. The VM \
         is named by UUID or by a name label exactly one VM has; templates and control domains are \
         refused. Part of tandem.</longdesc>\n",
    );
    out.push_str("<vendor-url>https://xcp-ng.org</vendor-url>\n<parameters>\n");
    for o in OPTIONS {
        for alias in o.aliases {
            parameter(&mut out, o, alias, false, " deprecated=\"1\"");
        }
        let obsoletes = o
            .aliases
            .first()
            .map(|a| format!(" obsoletes=\"{a}\""))
            .unwrap_or_default();
        parameter(&mut out, o, o.name, o.required, &obsoletes);
    }
    out.push_str("</parameters>\n<actions>\n");
    for a in ACTIONS {
        if *a == "on" {
            out.push_str("\t<action name=\"on\" automatic=\"0\"/>\n");
        } else {
            let _ = writeln!(out, "\t<action name=\"{a}\" />");
        }
    }
    out.push_str("</actions>\n</resource-agent>\n");
    out
}
