//! The `privileges` section: who ftpgate becomes after binding its sockets.

use super::raw::RawPrivileges;
use super::{invalid, ConfigError};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Privileges {
    pub user: Option<String>,
    pub group: Option<String>,
    pub chroot: Option<PathBuf>,
}

pub(super) fn privileges(raw: &RawPrivileges) -> Result<Privileges, ConfigError> {
    if raw.group.is_some() && raw.user.is_none() {
        return Err(invalid("privileges.group", "needs privileges.user"));
    }
    if let Some(c) = &raw.chroot {
        if !c.starts_with('/') {
            return Err(invalid("privileges.chroot", format!("`{c}` is not an absolute path")));
        }
    }
    Ok(Privileges { user: raw.user.clone(), group: raw.group.clone(), chroot: raw.chroot.as_ref().map(Into::into) })
}
