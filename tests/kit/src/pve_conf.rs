//! `/etc/pve/lxc/<vmid>.conf` as PVE writes it for a container: `key: value` lines and
//! `net<N>:` property strings (pve-container `PVE::LXC::Config`, `parse_lxc_network`).

use std::fmt;

/// A MAC in Proxmox's `BC:24:11` range (the prefix `PVE::Tools::random_ether_addr` uses) whose
/// low three bytes are the low 24 bits of `n`.
pub fn pve_mac(n: u32) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// The address of [`PveConf::bridged`]`(vmid, _)`: `10.10.0.<vmid % 200 + 1>`.
pub fn bridged_ip(vmid: u32) -> String {
    format!("10.10.0.{}", vmid % 200 + 1)
}

/// One `net<N>:` line of a veth NIC: `name=eth<N>,bridge=B[,hwaddr=..][,ip=..][,tag=..]
/// [,trunks=..],type=veth[,flags]`.
#[derive(Clone, Debug)]
pub struct Nic {
    index: u8,
    props: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Nic {
    /// `net<index>` named `eth<index>` in the guest, on `bridge`.
    pub fn new(index: u8, bridge: &str) -> Nic {
        Nic {
            index,
            props: vec![
                ("name".into(), format!("eth{index}")),
                ("bridge".into(), bridge.into()),
            ],
            flags: Vec::new(),
        }
    }

    /// [`Nic::new`] with MAC [`pve_mac`]`(index << 16 | id)`: unique per NIC index and `id`.
    pub fn with_id(index: u8, bridge: &str, id: u16) -> Nic {
        Nic::new(index, bridge).hwaddr(&pve_mac(u32::from(index) << 16 | u32::from(id)))
    }

    /// Sets property `key` (replacing an earlier value).
    pub fn prop(mut self, key: &str, value: impl fmt::Display) -> Self {
        let value = value.to_string();
        match self.props.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = value,
            None => self.props.push((key.into(), value)),
        }
        self
    }

    /// `hwaddr=`.
    pub fn hwaddr(self, mac: &str) -> Self {
        self.prop("hwaddr", mac)
    }

    /// `ip=` (a CIDR).
    pub fn ip(self, cidr: &str) -> Self {
        self.prop("ip", cidr)
    }

    /// `tag=` (the access VLAN).
    pub fn tag(self, tag: u16) -> Self {
        self.prop("tag", tag)
    }

    /// `trunks=` (PVE's `;`-separated list, e.g. `20;30`).
    pub fn trunks(self, trunks: &str) -> Self {
        self.prop("trunks", trunks)
    }

    /// Properties written after `type=veth`, as given (e.g. `firewall=1`, `link_down=1`,
    /// `mtu=9000`).
    pub fn flag(mut self, flag: &str) -> Self {
        self.flags.push(flag.into());
        self
    }
}

impl fmt::Display for Nic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net{}: ", self.index)?;
        for (k, v) in &self.props {
            write!(f, "{k}={v},")?;
        }
        write!(f, "type=veth")?;
        for fl in &self.flags {
            write!(f, ",{fl}")?;
        }
        writeln!(f)
    }
}

/// A container's PVE conf: `arch: amd64`, an optional `hookscript:`, `hostname: ct<vmid>`,
/// `memory: 128`, the NICs, then extra lines. [`PveConf::op_hook`] gives one with op-agent's
/// hookscript attached.
#[derive(Clone, Debug)]
pub struct PveConf {
    vmid: u32,
    arch: bool,
    hookscript: Option<String>,
    memory: bool,
    nics: Vec<Nic>,
    lines: Vec<String>,
}

impl PveConf {
    /// No hookscript, no NIC.
    pub fn new(vmid: u32) -> PveConf {
        PveConf {
            vmid,
            arch: true,
            hookscript: None,
            memory: true,
            nics: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// With `hookscript: local:snippets/op-hook` (what `op-agent enroll` sets).
    pub fn op_hook(vmid: u32) -> PveConf {
        PveConf::new(vmid).hookscript("local:snippets/op-hook")
    }

    /// The container most tests use: op-hook attached, `net0` on `ovsbr0` with VLAN `tag`,
    /// MAC [`pve_mac`]`(vmid)` and address [`bridged_ip`]`(vmid)/24`.
    pub fn bridged(vmid: u32, tag: u16) -> PveConf {
        PveConf::op_hook(vmid).nic(
            Nic::new(0, "ovsbr0")
                .hwaddr(&pve_mac(vmid))
                .ip(&format!("{}/24", bridged_ip(vmid)))
                .tag(tag),
        )
    }

    /// `hookscript: VOLID`.
    pub fn hookscript(mut self, volid: &str) -> Self {
        self.hookscript = Some(volid.into());
        self
    }

    /// Leaves out `arch:` and `memory:` (PVE's defaults apply).
    pub fn minimal(mut self) -> Self {
        self.arch = false;
        self.memory = false;
        self
    }

    /// One more NIC.
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// Several NICs.
    pub fn nics(mut self, nics: impl IntoIterator<Item = Nic>) -> Self {
        self.nics.extend(nics);
        self
    }

    /// One more `key: value` line after the NICs (e.g. `ostype: unmanaged`).
    pub fn line(mut self, line: &str) -> Self {
        self.lines.push(line.trim_end_matches('\n').into());
        self
    }
}

impl fmt::Display for PveConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.arch {
            writeln!(f, "arch: amd64")?;
        }
        if let Some(h) = &self.hookscript {
            writeln!(f, "hookscript: {h}")?;
        }
        writeln!(f, "hostname: ct{}", self.vmid)?;
        if self.memory {
            writeln!(f, "memory: 128")?;
        }
        for n in &self.nics {
            write!(f, "{n}")?;
        }
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}
