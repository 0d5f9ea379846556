//! The file server as a user of the client library sees it, against real `afs-server`
//! processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use afs::client::{AfsClient, AfsError, ClientConfig, Content};
use afs::msg::{ErrorCode, Reply, Request};
use e2e::{bin, peak_rss_kib, read_addr, wait_for, Proc};
use proto::auth::client_handshake;
use proto::{ClusterKey, Connection};

const T: Duration = Duration::from_secs(20);

struct Cluster {
    dir: tempfile::TempDir,
    key: ClusterKey,
    key_file: PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("run/cluster.key");
        let key = ClusterKey::load_or_create(&key_file).expect("key");
        Cluster { dir, key, key_file }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Starts a server; `listen` lets a restarted server take its old address.
    fn server(
        &self,
        id: &str,
        role: &str,
        root: &str,
        backups: &[String],
        listen: &str,
    ) -> (Proc, String) {
        self.server_scan(id, role, root, backups, listen, 50)
    }

    /// A server whose change scan runs every `scan_ms`.
    fn server_scan(
        &self,
        id: &str,
        role: &str,
        root: &str,
        backups: &[String],
        listen: &str,
        scan_ms: u64,
    ) -> (Proc, String) {
        let addr_file = self.path(&format!("run/{id}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let mut args = vec![
            "--id".into(),
            id.into(),
            "--role".into(),
            role.into(),
            "--root".into(),
            self.path(root).display().to_string(),
            "--listen".into(),
            listen.into(),
            "--addr-file".into(),
            addr_file.display().to_string(),
            "--key-file".into(),
            self.key_file.display().to_string(),
            "--scan-ms".into(),
            scan_ms.to_string(),
            // As start_system.sh starts them: clients on this host read ranges through it.
            "--local-socket".into(),
            self.path(&format!("run/{id}.sock")).display().to_string(),
        ];
        for b in backups {
            args.push("--backup".into());
            args.push(b.clone());
        }
        let p = Proc::start(
            id,
            &bin("afs-server"),
            &args,
            &[],
            self.dir.path(),
            &self.path(&format!("{id}.log")),
        );
        let addr = read_addr(&addr_file, T);
        (p, addr)
    }

    fn client(&self, id: &str, servers: Vec<String>) -> AfsClient {
        AfsClient::new(self.config(id, servers)).expect("client")
    }

    fn config(&self, id: &str, servers: Vec<String>) -> ClientConfig {
        let mut cfg = ClientConfig::new(id, servers, &self.path("cache"), self.key.clone());
        cfg.connect_timeout = Duration::from_millis(500);
        cfg.request_timeout = Duration::from_secs(10);
        cfg
    }

    /// A client whose small files are cached in memory (`memory`) or all on disk.
    fn client_in(&self, id: &str, servers: Vec<String>, memory: bool) -> AfsClient {
        let mut cfg = self.config(id, servers);
        if !memory {
            cfg.memory_file_max = 0;
        }
        AfsClient::new(cfg).expect("client")
    }
}

fn write(path: &Path, content: &[u8]) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

async fn raw_conn(addr: &str, key: &ClusterKey) -> Connection {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut c = Connection::new(s);
    client_handshake(&mut c, key, afs::SERVICE)
        .await
        .expect("handshake");
    c.send(&Request::Hello {
        client_id: "raw".into(),
    })
    .await
    .expect("hello");
    let _: Reply = c.expect_msg(T).await.expect("welcome");
    c
}

/// Sends a `store` request with its body on a raw connection (the reply is the caller's).
async fn send_store(raw: &mut Connection, path: &str, body: &[u8]) {
    raw.write_msg(&Request::Store {
        path: path.into(),
        size: body.len() as u64,
    })
    .await
    .expect("send");
    raw.write_raw(body).await.expect("body");
    raw.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A second open under a valid callback transfers nothing; a change breaks the callback and
/// the next open fetches the new content; a restarted client revalidates instead of
/// refetching (disk cache) or fetches again (memory cache: gone with the process).
async fn callbacks_and_revalidation() {
    for memory in [false, true] {
        callbacks_and_revalidation_in(memory).await;
    }
}

async fn callbacks_and_revalidation_in(memory: bool) {
    let c = Cluster::new();
    write(&c.path("root/a.txt"), b"1\n2\n3\n");
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut client = c.client_in("worker-1", vec![addr.clone()], memory);

    let f = client.open("a.txt").await.expect("open");
    assert!(!f.from_cache);
    assert_eq!(f.read().expect("read").to_vec(), b"1\n2\n3\n");
    let s1 = client.stats();
    assert_eq!((s1.fetches, s1.body_bytes), (1, 6));

    let g = client.open("a.txt").await.expect("open again");
    assert!(g.from_cache);
    let s2 = client.stats();
    assert_eq!(
        (s2.hits, s2.fetches, s2.body_bytes, s2.revalidated),
        (1, 1, 6, 0),
        "cache hit costs nothing"
    );

    write(&c.path("root/a.txt"), b"5\n7\n11\n13\n");
    let mut content = Vec::new();
    for _ in 0..200 {
        let h = client.open("a.txt").await.expect("open after change");
        content = h.read().expect("read").to_vec();
        if content == b"5\n7\n11\n13\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(content, b"5\n7\n11\n13\n", "the change reached the client");
    let s3 = client.stats();
    assert!(s3.breaks >= 1, "a callback break arrived: {s3:?}");
    assert_eq!(s3.fetches, 2);
    drop(client);

    assert_eq!(
        c.path("cache/worker-1/files/a.txt").exists(),
        !memory,
        "a small file is on disk only without the memory cache"
    );

    // Same id, same cache root: a "restarted" client.
    let mut again = c.client_in("worker-1", vec![addr], memory);
    let r = again.open("a.txt").await.expect("open after restart");
    assert_eq!(r.read().expect("read").to_vec(), b"5\n7\n11\n13\n");
    let s4 = again.stats();
    if memory {
        assert!(!r.from_cache);
        assert_eq!(
            (s4.revalidated, s4.fetches, s4.body_bytes),
            (0, 1, 10),
            "the memory cache went with the process: fetched again"
        );
    } else {
        assert!(r.from_cache);
        assert_eq!(
            (s4.revalidated, s4.fetches, s4.body_bytes),
            (1, 0, 0),
            "revalidated by version, not refetched"
        );
    }

    // A deleted file is NotFound on every server.
    std::fs::remove_file(c.path("root/a.txt")).expect("rm");
    let mut result = again.open("a.txt").await;
    for _ in 0..100 {
        if matches!(result, Err(AfsError::NotFound { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        result = again.open("a.txt").await;
    }
    assert!(
        matches!(result, Err(AfsError::NotFound { .. })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Paths that leave the root are refused by the server, whatever the client library does;
/// malformed requests, unknown types and wrong keys close only their own connection.
async fn hostile_requests() {
    let c = Cluster::new();
    write(&c.path("root/ok.txt"), b"7\n");
    write(&c.path("outside/secret.txt"), b"secret\n");
    std::os::unix::fs::symlink(c.path("outside/secret.txt"), c.path("root/link.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(c.path("outside"), c.path("root/dirlink")).expect("symlink");
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut good = c.client("worker-1", vec![addr.clone()]);
    good.open("ok.txt").await.expect("good client works");

    let mut raw = raw_conn(&addr, &c.key).await;
    for path in [
        "../outside/secret.txt",
        "/etc/passwd",
        "link.txt",
        "dirlink/secret.txt",
        ".hidden",
        "a/../../x",
    ] {
        raw.send(&Request::Fetch {
            path: path.into(),
            have_version: None,
        })
        .await
        .expect("send");
        match raw.expect_msg::<Reply>(T).await.expect("reply") {
            Reply::Error { code, .. } => assert!(
                matches!(code, ErrorCode::Forbidden | ErrorCode::NotFound),
                "{path}: {code:?}"
            ),
            other => panic!("{path} was served: {other:?}"),
        }
    }
    // Store outside the root through a symlinked directory.
    send_store(&mut raw, "dirlink/evil.txt", b"x").await;
    assert!(matches!(
        raw.expect_msg::<Reply>(T).await,
        Ok(Reply::Error {
            code: ErrorCode::Forbidden,
            ..
        })
    ));
    assert!(
        !c.path("outside/evil.txt").exists(),
        "nothing written outside the root"
    );

    // Junk, unknown type, oversized line: error and close, others unaffected.
    for junk in [
        b"this is not json\n".to_vec(),
        b"{\"type\":\"format_disk\"}\n".to_vec(),
        vec![b'x'; 2 << 20],
    ] {
        let mut raw = raw_conn(&addr, &c.key).await;
        raw.write_raw(&junk).await.expect("send");
        raw.flush().await.expect("flush");
        let mut closed = false;
        for _ in 0..3 {
            match raw.read_msg::<Reply>().await {
                Ok(Some(Reply::Error { .. })) => continue,
                Ok(None) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(Some(other)) => panic!("junk got {other:?}"),
            }
        }
        assert!(closed, "connection closed after junk");
    }
    // Wrong key.
    let s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut wrong = Connection::new(s);
    assert!(
        client_handshake(&mut wrong, &ClusterKey::generate(), afs::SERVICE)
            .await
            .is_err()
    );

    let f = good.open("ok.txt").await.expect("good client still works");
    assert_eq!(f.read().expect("read").to_vec(), b"7\n");
}

fn sum(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |h, &x| {
        h.wrapping_mul(1_000_003).wrapping_add(x as u64)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Replicated mode: backups get every file; with the primary killed mid-reads every read
/// completes from a backup with the right content; a file added while the primary is down
/// (and one changed) reach all replicas once it returns.
async fn replicated_failover_and_catch_up() {
    let c = Cluster::new();
    for i in 0..20 {
        let body: String = (0..20_000)
            .map(|k| format!("{}\n", i * 1_000_003 + k))
            .collect();
        write(&c.path(&format!("input/f{i:02}.txt")), body.as_bytes());
    }
    let (_b1, a1) = c.server("server-2", "backup", "replica2", &[], "127.0.0.1:0");
    let (_b2, a2) = c.server("server-3", "backup", "replica3", &[], "127.0.0.1:0");
    let (mut primary, ap) = c.server(
        "server-1",
        "primary",
        "input",
        &[a1.clone(), a2.clone()],
        "127.0.0.1:0",
    );
    let replicated = |replica: &str, name: &str| {
        let a = c.path(&format!("input/{name}"));
        let b = c.path(&format!("{replica}/{name}"));
        b.exists() && std::fs::read(&a).ok() == std::fs::read(&b).ok()
    };
    wait_for(T, "backups to hold all 20 files", || {
        (0..20).all(|i| {
            let n = format!("f{i:02}.txt");
            replicated("replica2", &n) && replicated("replica3", &n)
        })
    });

    // Backups refuse client writes.
    let mut raw = raw_conn(&a1, &c.key).await;
    send_store(&mut raw, "intruder.txt", b"x").await;
    assert!(
        matches!(
            raw.expect_msg::<Reply>(T).await,
            Ok(Reply::Error {
                code: ErrorCode::ReadOnly,
                ..
            })
        ),
        "a backup refuses a store"
    );
    assert!(!c.path("replica2/intruder.txt").exists());

    let mut client = c.client("worker-1", vec![ap.clone(), a1.clone(), a2.clone()]);
    let mut served_by_backup = 0;
    for i in 0..20 {
        if i == 5 {
            primary.kill9();
        }
        let name = format!("f{i:02}.txt");
        let f = client
            .open(&name)
            .await
            .unwrap_or_else(|e| panic!("{name} after primary loss: {e}"));
        assert_eq!(
            sum(&f.read().expect("read")),
            sum(&std::fs::read(c.path(&format!("input/{name}"))).expect("read")),
            "{name} content"
        );
        if f.server.as_deref() != Some(ap.as_str()) && i >= 5 {
            served_by_backup += 1;
        }
    }
    assert_eq!(
        served_by_backup, 15,
        "reads after the kill came from backups"
    );

    write(&c.path("input/new.txt"), b"101\n103\n");
    write(&c.path("input/f00.txt"), b"2\n3\n");
    let (_primary, _) = c.server("server-1", "primary", "input", &[a1, a2], &ap);
    wait_for(T, "new and changed files on both backups", || {
        replicated("replica2", "new.txt")
            && replicated("replica3", "new.txt")
            && replicated("replica2", "f00.txt")
            && replicated("replica3", "f00.txt")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A change the server has not noticed yet (its scan is slow) still leaves the callback
/// standing, so `open` serves the old copy; `open_validated` asks the server, which checks
/// the file itself, and gets the new content. Workers use the latter.
async fn validated_open_sees_a_change_before_the_callback_breaks() {
    let c = Cluster::new();
    write(&c.path("root/a.txt"), b"2\n3\n");
    let (_server, addr) = c.server_scan("server-1", "primary", "root", &[], "127.0.0.1:0", 600_000);
    let mut client = c.client("worker-1", vec![addr]);
    client.open("a.txt").await.expect("first open");
    write(&c.path("root/a.txt"), b"5\n7\n11\n");
    let stale = client.open("a.txt").await.expect("open");
    assert!(stale.from_cache, "the callback still stands");
    assert_eq!(stale.read().expect("read").to_vec(), b"2\n3\n");
    let fresh = client
        .open_validated("a.txt")
        .await
        .expect("validated open");
    assert_eq!(fresh.read().expect("read").to_vec(), b"5\n7\n11\n");
    let again = client
        .open_validated("a.txt")
        .await
        .expect("validated again");
    assert!(again.from_cache, "unchanged: not_modified, no body");
    assert_eq!(client.stats().fetches, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The cache keeps to its size limit by evicting the least recently used file; so does the
/// memory cache of small files.
async fn cache_limit_evicts_least_recently_used() {
    for memory in [false, true] {
        cache_limit_evicts_in(memory).await;
    }
}

async fn cache_limit_evicts_in(memory: bool) {
    let c = Cluster::new();
    for n in ["a", "b", "c"] {
        write(&c.path(&format!("root/{n}.txt")), b"123456789\n"); // 10 bytes each
    }
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut cfg = c.config("worker-1", vec![addr]);
    if memory {
        cfg.memory_limit_bytes = 25;
    } else {
        cfg.memory_file_max = 0;
        cfg.cache_limit_bytes = 25;
    }
    let mut client = AfsClient::new(cfg).expect("client");
    client.open("a.txt").await.expect("a");
    client.open("b.txt").await.expect("b");
    assert!(
        client.open("a.txt").await.expect("a again").from_cache,
        "a is cached"
    );
    client.open("c.txt").await.expect("c");
    let cached: Vec<String> = client.cached().into_iter().map(|x| x.0).collect();
    assert_eq!(
        cached,
        vec!["a.txt".to_string(), "c.txt".to_string()],
        "b was the least recently used"
    );
    assert!(
        !c.path("cache/worker-1/files/b.txt").exists(),
        "its copy is gone"
    );
    let again = client.open("b.txt").await.expect("b again");
    assert!(!again.from_cache, "an evicted file is fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A 1 GiB file arrives intact (checksum) and neither side holds it in memory.
async fn one_gib_file_bounded_memory() {
    let c = Cluster::new();
    let path = c.path("root/big.txt");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut line = 0u64;
        let mut written = 0u64;
        while written < 1 << 30 {
            let s = format!("{}\n", line.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1);
            f.write_all(s.as_bytes()).expect("write");
            written += s.len() as u64;
            line += 1;
        }
        f.flush().expect("flush");
    }
    let (server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut client = c.client("worker-1", vec![addr]);
    let f = client.open("big.txt").await.expect("open big");
    assert_eq!(f.size, std::fs::metadata(&path).expect("meta").len());
    let hash = |p: &Path| {
        use std::io::Read;
        let mut h = afs::store::Hasher::default();
        let mut r = std::fs::File::open(p).expect("open");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finish()
    };
    let Content::Disk(local) = &f.content else {
        panic!("a large file is cached on disk")
    };
    assert_eq!(hash(local), hash(&path), "checksum of the fetched copy");
    assert_eq!(f.version, hash(&path), "version is the content hash");
    let server_peak = peak_rss_kib(server.pid()).expect("server rss");
    let our_peak = peak_rss_kib(std::process::id() as i32).expect("own rss");
    assert!(
        server_peak < 200 * 1024,
        "server peak RSS {server_peak} KiB"
    );
    assert!(
        our_peak < 400 * 1024,
        "client (test process) peak RSS {our_peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Range reads give exactly the bytes asked for (clamped at the end), put nothing in the
/// cache, and refuse a pinned version once the file has changed: over TCP, and through the
/// server's local socket (the file's descriptor instead of its bytes), which must answer
/// the same in every case.
async fn range_reads() {
    range_reads_in(false).await;
    range_reads_in(true).await;
}

async fn range_reads_in(local: bool) {
    let c = Cluster::new();
    let content: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("{}\n", i * 7).into_bytes())
        .collect();
    write(&c.path("root/big.txt"), &content);
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut cfg = c.config("worker-1", vec![addr]);
    cfg.local_reads = local;
    let mut client = AfsClient::new(cfg).expect("client");
    let size = content.len() as u64;

    let whole = client
        .read_range("big.txt", 0, size, None)
        .await
        .expect("whole range");
    assert_eq!(whole.bytes, content);
    assert_eq!(whole.size, size);
    let version = whole
        .version
        .clone()
        .expect("a file under 64 MiB is served with its version");
    let pin = whole.pin.clone();

    for (start, len) in [
        (1u64, 10u64),
        (12_345, 100_000),
        (size - 5, 100),
        (size, 10),
        (size + 7, 3),
    ] {
        let r = client
            .read_range("big.txt", start, len, Some(&version))
            .await
            .expect("range");
        let from = start.min(size) as usize;
        let to = (start.saturating_add(len)).min(size) as usize;
        assert_eq!(r.bytes, &content[from..to], "range {start}+{len}");
        assert_eq!(r.version.as_deref(), Some(version.as_str()));
    }
    let pinned = client
        .read_range("big.txt", 5, 5, Some(&pin))
        .await
        .expect("pinned by the server's token");
    assert_eq!(pinned.bytes, &content[5..10]);
    assert!(client.cached().is_empty(), "ranges are not cached");
    let s = client.stats();
    assert_eq!((s.ranges, s.fetches), (7, 0), "{s:?}");
    if local {
        assert_eq!((s.local_ranges, s.body_bytes), (7, 0), "{s:?}");
    } else {
        assert_eq!(s.local_ranges, 0, "{s:?}");
    }

    // The whole-file version and the range version are the same content hash.
    let opened = client.open("big.txt").await.expect("open");
    assert_eq!(opened.version, version);

    // A changed file refuses the old version, and serves the new one unpinned.
    let mut changed = content.clone();
    changed[3] = b'9';
    write(&c.path("root/big.txt"), &changed);
    for old in [&version, &pin] {
        let refused = client.read_range("big.txt", 0, 10, Some(old)).await;
        assert!(
            matches!(refused, Err(AfsError::Changed { .. })),
            "{refused:?}"
        );
    }
    let fresh = client
        .read_range("big.txt", 0, 10, None)
        .await
        .expect("fresh range");
    assert_eq!(fresh.bytes, &changed[..10]);
    assert_ne!(fresh.version, Some(version));
    assert_ne!(fresh.pin, pin);

    // Limits and path rules hold for ranges too.
    let too_big = client
        .read_range("big.txt", 0, afs::client::MAX_RANGE + 1, None)
        .await;
    assert!(
        matches!(too_big, Err(AfsError::Refused { .. })),
        "{too_big:?}"
    );
    let outside = client.read_range("../x.txt", 0, 1, None).await;
    assert!(
        matches!(outside, Err(AfsError::Refused { .. })),
        "{outside:?}"
    );
    let missing = client.read_range("nope.txt", 0, 1, None).await;
    assert!(
        matches!(missing, Err(AfsError::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(
        client.stats().local_ranges > 0,
        local,
        "{:?}",
        client.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The local socket admits only a client that proves the cluster key for its server's
/// token, after the server proved it; a client whose socket is gone, or answered by a
/// process that cannot prove the key, reads the same bytes over TCP.
async fn local_reads_refuse_strangers_and_fall_back_to_tcp() {
    use std::io::{BufRead, Write};
    let c = Cluster::new();
    let content: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{}\n", i * 3).into_bytes())
        .collect();
    write(&c.path("root/f.txt"), &content);
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let sock = c.path("run/server-1.sock");
    assert!(sock.exists(), "the server did not make its local socket");

    // Strangers: a wrong proof after a good hello, a request before hello, not JSON.
    for lines in [
        vec![
            r#"{"type":"hello","nonce":"00112233445566778899aabbccddeeff"}"#,
            r#"{"type":"prove","proof":"00"}"#,
        ],
        vec![r#"{"type":"open_range","path":"f.txt","start":0,"len":10,"version":null}"#],
        vec!["not json"],
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut reader = std::io::BufReader::new(s.try_clone().expect("clone"));
        let mut last = String::new();
        for l in &lines {
            writeln!(s, "{l}").expect("write");
            last.clear();
            reader.read_line(&mut last).expect("reply");
        }
        assert!(
            last.contains(r#""code":"forbidden""#),
            "{lines:?} got {last:?}"
        );
        let mut rest = String::new();
        let n = reader.read_line(&mut rest).expect("end");
        assert_eq!(n, 0, "the socket stays open after a refusal: {rest:?}");
    }

    // Through the socket.
    let mut client = c.client("worker-1", vec![addr.clone()]);
    let r = client
        .read_range("f.txt", 10, 1000, None)
        .await
        .expect("local");
    assert_eq!(r.bytes, &content[10..1010]);
    assert_eq!(client.stats().local_ranges, 1);

    // Another process at the socket's path, which cannot prove the key: the client learns
    // nothing from it and reads over TCP.
    std::fs::remove_file(&sock).expect("remove socket");
    let rogue = std::os::unix::net::UnixListener::bind(&sock).expect("rogue bind");
    let rogue_thread = std::thread::spawn(move || {
        let mut asked = 0;
        if let Ok((mut s, _)) = rogue.accept() {
            let mut line = String::new();
            let _ = std::io::BufReader::new(s.try_clone().expect("clone")).read_line(&mut line);
            asked += 1;
            let _ = writeln!(
                s,
                r#"{{"type":"welcome","nonce":"00112233445566778899aabbccddeeff","proof":"00"}}"#
            );
        }
        asked
    });
    let mut other = c.client("worker-2", vec![addr.clone()]);
    let r = other
        .read_range("f.txt", 10, 1000, None)
        .await
        .expect("tcp");
    assert_eq!(r.bytes, &content[10..1010]);
    let s = other.stats();
    assert_eq!(
        (s.ranges, s.local_ranges, s.body_bytes),
        (1, 0, 1000),
        "{s:?}"
    );
    assert_eq!(
        rogue_thread.join().expect("rogue"),
        1,
        "the client never tried the socket"
    );

    // With nothing at the path at all: TCP too.
    std::fs::remove_file(&sock).expect("remove rogue socket");
    let mut third = c.client("worker-3", vec![addr]);
    let r = third.read_range("f.txt", 0, 5, None).await.expect("tcp");
    assert_eq!(r.bytes, &content[..5]);
    assert_eq!(third.stats().local_ranges, 0);
    // The first client's link is still open: its server keeps serving it.
    let r = client
        .read_range("f.txt", 0, 5, None)
        .await
        .expect("local again");
    assert_eq!(r.bytes, &content[..5]);
    assert_eq!(client.stats().local_ranges, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A worker's chunk read by range holds exactly the lines a scan of a local copy gives for
/// that chunk, wherever the cuts fall: in short lines, in lines longer than the first
/// extension piece (64 KiB) and in a 3 MiB line; a line longer than the limit crossing the
/// end asks for the whole file instead.
async fn chunk_reads_match_local_scans() {
    use worker::chunk::{read_chunk, scan_chunk};
    use worker::scan::{scan_slice, ScanConfig};
    let c = Cluster::new();
    let mut content = Vec::new();
    let (mut long_at, mut spaces_at) = (0, 0);
    for i in 0..40_000u64 {
        content.extend_from_slice(format!("{}\n", i * 7919 + 13).as_bytes());
        if i == 9_000 {
            long_at = content.len() as u64;
            content.extend(std::iter::repeat_n(b'1', 150_000));
            content.push(b'\n');
        }
        if i == 25_000 {
            spaces_at = content.len() as u64;
            content.extend(std::iter::repeat_n(b' ', 3 << 20));
            content.extend_from_slice(b"97\n");
        }
    }
    content.extend_from_slice(b"101"); // no final newline
    write(&c.path("root/f.txt"), &content);
    let local = c.path("root/f.txt");
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut client = c.client("worker-1", vec![addr]);
    let size = content.len() as u64;
    let cfg = ScanConfig::default();
    let mut cuts = vec![
        1,
        2,
        long_at,
        long_at + 1,
        long_at + 70_000,
        spaces_at + 5,
        spaces_at + (2 << 20),
        size - 2,
        size - 1,
    ];
    cuts.extend((1..40).map(|k| size * k / 40));
    for n in [1u64, 3, 7, 40] {
        cuts.extend((1..n).map(|k| size * k / n));
    }
    for &cut in &cuts {
        for (start, end) in [(0, cut), (cut, size), (cut, (cut + 100_000).min(size))] {
            let want = scan_chunk(&local, start, end, &cfg).expect("local scan");
            let got = read_chunk(&mut client, "f.txt", start, end, cfg.max_line_bytes)
                .await
                .expect("read")
                .expect("no fallback");
            let mut r = scan_slice(got.lines(), &cfg, |_| {});
            let mut want = want;
            // The order of primes within a result depends on how it was cut into pieces.
            r.primes.sort_unstable();
            want.primes.sort_unstable();
            assert_eq!(
                (r.lines, r.numbers, r.invalid, r.blank),
                (want.lines, want.numbers, want.invalid, want.blank),
                "chunk {start}..{end}"
            );
            assert_eq!(r.primes, want.primes, "chunk {start}..{end}");
            assert_eq!(got.size, size);
        }
    }
    // The 150,000-byte line crosses this end; with a 1000-byte limit: whole file instead.
    let fallback = read_chunk(&mut client, "f.txt", 0, long_at + 10, 1000)
        .await
        .expect("read");
    assert!(fallback.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// `open_many` (the worker's batches of small files): every file's content and version as
/// one open each would give, a missing file and a refused path answered on their own without
/// disturbing the others, and a second batch revalidated without a body byte.
async fn open_many_pipelines_a_batch() {
    let c = Cluster::new();
    let mut paths = Vec::new();
    for i in 0..20 {
        let name = format!("d/f{i:02}.txt");
        write(
            &c.path(&format!("root/{name}")),
            format!("{i}\n{}\n", i * 7).as_bytes(),
        );
        paths.push(name);
    }
    let big = vec![b'9'; 300 << 10]; // above the memory limit: on disk
    write(&c.path("root/big.txt"), &big);
    paths.push("big.txt".into());
    paths.insert(3, "missing.txt".into());
    paths.insert(7, "../outside.txt".into());
    let (_server, addr) = c.server("server-1", "primary", "root", &[], "127.0.0.1:0");
    let mut client = c.client("worker-1", vec![addr]);
    let got = client.open_many(&paths).await;
    assert_eq!(got.len(), paths.len());
    for (p, r) in paths.iter().zip(&got) {
        match p.as_str() {
            "missing.txt" => assert!(matches!(r, Err(AfsError::NotFound { .. })), "{r:?}"),
            "../outside.txt" => assert!(matches!(r, Err(AfsError::Refused { .. })), "{r:?}"),
            _ => {
                let f = r.as_ref().expect("opened");
                let want = std::fs::read(c.path(&format!("root/{p}"))).expect("read");
                assert_eq!(f.read().expect("read").to_vec(), want, "{p}");
                assert_eq!(
                    matches!(f.content, Content::Memory(_)),
                    p != "big.txt",
                    "{p}: small files in memory"
                );
            }
        }
    }
    let s1 = client.stats();
    assert_eq!(s1.fetches, 21, "{s1:?}");
    let ok: Vec<String> = paths
        .iter()
        .filter(|p| !p.contains("missing") && !p.contains(".."))
        .cloned()
        .collect();
    let again = client.open_many(&ok).await;
    assert!(again.iter().all(|r| r.as_ref().is_ok_and(|f| f.from_cache)));
    let s2 = client.stats();
    assert_eq!(
        (s2.fetches, s2.revalidated, s2.body_bytes),
        (21, 21, s1.body_bytes),
        "revalidated, no body: {s2:?}"
    );
}
