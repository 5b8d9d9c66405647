//! A small synchronous rtnetlink client.
//!
//! Messages are built with `rtnetlink`'s builders and `netlink-packet-route` types; this module only
//! sends them on a blocking `NETLINK_ROUTE` socket and collects the answer. Why not rtnetlink's
//! async `Handle`: a netlink socket operates on the namespace it was created in, and the agent
//! keeps one socket per namespace it works in, used from plain worker threads; a blocking socket
//! with no background task per namespace is the simplest and cheapest way to do that.

use std::io;

use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A blocking rtnetlink socket in the namespace of the thread that created it.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

/// Flags for creating a new object (`ip ... add`).
pub const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;
/// Flags for creating or replacing (`ip ... replace`).
pub const REPLACE: u16 = NLM_F_CREATE | NLM_F_REPLACE;

impl Rtnl {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Large dumps (hundreds of links) arrive in many datagrams; be generous.
        let _ = sock.set_rx_buf_sz(1 << 20);
        let _ = sock.set_ext_ack(true);
        Ok(Self { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    fn collect(&mut self, seq: u32, dump: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < buf.len() {
                let len = NetlinkBuffer::new_checked(&buf[off..])
                    .map_err(|e| io::Error::other(format!("netlink: {e}")))?
                    .length() as usize;
                if len == 0 {
                    break;
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
                    .map_err(|e| io::Error::other(format!("netlink: {e}")))?;
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a late answer to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(_) => return Err(e.to_io()),
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump {
                            // Echoed answer (e.g. a route lookup); the ack follows.
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends a request that expects an acknowledgement (and possibly answers before it).
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.collect(seq, false)
    }

    /// A request answered by data only, without acknowledgement (`RTM_GETROUTE` lookup).
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_ACK)?;
        self.collect(seq, false)
    }

    /// Dumps a table.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        self.collect(seq, true)
    }
}
