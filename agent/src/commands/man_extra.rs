//! The sections of op-agent's man pages that clap does not know (roff): EXIT STATUS,
//! ENVIRONMENT, FILES, EXAMPLES and SEE ALSO of `op-agent(8)`, SEE ALSO of each subcommand's
//! page, and `op-agent.toml(5)`, which shows both TOML files as the package ships them
//! (config/agent.toml, config/container.toml). Every page named under SEE ALSO is shipped by
//! this package or by a package it depends on or runs on (pve-container, openvswitch-common).

use crate::exit::ExitCode;

/// `audit`'s status for input it cannot read ([`super::audit::EXIT_UNREADABLE`]).
const EXIT_AUDIT_UNREADABLE: i32 = super::audit::EXIT_UNREADABLE;

/// `op-agent.toml(5)`'s name.
pub const TOML_PAGE: &str = "op-agent.toml.5";

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a request.
fn roff_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn item(tag: &str, text: &str) -> String {
    format!(".TP\n{tag}\n{}\n", roff_text(text))
}

/// EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES and SEE ALSO of `op-agent(8)`; `subcommands` are
/// the names of the shipped subcommand pages (`op-agent-enroll`, ...).
pub fn main_sections(subcommands: &[String]) -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in [
        (ExitCode::Ok.code(), "Success, or nothing to do (a guest op-agent does not manage, a phase it does not act on)."),
        (ExitCode::Failed.code(), "A step failed (netlink or OVSDB refused an operation); check found drift or a refusal the next pre-start would make; audit verify found tampering."),
        (EXIT_AUDIT_UNREADABLE, "audit: the database or an export exists but cannot be read."),
        (ExitCode::Usage.code(), "Malformed vmid, phase, date or command line (EX_USAGE)."),
        (ExitCode::Unavailable.code(), "ovsdb-server unreachable, a bridge missing, the mesh interface down, pct missing (EX_UNAVAILABLE)."),
        (ExitCode::Internal.code(), "Internal error, including a caught panic (EX_SOFTWARE)."),
        (ExitCode::HandBack.code(), "set or release: handing a NIC back to PVE failed part-way; pct was not run and the NICs are back on op-agent's plumbing with the PVE conf's values (EX_OSERR)."),
        (ExitCode::AuditIo.code(), "The audit database could not be written (EX_IOERR)."),
        (ExitCode::Timeout.code(), "A deadline, an ovs-vswitchd wait or a lock timed out (EX_TEMPFAIL)."),
        (ExitCode::Refused.code(), "Refused: a link or port op-agent did not make holds its name, firewall=1, a Linux bridge named in [[nic]], unsafe file permissions (EX_NOPERM)."),
        (ExitCode::Config.code(), "agent.toml, a container TOML or the PVE conf is invalid (EX_CONFIG)."),
    ] {
        s.push_str(&item(&format!("\\fB{code}\\fR"), what));
    }
    s.push_str(&item(
        "\\fB2\\fR",
        "audit: the database or an export exists but cannot be read.",
    ));
    s.push_str(".SH ENVIRONMENT\n");
    s.push_str(&item(
        "\\fBOP_AGENT_CONFIG\\fR",
        "agent.toml to use when --config is not given (default /etc/op-agent/agent.toml).",
    ));
    s.push_str(&item(
        "\\fBOP_AGENT_SYSLOG_SOCKET\\fR",
        "The syslog socket log lines go to (default: the first of /dev/log, /var/run/syslog, /var/run/log that exists).",
    ));
    s.push_str(&item("\\fBTZ\\fR", "The time zone audit log shows times in and reads --since/--until in (default: the host's, /etc/localtime)."));
    s.push_str(&item("\\fBCOLUMNS\\fR", "Width --help wraps to."));
    s.push_str(&item(
        "\\fBOP_AGENT_COMPLETION_LXC\\fR",
        "The folder of container confs bash completion reads vmids from (default /etc/pve/lxc).",
    ));
    s.push_str(".SH FILES\n");
    for (f, what) in [
        ("/etc/op-agent/agent.toml", "The agent configuration, see op-agent.toml(5)."),
        ("/etc/op-agent/containers/<vmid>.toml", "The node-local configuration of a managed container, see op-agent.toml(5)."),
        ("/etc/pve/op-agent/containers/<vmid>.toml", "The cluster-wide one (replicated by pmxcfs); it wins over the node-local file."),
        ("/etc/pve/lxc/<vmid>.conf", "Proxmox VE's container configuration: bridge, tag, trunks, firewall and hookscript of each netN."),
        ("/var/lib/vz/snippets/op-hook", "The hookscript (local:snippets/op-hook) Proxmox VE runs for every phase."),
        ("/var/lib/op-agent/audit.db", "The hash-chained audit log (SQLite, WAL)."),
        ("/var/lib/op-agent/audit.key", "The key of keyed audit checkpoints (made by audit init-key), with its lock audit.key.lock."),
        ("/etc/pve/op-agent/heads/<node>.json", "Each cluster node's published audit chain head, witnessed by the other nodes' watch services ([witness] in agent.toml)."),
        ("/run/op-agent/<vmid>.lock", "The per-container lock hooks, apply, gc and watch take."),
        ("/run/openvswitch/db.sock", "ovsdb-server's socket (agent.toml [ovsdb] socket)."),
    ] {
        s.push_str(&item(&format!("\\fI{f}\\fR"), what));
    }
    s.push_str(".SH EXAMPLES\n");
    for (what, cmd) in [
        ("Manage container 100 (its NICs as PVE configures them), then start it:", "op-agent enroll 100\npct start 100"),
        ("Every container of this node, printing the plan first:", "op-agent enroll \\-\\-all \\-\\-dry\\-run\nop-agent enroll \\-\\-all"),
        ("A container with a NIC on PVE's firewall:", "op-agent enroll 101 \\-\\-on\\-firewall skip"),
        ("What the next start of each managed container would refuse, and live drift:", "op-agent check \\-\\-all"),
        ("The table, or JSON for scripts:", "op-agent status\nop-agent status \\-\\-output\\-format json\\-pretty"),
        ("The failed steps of today, and the last 20 rows of container 100:", "op-agent audit log \\-\\-since $(date +%F) \\-\\-outcome failed\nop-agent audit log \\-\\-vmid 100 \\-n 20"),
        ("Check the audit chain against the initial key kept off the host:", "op-agent audit verify \\-\\-key\\-file /root/op-agent-initial.key"),
    ] {
        s.push_str(&format!(".PP\n{}\n.PP\n.RS 4\n.nf\n{cmd}\n.fi\n.RE\n", roff_text(what)));
    }
    s.push_str(".SH \"SEE ALSO\"\n");
    let mut see: Vec<String> = vec!["\\fBop-agent.toml\\fR(5)".into()];
    see.extend(
        subcommands
            .iter()
            .map(|p| format!("\\fB{}\\fR(8)", p.replace('-', "\\-"))),
    );
    see.extend([
        "\\fBpct\\fR(1)".to_string(),
        "\\fBovs\\-vsctl\\fR(8)".to_string(),
    ]);
    s.push_str(&see.join(",\n"));
    s.push('\n');
    s
}

/// SEE ALSO of a subcommand's page.
pub fn sub_sections() -> String {
    ".SH \"SEE ALSO\"\n\\fBop\\-agent\\fR(8), \\fBop\\-agent.toml\\fR(5)\n".to_string()
}

/// `op-agent.toml(5)`: `version` goes into the title line.
pub fn toml_page(version: &str) -> String {
    let block = |text: &str| format!(".PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n", roff_text(text));
    format!(
        ".TH OP-AGENT.TOML 5 \"\" \"op-agent {version}\" \"op-agent\"\n\
         .SH NAME\nop-agent.toml \\- configuration of op-agent: agent.toml and containers/<vmid>.toml\n\
         .SH DESCRIPTION\n\
         Both files are TOML. Every key is optional; a missing file means every default. Unknown \
         keys and wrong types are errors naming the file, line and key. Files not owned by root or \
         writable by group or others are refused (exit 77): op-agent runs as root.\n\
         .PP\n\\fI/etc/op-agent/agent.toml\\fR (or \\-\\-config, or $OP_AGENT_CONFIG) configures the \
         agent. A container is managed when \\fI/etc/op-agent/containers/<vmid>.toml\\fR or the \
         cluster-wide \\fI/etc/pve/op-agent/containers/<vmid>.toml\\fR (which wins) exists and \
         its PVE conf has hookscript: local:snippets/op-hook; \\fBop\\-agent enroll\\fR writes both. \
         \\fBop\\-agent config check\\fR validates every file and says which one wins.\n\
         .SH AGENT.TOML\nThe file as shipped, every key at its default:\n{}\
         .SH \"CONTAINER TOML\"\n\
         The shipped example (/etc/op-agent/containers/vmid.toml.example):\n{}\
         .SH \"SEE ALSO\"\n\\fBop\\-agent\\fR(8), \\fBop\\-agent\\-config\\-check\\fR(8), \\fBop\\-agent\\-enroll\\fR(8)\n",
        block(include_str!("../../../config/agent.toml")),
        block(include_str!("../../../config/container.toml")),
    )
}
