//! Console sessions of guests, driven by the controller over the `Attach` stream.
//!
//! `ConsoleStart` opens a session on a guest of this host: the tail of its serial console log is
//! sent at once as `ConsoleOutput` messages, then (`follow`) whatever the guest prints next,
//! polled from the log every [`POLL`]. `ConsoleInput` of an `interactive` session is typed into
//! the console in order. A session ends with one `ConsoleOutput { end: true }` (with `error` when
//! it did not end normally: no such guest, the guest stopped) unless the controller ended it with
//! `ConsoleStop`. Every session of an `Attach` stream ends with the stream ([`ConsoleSessions`]
//! aborts its tasks when dropped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vnet_proto::v1 as pb;

use crate::guest::{ConsoleCursor, GuestError, GuestRuntime};

/// How often a following session looks for new console output.
pub const POLL: Duration = Duration::from_millis(100);
/// Largest `data` of one `ConsoleOutput`.
pub const CHUNK: usize = 32 << 10;
/// Largest tail a session sends first (the controller caps requests at this too).
pub const MAX_TAIL: usize = 1 << 20;
/// Input messages of one session that may wait to be typed.
const INPUT_QUEUE: usize = 256;

struct Session {
    task: JoinHandle<()>,
    input: Option<mpsc::Sender<Vec<u8>>>,
}

/// The console sessions of one `Attach` stream.
#[derive(Default)]
pub struct ConsoleSessions {
    sessions: HashMap<u64, Session>,
}

impl Drop for ConsoleSessions {
    fn drop(&mut self) {
        for s in self.sessions.values() {
            s.task.abort();
        }
    }
}

fn output(session_id: u64, data: Vec<u8>, end: bool, error: String) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::ConsoleOutput(pb::ConsoleOutput {
            session_id,
            data,
            end,
            error,
        })),
    }
}

impl ConsoleSessions {
    /// No sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions whose task still runs.
    pub fn len(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| !s.task.is_finished())
            .count()
    }

    /// Whether no session runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a session. `target` is the guest runtime and the node id when the node is a guest
    /// of this host, or why there is no console (sent back as the session's error).
    pub fn start(
        &mut self,
        start: pb::ConsoleStart,
        target: Result<Arc<dyn GuestRuntime>, String>,
        out: mpsc::Sender<pb::AgentMessage>,
    ) {
        self.sessions.retain(|_, s| !s.task.is_finished());
        let id = start.session_id;
        if let Some(old) = self.sessions.remove(&id) {
            old.task.abort();
        }
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let interactive = start.interactive;
        let task = tokio::spawn(async move {
            let guests = match target {
                Ok(g) => g,
                Err(e) => {
                    let _ = out.send(output(id, vec![], true, e)).await;
                    return;
                }
            };
            let end = run(&start, guests, input_rx, &out).await;
            let _ = out
                .send(output(id, vec![], true, end.err().unwrap_or_default()))
                .await;
        });
        self.sessions.insert(
            id,
            Session {
                task,
                input: interactive.then_some(input_tx),
            },
        );
    }

    /// Queues input for an interactive session; input for an unknown or non-interactive session
    /// is dropped (the controller accepts input only for interactive sessions it opened).
    pub fn input(&mut self, input: pb::ConsoleInput) {
        if let Some(tx) = self
            .sessions
            .get(&input.session_id)
            .and_then(|s| s.input.as_ref())
            && tx.try_send(input.data).is_err()
        {
            tracing::warn!(
                session = input.session_id,
                "console input queue full or closed; input dropped"
            );
        }
    }

    /// Ends a session without a final message (the controller asked).
    pub fn stop(&mut self, session_id: u64) {
        if let Some(s) = self.sessions.remove(&session_id) {
            s.task.abort();
        }
    }
}

fn gone(node: &str, e: GuestError) -> String {
    match e {
        GuestError::NotFound(_) => format!("guest {node} is not running on this host (stopped)"),
        e => e.to_string(),
    }
}

/// One session: the tail, then (follow) new output and input until the guest goes away.
async fn run(
    start: &pb::ConsoleStart,
    guests: Arc<dyn GuestRuntime>,
    mut input: mpsc::Receiver<Vec<u8>>,
    out: &mpsc::Sender<pb::AgentMessage>,
) -> Result<(), String> {
    let id = start.session_id;
    let node = start.node_id.clone();
    let read = |from: Option<ConsoleCursor>, max: usize| {
        let g = guests.clone();
        let node = node.clone();
        async move {
            let n = node.clone();
            tokio::task::spawn_blocking(move || g.console_read(&n, from, max))
                .await
                .map_err(|e| format!("console task: {e}"))?
                .map_err(|e| gone(&node, e))
        }
    };
    // The tail, in chunks.
    let tail = (start.tail_bytes as usize).min(MAX_TAIL);
    let first = read(None, tail).await?;
    let mut cursor = first.next;
    for chunk in first.data.chunks(CHUNK) {
        if out
            .send(output(id, chunk.to_vec(), false, String::new()))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    if !(start.follow || start.interactive) {
        return Ok(());
    }
    // Input is typed by its own task, in order, so that a slow write never delays output.
    let writer = if start.interactive {
        let g = guests.clone();
        let node = node.clone();
        Some(tokio::spawn(async move {
            while let Some(data) = input.recv().await {
                let g = g.clone();
                let n = node.clone();
                match tokio::task::spawn_blocking(move || g.console_write(&n, &data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return gone(&node, e),
                    Err(e) => return format!("console task: {e}"),
                }
            }
            String::new()
        }))
    } else {
        None
    };
    let _abort_writer = AbortOnDrop(writer.as_ref().map(|w| w.abort_handle()));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(w) = &writer
            && w.is_finished()
        {
            // The writer ends only on an error (its queue lives as long as the session).
            let e = writer.expect("checked").await.unwrap_or_default();
            return Err(e);
        }
        loop {
            let c = read(Some(cursor), CHUNK).await?;
            cursor = c.next;
            if c.data.is_empty() {
                break;
            }
            if out
                .send(output(id, c.data, false, String::new()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::fake::test_config;
    use crate::guest::{GuestCall, RecordingGuestRuntime};

    fn start(id: u64, node: &str, tail: u32, follow: bool, interactive: bool) -> pb::ConsoleStart {
        pb::ConsoleStart {
            session_id: id,
            node_id: node.into(),
            tail_bytes: tail,
            follow,
            interactive,
        }
    }

    async fn next(rx: &mut mpsc::Receiver<pb::AgentMessage>) -> pb::ConsoleOutput {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a console message within 5 s")
            .expect("channel open");
        match m.msg {
            Some(pb::agent_message::Msg::ConsoleOutput(o)) => o,
            other => panic!("not console output: {other:?}"),
        }
    }

    /// Output of session `id` until `want` was seen (or the session ended).
    async fn until(rx: &mut mpsc::Receiver<pb::AgentMessage>, id: u64, want: &str) -> String {
        let mut seen = String::new();
        while !seen.contains(want) {
            let o = next(rx).await;
            assert_eq!(o.session_id, id);
            seen.push_str(&String::from_utf8_lossy(&o.data));
            if o.end {
                break;
            }
        }
        seen
    }

    #[tokio::test]
    async fn tail_only_ends_after_the_tail() {
        let g = Arc::new(RecordingGuestRuntime::new());
        g.ensure(&test_config("a1", 128)).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(
            start(7, "a1", 1000, false, false),
            Ok(g.clone()),
            tx.clone(),
        );
        let o = next(&mut rx).await;
        assert_eq!(
            (o.session_id, o.data.as_slice()),
            (7, &b"fake console of a1\n"[..])
        );
        let o = next(&mut rx).await;
        assert!(o.end && o.error.is_empty() && o.data.is_empty(), "{o:?}");
        // A tail of 5 bytes is the last 5.
        s.start(start(8, "a1", 5, false, false), Ok(g.clone()), tx);
        assert_eq!(next(&mut rx).await.data, b"f a1\n");
        assert!(next(&mut rx).await.end);
    }

    #[tokio::test]
    async fn large_tails_come_in_chunks() {
        let g = Arc::new(RecordingGuestRuntime::new());
        g.ensure(&test_config("a1", 128)).unwrap();
        g.print("a1", &vec![b'x'; 3 * CHUNK]);
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(start(1, "a1", 10 * CHUNK as u32, false, false), Ok(g), tx);
        let mut total = 0;
        loop {
            let o = next(&mut rx).await;
            assert!(o.data.len() <= CHUNK);
            total += o.data.len();
            if o.end {
                break;
            }
        }
        assert_eq!(total, 3 * CHUNK + "fake console of a1\n".len());
    }

    #[tokio::test]
    async fn follow_sends_new_output_and_ends_when_the_guest_stops() {
        let g = Arc::new(RecordingGuestRuntime::new());
        g.ensure(&test_config("a1", 128)).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(start(3, "a1", 0, true, false), Ok(g.clone()), tx);
        // With no tail, what was printed before the session took its place is not sent.
        tokio::time::sleep(POLL * 2).await;
        g.print("a1", b"booting...\n");
        assert_eq!(until(&mut rx, 3, "booting").await, "booting...\n");
        g.print("a1", b"login: ");
        assert_eq!(until(&mut rx, 3, "login").await, "login: ");
        g.stop("a1").unwrap();
        let o = next(&mut rx).await;
        assert!(o.end, "{o:?}");
        assert!(
            o.error.contains("a1") && o.error.contains("stopped"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn interactive_input_is_typed_in_order() {
        let g = Arc::new(RecordingGuestRuntime::new());
        g.ensure(&test_config("a1", 128)).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(start(4, "a1", 0, false, true), Ok(g.clone()), tx);
        for part in ["ec", "ho", " hi\n"] {
            s.input(pb::ConsoleInput {
                session_id: 4,
                data: part.as_bytes().to_vec(),
            });
        }
        // The fake echoes what is typed into its log.
        assert_eq!(until(&mut rx, 4, "hi\n").await, "echo hi\n");
        let writes: Vec<Vec<u8>> = g
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                GuestCall::ConsoleWrite(n, d) if n == "a1" => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(writes, [&b"ec"[..], b"ho", b" hi\n"]);
        // Stop: no final message, the task ends.
        s.stop(4);
        tokio::time::sleep(POLL * 3).await;
        assert!(rx.try_recv().is_err());
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn input_for_a_session_that_is_not_interactive_is_dropped() {
        let g = Arc::new(RecordingGuestRuntime::new());
        g.ensure(&test_config("a1", 128)).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(start(5, "a1", 0, true, false), Ok(g.clone()), tx);
        s.input(pb::ConsoleInput {
            session_id: 5,
            data: b"reboot\n".to_vec(),
        });
        tokio::time::sleep(POLL * 3).await;
        assert!(
            !g.calls()
                .iter()
                .any(|c| matches!(c, GuestCall::ConsoleWrite(..)))
        );
        assert!(rx.try_recv().is_err());
        drop(s);
    }

    #[tokio::test]
    async fn no_target_and_unknown_guest_end_with_the_reason() {
        let g = Arc::new(RecordingGuestRuntime::new());
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(
            start(1, "b2", 10, false, false),
            Err("console is for vm nodes: b2 is a netns node".into()),
            tx.clone(),
        );
        let o = next(&mut rx).await;
        assert!(o.end && o.error.contains("vm nodes"), "{o:?}");
        s.start(start(2, "zz9", 10, true, false), Ok(g), tx);
        let o = next(&mut rx).await;
        assert!(o.end && o.error.contains("zz9"), "{o:?}");
    }

    #[tokio::test]
    async fn dropping_the_sessions_ends_them() {
        let g = Arc::new(RecordingGuestRuntime::new());
        g.ensure(&test_config("a1", 128)).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut s = ConsoleSessions::new();
        s.start(start(9, "a1", 0, true, false), Ok(g.clone()), tx);
        tokio::time::sleep(POLL * 2).await;
        drop(s);
        g.print("a1", b"after\n");
        // The task was aborted: its sender is dropped, nothing more arrives.
        let r = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(r, Ok(None)), "{r:?}");
    }
}
