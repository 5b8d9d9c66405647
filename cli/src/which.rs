//! Finding programs: next to the running vnctl (a cargo build puts every binary of the
//! workspace in one directory), else on PATH.

use std::path::{Path, PathBuf};

/// The first executable file called `name` in the directories of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// `name` in the directory of the running executable, else on PATH.
pub fn beside_self_or_path(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| is_executable(p))
        .or_else(|| on_path(name))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(on_path("sh").is_some());
        assert!(on_path("surely-no-such-program-vnet").is_none());
    }
}
