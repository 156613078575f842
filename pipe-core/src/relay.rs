//! Stamped relaying: the origin stamp and hop limit that linked pipes put in front of what
//! they forward, when the receiving pipe has [`crate::Conf::relay_stamp`].
//!
//! The stamp is this project's own wire format (P2PD peers do not understand it, so it is
//! opt-in per pipe). It is a 21-byte header in front of the payload of one message (a
//! datagram, or a frame of a TCP pipe with non-Raw framing):
//!
//! ```text
//! b"PRS1" | origin: u64 BE | message id: u64 BE | hops left: u8 | payload
//! ```
//!
//! - `origin` names the engine that first relayed the message (random per engine), and
//!   `message id` counts the messages it stamped: together they identify the message however
//!   many relays it passed, so a relay keeps a window of (origin, id) and drops what it has
//!   seen, whichever neighbour it came from.
//! - `hops left` is how many relays may still receive it, this one included: a relay that
//!   receives 1 delivers locally and forwards nothing. An unstamped message entering a
//!   stamping pipe gets `Conf::relay_hops` (8 by default).
//!
//! A message on a stamping pipe that starts with `PRS1` is taken as stamped: one shorter than
//! the header is malformed (dropped and counted).

use bytes::{BufMut, Bytes, BytesMut};

/// The 4 bytes a stamp starts with.
pub const MAGIC: [u8; 4] = *b"PRS1";
/// Length of the stamp header.
pub const HEADER: usize = 21;

/// The stamp of a relayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The engine that first stamped it.
    pub origin: u64,
    /// Its id among the messages `origin` stamped.
    pub id: u64,
    /// Relays that may still receive it.
    pub hops: u8,
}

/// A message that starts with [`MAGIC`] but is shorter than [`HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stamp header of {len} bytes, shorter than {HEADER}")]
pub struct ShortStamp {
    /// The message's length.
    pub len: usize,
}

/// Split a message into its stamp and payload: `Ok(None)` when it has no stamp.
pub fn decode(msg: &[u8]) -> Result<Option<(Stamp, &[u8])>, ShortStamp> {
    if !msg.starts_with(&MAGIC) {
        return Ok(None);
    }
    let (Some(h), Some(payload)) = (msg.get(..HEADER), msg.get(HEADER..)) else {
        return Err(ShortStamp { len: msg.len() });
    };
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let stamp = Stamp {
        origin: word(4),
        id: word(12),
        hops: h[20],
    };
    Ok(Some((stamp, payload)))
}

/// The stamp header followed by `payload`.
pub fn encode(stamp: Stamp, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_slice(&MAGIC);
    b.put_u64(stamp.origin);
    b.put_u64(stamp.id);
    b.put_u8(stamp.hops);
    b.put_slice(payload);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let s = Stamp {
            origin: 0x0102_0304_0506_0708,
            id: 9,
            hops: 7,
        };
        let b = encode(s, b"xyz");
        assert_eq!(b.len(), HEADER + 3);
        assert_eq!(&b[..4], b"PRS1");
        assert_eq!(&b[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[12..20], &9u64.to_be_bytes());
        assert_eq!(b[20], 7);
        assert_eq!(decode(&b), Ok(Some((s, &b"xyz"[..]))));
        assert_eq!(decode(b"hello"), Ok(None));
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(&b[..20]), Err(ShortStamp { len: 20 }));
        assert_eq!(decode(&b[..HEADER]), Ok(Some((s, &b""[..]))));
    }
}
