//! A minimal QMP client (QEMU Machine Protocol, JSON lines on the guest's `qmp.sock`): enough to
//! ask whether a guest runs (`query-status`) and to end it (`quit`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Errors of a QMP exchange.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Socket I/O failed or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// QEMU answered with an error or something unexpected.
    #[error("{0}")]
    Protocol(String),
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut q = Qmp { stream, reader };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("no QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Protocol("QEMU closed the QMP socket".into()));
        }
        serde_json::from_str(&line)
            .map_err(|e| QmpError::Protocol(format!("bad QMP line {line:?}: {e}")))
    }

    /// Runs a command without arguments and returns its `return` value (events are skipped).
    pub fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut req = json!({ "execute": command }).to_string();
        req.push('\n');
        self.stream.write_all(req.as_bytes())?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Protocol(format!("{command}: {e}")));
            }
        }
    }

    /// `query-status`: QEMU's run state (`running`, `paused`, `shutdown`, `guest-panicked`...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status")?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol(format!("query-status without status: {r}")))
    }

    /// `quit`: QEMU exits at once.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.execute("quit").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn negotiates_skips_events_and_reads_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            assert!(l.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").unwrap();
            l.clear();
            r.read_line(&mut l).unwrap();
            assert!(l.contains("query-status"));
            w.write_all(b"{\"event\": \"NIC_RX_FILTER_CHANGED\"}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n").unwrap();
            l.clear();
            r.read_line(&mut l).unwrap();
            w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n")
                .unwrap();
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.status().unwrap(), "running");
        let e = q.execute("bogus").unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("nope"), "{e}");
        server.join().unwrap();
    }
}
