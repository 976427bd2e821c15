//! The server through a real Redis client library (the `redis` crate): every command,
//! pipelining, MULTI/EXEC atomicity and WATCH, AUTH, limits, the admin commands, and a
//! shutdown followed by a restart that needs no recovery.

use redis::{Commands, Connection, RedisResult, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strongbox_engine::{Db, FlushAtCommit, Options};
use strongbox_keyring::provider::MemoryKeyProvider;
use strongbox_server::{Server, ServerConfig, ServerHandle};

fn keyring() -> Arc<MemoryKeyProvider> {
    let keys = MemoryKeyProvider::new();
    for id in [1, 2, 5] {
        keys.add_random(id, 1, 256).unwrap();
    }
    Arc::new(keys)
}

fn open_db(dir: &Path, keys: &Arc<MemoryKeyProvider>) -> Db {
    let options = Options::new()
        .key_provider(Arc::clone(keys) as _)
        .buffer_pool_size(8 << 20)
        .flush_log_at_commit(FlushAtCommit::WriteAtCommit)
        .encryption_rotation_iops(0);
    Db::open(dir, options).unwrap()
}

struct Running {
    handle: ServerHandle,
    url: String,
}

fn start(db: Db, config: ServerConfig) -> Running {
    let config = ServerConfig {
        listen: "127.0.0.1:0".into(),
        ..config
    };
    let handle = Server::start(db, config).unwrap();
    let url = format!("redis://{}/", handle.local_addr());
    Running { handle, url }
}

fn connect(running: &Running) -> Connection {
    redis::Client::open(running.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn error_text<T: std::fmt::Debug>(result: RedisResult<T>) -> String {
    let error = result.expect_err("an error reply");
    format!(
        "{} {}",
        error.code().unwrap_or(""),
        error.detail().unwrap_or("")
    )
}

#[test]
fn string_and_keyspace_commands_behave_like_redis() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let server = start(open_db(dir.path(), &keys), ServerConfig::default());
    let mut con = connect(&server);

    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
    assert_eq!(
        redis::cmd("ECHO")
            .arg("hi")
            .query::<String>(&mut con)
            .unwrap(),
        "hi"
    );
    let _: () = con.set("k", "v").unwrap();
    assert_eq!(con.get::<_, String>("k").unwrap(), "v");
    // SET options
    let nx: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("NX")
        .query(&mut con)
        .unwrap();
    assert_eq!(nx, None, "NX on an existing key does nothing");
    let xx: Option<String> = redis::cmd("SET")
        .arg("new")
        .arg("w")
        .arg("XX")
        .query(&mut con)
        .unwrap();
    assert_eq!(xx, None);
    let old: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("GET")
        .query(&mut con)
        .unwrap();
    assert_eq!(old.as_deref(), Some("v"));
    let ex = redis::cmd("SET")
        .arg("k")
        .arg("x")
        .arg("EX")
        .arg(10)
        .query::<()>(&mut con);
    assert!(error_text(ex).contains("not supported"));
    assert_eq!(
        con.get::<_, String>("k").unwrap(),
        "w",
        "a refused SET writes nothing"
    );
    assert_eq!(
        redis::cmd("SETNX")
            .arg("k")
            .arg("z")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("GETSET")
            .arg("k")
            .arg("g")
            .query::<String>(&mut con)
            .unwrap(),
        "w"
    );
    assert_eq!(
        redis::cmd("GETDEL")
            .arg("k")
            .query::<String>(&mut con)
            .unwrap(),
        "g"
    );
    assert_eq!(con.get::<_, Option<String>>("k").unwrap(), None);
    // multi-key
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut con)
        .unwrap();
    let values: Vec<Option<i64>> = redis::cmd("MGET")
        .arg("a")
        .arg("b")
        .arg("c")
        .query(&mut con)
        .unwrap();
    assert_eq!(values, vec![Some(1), Some(2), None]);
    assert_eq!(
        redis::cmd("MSETNX")
            .arg("a")
            .arg(9)
            .arg("c")
            .arg(3)
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(
        con.get::<_, Option<i64>>("c").unwrap(),
        None,
        "MSETNX is all or nothing"
    );
    assert_eq!(
        redis::cmd("MSETNX")
            .arg("c")
            .arg(3)
            .arg("d")
            .arg(4)
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXISTS")
            .arg("a")
            .arg("a")
            .arg("zz")
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    assert_eq!(
        redis::cmd("DEL")
            .arg("c")
            .arg("d")
            .arg("c")
            .arg("zz")
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    assert_eq!(
        redis::cmd("UNLINK")
            .arg("b")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    // counters
    assert_eq!(con.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert_eq!(
        redis::cmd("INCRBY")
            .arg("n")
            .arg(41)
            .query::<i64>(&mut con)
            .unwrap(),
        42
    );
    assert_eq!(
        redis::cmd("DECR").arg("n").query::<i64>(&mut con).unwrap(),
        41
    );
    assert_eq!(
        redis::cmd("DECRBY")
            .arg("n")
            .arg(40)
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    let _: () = con.set("big", i64::MAX).unwrap();
    assert!(error_text(redis::cmd("INCR").arg("big").query::<i64>(&mut con)).contains("overflow"));
    let _: () = con.set("word", "abc").unwrap();
    assert!(
        error_text(redis::cmd("INCR").arg("word").query::<i64>(&mut con))
            .contains("not an integer")
    );
    // strings
    assert_eq!(
        redis::cmd("APPEND")
            .arg("word")
            .arg("def")
            .query::<i64>(&mut con)
            .unwrap(),
        6
    );
    assert_eq!(
        redis::cmd("STRLEN")
            .arg("word")
            .query::<i64>(&mut con)
            .unwrap(),
        6
    );
    assert_eq!(
        redis::cmd("GETRANGE")
            .arg("word")
            .arg(1)
            .arg(-2)
            .query::<String>(&mut con)
            .unwrap(),
        "bcde"
    );
    assert_eq!(
        redis::cmd("TYPE")
            .arg("word")
            .query::<String>(&mut con)
            .unwrap(),
        "string"
    );
    assert_eq!(
        redis::cmd("TYPE")
            .arg("nothing")
            .query::<String>(&mut con)
            .unwrap(),
        "none"
    );
    // keyspace
    for i in 0..250 {
        let _: () = con.set(format!("user:{i:03}"), i).unwrap();
    }
    let mut scanned: Vec<String> = con.scan_match("user:*").unwrap().collect();
    scanned.sort();
    assert_eq!(scanned.len(), 250);
    assert_eq!(scanned[0], "user:000");
    let mut listed: Vec<String> = redis::cmd("KEYS").arg("user:1?0").query(&mut con).unwrap();
    listed.sort();
    assert_eq!(
        listed,
        (0..10).map(|i| format!("user:1{i}0")).collect::<Vec<_>>()
    );
    let random: String = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    assert!(con.exists::<_, bool>(&random).unwrap());
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 254); // a, n, big, word + 250 users
                           // SELECT: another table
    let _: () = redis::cmd("SELECT").arg(3).query(&mut con).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 0);
    let _: () = con.set("a", "in db3").unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    assert_eq!(con.get::<_, i64>("a").unwrap(), 1);
    assert!(
        error_text(redis::cmd("SELECT").arg(99).query::<()>(&mut con)).contains("out of range")
    );
    let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 0);
    // unsupported types and bad calls
    let lpush = error_text(redis::cmd("LPUSH").arg("l").arg(1).query::<i64>(&mut con));
    assert!(lpush.contains("unknown command 'LPUSH'"), "{lpush}");
    let arity = error_text(redis::cmd("GET").query::<()>(&mut con));
    assert!(
        arity.contains("wrong number of arguments for 'get' command"),
        "{arity}"
    );
    // connection and server
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        redis::cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut con)
            .unwrap(),
        "tester"
    );
    assert!(
        redis::cmd("CLIENT")
            .arg("ID")
            .query::<i64>(&mut con)
            .unwrap()
            > 0
    );
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    assert!(count > 40);
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .unwrap();
    assert_eq!(config[0], "save");
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Stats",
        "# Memory",
        "# Persistence",
        "# Keyspace",
        "# Encryption",
        "# Bufferpool",
    ] {
        assert!(info.contains(section), "INFO lacks {section}");
    }
    assert!(info.contains("scheme=aes_ctr"), "{info}");
    drop(con);
    server.handle.stop().unwrap();
}

#[test]
fn resp3_hello_pipelining_and_many_connections() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let server = start(open_db(dir.path(), &keys), ServerConfig::default());
    let url3 = format!("{}?protocol=resp3", server.url);
    let mut con3 = redis::Client::open(url3.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = con3.set("x", 7).unwrap();
    assert_eq!(con3.get::<_, i64>("x").unwrap(), 7);
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut con3).unwrap();
    assert!(
        matches!(hello, Value::Map(_)),
        "RESP3 HELLO is a map: {hello:?}"
    );

    let mut con = connect(&server);
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.set(format!("p{i}"), i).ignore();
    }
    for i in 0..1000 {
        pipe.get(format!("p{i}"));
    }
    let values: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(
        values,
        (0..1000).collect::<Vec<_>>(),
        "pipelined replies in order"
    );

    // Many connections at once, most idle, some busy.
    let idle: Vec<Connection> = (0..200).map(|_| connect(&server)).collect();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                for _ in 0..100 {
                    let _: i64 = con.incr("shared", 1).unwrap();
                }
                w
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(
        con.get::<_, i64>("shared").unwrap(),
        800,
        "INCR loses no update"
    );
    drop(idle);
    server.handle.stop().unwrap();
}

#[test]
fn multi_exec_is_atomic_and_watch_aborts_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let server = start(open_db(dir.path(), &keys), ServerConfig::default());
    let mut con = connect(&server);
    let mut other = connect(&server);
    let _: () = con.set("balance", 100).unwrap();

    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("DECRBY")
        .arg("balance")
        .arg(30)
        .cmd("INCRBY")
        .arg("savings")
        .arg(30)
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b), (70, 30));

    // A block's writes are invisible to others until EXEC.
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let queued: String = redis::cmd("SET")
        .arg("balance")
        .arg(0)
        .query(&mut con)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    assert_eq!(other.get::<_, i64>("balance").unwrap(), 70);
    let _: Value = redis::cmd("DISCARD").query(&mut con).unwrap();
    assert_eq!(other.get::<_, i64>("balance").unwrap(), 70);

    // A command error inside the block is its reply; the others apply (Redis semantics).
    let _: () = con.set("text", "abc").unwrap();
    let mut raw = TcpStream::connect(server.handle.local_addr()).unwrap();
    raw.write_all(b"MULTI\r\nINCR text\r\nSET after yes\r\nEXEC\r\nQUIT\r\n")
        .unwrap();
    assert_eq!(
        read_reply(&mut raw),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR value is not an integer or out of range\r\n\
         +OK\r\n+OK\r\n"
    );
    assert_eq!(con.get::<_, String>("after").unwrap(), "yes");

    // A queueing error aborts the whole block.
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    assert!(redis::cmd("GET").query::<()>(&mut con).is_err());
    let abort = error_text(redis::cmd("EXEC").query::<Value>(&mut con));
    assert!(abort.contains("EXECABORT"), "{abort}");

    // WATCH: a change by another client makes EXEC return nil and apply nothing.
    let _: () = redis::cmd("WATCH").arg("balance").query(&mut con).unwrap();
    let _: () = other.set("balance", 5).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("SET")
        .arg("balance")
        .arg(1000)
        .query(&mut con)
        .unwrap();
    let exec: Value = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(exec, Value::Nil);
    assert_eq!(con.get::<_, i64>("balance").unwrap(), 5);
    // Unchanged: EXEC runs.
    let _: () = redis::cmd("WATCH").arg("balance").query(&mut con).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCR").arg("balance").query(&mut con).unwrap();
    let exec: Vec<i64> = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(exec, vec![6]);
    server.handle.stop().unwrap();
}

#[test]
fn sb_range_reads_records_in_key_order_from_a_start_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let server = start(open_db(dir.path(), &keys), ServerConfig::default());
    let mut con = connect(&server);
    let range = |con: &mut Connection, start: &str, count: i64| -> Vec<String> {
        redis::cmd("SB.RANGE")
            .arg(start)
            .arg(count)
            .query(con)
            .unwrap()
    };
    for i in 0..20 {
        let _: () = con.set(format!("k{i:02}"), format!("v{i}")).unwrap();
    }
    assert_eq!(
        range(&mut con, "k05", 3),
        ["k05", "v5", "k06", "v6", "k07", "v7"]
    );
    assert_eq!(
        range(&mut con, "k055", 2),
        ["k06", "v6", "k07", "v7"],
        "start need not exist"
    );
    assert_eq!(range(&mut con, "k18", 10), ["k18", "v18", "k19", "v19"]);
    assert!(range(&mut con, "zzz", 10).is_empty());
    assert_eq!(
        range(&mut con, "", 1_000_000).len(),
        40,
        "count is capped, not refused"
    );
    let _: i64 = con.del("k06").unwrap();
    assert_eq!(range(&mut con, "k05", 2), ["k05", "v5", "k07", "v7"]);
    // The session's table only.
    let _: () = redis::cmd("SELECT").arg(1).query(&mut con).unwrap();
    assert!(range(&mut con, "", 10).is_empty());
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();

    // Inside MULTI it sees the block's own writes, and EXEC's reply holds its array.
    let (set, read): ((), Vec<String>) = redis::pipe()
        .atomic()
        .set("k06", "again")
        .cmd("SB.RANGE")
        .arg("k06")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!((set, read), ((), vec!["k06".into(), "again".into()]));

    // Bad calls, with Redis' texts.
    for (count, expected) in [
        ("abc", "value is not an integer or out of range"),
        ("1.5", "value is not an integer or out of range"),
        ("0", "value is out of range, must be positive"),
        ("-3", "value is out of range, must be positive"),
    ] {
        let error = error_text(
            redis::cmd("SB.RANGE")
                .arg("k")
                .arg(count)
                .query::<Value>(&mut con),
        );
        assert!(error.contains(expected), "{count}: {error}");
    }
    let arity = error_text(redis::cmd("SB.RANGE").arg("k").query::<Value>(&mut con));
    assert!(
        arity.contains("wrong number of arguments for 'sb.range'"),
        "{arity}"
    );
    // COMMAND INFO knows it (redis-cli and client libraries ask).
    let info: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("sb.range")
        .query(&mut con)
        .unwrap();
    assert!(format!("{info:?}").contains("sb.range"), "{info:?}");
    server.handle.stop().unwrap();
}

#[test]
fn auth_protects_every_command_and_protected_mode_refuses_open_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let config = ServerConfig {
        requirepass: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let server = start(open_db(dir.path(), &keys), config);
    let mut con = connect(&server);
    let denied = error_text(redis::cmd("GET").arg("k").query::<()>(&mut con));
    assert!(denied.starts_with("NOAUTH"), "{denied}");
    let wrong = error_text(redis::cmd("AUTH").arg("nope").query::<()>(&mut con));
    assert!(wrong.starts_with("WRONGPASS"), "{wrong}");
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut con).unwrap();
    let _: () = con.set("k", "v").unwrap();
    let url = format!("redis://:s3cret@{}/", server.handle.local_addr());
    let mut authed = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(authed.get::<_, String>("k").unwrap(), "v");
    // Before AUTH only small requests are read at all.
    let mut raw = TcpStream::connect(server.handle.local_addr()).unwrap();
    raw.write_all(b"*20\r\n").unwrap();
    let reply = read_reply(&mut raw);
    assert!(reply.contains("Protocol error"), "{reply}");
    server.handle.stop().unwrap();

    let db = open_db(tempfile::tempdir().unwrap().path(), &keys);
    let open = Server::start(
        db,
        ServerConfig {
            listen: "0.0.0.0:0".into(),
            ..ServerConfig::default()
        },
    );
    let error = open.err().expect("refused without a password").to_string();
    assert!(error.contains("protected mode"), "{error}");
}

/// Reads until the server closes the connection or 2 s pass.
fn read_reply(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn protocol_errors_close_only_the_offending_connection() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let config = ServerConfig {
        maxclients: 50,
        ..ServerConfig::default()
    };
    let server = start(open_db(dir.path(), &keys), config);
    let mut good = connect(&server);
    let cases: [&[u8]; 5] = [
        b"*1\r\n$999999999999\r\n", // bulk beyond 512 MiB
        b"*99999999\r\n",           // multibulk beyond 1M elements
        b"*1\r\n$3\r\nGETxx\r\n",   // payload not followed by CRLF
        b"*1\r\n+PING\r\n",         // not a bulk string
        b"\x00\xff\xfe garbage \"unbalanced\r\n",
    ];
    for bytes in cases {
        let mut raw = TcpStream::connect(server.handle.local_addr()).unwrap();
        raw.write_all(bytes).unwrap();
        let reply = read_reply(&mut raw);
        assert!(
            reply.starts_with("-ERR"),
            "{:?} -> {reply:?}",
            String::from_utf8_lossy(bytes)
        );
        let _: () = good.set("still", "serving").unwrap();
    }
    // Inline commands, as redis-benchmark's PING.
    let mut raw = TcpStream::connect(server.handle.local_addr()).unwrap();
    raw.write_all(b"PING\r\nSET inline \"a b\"\r\nGET inline\r\nQUIT\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut raw), "+PONG\r\n+OK\r\n$3\r\na b\r\n+OK\r\n");
    assert_eq!(good.get::<_, String>("still").unwrap(), "serving");
    server.handle.stop().unwrap();
}

#[test]
fn admin_commands_manage_tables_encryption_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let server = start(open_db(dir.path(), &keys), ServerConfig::default());
    let mut con = connect(&server);
    let _: () = redis::cmd("SB.TABLE")
        .arg("CREATE")
        .arg("secrets")
        .arg("KEY_ID")
        .arg(5)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SB.TABLE")
        .arg("CREATE")
        .arg("plain")
        .arg("ENCRYPTED")
        .arg("NO")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SB.USE").arg("secrets").query(&mut con).unwrap();
    let _: () = con.set("card", "4111").unwrap();
    let list: Value = redis::cmd("SB.TABLE").arg("LIST").query(&mut con).unwrap();
    let listed = format!("{list:?}");
    assert!(
        listed.contains("secrets") && listed.contains("plain"),
        "{listed}"
    );
    let _: () = redis::cmd("SB.TABLE")
        .arg("ALTER")
        .arg("plain")
        .arg("ENCRYPTED")
        .arg("YES")
        .query(&mut con)
        .unwrap();
    keys.rotate(5).unwrap();
    let rotated: Value = redis::cmd("SB.KEY")
        .arg("ROTATE")
        .arg(5)
        .arg("REENCRYPT")
        .query(&mut con)
        .unwrap();
    assert!(format!("{rotated:?}").contains("version"), "{rotated:?}");
    let _: () = redis::cmd("SB.ENCRYPTION")
        .arg("WAIT")
        .query(&mut con)
        .unwrap();
    let status: Vec<Vec<String>> = redis::cmd("SB.ENCRYPTION")
        .arg("STATUS")
        .query(&mut con)
        .unwrap();
    let secrets = status
        .iter()
        .find(|row| row.contains(&"secrets".to_string()))
        .unwrap();
    assert!(
        secrets
            .windows(2)
            .any(|w| w[0] == "current_key_version" && w[1] == "2"),
        "{secrets:?}"
    );
    let plain = status
        .iter()
        .find(|row| row.contains(&"plain".to_string()))
        .unwrap();
    assert!(
        plain
            .windows(2)
            .any(|w| w[0] == "scheme" && w[1] == "aes_ctr"),
        "{plain:?}"
    );
    let _: () = redis::cmd("SB.CHECKPOINT").query(&mut con).unwrap();
    let stats: Value = redis::cmd("SB.STATS").query(&mut con).unwrap();
    assert!(format!("{stats:?}").contains("pages_reencrypted"));
    let _: () = redis::cmd("SB.TABLE")
        .arg("DROP")
        .arg("plain")
        .query(&mut con)
        .unwrap();
    assert!(redis::cmd("SB.USE")
        .arg("plain")
        .query::<()>(&mut con)
        .is_err());
    assert_eq!(con.get::<_, String>("card").unwrap(), "4111");
    server.handle.stop().unwrap();
}

#[test]
fn shutdown_checkpoints_and_the_restart_needs_no_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring();
    let server = start(open_db(dir.path(), &keys), ServerConfig::default());
    let mut con = connect(&server);
    for i in 0..500 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let _: RedisResult<Value> = redis::cmd("SHUTDOWN").query(&mut con);
    server.handle.wait_for_shutdown();
    server.handle.stop().unwrap();

    let db = open_db(dir.path(), &keys);
    let recovered = db.recovery();
    assert_eq!(
        (recovered.redo, recovered.rolled_back),
        (0, 0),
        "{recovered:?}"
    );
    let server = start(db, ServerConfig::default());
    let mut con = connect(&server);
    assert_eq!(con.get::<_, i64>("k499").unwrap(), 499);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 500);
    server.handle.stop().unwrap();
}
