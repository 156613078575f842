//! HTTP/1.1 over pipe streams with hyper 1.x: a hyper server on accepted pipe streams
//! answers Debian's `curl` byte-exact (a 1 MiB body, and an echoed upload), and a hyper
//! client runs over a pipe stream to a plain tokio + hyper server.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pipe_tokio::Proto;

/// Generous: the box is shared and loaded.
const WAIT: Duration = Duration::from_secs(20);

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// `/big`: 1 MiB of a pattern; `/echo`: the request body back; else 404.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = match path.as_str() {
        "/big" => Bytes::from(pattern(1 << 20)),
        "/echo" => req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            return Ok(r);
        }
    };
    Ok(Response::new(Full::new(body)))
}

/// A hyper server on every connection a pipe server accepts, each as a pipe stream.
async fn pipe_http_server() -> (SocketAddr, pipe_tokio::Pipe) {
    let server = pipe_tokio::pipe_open(Proto::Tcp, ()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let accepting = server.clone();
    tokio::spawn(async move {
        while let Ok(conn) = accepting.accept().await {
            let stream = conn
                .into_stream()
                .expect("an accepted TCP pipe is a stream");
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    (addr, server)
}

/// Run curl with `args`, feeding `stdin`; its stdout, checked for success.
fn curl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--http1.1"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start curl");
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(stdin).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", out.status);
    out.stdout
}

fn have_curl() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::skip("hyper_server_on_pipe_streams_answers_curl", "curl");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_server_on_pipe_streams_answers_curl() {
    if !have_curl() {
        return;
    }
    let (addr, server) = pipe_http_server().await;
    let base = format!("http://{addr}");
    let big = {
        let url = format!("{base}/big");
        tokio::task::spawn_blocking(move || curl(&[&url], b""))
            .await
            .unwrap()
    };
    assert_eq!(big.len(), 1 << 20);
    assert!(big == pattern(1 << 20), "curl got the body byte-exact");

    // An upload echoed back, and the response head as curl prints it.
    let upload = pattern(300 * 1024);
    let echoed = {
        let (url, body) = (format!("{base}/echo"), upload.clone());
        tokio::task::spawn_blocking(move || curl(&["--data-binary", "@-", &url], &body))
            .await
            .unwrap()
    };
    assert!(echoed == upload, "the upload came back byte-exact");
    let head = {
        let url = format!("{base}/nothing");
        tokio::task::spawn_blocking(move || curl(&["--include", &url], b""))
            .await
            .unwrap()
    };
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 10\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\nnot found\n"), "{head}");

    // Several requests on one connection (keep-alive), and the counters are the pipes'.
    let urls: Vec<String> = (0..3).map(|_| format!("{base}/big")).collect();
    let all = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = urls.iter().map(String::as_str).collect();
        curl(&args, b"")
    })
    .await
    .unwrap();
    assert_eq!(all.len(), 3 << 20);
    let totals = server.conn_totals().expect("a listener's totals");
    // 1 MiB, the 300 KiB echo, the 404, then 3 MiB: every body byte went out through pipes.
    assert!(totals.bytes_out >= (4 << 20) + 300 * 1024, "{totals:?}");
    assert_eq!(totals.accepted, 4, "one connection per curl: {totals:?}");
    server.close().await;
}

/// A hyper client over a pipe stream, to a plain tokio + hyper server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_over_a_pipe_stream() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    let pipe = pipe_tokio::pipe_open(Proto::Tcp, addr).await.unwrap();
    let stream = pipe.into_stream().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    for _ in 0..3 {
        // HTTP/1: one request at a time, sent once the connection says it is ready (its
        // task may still be finishing the previous response when the body is collected).
        tokio::time::timeout(WAIT, sender.ready())
            .await
            .unwrap()
            .unwrap();
        let req = Request::get(format!("http://{addr}/big"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = tokio::time::timeout(WAIT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 200);
        let body = tokio::time::timeout(WAIT, res.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert!(body == pattern(1 << 20), "byte-exact over the pipe");
    }
    let up = pattern(200 * 1024);
    tokio::time::timeout(WAIT, sender.ready())
        .await
        .unwrap()
        .unwrap();
    let req = Request::post(format!("http://{addr}/echo"))
        .body(Full::new(Bytes::from(up.clone())))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body == up);
    drop(sender);
    tokio::time::timeout(WAIT, driver)
        .await
        .expect("the client connection ends once the sender is gone")
        .unwrap()
        .unwrap();
}
