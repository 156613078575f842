//! STUN, sans-IO: the RFC 8489/5389 Binding method with the RFC 5780 address attributes.
//!
//! - [`decode`] / [`Message::encode`]: the wire format. The decoder treats every datagram as
//!   hostile: bounds-checked, capped at [`MAX_ATTRIBUTES`], FINGERPRINT verified, never panics.
//! - [`StunClient`]: Binding transactions with RFC 8489 retransmission (UDP) or one send (TCP),
//!   driven by `handle_*` inputs and drained with `poll_*`.
//! - [`StunServer`]: a minimal, amplification-safe Binding responder.
//!
//! Credentials: only short-term keys ([`short_term_key`], without SASLprep) and caller-supplied
//! raw keys; long-term key derivation needs MD5, which pipe-core does not carry.
//!
//! ```
//! use pipe_core::stun::{decode, Class, Message, TransactionId};
//! let mut msg = Message::new(Class::Success, pipe_core::stun::Method::Binding, TransactionId([7; 12]));
//! msg.attributes.push(Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap()));
//! let wire = msg.encode();
//! assert_eq!(wire.len(), 32);
//! assert_eq!(decode(&wire).unwrap(), msg);
//! ```

mod attr;
mod client;
mod codec;
mod server;

pub use attr::{attr_type, Attribute};
pub use client::{
    ClientStats, StunClient, StunClientConfig, StunClientError, StunEvent, StunTransmit, Transport,
};
pub use codec::{
    decode, is_stun, message_len, peek_transaction_id, short_term_key, Class, DecodeError,
    EncodeOptions, IntegrityError, Message, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE,
    MAX_ATTRIBUTES,
};
pub use server::{ServerStats, StunServer, StunServerConfig};
