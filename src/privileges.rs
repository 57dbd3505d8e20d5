//! Dropping root once the listeners are bound: become an unprivileged user, optionally chroot,
//! and keep only the capabilities the interception mode needs at run time.

use crate::config::Privileges;
use nix::unistd::{Gid, Group, Uid, User};
use thiserror::Error;

/// Capabilities ftpgate may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// TPROXY data listeners are transparent sockets.
    NetAdmin,
    /// Binding ports below 1024 after start-up.
    NetBindService,
}

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("privileges.user `{0}` does not exist")]
    NoUser(String),
    #[error("privileges.group `{0}` does not exist")]
    NoGroup(String),
    #[error("privileges.user is set but ftpgate was not started as root")]
    NotRoot,
    #[error("cannot {what}: {err}")]
    Sys { what: &'static str, err: String },
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> PrivilegeError {
    move |e| PrivilegeError::Sys { what, err: e.to_string() }
}

/// What the process is after the drop, for the start-up log.
#[derive(Debug)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    pub kept: Vec<Keep>,
}

/// Drops to `p.user` (and `p.group`, else the user's primary group), chroots to `p.chroot`,
/// and keeps exactly `keep`. Without `p.user` nothing changes.
pub fn drop_privileges(p: &Privileges, keep: &[Keep]) -> Result<Option<Dropped>, PrivilegeError> {
    let Some(name) = &p.user else { return Ok(None) };
    let user =
        User::from_name(name).map_err(sys("look up the user"))?.ok_or_else(|| PrivilegeError::NoUser(name.clone()))?;
    let gid = match &p.group {
        Some(g) => {
            Group::from_name(g)
                .map_err(sys("look up the group"))?
                .ok_or_else(|| PrivilegeError::NoGroup(g.clone()))?
                .gid
        }
        None => user.gid,
    };
    if !Uid::effective().is_root() {
        return Err(PrivilegeError::NotRoot);
    }
    platform::before_setuid(keep)?;
    if let Some(dir) = &p.chroot {
        nix::unistd::chroot(dir).map_err(sys("chroot"))?;
        nix::unistd::chdir("/").map_err(sys("chdir to the new root"))?;
    }
    set_ids(user.uid, gid)?;
    platform::after_setuid(keep)?;
    Ok(Some(Dropped { uid: user.uid.as_raw(), gid: gid.as_raw(), kept: keep.to_vec() }))
}

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
fn set_ids(uid: Uid, gid: Gid) -> Result<(), PrivilegeError> {
    nix::unistd::setgroups(&[gid]).map_err(sys("set supplementary groups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("set the group id"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("set the user id"))?;
    Ok(())
}

#[cfg(target_os = "linux")]
mod platform {
    use super::{Keep, PrivilegeError};
    use caps::{CapSet, Capability, CapsHashSet};

    fn wanted(keep: &[Keep]) -> CapsHashSet {
        keep.iter()
            .map(|k| match k {
                Keep::NetAdmin => Capability::CAP_NET_ADMIN,
                Keep::NetBindService => Capability::CAP_NET_BIND_SERVICE,
            })
            .collect()
    }

    fn err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
        move |e| PrivilegeError::Sys { what, err: e.to_string() }
    }

    /// While still root: shrink the bounding set for good and keep capabilities across setuid.
    pub fn before_setuid(keep: &[Keep]) -> Result<(), PrivilegeError> {
        let wanted = wanted(keep);
        for cap in caps::all() {
            if !wanted.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err("drop a capability from the bounding set"))?;
            }
        }
        nix::sys::prctl::set_keepcaps(true)
            .map_err(|e| PrivilegeError::Sys { what: "keep capabilities", err: e.to_string() })
    }

    /// After setuid: exactly the wanted capabilities, effective and permitted; nothing inherited.
    pub fn after_setuid(keep: &[Keep]) -> Result<(), PrivilegeError> {
        let wanted = wanted(keep);
        caps::set(None, CapSet::Effective, &wanted).map_err(err("set effective capabilities"))?;
        caps::set(None, CapSet::Permitted, &wanted).map_err(err("set permitted capabilities"))?;
        caps::clear(None, CapSet::Inheritable).map_err(err("clear inheritable capabilities"))?;
        caps::clear(None, CapSet::Ambient).map_err(err("clear ambient capabilities"))?;
        nix::sys::prctl::set_keepcaps(false)
            .map_err(|e| PrivilegeError::Sys { what: "reset keepcaps", err: e.to_string() })?;
        let now = caps::read(None, CapSet::Effective).map_err(err("read capabilities back"))?;
        if now != wanted {
            return Err(PrivilegeError::Sys { what: "verify capabilities", err: format!("holding {now:?}") });
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::{Keep, PrivilegeError};

    /// The BSDs have no capabilities to keep: what needs privilege (the pf device, privileged
    /// ports) is opened before the drop.
    pub fn before_setuid(_keep: &[Keep]) -> Result<(), PrivilegeError> {
        Ok(())
    }

    pub fn after_setuid(_keep: &[Keep]) -> Result<(), PrivilegeError> {
        Ok(())
    }
}
