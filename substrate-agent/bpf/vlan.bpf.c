// SPDX-License-Identifier: (MIT OR Apache-2.0)
//
// The 802.1Q datapath of vnet as one tc classifier (cls_bpf, direct action), attached to the
// ingress of every device that takes part in a VLAN link of one namespace:
//
// - a port (the outer end of a node's veth pair): every frame the node sends gets the link's tag
//   pushed (a tag the node put there itself stays inside, as the inner tag) and leaves on the
//   substrate device;
// - a substrate device: an untagged frame is not ours and passes (IP, VXLAN, the agent's own
//   traffic); a tagged frame is looked up by (device, VLAN ID): popped and handed straight to the
//   node's side of the port's veth pair (bpf_redirect_peer), or, at a transit host, re-tagged with
//   the next hop's ID and sent out of the next substrate device. An ID with no entry is dropped
//   and counted, so a tenant never reaches a link that is not its own.
//
// The kernel strips a received tag into the packet's metadata before tc ingress runs, so the
// program reads skb->vlan_present / vlan_tci rather than the frame's bytes. No 802.1Q module,
// act_vlan or flower is needed.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Key vid of a port entry (any frame arriving on a port).
#define PORT_KEY 0xffff

// What to do with a frame that matched.
enum vnet_action {
	ACT_PUSH = 1,	 // port -> substrate: push `vid`, redirect to `ifindex`'s egress
	ACT_POP = 2,	 // substrate -> node: pop, redirect into the peer of `ifindex`
	ACT_REWRITE = 3, // substrate -> substrate (transit): pop, push `vid`, redirect to egress
};

// Counters (per CPU).
enum vnet_counter {
	CNT_UNKNOWN_VID = 0, // tagged frame with no entry for its (device, ID)
	CNT_FOREIGN_TPID = 1, // tagged, but not 802.1Q (0x8100)
	CNT_TAG_ERROR = 2,   // push or pop failed
	CNT_FORWARDED = 3,   // frames handed on
	CNT_MAX = 4,
};

struct vnet_key {
	__u32 ifindex;
	__u16 vid;
	__u16 pad;
};

struct vnet_val {
	__u32 ifindex;
	__u16 vid;
	__u16 action;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct vnet_key);
	__type(value, struct vnet_val);
} vnet_vlan_fwd SEC(".maps");

// Devices our filter is attached to (ifindex -> flags; bit 0: we added the ingress qdisc).
// Written before an attach and cleared after a detach, so a crash in between leaves a record.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} vnet_vlan_devs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} vnet_vlan_cnt SEC(".maps");

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&vnet_vlan_cnt, &which);
	if (c)
		*c += 1;
	return verdict;
}

SEC("classifier")
int vnet_vlan(struct __sk_buff *skb)
{
	struct vnet_key k = { .ifindex = skb->ingress_ifindex, .vid = PORT_KEY, .pad = 0 };
	struct vnet_val *v = bpf_map_lookup_elem(&vnet_vlan_fwd, &k);

	if (v) {
		if (v->action != ACT_PUSH)
			return count(CNT_TAG_ERROR, TC_ACT_SHOT);
		if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), v->vid))
			return count(CNT_TAG_ERROR, TC_ACT_SHOT);
		count(CNT_FORWARDED, 0);
		return bpf_redirect(v->ifindex, 0);
	}
	if (!skb->vlan_present)
		return TC_ACT_OK;
	if (skb->vlan_proto != bpf_htons(ETH_P_8021Q))
		return count(CNT_FOREIGN_TPID, TC_ACT_SHOT);
	k.vid = skb->vlan_tci & 0x0fff;
	v = bpf_map_lookup_elem(&vnet_vlan_fwd, &k);
	if (!v)
		return count(CNT_UNKNOWN_VID, TC_ACT_SHOT);
	if (bpf_skb_vlan_pop(skb))
		return count(CNT_TAG_ERROR, TC_ACT_SHOT);
	switch (v->action) {
	case ACT_POP:
		count(CNT_FORWARDED, 0);
		return bpf_redirect_peer(v->ifindex, 0);
	case ACT_REWRITE:
		if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), v->vid))
			return count(CNT_TAG_ERROR, TC_ACT_SHOT);
		count(CNT_FORWARDED, 0);
		return bpf_redirect(v->ifindex, 0);
	default:
		return count(CNT_TAG_ERROR, TC_ACT_SHOT);
	}
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
