//! A `send` future stays small: a callback that sends holds it in its own future, which is
//! moved into a box on every message (callgrind, TCP ping-pong echo server: a 656-byte
//! callback future's copy was 88 instructions a message). The rare wait for room in the
//! outbound buffer is boxed when it happens, so it does not size every send.

use pipe_io::Proto;

/// `self`, `data`, the destination, and the boxed wait.
const SEND_MAX: usize = 72;

#[tokio::test]
async fn send_futures_are_small() {
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dest = peer.local_addr().unwrap();
    let p = pipe_tokio::builder(Proto::Udp)
        .dest(dest)
        .open()
        .await
        .unwrap();
    let send = std::mem::size_of_val(&p.send(b"x"));
    let send_to = std::mem::size_of_val(&p.send_to(b"x", dest));
    assert!(send <= SEND_MAX, "send: {send} bytes (at most {SEND_MAX})");
    assert!(
        send_to <= SEND_MAX,
        "send_to: {send_to} bytes (at most {SEND_MAX})"
    );
    // Still a working send: the peer gets the datagram.
    p.send(b"hello").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), peer.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
}
