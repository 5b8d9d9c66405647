//! Exit codes and the one-line error report of vnctl.
//!
//! - 0: success;
//! - 1: any error (printed as one line: the error and its causes);
//! - 2: the controller could not be reached ([`crate::client::Unreachable`]);
//! - `vnctl exec`: the exit code of the remote command ([`Exited`]).

use std::process::ExitCode;

/// A command finished with a non-zero status that is not an error of vnctl itself (the remote
/// command of `vnctl exec`). Nothing is printed for it.
#[derive(Debug, thiserror::Error)]
#[error("exited with status {0}")]
pub struct Exited(pub i32);

/// The process exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(Exited(code)) = e.downcast_ref::<Exited>() {
        return u8::try_from(*code).ok().filter(|c| *c != 0).unwrap_or(1);
    }
    if e.downcast_ref::<crate::client::Unreachable>().is_some() {
        return 2;
    }
    1
}

/// The whole chain on one line: `error: what failed: why: deeper cause`.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        // Some errors repeat their source in their own message; print it once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Prints `e` on stderr (unless it is a silent [`Exited`]) and returns the exit code.
pub fn report(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Exited>().is_none() {
        eprintln!("error: {}", one_line(e));
    }
    ExitCode::from(exit_code(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&anyhow::anyhow!("x")), 1);
        assert_eq!(exit_code(&Exited(3).into()), 3);
        assert_eq!(exit_code(&Exited(256).into()), 1);
        assert_eq!(exit_code(&Exited(-1).into()), 1);
        let u = crate::client::Unreachable {
            addr: "http://x".into(),
            reason: "refused".into(),
        };
        let e = anyhow::Error::from(u).context("listing vns");
        assert_eq!(exit_code(&e), 2);
    }

    #[test]
    fn chain_is_one_line_without_repeats() {
        let io = std::io::Error::other("disk on fire");
        let e = Err::<(), _>(io)
            .context("writing state")
            .context("testbed up")
            .unwrap_err();
        assert_eq!(one_line(&e), "testbed up: writing state: disk on fire");
    }
}
