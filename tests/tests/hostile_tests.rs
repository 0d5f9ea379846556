//! Hostile peers against a running job: no key, a wrong key, a stalled handshake, junk,
//! unknown messages, an oversized line, a half line that never ends. Each is refused and
//! closed; the job finishes with exact output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proto::auth::client_handshake;
use proto::msg::{CoordMsg, WorkerMsg};
use proto::{ClusterKey, Connection};

use crate::pipeline_tests::{write_inputs_pub, Pipeline};

/// True when the server closes `s` within `limit` (read returns 0 or an error).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
    false
}

async fn registered(addr: &str, key: &ClusterKey, id: &str) -> Connection {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut c = Connection::new(s);
    client_handshake(&mut c, key, proto::msg::SERVICE)
        .await
        .expect("handshake");
    c.send(&WorkerMsg::Register {
        worker_id: id.into(),
        pid: 1,
        threads: 1,
        instance: 1,
    })
    .await
    .expect("register");
    match c
        .expect_msg::<CoordMsg>(Duration::from_secs(5))
        .await
        .expect("welcome")
    {
        CoordMsg::Welcome { .. } => c,
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Every kind of bad peer is closed; the job running meanwhile is exact.
async fn hostile_peers_do_not_disturb_a_job() {
    let mut p = Pipeline::new();
    write_inputs_pub(&p.path("data/input"), "j", 20, 2000, 21);
    p.worker_flags_mut(vec!["--delay-ms".into(), "100".into()]);
    p.simple();
    p.start_coordinator();
    p.start_worker("worker-1");
    p.start_worker("worker-2");
    let addr = p.coord_addr().to_string();
    let key = ClusterKey::load(&p.path("run/cluster.key")).expect("key");

    // 1. Says nothing at all: closed after the handshake timeout.
    let mut silent = TcpStream::connect(&addr).expect("connect");
    // 2. Answers the challenge with garbage.
    let mut junk = TcpStream::connect(&addr).expect("connect");
    junk.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    assert!(
        closed_within(&mut junk, Duration::from_secs(10)),
        "junk handshake closed"
    );
    // 3. A wrong key.
    let s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut wrong = Connection::new(s);
    assert!(
        client_handshake(&mut wrong, &ClusterKey::generate(), proto::msg::SERVICE)
            .await
            .is_err()
    );
    // 4. After a valid registration: invalid JSON, an unknown type, an oversized line, an
    //    invalid worker id, a bad primes batch.
    for (i, bad) in [
        b"{not json\n".to_vec(),
        b"{\"type\":\"format_disk\"}\n".to_vec(),
        vec![b'7'; 25 << 20],
        b"{\"type\":\"primes\",\"attempt\":\"x\",\"small\":[],\"big\":[\"12\\n34567890123456789012\"]}\n".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = registered(&addr, &key, &format!("intruder-{i}")).await;
        let _ = c.write_raw(&bad).await;
        let _ = c.flush().await;
        let mut closed = false;
        for _ in 0..20 {
            match c.expect_msg::<CoordMsg>(Duration::from_secs(5)).await {
                Ok(CoordMsg::Error { .. }) | Ok(CoordMsg::Assign(_)) | Ok(CoordMsg::Marker { .. }) | Ok(CoordMsg::Cancel { .. }) => continue,
                Ok(other) => panic!("case {i}: unexpected {other:?}"),
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed, "case {i}: connection closed");
    }
    // 5. Registers, then sends half a line and stalls: missed heartbeats close it.
    let mut half = registered(&addr, &key, "staller").await;
    half.write_raw(b"{\"type\":\"heart")
        .await
        .expect("half line");
    half.flush().await.expect("flush");
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(10) {
        match half.expect_msg::<CoordMsg>(Duration::from_secs(5)).await {
            Ok(_) => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the staller is closed after missed heartbeats");
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "the silent peer is closed after the handshake timeout"
    );

    p.wait_all_reported(Duration::from_secs(60));
    p.assert_exact();
}
