use pipe_tokio::Proto;

#[test]
fn tokio_tcp_echo() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = pipe_tokio::builder(Proto::Tcp)
            .on_message(|msg, pipe| async move {
                pipe.send_to(&msg.data, msg.from).await.unwrap();
            })
            .open()
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let client = pipe_tokio::pipe_open(Proto::Tcp, addr).await.unwrap();
        client.send(b"test msg.").await.unwrap();
        let out = client.recv().await.unwrap().expect("echo");
        assert_eq!(&out.data[..], b"test msg.");
        client.close().await;
        server.close().await;
    });
}

#[test]
fn smol_udp_echo() {
    smol::block_on(async {
        let server = pipe_smol::builder(Proto::Udp)
            .on_message(|msg, pipe| async move {
                pipe.send_to(&msg.data, msg.from).await.unwrap();
            })
            .open()
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let client = pipe_smol::pipe_open(Proto::Udp, addr).await.unwrap();
        client.send(b"ping").await.unwrap();
        let out = client.recv().await.unwrap().expect("echo");
        assert_eq!(&out.data[..], b"ping");
        client.close().await;
        server.close().await;
    });
}
