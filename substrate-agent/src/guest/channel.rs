//! The command channel: a virtio-serial port (`vnet.cmd`) whose host side is a unix socket in the
//! guest's run directory, served in the guest by `deploy/guest/rootfs/etc/vnet/cmd-server`.
//!
//! Requests are single lines; answers are a header line followed, for `RESULT`, by exactly the
//! announced number of raw bytes (binary-safe):
//!
//! ```text
//! HELLO ID                        -> HELLO ID BOOT_ID UPTIME_SECONDS
//! EXEC ID TIMEOUT_S A1 A2 ...     -> RESULT ID EXIT_CODE STDOUT_LEN STDERR_LEN \n <stdout><stderr>
//! ```
//!
//! Each argument travels as `a` followed by its bytes in hex (so empty arguments survive word
//! splitting; the guest decodes with busybox `xxd -r -p`). Ids are echoed; frames of other ids
//! (answers to requests a previous client gave up on) are skipped. While the guest has not opened
//! its port, QEMU holds the request in the socket, so every exchange starts with a `HELLO` and
//! waits for its own answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::ExecOutput;

/// Most output bytes (stdout and stderr together) an answer may announce. The guest is the
/// tenant's machine: a larger announcement is refused before anything is allocated for it.
pub const MAX_OUTPUT: usize = 16 << 20;

/// Errors of one exchange, mapped to `GuestError` by the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Connecting or I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The deadline passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The guest answered something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request cannot be encoded.
    #[error("{0}")]
    BadRequest(String),
}

/// The guest's answer to `HELLO`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// `/proc/sys/kernel/random/boot_id` of the guest: changes on every boot.
    pub boot_id: String,
    /// Seconds since the guest booted.
    pub uptime_s: f64,
}

/// A parsed answer header.
#[derive(Clone, Debug, PartialEq)]
pub enum Header {
    /// `HELLO ID BOOT_ID UPTIME`.
    Hello {
        /// Request id.
        id: u64,
        /// The answer.
        hello: Hello,
    },
    /// `RESULT ID CODE OUT_LEN ERR_LEN`.
    Result {
        /// Request id.
        id: u64,
        /// Exit code.
        code: i32,
        /// Bytes of stdout that follow.
        out_len: usize,
        /// Bytes of stderr after those.
        err_len: usize,
    },
    /// `ERROR ID MESSAGE`.
    Error {
        /// Request id.
        id: u64,
        /// The guest's message.
        message: String,
    },
}

/// Encodes a `HELLO` request. Pure.
pub fn encode_hello(id: u64) -> Vec<u8> {
    format!("HELLO {id}\n").into_bytes()
}

/// Encodes an `EXEC` request. Pure. The guest kills the command after `timeout_s` seconds.
pub fn encode_exec(id: u64, timeout_s: u64, argv: &[String]) -> Result<Vec<u8>, ChannelError> {
    if argv.is_empty() {
        return Err(ChannelError::BadRequest("empty command".into()));
    }
    if let Some(a) = argv.iter().find(|a| a.contains('\0')) {
        return Err(ChannelError::BadRequest(format!(
            "argument {a:?} contains a NUL byte"
        )));
    }
    let mut line = format!("EXEC {id} {}", timeout_s.max(1));
    for a in argv {
        line.push_str(" a");
        for b in a.bytes() {
            line.push_str(&format!("{b:02x}"));
        }
    }
    line.push('\n');
    Ok(line.into_bytes())
}

/// Parses an answer header line (without its newline). Pure.
pub fn parse_header(line: &str) -> Result<Header, ChannelError> {
    let bad = || ChannelError::Protocol(format!("unexpected line {line:?}"));
    let mut w = line.split_whitespace();
    let verb = w.next().ok_or_else(bad)?;
    let id: u64 = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    match verb {
        "HELLO" => {
            let boot_id = w.next().ok_or_else(bad)?.to_string();
            let uptime_s = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            Ok(Header::Hello {
                id,
                hello: Hello { boot_id, uptime_s },
            })
        }
        "RESULT" => {
            let mut num = || w.next().and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad);
            let code = num()?;
            let out_len = num()?;
            let err_len = num()?;
            if out_len < 0 || err_len < 0 {
                return Err(bad());
            }
            if out_len.saturating_add(err_len) > MAX_OUTPUT as i64 {
                return Err(ChannelError::Protocol(format!(
                    "the guest announced {} bytes of output, more than the limit of {MAX_OUTPUT}",
                    out_len.saturating_add(err_len)
                )));
            }
            Ok(Header::Result {
                id,
                code: code as i32,
                out_len: out_len as usize,
                err_len: err_len as usize,
            })
        }
        "ERROR" => Ok(Header::Error {
            id,
            message: w.collect::<Vec<_>>().join(" "),
        }),
        _ => Err(bad()),
    }
}

/// One connection to a guest's command socket.
pub struct Channel {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Channel {
    /// Connects to the socket.
    pub fn connect(path: &Path) -> Result<Channel, ChannelError> {
        let stream = UnixStream::connect(path)?;
        let reader = BufReader::new(stream.try_clone()?);
        // Ids differ between connections so that answers to an earlier client are never taken
        // for ours.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Ok(Channel {
            stream,
            reader,
            next_id: (seed % 1_000_000_000) * 1000,
        })
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Reads one header line before `deadline`.
    fn read_header(&mut self, deadline: Instant, limit: Duration) -> Result<Header, ChannelError> {
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout(limit));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.reader.read_line(&mut line) {
                Ok(0) => {
                    return Err(ChannelError::Protocol(
                        "the guest closed the channel".into(),
                    ));
                }
                Ok(_) if line.ends_with('\n') => {
                    let l = line.trim_end().to_string();
                    if l.is_empty() {
                        line.clear();
                        continue;
                    }
                    return parse_header(&l);
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ChannelError::Timeout(limit));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn read_exact_before(
        &mut self,
        n: usize,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Vec<u8>, ChannelError> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout(limit));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(ChannelError::Protocol(format!(
                        "the guest closed the channel after {got} of {n} bytes"
                    )));
                }
                Ok(k) => got += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ChannelError::Timeout(limit));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(buf)
    }

    /// Sends `HELLO` and waits for its answer, skipping stale frames.
    pub fn hello(&mut self, timeout: Duration) -> Result<Hello, ChannelError> {
        let deadline = Instant::now() + timeout;
        let id = self.id();
        self.stream.write_all(&encode_hello(id))?;
        loop {
            match self.read_header(deadline, timeout)? {
                Header::Hello { id: got, hello } if got == id => return Ok(hello),
                Header::Result {
                    out_len, err_len, ..
                } => {
                    self.read_exact_before(out_len + err_len, deadline, timeout)?;
                }
                _ => {}
            }
        }
    }

    /// Runs `argv`; the guest kills it after `timeout` (rounded up to whole seconds), and this
    /// side gives up two seconds later.
    pub fn exec(&mut self, argv: &[String], timeout: Duration) -> Result<ExecOutput, ChannelError> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let id = self.id();
        let req = encode_exec(id, secs, argv)?;
        let limit = Duration::from_secs(secs.max(1) + 2);
        let deadline = Instant::now() + limit;
        self.stream.write_all(&req)?;
        loop {
            match self.read_header(deadline, limit)? {
                Header::Result {
                    id: got,
                    code,
                    out_len,
                    err_len,
                } => {
                    let body = self.read_exact_before(out_len + err_len, deadline, limit)?;
                    if got == id {
                        let (o, e) = body.split_at(out_len);
                        return Ok(ExecOutput {
                            exit_code: code,
                            stdout: o.to_vec(),
                            stderr: e.to_vec(),
                        });
                    }
                }
                Header::Error { id: got, message } if got == id => {
                    return Err(ChannelError::Protocol(message));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_encoding_survives_empty_and_binaryish_arguments() {
        let req = encode_exec(7, 10, &["sh".into(), "".into(), "a b\n".into()]).unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "EXEC 7 10 a7368 a a6120620a\n"
        );
        assert!(encode_exec(1, 1, &[]).is_err());
        assert!(encode_exec(1, 1, &["a\0b".into()]).is_err());
        assert!(
            String::from_utf8(encode_exec(1, 0, &["x".into()]).unwrap())
                .unwrap()
                .starts_with("EXEC 1 1 ")
        );
    }

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_header("RESULT 9 3 19 4").unwrap(),
            Header::Result {
                id: 9,
                code: 3,
                out_len: 19,
                err_len: 4
            }
        );
        assert_eq!(
            parse_header("HELLO 2 e52f 7.78").unwrap(),
            Header::Hello {
                id: 2,
                hello: Hello {
                    boot_id: "e52f".into(),
                    uptime_s: 7.78
                }
            }
        );
        assert!(matches!(
            parse_header("ERROR 3 unknown request X").unwrap(),
            Header::Error { id: 3, .. }
        ));
        assert!(parse_header("RESULT 9 3 -1 4").is_err());
        let e = parse_header("RESULT 9 0 99999999999 0").unwrap_err();
        assert!(e.to_string().contains("more than the limit"), "{e}");
        assert!(parse_header("garbage").is_err());
    }

    /// A fake guest on a socketpair: a stale answer first, then the real ones.
    #[test]
    fn client_skips_stale_frames_and_splits_output() {
        let (host, guest) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut r = BufReader::new(guest.try_clone().unwrap());
            let mut g = guest;
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let id: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            g.write_all(b"RESULT 1 0 3 0\nold").unwrap();
            g.write_all(format!("HELLO {id} boot-1 3.5\n").as_bytes())
                .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            let id: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            g.write_all(format!("RESULT {id} 3 4 2\na\0b\nE\n").as_bytes())
                .unwrap();
        });
        let reader = BufReader::new(host.try_clone().unwrap());
        let mut ch = Channel {
            stream: host,
            reader,
            next_id: 100,
        };
        let h = ch.hello(Duration::from_secs(5)).unwrap();
        assert_eq!(h.boot_id, "boot-1");
        let out = ch.exec(&["true".into()], Duration::from_secs(5)).unwrap();
        assert_eq!(
            out,
            ExecOutput {
                exit_code: 3,
                stdout: b"a\0b\n".to_vec(),
                stderr: b"E\n".to_vec()
            }
        );
        server.join().unwrap();
    }

    #[test]
    fn silence_times_out() {
        let (host, _guest) = UnixStream::pair().unwrap();
        let reader = BufReader::new(host.try_clone().unwrap());
        let mut ch = Channel {
            stream: host,
            reader,
            next_id: 1,
        };
        assert!(matches!(
            ch.hello(Duration::from_millis(100)),
            Err(ChannelError::Timeout(_))
        ));
    }
}
