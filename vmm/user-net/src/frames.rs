//! Frames the stack builds itself rather than through smoltcp sockets: UDP datagrams
//! (fragmented when larger than the MTU), DHCP replies, and the synthetic ARP reply that
//! teaches smoltcp the guest's MAC.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket, UdpRepr,
};

use crate::device::FrameQueue;
use crate::{GATEWAY_ADDR, GATEWAY_MAC, GUEST_ADDR, MTU_BYTES, PREFIX_LEN};

/// Ethernet header bytes.
pub(crate) const ETH_HEADER_BYTES: usize = 14;
/// IPv4 header bytes (no options).
const IP_HEADER_BYTES: usize = 20;
/// UDP header bytes.
const UDP_HEADER_BYTES: usize = 8;
/// Payload bytes of one IPv4 fragment: the MTU less the header, rounded down to 8.
const FRAGMENT_BYTES: usize = (MTU_BYTES - IP_HEADER_BYTES) & !7;
/// The largest UDP payload IPv4 can carry.
const UDP_MAX_PAYLOAD_BYTES: usize = 65535 - IP_HEADER_BYTES - UDP_HEADER_BYTES;
/// DHCP lease the guest gets.
const DHCP_LEASE_SECS: u32 = 24 * 60 * 60;
/// DHCP ports.
pub(crate) const DHCP_SERVER_PORT: u16 = 67;
pub(crate) const DHCP_CLIENT_PORT: u16 = 68;

/// The gateway's MAC as smoltcp's type.
pub(crate) const GATEWAY_ETHERNET: EthernetAddress = EthernetAddress(GATEWAY_MAC);

/// The prefix mask as an address (255.255.255.0).
fn subnet_mask() -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX << (32 - u32::from(PREFIX_LEN)))
}

fn emit_ethernet(
    frame: &mut [u8],
    src: EthernetAddress,
    dst: EthernetAddress,
    ethertype: EthernetProtocol,
) {
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(frame));
}

/// Emits an IPv4 header for `payload_bytes` of UDP at the start of `packet`, as fragment
/// `offset_bytes` of datagram `ident` (`more`: not the last fragment).
fn emit_ipv4(
    packet: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload_bytes: usize,
    fragment: Option<(u16, usize, bool)>,
) {
    let mut ip = Ipv4Packet::new_unchecked(packet);
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: payload_bytes,
        hop_limit: 64,
    }
    .emit(&mut ip, &ChecksumCapabilities::ignored());
    if let Some((ident, offset_bytes, more)) = fragment {
        ip.set_ident(ident);
        ip.set_dont_frag(false);
        ip.set_more_frags(more);
        // Offsets are below 65536 (checked by the caller), so this fits in 16 bits.
        ip.set_frag_offset(u16::try_from(offset_bytes).unwrap_or(0));
    }
    ip.fill_checksum();
}

/// Queues for the guest the frame(s) carrying a UDP datagram from `src` to `dst`: one
/// frame when it fits the MTU, IPv4 fragments otherwise. Returns whether it was queued
/// (false: too large for IPv4, or the queue is full).
pub(crate) fn queue_udp(
    queue: &mut FrameQueue,
    dst_mac: EthernetAddress,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ident: u16,
    payload: &[u8],
) -> bool {
    if payload.len() > UDP_MAX_PAYLOAD_BYTES {
        return false;
    }
    let udp_bytes = UDP_HEADER_BYTES + payload.len();
    let udp_repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let (src_ip, dst_ip) = (IpAddress::Ipv4(*src.ip()), IpAddress::Ipv4(*dst.ip()));
    let checksums = ChecksumCapabilities::default();
    if IP_HEADER_BYTES + udp_bytes <= MTU_BYTES {
        let mut frame = queue.tx_buffer(ETH_HEADER_BYTES + IP_HEADER_BYTES + udp_bytes);
        let (eth, rest) = frame.split_at_mut(ETH_HEADER_BYTES);
        emit_ethernet(eth, GATEWAY_ETHERNET, dst_mac, EthernetProtocol::Ipv4);
        let (ip, udp) = rest.split_at_mut(IP_HEADER_BYTES);
        emit_ipv4(ip, *src.ip(), *dst.ip(), udp_bytes, None);
        udp_repr.emit(
            &mut UdpPacket::new_unchecked(udp),
            &src_ip,
            &dst_ip,
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            &checksums,
        );
        return queue.push_tx(frame);
    }
    let mut datagram = vec![0u8; udp_bytes];
    udp_repr.emit(
        &mut UdpPacket::new_unchecked(&mut datagram[..]),
        &src_ip,
        &dst_ip,
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &checksums,
    );
    let mut offset_bytes = 0;
    for chunk in datagram.chunks(FRAGMENT_BYTES) {
        let more = offset_bytes + chunk.len() < udp_bytes;
        let mut frame = queue.tx_buffer(ETH_HEADER_BYTES + IP_HEADER_BYTES + chunk.len());
        let (eth, rest) = frame.split_at_mut(ETH_HEADER_BYTES);
        emit_ethernet(eth, GATEWAY_ETHERNET, dst_mac, EthernetProtocol::Ipv4);
        let (ip, data) = rest.split_at_mut(IP_HEADER_BYTES);
        emit_ipv4(
            ip,
            *src.ip(),
            *dst.ip(),
            chunk.len(),
            Some((ident, offset_bytes, more)),
        );
        data.copy_from_slice(chunk);
        if !queue.push_tx(frame) {
            return false;
        }
        offset_bytes += chunk.len();
    }
    true
}

/// Answers a DHCP message from the guest: DISCOVER gets an OFFER, REQUEST an ACK (or a
/// NAK when it asks for another address); anything else, or a REQUEST meant for another
/// server, gets nothing. Returns whether a reply was queued.
pub(crate) fn queue_dhcp_reply(queue: &mut FrameQueue, dhcp: &[u8]) -> bool {
    let Ok(packet) = DhcpPacket::new_checked(dhcp) else {
        return false;
    };
    let Ok(request) = DhcpRepr::parse(&packet) else {
        return false;
    };
    let message_type = match request.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request => {
            if request
                .server_identifier
                .is_some_and(|server| server != GATEWAY_ADDR)
            {
                return false;
            }
            let asked = request
                .requested_ip
                .or(Some(request.client_ip).filter(|ip| !ip.is_unspecified()));
            if asked.is_some_and(|ip| ip != GUEST_ADDR) {
                DhcpMessageType::Nak
            } else {
                DhcpMessageType::Ack
            }
        }
        _ => return false,
    };
    let nak = message_type == DhcpMessageType::Nak;
    let reply = DhcpRepr {
        message_type,
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: request.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: if nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            GUEST_ADDR
        },
        server_ip: if nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            GATEWAY_ADDR
        },
        router: (!nak).then_some(GATEWAY_ADDR),
        subnet_mask: (!nak).then(subnet_mask),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(GATEWAY_ADDR),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: (!nak).then_some(DHCP_LEASE_SECS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut payload = vec![0u8; reply.buffer_len()];
    if reply
        .emit(&mut DhcpPacket::new_unchecked(&mut payload[..]))
        .is_err()
    {
        return false;
    }
    // Broadcast at both layers: the client has no address yet, and every DHCP client
    // accepts a broadcast reply.
    queue_udp(
        queue,
        EthernetAddress::BROADCAST,
        SocketAddrV4::new(GATEWAY_ADDR, DHCP_SERVER_PORT),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
        0,
        &payload,
    )
}

/// Writes into `buffer` an ARP reply "10.0.2.15 is at `guest_mac`" addressed to the
/// gateway. Fed to smoltcp, it fills smoltcp's neighbour cache, so the first packet of a
/// forwarded connection does not wait for an ARP round trip.
pub(crate) fn guest_arp_reply(mut buffer: Vec<u8>, guest_mac: EthernetAddress) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: guest_mac,
        source_protocol_addr: GUEST_ADDR,
        target_hardware_addr: GATEWAY_ETHERNET,
        target_protocol_addr: GATEWAY_ADDR,
    };
    buffer.clear();
    buffer.resize(ETH_HEADER_BYTES + arp.buffer_len(), 0);
    let (eth, rest) = buffer.split_at_mut(ETH_HEADER_BYTES);
    emit_ethernet(eth, guest_mac, GATEWAY_ETHERNET, EthernetProtocol::Arp);
    arp.emit(&mut ArpPacket::new_unchecked(rest));
    buffer
}
