//! The TCP byte path: stream bytes → session layer → framing → messages.
//!
//! The session layer sits between socket bytes and framing: [`Session::Plain`] passes bytes
//! through; [`Session::Tls`] is rustls driven in memory by the engine (`crate::tls`). Framing
//! then cuts the plaintext into messages, checking limits before buffering anything for a
//! frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::conf::Framing;
use crate::error::SendError;

/// The layer between socket bytes and framing.
#[derive(Debug, Default)]
pub(crate) enum Session {
    /// No transformation.
    #[default]
    Plain,
    /// TLS (the engine drives it: see `crate::tls`).
    Tls(Box<crate::tls::TlsSession>),
}

impl Session {
    /// The TLS session, if any.
    pub(crate) fn tls(&mut self) -> Option<&mut crate::tls::TlsSession> {
        match self {
            Session::Tls(t) => Some(t),
            Session::Plain => None,
        }
    }

    /// A TLS session still in its handshake.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(self, Session::Tls(t) if t.is_handshaking())
    }

    /// True when bytes pass through unchanged.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Session::Plain)
    }

    /// Turn framed plaintext into socket bytes (empty while TLS buffers it for the end of
    /// its handshake).
    pub(crate) fn outbound(&mut self, bytes: Bytes) -> Result<Bytes, crate::error::SendError> {
        match self {
            Session::Plain => Ok(bytes),
            Session::Tls(t) => {
                if !t.write_plain(&bytes) {
                    return Err(crate::error::SendError::WouldBlock);
                }
                Ok(t.take_outgoing().unwrap_or_default())
            }
        }
    }
}

/// Framing failed: the connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) len: usize,
    pub(crate) max: usize,
}

/// Cuts plaintext into messages.
#[derive(Debug)]
pub(crate) struct Deframer {
    framing: Framing,
    buf: BytesMut,
    /// For `Delimited`: bytes of `buf` already searched for a delimiter.
    searched: usize,
}

impl Deframer {
    pub(crate) fn new(framing: Framing) -> Self {
        Self {
            framing,
            buf: BytesMut::new(),
            searched: 0,
        }
    }

    /// Bytes held for an incomplete frame.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The most this deframer will ever buffer.
    pub(crate) fn max_buffered(&self) -> usize {
        match &self.framing {
            Framing::Raw => 0,
            Framing::LengthPrefixed { max } => 4 + max,
            Framing::Delimited { delim, max } => max + delim.len(),
        }
    }

    /// Feed `input`, calling `emit` for each complete message in order.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        emit: &mut dyn FnMut(Bytes),
    ) -> Result<(), TooLarge> {
        match self.framing.clone() {
            Framing::Raw => {
                if !input.is_empty() {
                    emit(Bytes::copy_from_slice(input));
                }
                Ok(())
            }
            Framing::LengthPrefixed { max } => self.feed_prefixed(input, max, emit),
            Framing::Delimited { delim, max } => self.feed_delimited(input, &delim, max, emit),
        }
    }

    fn feed_prefixed(
        &mut self,
        mut input: &[u8],
        max: usize,
        emit: &mut dyn FnMut(Bytes),
    ) -> Result<(), TooLarge> {
        loop {
            // Fast path: whole frames straight from the input, no buffering.
            if self.buf.is_empty() {
                let Some(header) = input.get(..4) else { break };
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                if len > max {
                    return Err(TooLarge { len, max });
                }
                let Some(body) = input.get(4..4 + len) else {
                    break;
                };
                emit(Bytes::copy_from_slice(body));
                input = &input[4 + len..];
                continue;
            }
            // Slow path: complete the buffered frame.
            if self.buf.len() < 4 {
                let need = 4 - self.buf.len();
                let take = need.min(input.len());
                self.buf.put_slice(&input[..take]);
                input = &input[take..];
                if self.buf.len() < 4 {
                    return Ok(());
                }
            }
            let len =
                u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if len > max {
                return Err(TooLarge { len, max });
            }
            let need = 4 + len - self.buf.len();
            let take = need.min(input.len());
            self.buf.put_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < 4 + len {
                return Ok(());
            }
            self.buf.advance(4);
            emit(self.buf.split().freeze());
        }
        if !input.is_empty() {
            // A partial header or body: check the declared length before keeping anything.
            if let Some(h) = input.get(..4) {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len > max {
                    return Err(TooLarge { len, max });
                }
            }
            self.buf.put_slice(input);
        }
        Ok(())
    }

    fn feed_delimited(
        &mut self,
        input: &[u8],
        delim: &[u8],
        max: usize,
        emit: &mut dyn FnMut(Bytes),
    ) -> Result<(), TooLarge> {
        let mut input = input;
        loop {
            if self.buf.is_empty() {
                // Fast path: frames straight from the input.
                match find(input, delim) {
                    Some(i) => {
                        if i > max {
                            return Err(TooLarge { len: i, max });
                        }
                        emit(Bytes::copy_from_slice(&input[..i]));
                        input = &input[i + delim.len()..];
                        continue;
                    }
                    None => {
                        if input.len() > max + delim.len() - 1 {
                            return Err(TooLarge {
                                len: input.len(),
                                max,
                            });
                        }
                        self.buf.put_slice(input);
                        self.searched = 0;
                        return Ok(());
                    }
                }
            }
            // Append only as much as can still complete a frame, then search.
            let room = (max + delim.len()).saturating_sub(self.buf.len());
            let take = room.min(input.len());
            self.buf.put_slice(&input[..take]);
            input = &input[take..];
            let start = self.searched.saturating_sub(delim.len() - 1);
            match find(&self.buf[start..], delim) {
                Some(i) => {
                    let end = start + i;
                    if end > max {
                        return Err(TooLarge { len: end, max });
                    }
                    let mut frame = self.buf.split_to(end + delim.len());
                    frame.truncate(end);
                    emit(frame.freeze());
                    self.searched = 0;
                    // Put back what the frame did not use and continue on the fast path.
                    if !self.buf.is_empty() {
                        let rest = self.buf.split().freeze();
                        self.feed_delimited(&rest, delim, max, emit)?;
                    }
                }
                None => {
                    self.searched = self.buf.len();
                    if self.buf.len() > max + delim.len() - 1 {
                        return Err(TooLarge {
                            len: self.buf.len(),
                            max,
                        });
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                }
            }
            if input.is_empty() {
                return Ok(());
            }
        }
    }

    /// Frame one outgoing message.
    pub(crate) fn frame(&self, payload: &[u8]) -> Result<Bytes, SendError> {
        match &self.framing {
            Framing::Raw => Ok(Bytes::copy_from_slice(payload)),
            Framing::LengthPrefixed { max } => {
                if payload.len() > *max {
                    return Err(SendError::TooLarge {
                        len: payload.len(),
                        max: *max,
                    });
                }
                let mut b = BytesMut::with_capacity(4 + payload.len());
                b.put_u32(payload.len() as u32);
                b.put_slice(payload);
                Ok(b.freeze())
            }
            Framing::Delimited { delim, max } => {
                if payload.len() > *max {
                    return Err(SendError::TooLarge {
                        len: payload.len(),
                        max: *max,
                    });
                }
                if find(payload, delim).is_some() {
                    return Err(SendError::ContainsDelimiter);
                }
                let mut b = BytesMut::with_capacity(payload.len() + delim.len());
                b.put_slice(payload);
                b.put_slice(delim);
                Ok(b.freeze())
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => hay.iter().position(|x| x == b),
        _ => hay.windows(needle.len()).position(|w| w == needle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, TooLarge> {
        let mut d = Deframer::new(framing);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut |b| out.push(b.to_vec()))?;
            assert!(d.buffered() <= d.max_buffered());
        }
        Ok(out)
    }

    #[test]
    fn length_prefixed_any_split() {
        let f = Framing::LengthPrefixed { max: 10 };
        let d = Deframer::new(f.clone());
        let mut wire = Vec::new();
        for m in [&b"hello"[..], b"", b"0123456789"] {
            wire.extend_from_slice(&d.frame(m).unwrap());
        }
        for split in 1..wire.len() {
            let chunks: Vec<&[u8]> = wire.chunks(split).collect();
            assert_eq!(
                run(f.clone(), &chunks).unwrap(),
                vec![b"hello".to_vec(), vec![], b"0123456789".to_vec()]
            );
        }
    }

    #[test]
    fn length_prefixed_rejects_declared_length_before_buffering() {
        let f = Framing::LengthPrefixed { max: 10 };
        assert_eq!(
            run(f.clone(), &[&[0xff, 0xff, 0xff, 0xff]]),
            Err(TooLarge {
                len: u32::MAX as usize,
                max: 10
            })
        );
        assert_eq!(
            run(f, &[&[0, 0], &[0, 11]]),
            Err(TooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn delimited_any_split_and_limit() {
        let f = Framing::Delimited {
            delim: Bytes::from_static(b"\r\n"),
            max: 5,
        };
        let wire = b"ab\r\n\r\nhello\r\n";
        for split in 1..wire.len() {
            let chunks: Vec<&[u8]> = wire.chunks(split).collect();
            assert_eq!(
                run(f.clone(), &chunks).unwrap(),
                vec![b"ab".to_vec(), vec![], b"hello".to_vec()]
            );
        }
        assert!(run(f.clone(), &[b"toolong"]).is_err());
        // "abcdef" may still end in "\r" + "\n" only if byte 6 were "\r": the limit bites at 7.
        assert!(run(f.clone(), &[b"abc", b"def"]).is_ok());
        assert!(run(f, &[b"abc", b"defg"]).is_err());
    }

    #[test]
    fn raw_is_one_message_per_read() {
        assert_eq!(
            run(Framing::Raw, &[b"ab", b"c"]).unwrap(),
            vec![b"ab".to_vec(), b"c".to_vec()]
        );
    }
}
