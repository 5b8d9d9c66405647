//! 802.1Q tag push (and in-band pop) with `pnet_packet`.

use pnet_packet::Packet;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::vlan::{ClassOfService, MutableVlanPacket, VlanPacket};

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// 802.1Q tag length.
pub const VLAN_HLEN: usize = 4;

/// Writes `frame` with an 802.1Q tag carrying `vid` into `out`; returns the tagged length, or
/// `None` when `frame` is not an Ethernet frame or `out` is too small.
pub fn push_tag(frame: &[u8], vid: u16, out: &mut [u8]) -> Option<usize> {
    let eth = EthernetPacket::new(frame)?;
    let len = frame.len() + VLAN_HLEN;
    if out.len() < len {
        return None;
    }
    let mut e = MutableEthernetPacket::new(&mut out[..len])?;
    e.set_destination(eth.get_destination());
    e.set_source(eth.get_source());
    e.set_ethertype(EtherTypes::Vlan);
    let mut v = MutableVlanPacket::new(&mut out[ETH_HLEN..len])?;
    v.set_priority_code_point(ClassOfService::new(0));
    v.set_drop_eligible_indicator(0);
    v.set_vlan_identifier(vid & 0x0fff);
    v.set_ethertype(eth.get_ethertype());
    v.set_payload(eth.payload());
    Some(len)
}

/// If `frame` still carries an in-band 802.1Q tag (the kernel normally strips it before an
/// AF_PACKET socket sees the frame), removes it into `out`: returns (VLAN ID, untagged length).
pub fn pop_inband(frame: &[u8], out: &mut [u8]) -> Option<(u16, usize)> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Vlan {
        return None;
    }
    let v = VlanPacket::new(eth.payload())?;
    let len = frame.len() - VLAN_HLEN;
    if out.len() < len {
        return None;
    }
    let mut e = MutableEthernetPacket::new(&mut out[..len])?;
    e.set_destination(eth.get_destination());
    e.set_source(eth.get_source());
    e.set_ethertype(v.get_ethertype());
    e.set_payload(v.payload());
    Some((v.get_vlan_identifier(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        for (i, b) in f[14..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    #[test]
    fn push_then_pop_round_trips() {
        let f = frame();
        let mut tagged = [0u8; 128];
        let n = push_tag(&f, 1234, &mut tagged).unwrap();
        assert_eq!(n, f.len() + 4);
        assert_eq!(&tagged[12..14], &[0x81, 0x00]);
        assert_eq!(u16::from_be_bytes([tagged[14], tagged[15]]) & 0xfff, 1234);
        assert_eq!(&tagged[16..18], &[0x08, 0x00]);
        assert_eq!(&tagged[18..n], &f[14..]);
        let mut back = [0u8; 128];
        let (vid, m) = pop_inband(&tagged[..n], &mut back).unwrap();
        assert_eq!(vid, 1234);
        assert_eq!(&back[..m], &f[..]);
        assert!(pop_inband(&f, &mut back).is_none());
        assert!(push_tag(&f[..10], 1, &mut back).is_none());
    }
}
