//! STUN, sans-IO: the RFC 8489/5389 Binding method with the RFC 5780 address attributes.
//!
//! - [`decode`] / [`Message::encode`]: the wire format. The decoder treats every datagram as
//!   hostile: bounds-checked, capped at [`MAX_ATTRIBUTES`], FINGERPRINT verified, never panics.
//! - [`StunClient`]: Binding transactions with RFC 8489 retransmission (UDP) or one send (TCP),
//!   driven by `handle_*` inputs and drained with `poll_*`.
//! - [`StunServer`]: an amplification-safe Binding responder: RFC 8489, classic RFC 3489
//!   clients (§11), and RFC 5780 behaviour discovery with a second address and port.
//! - [`NatDiscovery`]: NAT behaviour discovery (mapping, filtering, port delta, hairpinning)
//!   and P2PD's NAT class, racing RFC 5780 servers, bounded in time.
//! - [`ExternalLookup`]: the external-address lookup over a [`StunClient`]: a few servers at a
//!   time, the next one when one fails or goes silent, the first IP that enough servers agree
//!   on, an overall deadline, and a [`LookupError`] that says how each server failed.
//!
//! Credentials: only short-term keys ([`short_term_key`], without SASLprep) and caller-supplied
//! raw keys; long-term key derivation needs MD5, which pipe-core does not carry.
//!
//! Encoding and decoding:
//!
//! ```
//! use pipe_core::stun::{decode, Attribute, Class, Message, Method, TransactionId};
//! let mut msg = Message::new(Class::Success, Method::Binding, TransactionId([7; 12]));
//! msg.attributes.push(Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap()));
//! let wire = msg.encode();
//! assert_eq!(wire.len(), 32);
//! assert_eq!(decode(&wire).unwrap(), msg);
//! ```
//!
//! Driving the client over a blocking socket (any executor, or none, works the same way):
//!
//! ```no_run
//! use std::{net::UdpSocket, time::{Duration, Instant}};
//! use pipe_core::stun::{StunClient, StunClientConfig, StunEvent, Transport};
//!
//! let socket = UdpSocket::bind("0.0.0.0:0")?;
//! let mut client = StunClient::new(StunClientConfig::default(), 0x5eed /* real entropy here */);
//! client.start_binding(Instant::now(), "192.0.2.10:3478".parse().unwrap(), Transport::Udp)?;
//! let mut buf = [0; 1500];
//! let mapped = loop {
//!     while let Some(tx) = client.poll_transmit() {
//!         socket.send_to(&tx.payload, tx.dest)?;
//!     }
//!     match client.poll_event() {
//!         Some(StunEvent::Success { mapped, .. }) => break Some(mapped),
//!         Some(_) => break None,
//!         None => {}
//!     }
//!     let Some(deadline) = client.poll_timeout() else { break None };
//!     let wait = deadline.saturating_duration_since(Instant::now());
//!     socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) => client.handle_input(Instant::now(), from, &buf[..n]),
//!         Err(_) => client.handle_timeout(Instant::now()),
//!     }
//! };
//! println!("mapped: {mapped:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attr;
mod client;
mod codec;
mod lookup;
mod nat;
mod server;

pub use attr::{attr_type, Attribute};
pub use client::{
    ClientStats, StunClient, StunClientConfig, StunClientError, StunEvent, StunTransmit, Transport,
};
pub use codec::{
    decode, decode_any_cookie, is_stun, message_len, peek_transaction_id, short_term_key, Class,
    DecodeError, EncodeOptions, IntegrityError, Message, Method, TransactionId, HEADER_LEN,
    MAGIC_COOKIE, MAX_ATTRIBUTES,
};
pub use lookup::{
    ExternalLookup, LookupConfig, LookupError, ServerError, ServerFailure, MAX_PARALLEL,
};
pub use nat::{
    Filtering, Mapping, NatClass, NatConfig, NatDiscovery, NatError, NatReport, NatSocket,
    NatTransmit, PortDelta,
};
pub use server::{Reply, ServerStats, StunServer, StunServerConfig};
