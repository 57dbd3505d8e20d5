//! Dropping root once the listeners are bound: become an unprivileged user, optionally chroot,
//! and keep only the capabilities the interception mode needs at run time.
//!
//! What the process reads after the drop (the configuration, at each SIGHUP) it reads as that
//! user and inside the chroot: [`drop_privileges`] tries each such file with that identity, at
//! the place the drop will leave it, so start-up can say which will not be readable.

use crate::config::Privileges;
use nix::unistd::{Gid, Group, Uid, User};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
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
    /// The files to read after the drop that the new identity cannot read, each with why.
    pub unreadable: Vec<(PathBuf, io::Error)>,
}

/// The path by which the process reaches `path` (as named before the drop) once `p` has been
/// applied. Relative paths are made absolute first, as a chroot changes the working directory.
/// Inside a chroot, a file under the new root is reached by its path inside it; any other path
/// is looked up inside the new root as it is (where a copy or a bind mount may put it).
pub fn path_after_drop(p: &Privileges, path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (Some(_), Some(root)) = (&p.user, &p.chroot) else { return absolute };
    // Symbolic links resolved on both sides (a chroot under /var when /var is a link, say); the
    // file's own name is kept, so a link swapped by configuration management is followed anew.
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
    let resolved = match (absolute.parent().map(std::fs::canonicalize), absolute.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => absolute.clone(),
    };
    match resolved.strip_prefix(&root) {
        Ok(inside) => Path::new("/").join(inside),
        Err(_) => absolute,
    }
}

/// Whether the process, as `uid`/`gid` with no other group, can read `path`: opened and read,
/// so that modes, ACLs and mount options all count. Runs while still root, and returns to root.
fn readable_as(uid: Uid, gid: Gid, path: &Path) -> Result<io::Result<()>, PrivilegeError> {
    nix::unistd::setgroups(&[gid]).map_err(sys("set supplementary groups"))?;
    nix::unistd::setegid(gid).map_err(sys("set the effective group id"))?;
    nix::unistd::seteuid(uid).map_err(sys("set the effective user id"))?;
    let tried = std::fs::File::open(path).and_then(|mut f| f.read(&mut [0; 1])).map(drop);
    nix::unistd::seteuid(Uid::from_raw(0)).map_err(sys("return to the root user id"))?;
    nix::unistd::setegid(Gid::from_raw(0)).map_err(sys("return to the root group id"))?;
    Ok(tried)
}

/// Drops to `p.user` (and `p.group`, else the user's primary group), chroots to `p.chroot`,
/// and keeps exactly `keep`. Without `p.user` nothing changes. Each of `must_read` (paths as
/// [`path_after_drop`] gives them) is tried as the new identity inside the new root; those it
/// cannot read are in [`Dropped::unreadable`].
pub fn drop_privileges(
    p: &Privileges,
    keep: &[Keep],
    must_read: &[PathBuf],
) -> Result<Option<Dropped>, PrivilegeError> {
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
    let mut unreadable = Vec::new();
    for path in must_read {
        if let Err(e) = readable_as(user.uid, gid, path)? {
            unreadable.push((path.clone(), e));
        }
    }
    set_ids(user.uid, gid)?;
    platform::after_setuid(keep)?;
    Ok(Some(Dropped { uid: user.uid.as_raw(), gid: gid.as_raw(), kept: keep.to_vec(), unreadable }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn privileges(user: Option<&str>, chroot: Option<&Path>) -> Privileges {
        Privileges { user: user.map(Into::into), group: None, chroot: chroot.map(Path::to_path_buf) }
    }

    #[test]
    fn the_config_path_after_the_drop() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        let inside = root.join("etc/ftpgate.yaml");
        // No chroot: the same file, made absolute against the working directory.
        assert_eq!(path_after_drop(&privileges(Some("nobody"), None), &inside), inside);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(path_after_drop(&privileges(None, None), Path::new("f.yaml")), cwd.join("f.yaml"));
        // Under the new root: by its path inside it, also through a link to the root.
        let chrooted = privileges(Some("nobody"), Some(&root));
        assert_eq!(path_after_drop(&chrooted, &inside), Path::new("/etc/ftpgate.yaml"));
        let link = root.parent().unwrap().join(format!("{}-link", root.file_name().unwrap().to_string_lossy()));
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert_eq!(path_after_drop(&privileges(Some("nobody"), Some(&link)), &inside), Path::new("/etc/ftpgate.yaml"));
        assert_eq!(path_after_drop(&chrooted, &link.join("etc/ftpgate.yaml")), Path::new("/etc/ftpgate.yaml"));
        std::fs::remove_file(&link).unwrap();
        // Elsewhere: looked up inside the new root as it is.
        assert_eq!(
            path_after_drop(&chrooted, Path::new("/etc/ftpgate/ftpgate.yaml")),
            Path::new("/etc/ftpgate/ftpgate.yaml")
        );
        // Without a user there is no drop, and no chroot either.
        assert_eq!(path_after_drop(&privileges(None, Some(&root)), &inside), inside);
    }
}
