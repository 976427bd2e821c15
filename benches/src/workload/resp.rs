//! The `resp://host:port` target: a Strongbox server — or any Redis — over the Redis
//! protocol, through the `redis` crate's blocking client.
//!
//! | [`Target`] method     | commands                                                   |
//! |-----------------------|------------------------------------------------------------|
//! | `get`, `put`, `delete`| `GET`, `SET`, `DEL` (deleted if it answers 1)              |
//! | `load`                | `MSET`, [`LOAD_CHUNK`] records per command                 |
//! | `scan`                | `SB.RANGE start count` (Strongbox only; records = reply length / 2) |
//! | `read_modify_write`   | `WATCH key`, `GET key`, `MULTI`, `SET key value`, `EXEC`; again while `EXEC` answers nil |
//! | `transaction`         | `MULTI`, a `GET` / `SET` / `SB.RANGE` per operation, `EXEC` |
//!
//! **Scans need Strongbox.** Redis has no ordered range read (its `SCAN` walks a hash table
//! in no key order), so `SB.RANGE` is Strongbox's own command. [`Resp::connect`] calls it
//! once; a server that answers "unknown command" gives a target whose
//! [`Target::supports_scan`] is false and whose scans fail with
//! [`TargetError::Unsupported`] before anything is sent. Every other operation runs
//! against Redis too, which makes Redis a baseline for the point-operation workloads.
//!
//! **Transactions.** A `MULTI` block runs as one engine transaction on Strongbox and
//! serialised on Redis, so a `GET` and `SET` of one key inside it are a read-modify-write
//! nobody can come between. Outside a block, `read_modify_write` needs the `GET`'s answer
//! before the `SET`, so it watches the key and retries when another client changed it
//! (Strongbox's `WATCH` compares values at `EXEC`; see `docs/server.md`).
//!
//! **Connections.** Worker threads share one [`Resp`]. Each call takes an idle connection
//! from a pool, or opens one when none is idle, and puts it back when the call succeeds;
//! so a run with `n` threads settles at `n` connections. A connection whose call failed is
//! dropped rather than returned: it may have been left inside `WATCH` or closed.
//!
//! Addresses: `resp://host:port`, `resp://[::1]:port`, and `resp://:password@host:port`
//! (or `resp://user:password@host:port`), which authenticates every connection with
//! `AUTH`. The password never appears in [`Target::name`], in errors or in `Debug`.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::{
    Client, ConnectionAddr, ConnectionInfo, ErrorKind, RedisConnectionInfo, RedisError, Value,
};

use super::spec::Op;
use super::target::{Outcome, Target, TargetError, TargetResult};

/// Records per `MSET` in [`Target::load`]: a few hundred kilobytes of request at YCSB's
/// 1 KB values, and few round trips.
pub const LOAD_CHUNK: usize = 1_000;

/// The most records one `SB.RANGE` returns (the server caps `count` here, as `SCAN` caps
/// `COUNT`); longer scans outside a transaction take several calls.
pub const MAX_RANGE: usize = 100_000;

/// How many times [`Target::read_modify_write`] tries before it gives up on a key other
/// clients keep changing.
const MAX_ATTEMPTS: usize = 10_000;

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A RESP server as a workload target.
pub struct Resp {
    /// `resp://host:port`, without the password.
    name: String,
    client: Client,
    /// Guards the idle connections. Held only to push or pop one, never across a command,
    /// so threads wait on the server, not on each other.
    idle: Mutex<Vec<redis::Connection>>,
    /// The server knows `SB.RANGE`.
    range: bool,
}

impl fmt::Debug for Resp {
    // By hand: the client's connection info holds the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resp")
            .field("name", &self.name)
            .field("idle", &self.idle_count())
            .field("range", &self.range)
            .finish()
    }
}

impl Resp {
    /// Connects to `url` (`resp://host:port` or `resp://[user]:password@host:port`), opens
    /// `connections` connections up front (at least one) so that a run does not time its
    /// own connects, and asks the server whether it has `SB.RANGE`.
    pub fn connect(url: &str, connections: usize) -> TargetResult<Resp> {
        let address = Address::parse(url)?;
        let name = address.name();
        let client = Client::open(address.connection_info())
            .map_err(|e| TargetError::Setup(format!("{name}: {e}")))?;
        let mut target = Resp {
            name,
            client,
            idle: Mutex::new(Vec::new()),
            range: false,
        };
        let mut pool = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            pool.push(target.open()?);
        }
        target.range = knows_range(&mut pool[0])
            .map_err(|e| TargetError::Setup(format!("{}: {e}", target.name)))?;
        target.idle = Mutex::new(pool);
        Ok(target)
    }

    fn open(&self) -> TargetResult<redis::Connection> {
        self.client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| TargetError::Setup(format!("connecting to {}: {e}", self.name)))
    }

    /// Runs `call` on a pooled connection; the connection goes back only if `call`
    /// succeeded.
    fn with<T>(
        &self,
        call: impl FnOnce(&mut redis::Connection) -> TargetResult<T>,
    ) -> TargetResult<T> {
        let idle = self.lock_idle().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.open()?,
        };
        let result = call(&mut connection);
        if result.is_ok() {
            self.lock_idle().push(connection);
        }
        result
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<redis::Connection>> {
        // Nothing panics while the lock is held (a push or a pop), and a list of idle
        // connections is valid whatever happened, so a poisoned lock is still usable.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }

    fn check_scan(&self) -> TargetResult<()> {
        if self.range {
            return Ok(());
        }
        Err(TargetError::Unsupported(format!(
            "scan needs SB.RANGE, which {} (a Redis server?) does not have: YCSB-E and \
             scan workloads run only against Strongbox",
            self.name
        )))
    }
}

/// Whether the server behind `connection` has `SB.RANGE`: it is called once, and only an
/// "unknown command" answer means no.
fn knows_range(connection: &mut redis::Connection) -> redis::RedisResult<bool> {
    match redis::cmd("SB.RANGE")
        .arg("")
        .arg(1)
        .query::<Value>(connection)
    {
        Ok(_) => Ok(true),
        Err(e) if e.detail().is_some_and(|d| d.starts_with("unknown command")) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A failure the client library did not see as one: the server answered, but not as
/// this adapter needs.
fn server_error(kind: ErrorKind, what: &'static str, detail: String) -> TargetError {
    TargetError::Resp(RedisError::from((kind, what, detail)))
}

/// What an `EXEC` reply item is, for counting.
#[derive(Clone, Copy)]
enum Expect {
    /// A `GET`: a record or a miss.
    Point,
    /// An `SB.RANGE`: a flat key/value array.
    Range,
    /// A `SET`.
    Write,
}

impl Target for Resp {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn supports_scan(&self) -> bool {
        self.range
    }

    fn load(&self, batch: &[(Vec<u8>, Vec<u8>)]) -> TargetResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with(|connection| {
            for chunk in batch.chunks(LOAD_CHUNK) {
                let mut mset = redis::cmd("MSET");
                for (key, value) in chunk {
                    mset.arg(key).arg(value);
                }
                mset.exec(connection)?;
            }
            Ok(())
        })
    }

    fn get(&self, key: &[u8]) -> TargetResult<Option<Vec<u8>>> {
        self.with(|connection| Ok(redis::cmd("GET").arg(key).query(connection)?))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> TargetResult<()> {
        self.with(|connection| Ok(redis::cmd("SET").arg(key).arg(value).exec(connection)?))
    }

    fn delete(&self, key: &[u8]) -> TargetResult<bool> {
        self.with(|connection| {
            let deleted: i64 = redis::cmd("DEL").arg(key).query(connection)?;
            Ok(deleted == 1)
        })
    }

    fn scan(&self, start: &[u8], count: usize) -> TargetResult<usize> {
        self.check_scan()?;
        if count == 0 {
            return Ok(0); // SB.RANGE refuses a count of 0, as Redis' commands do
        }
        self.with(|connection| {
            let mut start = start.to_vec();
            let mut read = 0;
            loop {
                let wanted = (count - read).min(MAX_RANGE);
                let flat: Vec<Vec<u8>> = redis::cmd("SB.RANGE")
                    .arg(&start)
                    .arg(wanted)
                    .query(connection)?;
                let got = flat.len() / 2;
                read += got;
                if got < wanted || read == count {
                    return Ok(read);
                }
                // The next page starts just after the last key: that key followed by a
                // zero byte is the smallest key greater than it.
                start.clone_from(&flat[flat.len() - 2]);
                start.push(0);
            }
        })
    }

    fn read_modify_write(&self, key: &[u8], value: &[u8]) -> TargetResult<bool> {
        self.with(|connection| {
            for _ in 0..MAX_ATTEMPTS {
                redis::cmd("WATCH").arg(key).exec(connection)?;
                let old: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(connection)?;
                // EXEC answers nil, and writes nothing, if the key changed since WATCH.
                let committed: Option<()> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(value)
                    .ignore()
                    .query(connection)?;
                if committed.is_some() {
                    return Ok(old.is_some());
                }
            }
            Err(server_error(
                ErrorKind::ExecAbortError,
                "read-modify-write gave up",
                format!(
                    "EXEC aborted {MAX_ATTEMPTS} times: other clients kept changing the key \
                     between WATCH and EXEC"
                ),
            ))
        })
    }

    fn transaction(&self, ops: &[Op]) -> TargetResult<Outcome> {
        let mut block = redis::pipe();
        block.atomic();
        let mut expected = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Read(key) => {
                    block.cmd("GET").arg(key);
                    expected.push(Expect::Point);
                }
                Op::Update(key, value) | Op::Insert(key, value) => {
                    block.cmd("SET").arg(key).arg(value);
                    expected.push(Expect::Write);
                }
                Op::Scan(start, len) => {
                    self.check_scan()?;
                    if *len > MAX_RANGE {
                        return Err(TargetError::Unsupported(format!(
                            "a scan of {len} records inside a transaction: SB.RANGE reads at \
                             most {MAX_RANGE}, and a MULTI block cannot page"
                        )));
                    }
                    if *len > 0 {
                        block.cmd("SB.RANGE").arg(start).arg(*len);
                        expected.push(Expect::Range);
                    }
                }
                Op::ReadModifyWrite(key, value) => {
                    // Inside the block nothing comes between the GET and the SET.
                    block.cmd("GET").arg(key);
                    block.cmd("SET").arg(key).arg(value);
                    expected.extend([Expect::Point, Expect::Write]);
                }
                Op::Txn(_) => return Err(TargetError::UnsupportedInTxn("nested transaction")),
            }
        }
        if expected.is_empty() {
            return Ok(Outcome::default());
        }
        let replies: Option<Vec<Value>> = self.with(|connection| Ok(block.query(connection)?))?;
        // Without WATCH, only a server that is not Redis-compatible answers EXEC with nil.
        let replies = replies.ok_or_else(|| {
            server_error(
                ErrorKind::ExecAbortError,
                "EXEC answered nil to a block with no WATCH",
                self.name.clone(),
            )
        })?;
        let mut outcome = Outcome::default();
        for (expect, reply) in expected.into_iter().zip(replies) {
            match (expect, reply) {
                (Expect::Point, Value::Nil) => outcome.misses += 1,
                (Expect::Point, _) => outcome.records_read += 1,
                (Expect::Range, Value::Array(flat)) => outcome.records_read += flat.len() / 2,
                (Expect::Range, other) => {
                    return Err(server_error(
                        ErrorKind::TypeError,
                        "SB.RANGE in EXEC answered with something other than an array",
                        format!("{other:?}"),
                    ))
                }
                (Expect::Write, _) => {}
            }
        }
        Ok(outcome)
    }
}

/// A parsed `resp://` url.
#[derive(PartialEq, Eq)]
struct Address {
    /// Without brackets for IPv6.
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Address")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

const FORMS: &str = "use resp://host:port or resp://:password@host:port";

impl Address {
    fn parse(url: &str) -> TargetResult<Address> {
        let bad = |why: String| TargetError::Setup(format!("`{}` {why}: {FORMS}", redact(url)));
        let rest = url
            .strip_prefix("resp://")
            .ok_or_else(|| bad("is not a resp:// url".into()))?;
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((_, "")) | None => return Err(bad("has no password before the @".into())),
                Some(("", password)) => (None, Some(password.to_string())),
                Some((user, password)) => (Some(user.to_string()), Some(password.to_string())),
            },
        };
        if host_port.contains(['/', '?', '#']) {
            return Err(bad(
                "has a path or query; a resp:// target is one server".into()
            ));
        }
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("has a [ with no ]".into()))?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(bad("has no host".into()));
        }
        let port = port.ok_or_else(|| {
            bad("has no port (a Strongbox server listens on 6380 unless told otherwise)".into())
        })?;
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(bad(format!(
                    "has port `{port}`, not a number from 1 to 65535"
                )))
            }
        };
        Ok(Address {
            host: host.to_string(),
            port,
            username,
            password,
        })
    }

    /// The url again, without the password.
    fn name(&self) -> String {
        if self.host.contains(':') {
            format!("resp://[{}]:{}", self.host, self.port)
        } else {
            format!("resp://{}:{}", self.host, self.port)
        }
    }

    fn connection_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            addr: ConnectionAddr::Tcp(self.host.clone(), self.port),
            redis: RedisConnectionInfo {
                username: self.username.clone(),
                password: self.password.clone(),
                ..RedisConnectionInfo::default()
            },
        }
    }
}

/// `url` with anything before an `@` (a password) hidden, for messages.
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, after)) => {
            let scheme = before.split_once("://").map_or("", |(scheme, _)| scheme);
            format!("{scheme}://…@{after}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::target::{tests::conformance, Embedded};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;
    use strongbox_engine::{Db, FlushAtCommit};
    use strongbox_server::{Server, ServerConfig, ServerHandle};

    /// A Strongbox server in this process, over a fresh encrypted database.
    struct Strongbox {
        handle: ServerHandle,
        url: String,
        _dir: tempfile::TempDir,
    }

    fn strongbox(requirepass: Option<&str>) -> Strongbox {
        let dir = tempfile::tempdir().unwrap();
        let options = Embedded::options(8 << 20, FlushAtCommit::WriteAtCommit).unwrap();
        let db = Db::open(dir.path(), options).unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".into(),
            requirepass: requirepass.map(str::to_string),
            ..ServerConfig::default()
        };
        let handle = Server::start(db, config).unwrap();
        let url = format!("resp://{}", handle.local_addr());
        Strongbox {
            handle,
            url,
            _dir: dir,
        }
    }

    fn key(n: u32) -> Vec<u8> {
        format!("user{n:06}").into_bytes()
    }

    fn setup_message(result: TargetResult<Resp>) -> String {
        match result {
            Err(TargetError::Setup(message)) => message,
            other => panic!("expected a setup error, got {other:?}"),
        }
    }

    #[test]
    fn strongbox_server_conforms() {
        let server = strongbox(None);
        let target = Resp::connect(&server.url, 2).unwrap();
        assert_eq!(target.name(), server.url);
        assert!(target.supports_scan());
        conformance(&target);
        assert_eq!(target.idle_count(), 2, "one thread reuses the pool");
        server.handle.stop().unwrap();
    }

    #[test]
    fn long_scans_page_and_loads_chunk() {
        let server = strongbox(None);
        let target = Resp::connect(&server.url, 1).unwrap();
        let batch: Vec<_> = (0..2_500).map(|n| (key(n), b"v".to_vec())).collect();
        target.load(&batch).unwrap(); // three MSETs
        target.load(&[]).unwrap();
        assert_eq!(target.scan(b"", usize::MAX).unwrap(), 2_500);
        let huge = Op::Scan(key(0), MAX_RANGE + 1);
        let refused = target.transaction(&[huge]).unwrap_err().to_string();
        assert!(refused.contains("cannot page"), "{refused}");
        // A block of writes and a read-modify-write.
        let ops = vec![
            Op::Update(key(0), b"w".to_vec()),
            Op::ReadModifyWrite(key(1), b"m".to_vec()),
            Op::ReadModifyWrite(b"absent".to_vec(), b"m".to_vec()),
            Op::Scan(key(0), 2),
        ];
        let outcome = target.transaction(&ops).unwrap();
        assert_eq!(
            outcome,
            Outcome {
                records_read: 1 + 2,
                misses: 1
            }
        );
        assert_eq!(target.get(key(1).as_slice()).unwrap(), Some(b"m".to_vec()));
        assert_eq!(target.transaction(&[]).unwrap(), Outcome::default());
        server.handle.stop().unwrap();
    }

    #[test]
    fn threads_share_one_target_and_watch_retries() {
        let server = strongbox(None);
        let target = Resp::connect(&server.url, 1).unwrap();
        const THREADS: u32 = 8;
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let target = &target;
                s.spawn(move || {
                    for n in 0..100 {
                        target.put(&key(t * 1_000 + n), b"x").unwrap();
                        // Every thread fights over one key with its own values, so
                        // EXECs abort and retry.
                        let value = format!("t{t}n{n}");
                        target
                            .read_modify_write(b"counter", value.as_bytes())
                            .unwrap();
                        assert_eq!(
                            target.get(&key(t * 1_000 + n)).unwrap(),
                            Some(b"x".to_vec())
                        );
                    }
                });
            }
        });
        assert_eq!(target.scan(b"user", 10_000).unwrap(), 800);
        let last = target.get(b"counter").unwrap().unwrap();
        assert!(last.ends_with(b"n99"), "{last:?}");
        let idle = target.idle_count();
        assert!(
            (1..=THREADS as usize).contains(&idle),
            "the pool grows to the threads that need it, no further: {idle}"
        );
        server.handle.stop().unwrap();
    }

    #[test]
    fn a_password_authenticates_and_stays_secret() {
        let server = strongbox(Some("s3cret"));
        let addr = server.handle.local_addr();
        let target = Resp::connect(&format!("resp://:s3cret@{addr}"), 1).unwrap();
        target.put(b"k", b"v").unwrap();
        assert_eq!(target.name(), format!("resp://{addr}"));
        assert!(!format!("{target:?}").contains("s3cret"));
        let user = Resp::connect(&format!("resp://default:s3cret@{addr}"), 1).unwrap();
        assert_eq!(user.get(b"k").unwrap(), Some(b"v".to_vec()));

        let wrong = setup_message(Resp::connect(&format!("resp://:guess@{addr}"), 1));
        assert!(!wrong.contains("guess"), "{wrong}");
        let none = setup_message(Resp::connect(&server.url, 1));
        assert!(none.contains("NOAUTH"), "{none}");
        server.handle.stop().unwrap();
    }

    #[test]
    fn bad_urls_are_refused_clearly() {
        let cases = [
            ("redis://127.0.0.1:6380", "is not a resp:// url"),
            ("127.0.0.1:6380", "is not a resp:// url"),
            ("resp://127.0.0.1", "has no port"),
            ("resp://:6380", "has no host"),
            ("resp://localhost:http", "not a number from 1 to 65535"),
            ("resp://localhost:0", "not a number from 1 to 65535"),
            ("resp://localhost:70000", "not a number from 1 to 65535"),
            ("resp://localhost:6380/0", "has a path or query"),
            ("resp://[::1:6380", "has a [ with no ]"),
            ("resp://[::1]", "has no port"),
            ("resp://user@localhost:6380", "has no password"),
            ("resp://:@localhost:6380", "has no password"),
        ];
        for (url, expected) in cases {
            let message = Address::parse(url).unwrap_err().to_string();
            assert!(message.contains(expected), "{url}: {message}");
            assert!(message.contains("use resp://host:port"), "{url}: {message}");
        }
        let secret = Address::parse("redis://:hunter2@host:1").unwrap_err();
        assert!(!secret.to_string().contains("hunter2"), "{secret}");

        let v6 = Address::parse("resp://[::1]:6380").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.name()),
            ("::1", "resp://[::1]:6380".into())
        );
        let authed = Address::parse("resp://u:p@w:rd@db.example:6379").unwrap();
        assert_eq!(
            authed,
            Address {
                host: "db.example".into(),
                port: 6379,
                username: Some("u".into()),
                password: Some("p@w:rd".into()),
            }
        );
        assert!(!format!("{authed:?}").contains("p@w"));
    }

    /// A `redis-server` on a free port, killed when dropped.
    struct RedisServer {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts `redis-server` if it is on PATH (CI has only the client tools).
    fn redis_server() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    #[test]
    fn redis_server_runs_everything_but_scans() {
        let Some(server) = redis_server() else {
            eprintln!("skipped: no redis-server on PATH");
            return;
        };
        let url = format!("resp://127.0.0.1:{}", server.port);
        let target = Resp::connect(&url, 1).unwrap();
        assert!(!target.supports_scan());
        let refused = target.scan(b"", 10).unwrap_err();
        assert!(matches!(refused, TargetError::Unsupported(_)));
        let message = refused.to_string();
        assert!(
            message.contains("SB.RANGE") && message.contains(&url) && message.contains("YCSB-E"),
            "{message}"
        );
        let in_txn = target.transaction(&[Op::Scan(key(0), 5)]).unwrap_err();
        assert!(matches!(in_txn, TargetError::Unsupported(_)));

        // The conformance checks that do not scan.
        assert_eq!(target.get(b"missing").unwrap(), None);
        assert!(!target.delete(b"missing").unwrap());
        target.put(b"alpha", b"1").unwrap();
        assert_eq!(target.get(b"alpha").unwrap(), Some(b"1".to_vec()));
        assert!(target.delete(b"alpha").unwrap());
        let batch: Vec<_> = (0..1_500)
            .map(|n| (key(n), format!("value{n}").into_bytes()))
            .collect();
        target.load(&batch).unwrap();
        assert_eq!(
            target.get(&key(1_499)).unwrap(),
            Some(b"value1499".to_vec())
        );
        assert!(target.read_modify_write(&key(2), b"new").unwrap());
        assert!(!target.read_modify_write(b"fresh", b"v").unwrap());
        assert_eq!(target.get(&key(2)).unwrap(), Some(b"new".to_vec()));
        let ops = vec![
            Op::Read(key(3)),
            Op::Read(b"nope".to_vec()),
            Op::Insert(key(9_999), b"i".to_vec()),
            Op::ReadModifyWrite(key(4), b"r".to_vec()),
        ];
        let outcome = target.transaction(&ops).unwrap();
        assert_eq!(
            outcome,
            Outcome {
                records_read: 2,
                misses: 1
            }
        );
        assert_eq!(target.get(&key(4)).unwrap(), Some(b"r".to_vec()));
        assert!(target.transaction(&[Op::Txn(vec![])]).is_err());
    }
}
