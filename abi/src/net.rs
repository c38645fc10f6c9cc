//! The guest network's fixed addresses, shared by the guest stack
//! (`kiln-net`'s default configuration), the embedded VMM's NIC, the
//! user-mode network (`kiln-user-net`, the gateway) and the QEMU runner.
//! They are QEMU's user-network addresses, so one guest configuration fits
//! every platform.

use core::net::Ipv4Addr;

/// The guest's address.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The gateway (the user-mode network, or the host's end of a TAP).
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Prefix length of the guest network 10.0.2.0/24.
pub const PREFIX_LEN: u8 = 24;
/// The guest NIC's Ethernet address.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The user-mode gateway's Ethernet address.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x35, 0x02];
