//! Reliable UDP in P2PD's wire format.
//!
//! Every datagram of a pipe in reliable mode is a frame: `seq: u64 BE | flag: u8 | payload`.
//! - flag 0: data that wants an ACK; the receiver acks every copy and delivers a seq once.
//! - flag 1: an ACK, exactly 9 bytes (`seq | 0x01`).
//! - flag 2: plain data, no ACK. P2PD strips the 9-byte header of frames with unknown flags
//!   and delivers the rest, so plain sends from our reliable pipes reach P2PD unmangled too.
//!
//! Anything else (shorter than 9 bytes, an ACK with a payload, another flag) is dropped and
//! counted: unlike P2PD, no user payload is ever swallowed as an ACK or cut short.
//!
//! The receiver keeps a sliding window per sender (`Conf::reliable_window` wide): a data frame
//! inside it is delivered once and acked every time; one below it (our senders count up) is
//! dropped without an ACK; P2PD's random sequence numbers go to a bounded FIFO set instead.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

/// Header length.
pub const HEADER: usize = 9;
/// Flag of a frame that wants an ACK.
pub const FLAG_DATA: u8 = 0;
/// Flag of an ACK.
pub const FLAG_ACK: u8 = 1;
/// Flag of plain data that wants no ACK.
pub const FLAG_PLAIN: u8 = 2;

/// A decoded reliable-UDP frame, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Data to ack and deliver once.
    Data {
        /// Sequence number.
        seq: u64,
        /// Payload.
        payload: &'a [u8],
    },
    /// An acknowledgement.
    Ack {
        /// The acknowledged sequence number.
        seq: u64,
    },
    /// Plain data, no ACK wanted.
    Plain {
        /// Payload.
        payload: &'a [u8],
    },
}

/// Why a datagram is not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than 9 bytes.
    #[error("datagram shorter than the 9-byte header")]
    Short,
    /// An ACK that carries a payload.
    #[error("ACK frame with a payload")]
    AckWithPayload,
    /// A flag other than 0, 1 or 2.
    #[error("unknown flag {0}")]
    UnknownFlag(u8),
}

/// Decode one datagram.
pub fn decode(datagram: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (Some(seq), Some(&flag)) = (datagram.get(..8), datagram.get(8)) else {
        return Err(FrameError::Short);
    };
    let seq = u64::from_be_bytes(seq.try_into().map_err(|_| FrameError::Short)?);
    let payload = &datagram[HEADER..];
    match flag {
        FLAG_DATA => Ok(Frame::Data { seq, payload }),
        FLAG_ACK if payload.is_empty() => Ok(Frame::Ack { seq }),
        FLAG_ACK => Err(FrameError::AckWithPayload),
        FLAG_PLAIN => Ok(Frame::Plain { payload }),
        other => Err(FrameError::UnknownFlag(other)),
    }
}

/// Encode a frame.
pub fn encode(seq: u64, flag: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_u64(seq);
    b.put_u8(flag);
    b.put_slice(payload);
    b.freeze()
}

/// One reliable send waiting for its ACK.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) dest: SocketAddr,
    pub(crate) frame: Bytes,
    /// Transmissions still to make after the current one.
    pub(crate) tries_left: u32,
    pub(crate) deadline: Instant,
    /// Nobody waits for the outcome: do not keep it.
    pub(crate) forgotten: bool,
}
