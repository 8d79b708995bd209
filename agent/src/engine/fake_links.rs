//! The fake's [`Links`]: netlink calls on the model's links, recorded, failing when asked.

use super::{nl_err, Fake, FakeLink, Op};
use crate::config::MeshSection;
use crate::engine::host::Links;
use crate::mesh::MeshState;
use crate::netlink::{Link, NetlinkError};

impl Links for Fake {
    async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.0
            .borrow_mut()
            .calls
            .push(format!("link_by_name {name}"));
        Ok(self.link(name).map(|l| l.link()))
    }

    /// Not recorded in the calls (every post-start observe makes it).
    async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        Ok(self.0.borrow().links.iter().map(FakeLink::link).collect())
    }

    async fn delete(&self, link: &Link) -> Result<(), NetlinkError> {
        self.nl_enter(Op::DelLink, format!("delete {}", link.name), &link.name)
            .await?;
        let mut m = self.0.borrow_mut();
        let before = m.links.len();
        m.links.retain(|l| l.index != link.index);
        if m.links.len() == before {
            return Err(nl_err("delete", &link.name));
        }
        Ok(())
    }

    async fn set_down(&self, link: &Link) -> Result<(), NetlinkError> {
        self.nl_enter(Op::SetDown, format!("set_down {}", link.name), &link.name)
            .await?;
        self.with_link(link.index, |l| l.up = false)
            .ok_or_else(|| nl_err("down", &link.name))
    }

    async fn set_up(&self, link: &Link) -> Result<(), NetlinkError> {
        self.nl_enter(Op::SetUp, format!("set_up {}", link.name), &link.name)
            .await?;
        self.with_link(link.index, |l| l.up = true)
            .ok_or_else(|| nl_err("up", &link.name))
    }

    async fn peer_name(&self, _link: &Link) -> Option<String> {
        None
    }

    async fn clear_qdiscs(&self, link: &Link) -> Result<u8, NetlinkError> {
        self.with_link(link.index, |_| 0)
            .ok_or_else(|| nl_err("qdisc del", &link.name))
    }

    /// Records the call and sets the alias (the fake keeps no alternative names).
    async fn add_altname(
        &self,
        link: &Link,
        altname: &str,
        alias: &str,
    ) -> Result<(), NetlinkError> {
        self.0.borrow_mut().calls.push(format!(
            "add_altname {} {altname} alias={alias:?}",
            link.name
        ));
        self.with_link(link.index, |l| {
            l.alias = (!alias.is_empty()).then(|| alias.to_string())
        })
        .ok_or_else(|| nl_err("altname", &link.name))
    }

    async fn del_altname(&self, link: &Link, altname: &str) -> Result<(), NetlinkError> {
        let line = format!("del_altname {} {altname}", link.name);
        self.0.borrow_mut().calls.push(line);
        Ok(())
    }

    async fn rename(
        &self,
        link: &Link,
        new_name: &str,
        alias: &str,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let line = format!("rename {} -> {new_name} alias={alias:?} up={up}", link.name);
        self.nl_enter(Op::Rename, line, &link.name).await?;
        let label = format!("{} -> {new_name}", link.name);
        {
            let m = self.0.borrow();
            let cur = m.links.iter().find(|l| l.index == link.index);
            let Some(cur) = cur else {
                return Err(nl_err("rename", &label));
            };
            // ovs-issues#284: never rename a device ovs-vswitchd holds.
            if m.ports.contains_key(&cur.name) || m.releasing.contains_key(&cur.name) {
                return Err(nl_err("rename (held by ovs-vswitchd)", &label));
            }
            if m.links
                .iter()
                .any(|l| l.name == new_name && l.index != link.index)
            {
                return Err(nl_err("rename (EEXIST)", &label));
            }
        }
        self.with_link(link.index, |l| {
            l.name = new_name.to_string();
            l.alias = (!alias.is_empty()).then(|| alias.to_string());
            l.up |= up;
        })
        .ok_or_else(|| nl_err("rename", &label))
    }

    async fn confirm_mesh(&self, cfg: &MeshSection) -> Result<MeshState, String> {
        self.0.borrow_mut().calls.push("confirm_mesh".into());
        self.0
            .borrow()
            .mesh
            .clone()
            .ok_or_else(|| format!("mesh interface {} does not exist", cfg.interface))
    }
}
