//! [`Reply`]: what a command answers, and its encoding in RESP2 and RESP3.
//!
//! A command builds one `Reply`; the connection encodes it for the protocol the client
//! chose with `HELLO` (2 by default). RESP3-only types degrade as Redis degrades them:
//!
//! | Reply          | RESP3                    | RESP2                         |
//! |----------------|--------------------------|-------------------------------|
//! | `Simple(s)`    | `+s\r\n`                 | same                          |
//! | `Error(e)`     | `-e\r\n`                 | same                          |
//! | `Integer(n)`   | `:n\r\n`                 | same                          |
//! | `Bulk(b)`      | `$len\r\nb\r\n`          | same                          |
//! | `Null`         | `_\r\n`                  | `$-1\r\n` (null bulk)         |
//! | `NullArray`    | `_\r\n`                  | `*-1\r\n` (EXEC aborted)      |
//! | `Array(v)`     | `*n\r\n` + items         | same                          |
//! | `Map(pairs)`   | `%n\r\n` + key, value... | `*2n\r\n` + key, value...     |
//! | `Double(x)`    | `,x\r\n`                 | bulk string of `x`            |
//! | `Verbatim(s)`  | `=len\r\ntxt:s\r\n`      | bulk string of `s`            |

/// One RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    NullArray,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Double(f64),
    /// Text meant for people (INFO): RESP3 verbatim string `txt`.
    Verbatim(String),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// An error reply; `text` starts with its code (`ERR`, `NOAUTH`, `WRONGTYPE`, …).
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    /// A bulk string, or the null bulk for `None`.
    pub fn bulk_or_null(value: Option<Vec<u8>>) -> Reply {
        value.map_or(Reply::Null, Reply::Bulk)
    }

    pub fn bulk(text: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(text.as_ref().to_vec())
    }

    /// Appends the encoding of this reply for protocol `resp` (2 or 3) to `out`.
    pub fn encode(&self, resp: u8, out: &mut Vec<u8>) {
        let resp3 = resp >= 3;
        match self {
            Reply::Simple(text) => line(out, b'+', text.as_bytes()),
            Reply::Error(text) => line(out, b'-', text.as_bytes()),
            Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(bytes) => bulk(out, b'$', bytes),
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(resp, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (key, value) in pairs {
                    key.encode(resp, out);
                    value.encode(resp, out);
                }
            }
            Reply::Double(x) if resp3 => line(out, b',', format_double(*x).as_bytes()),
            Reply::Double(x) => bulk(out, b'$', format_double(*x).as_bytes()),
            Reply::Verbatim(text) if resp3 => {
                let mut body = b"txt:".to_vec();
                body.extend_from_slice(text.as_bytes());
                bulk(out, b'=', &body);
            }
            Reply::Verbatim(text) => bulk(out, b'$', text.as_bytes()),
        }
    }
}

/// `<kind><text>\r\n`. Simple strings and errors must not contain CR or LF: they are
/// replaced by spaces, so a reply can never be split into two.
fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    out.push(kind);
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn format_double(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if x.is_nan() {
        "nan".to_string()
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, resp: u8) -> String {
        let mut out = Vec::new();
        reply.encode(resp, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replies_encode_in_both_protocols() {
        assert_eq!(encoded(&Reply::ok(), 2), "+OK\r\n");
        assert_eq!(
            encoded(&Reply::error("ERR bad\r\nthing"), 2),
            "-ERR bad  thing\r\n"
        );
        assert_eq!(encoded(&Reply::Integer(-7), 2), ":-7\r\n");
        assert_eq!(encoded(&Reply::bulk("hi"), 3), "$2\r\nhi\r\n");
        assert_eq!(encoded(&Reply::Null, 2), "$-1\r\n");
        assert_eq!(encoded(&Reply::Null, 3), "_\r\n");
        assert_eq!(encoded(&Reply::NullArray, 2), "*-1\r\n");
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Integer(1))]);
        assert_eq!(encoded(&map, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&map, 3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&Reply::Verbatim("x".into()), 3), "=5\r\ntxt:x\r\n");
        assert_eq!(encoded(&Reply::Double(1.5), 2), "$3\r\n1.5\r\n");
    }
}
