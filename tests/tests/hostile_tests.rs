//! Hostile peers against a running job: no key, a wrong key, a stalled handshake, junk,
//! unknown messages, an oversized line, a half line that never ends. Each is refused and
//! closed; the job finishes with exact output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proto::auth::client_handshake;
use proto::msg::{CoordMsg, WorkerMsg};
use proto::{ClusterKey, Connection};

use e2e::pipeline::{write_inputs, Pipeline};

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

/// A connection registered as `id`: asked again, as a worker does, while the coordinator
/// says it does not lead yet (a member answers so until it serves).
async fn registered(addr: &str, key: &ClusterKey, id: &str) -> Connection {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
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
            CoordMsg::Welcome { .. } => return c,
            CoordMsg::NotLeader { .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Every kind of bad peer is closed; the job running meanwhile is exact.
async fn hostile_peers_do_not_disturb_a_job() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "j", 20, 2000, 21);
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
                Ok(CoordMsg::Error { .. }) | Ok(CoordMsg::Assign(_)) | Ok(CoordMsg::Marker { .. }) | Ok(CoordMsg::Cancel { .. }) | Ok(CoordMsg::Alive {}) => continue,
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

/// Opens `n` connections to `addr` that send nothing.
fn silent_sockets(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect()
}

/// Sends `bytes` without a newline on `socks` connections to `addr`; returns how many the
/// server closed before taking it all.
fn floods(addr: &str, socks: usize, bytes: usize) -> usize {
    let junk = vec![b'x'; bytes];
    let mut cut = 0;
    let mut open = Vec::new();
    for _ in 0..socks {
        let mut s = TcpStream::connect(addr).expect("connect");
        let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
        if s.write_all(&junk).is_err() {
            cut += 1;
        }
        // Kept open, as an attacker would, while the next ones send.
        open.push(s);
    }
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Before the handshake a peer may send only a short line, and strangers have slots of
/// their own: 40 sockets sending 20 MiB without a newline do not grow the coordinator or a
/// file server; 300 silent sockets do not delay a real peer's handshake; the dashboard
/// answers past 100 silent sockets. The job running meanwhile is exact.
async fn strangers_cannot_take_memory_or_slots() {
    let mut p = Pipeline::new();
    write_inputs(&p.path("data/input"), "m", 10, 2000, 17);
    p.simple();
    p.coord_flags_mut(vec![
        "--http".into(),
        "127.0.0.1:0".into(),
        "--http-addr-file".into(),
        p.path("run/http.addr").display().to_string(),
    ]);
    p.start_coordinator();
    p.start_worker("worker-1");
    let key = ClusterKey::load(&p.path("run/cluster.key")).expect("key");
    let coord = p.coord_addr().to_string();
    let server = p.afs_list();
    let http = e2e::read_addr(&p.path("run/http.addr"), Duration::from_secs(20));
    for (name, addr, pid) in [
        ("coordinator", coord.clone(), p.coordinator_pid()),
        ("file server", server.clone(), p.server_pid("server-1")),
    ] {
        let a = addr.clone();
        let cut = tokio::task::spawn_blocking(move || floods(&a, 40, 20 << 20))
            .await
            .expect("flood");
        let peak_mib = e2e::peak_rss_kib(pid).unwrap_or(0) / 1024;
        assert!(
            peak_mib < 200,
            "{name} grew to {peak_mib} MiB on unauthenticated floods"
        );
        assert_eq!(cut, 40, "{name} closed every flooding connection");

        let a = addr.clone();
        let silent = tokio::task::spawn_blocking(move || silent_sockets(&a, 300))
            .await
            .expect("silent sockets");
        assert!(silent.len() >= 250, "opened {} sockets", silent.len());
        let service = if name == "coordinator" {
            proto::msg::SERVICE
        } else {
            afs::SERVICE
        };
        let started = Instant::now();
        let handshake = async {
            let s = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            let mut c = Connection::new(s);
            client_handshake(&mut c, &key, service).await
        };
        let r = tokio::time::timeout(Duration::from_secs(2), handshake).await;
        assert!(
            matches!(r, Ok(Ok(()))),
            "{name}: a real peer's handshake past 300 silent sockets: {r:?} after {:?}",
            started.elapsed()
        );
        drop(silent);
    }
    let silent = silent_sockets(&http, 100);
    assert!(silent.len() >= 90);
    let get = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&http).expect("connect");
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(b"GET /api/status HTTP/1.0\r\n\r\n")
            .expect("send");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).map(|_| head)
    });
    let head = get.join().expect("get");
    assert!(
        head.as_ref().is_ok_and(|h| h.starts_with(b"HTTP/1.")),
        "the dashboard answers past 100 silent sockets: {head:?}"
    );
    drop(silent);
    p.wait_all_reported(Duration::from_secs(60));
    p.assert_exact();
}
