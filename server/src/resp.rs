//! The request side of RESP: an incremental [`Parser`] that turns the bytes a client sends
//! into commands (lists of binary arguments), with Redis' limits and stricter framing.
//!
//! # Wire format
//!
//! A request takes one of two forms, chosen by its first byte as Redis'
//! `processInputBuffer` chooses:
//!
//! ```text
//! multibulk (first byte '*'), as clients and redis-cli send:
//!   *<n>\r\n                        header: element count n
//!   $<len>\r\n<len bytes>\r\n       element, n times
//!
//!   *2\r\n$3\r\nGET\r\n$1\r\nk\r\n      ->  ["GET", "k"]
//!
//! inline (any other first byte), as telnet and redis-benchmark send:
//!   <line>\r\n  or  <line>\n         split into arguments like Redis' sdssplitargs
//!
//!   SET k "a b\x00" 'it\'s'\r\n      ->  ["SET", "k", "a b\0", "it's"]
//! ```
//!
//! # Rules
//!
//! 1. A count or length is written the way Redis' `string2ll` accepts it: decimal digits, no
//!    sign, no leading zero except `0` itself, no overflow. The count may also be `-1`. Anything
//!    else is `invalid multibulk length` / `invalid bulk length`, as is a count above
//!    [`Limits::max_multibulk_len`] or a length above [`Limits::max_bulk_len`].
//! 2. `*0`, `*-1` and an inline line without arguments are empty commands: skipped, as in Redis.
//! 3. Header lines end in `\r\n`, and at most [`Limits::max_inline_len`] bytes may precede
//!    the `\r` (`too big mbulk count string` / `too big bulk count string`). Redis skips any
//!    byte after the `\r`; we require `\n`.
//! 4. Each element starts with `$` (`expected '$', got 'X'`).
//! 5. A payload is followed by `\r\n` (`bulk payload not followed by CRLF`). Redis skips any
//!    two bytes there, so a client that miscounts a length desynchronises silently.
//! 6. At most [`Limits::max_inline_len`] bytes precede an inline line's `\n`
//!    (`too big inline request`). Redis checks this only while the `\n` is still missing,
//!    so there the outcome depends on how the bytes were split; here it does not.
//! 7. Inline quotes must balance and a closing quote must be followed by a space or the end of
//!    the line (`unbalanced quotes in request`).
//! 8. Before authentication a multibulk request has at most
//!    [`Limits::unauthenticated_max_elements`] elements (`unauthenticated multibulk length`)
//!    of at most [`Limits::unauthenticated_max_bulk`] bytes each
//!    (`unauthenticated bulk length`). Inline requests are already bounded by rule 6.
//! 9. At most [`Limits::max_query_buffer`] bytes are held that have not been returned as
//!    commands yet (`client query buffer limit exceeded`; Redis closes such a client without
//!    a reply).
//!
//! Every error reads `ERR Protocol error: <what>`; see [`ProtocolError`].
//!
//! Given the same `authenticated` flags, the commands returned and the error (if any) depend
//! only on the bytes received, never on how they were split across [`Parser::feed`] calls,
//! unless the split itself trips rule 9.
//!
//! # States
//!
//! [`Parser::next_command`] walks this machine until a command is complete or bytes run out:
//!
//! ```text
//!             first byte '*'            n > 0
//!   Idle ─────────────────────> Count ──────────> BulkHeader ──$<len>──> BulkPayload
//!   ^  │                          │ n = 0 or -1       ^                      │
//!   │  │ any other byte           │ (skipped)         └── more elements ─────┤
//!   │  └──────> Inline            │                                        │ last element:
//!   │            │ line complete  │                                        │ command returned
//!   └────────────┴────────────────┴────────────────────────────────────────┘
//! ```
//!
//! # Cost
//!
//! Feeding N bytes costs O(N) however they are split: a line is searched for its terminator
//! once (the parser remembers how far it looked), a payload is awaited by its announced
//! length without being scanned, and returned bytes are dropped from the front of the buffer
//! only once they outweigh the bytes still live. Nothing is allocated from a declared count or
//! length before the bytes arrive.

use std::fmt;
use std::ops::Range;

/// Request limits. [`Default`] gives Redis' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk argument (`proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Most elements in one multibulk request (1 048 576, Redis' historical cap).
    pub max_multibulk_len: usize,
    /// Longest inline request or `*`/`$` header line (`PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// Most bytes received but not yet returned as commands (`client-query-buffer-limit`,
    /// 1 GiB).
    pub max_query_buffer: usize,
    /// Most elements in a multibulk request before authentication (10).
    pub unauthenticated_max_elements: usize,
    /// Largest bulk argument before authentication (16 KiB).
    pub unauthenticated_max_bulk: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
            unauthenticated_max_elements: 10,
            unauthenticated_max_bulk: 16 * 1024,
        }
    }
}

/// A malformed or over-limit request.
///
/// The text is the Redis error reply without its leading `-`, for example
/// `ERR Protocol error: invalid bulk length`; the connection writes `-{text}\r\n` and then
/// closes, as Redis does after a protocol error. The parser does not resynchronise: once it
/// has returned an error, every later call returns the same error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(what: &str) -> ProtocolError {
        ProtocolError(format!("ERR Protocol error: {what}"))
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Where [`Parser::next_command`] is within the current request (see the module diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands: the next byte decides the form.
    Idle,
    /// Reading an inline line up to its `\n`.
    Inline,
    /// Reading the `*<n>\r\n` header.
    Count,
    /// Reading the `$<len>\r\n` header of the next element; `remaining` counts it too.
    BulkHeader { remaining: usize },
    /// Waiting for `len` payload bytes and their `\r\n`; `remaining` counts this element.
    BulkPayload { remaining: usize, len: usize },
}

/// Most argument slots reserved from a declared count before the arguments arrive.
const PREALLOCATED_ARGS: usize = 64;

/// Buffer capacity kept when the buffer drains; more is released.
const KEPT_CAPACITY: usize = 64 * 1024;

/// An incremental RESP request parser for one connection.
///
/// Feed it whatever the socket delivers, then take commands until it returns `Ok(None)`:
///
/// ```
/// use strongbox_server::resp::{Limits, Parser};
///
/// let mut parser = Parser::new(Limits::default());
/// parser.feed(b"*2\r\n$3\r\nGET\r\n$1\r").unwrap();
/// assert_eq!(parser.next_command(true).unwrap(), None);
/// parser.feed(b"\nk\r\nPING\r\n").unwrap();
/// assert_eq!(parser.next_command(true).unwrap(), Some(vec![b"GET".to_vec(), b"k".to_vec()]));
/// assert_eq!(parser.next_command(true).unwrap(), Some(vec![b"PING".to_vec()]));
/// assert_eq!(parser.next_command(true).unwrap(), None);
/// ```
pub struct Parser {
    limits: Limits,
    /// Received bytes; `buf[..start]` were returned already and wait for [`Parser::compact`].
    buf: Vec<u8>,
    /// First byte of the command being read.
    start: usize,
    /// First byte of the line or payload being read.
    cursor: usize,
    /// `buf[cursor..scanned]` holds no terminator; the search resumes at `scanned`.
    scanned: usize,
    state: State,
    /// The current multibulk command's arguments read so far, as ranges relative to `start`
    /// (so that compaction leaves them valid).
    args: Vec<Range<usize>>,
    /// The first error; once set, every call returns it.
    failed: Option<ProtocolError>,
}

impl Parser {
    /// A parser with nothing buffered.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            buf: Vec::new(),
            start: 0,
            cursor: 0,
            scanned: 0,
            state: State::Idle,
            args: Vec::new(),
            failed: None,
        }
    }

    /// Appends bytes received from the client. Fails, keeping none of `bytes`, if that would
    /// hold more than [`Limits::max_query_buffer`] bytes not yet returned as commands.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buffered().saturating_add(bytes.len()) > self.limits.max_query_buffer {
            let error = ProtocolError::new("client query buffer limit exceeded");
            self.failed = Some(error.clone());
            return Err(error);
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Takes the next complete command, or `Ok(None)` if more bytes are needed.
    ///
    /// `authenticated` selects the limits for this command (rule 8): a caller that pipelines
    /// `AUTH` and a large command in one read passes `false` for the first and `true` for the
    /// second, since the parser reads no further than the command it returns.
    pub fn next_command(
        &mut self,
        authenticated: bool,
    ) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.parse(authenticated);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// Bytes received but not yet returned as part of a command.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn parse(&mut self, authenticated: bool) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        loop {
            match self.state {
                State::Idle => match self.buf.get(self.cursor) {
                    None => return Ok(None),
                    Some(b'*') => self.state = State::Count,
                    Some(_) => self.state = State::Inline,
                },
                State::Inline => {
                    let Some(lf) = self.find(b'\n', "too big inline request")? else {
                        return Ok(None);
                    };
                    let line = &self.buf[self.cursor..lf];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let args = split_args(line)
                        .ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
                    self.finish_command(lf + 1);
                    if !args.is_empty() {
                        return Ok(Some(args));
                    }
                }
                State::Count => {
                    let Some(cr) = self.header_line("too big mbulk count string")? else {
                        return Ok(None);
                    };
                    let invalid = || ProtocolError::new("invalid multibulk length");
                    // buf[cursor] is the '*', so cr > cursor.
                    let count = match &self.buf[self.cursor + 1..cr] {
                        b"-1" => Some(0),
                        digits => parse_length(digits),
                    }
                    .filter(|&n| n <= self.limits.max_multibulk_len)
                    .ok_or_else(invalid)?;
                    if !authenticated && count > self.limits.unauthenticated_max_elements {
                        return Err(ProtocolError::new("unauthenticated multibulk length"));
                    }
                    if self.buf[cr + 1] != b'\n' {
                        return Err(invalid());
                    }
                    if count == 0 {
                        self.finish_command(cr + 2);
                    } else {
                        self.args.reserve(count.min(PREALLOCATED_ARGS));
                        self.advance(cr + 2);
                        self.state = State::BulkHeader { remaining: count };
                    }
                }
                State::BulkHeader { remaining } => {
                    let Some(cr) = self.header_line("too big bulk count string")? else {
                        return Ok(None);
                    };
                    // An empty line shows its '\r' here, as in Redis.
                    let first = self.buf[self.cursor];
                    if first != b'$' {
                        let got = printable(first);
                        return Err(ProtocolError::new(&format!("expected '$', got '{got}'")));
                    }
                    let invalid = || ProtocolError::new("invalid bulk length");
                    let len = parse_length(&self.buf[self.cursor + 1..cr])
                        .filter(|&n| n <= self.limits.max_bulk_len)
                        .ok_or_else(invalid)?;
                    if !authenticated && len > self.limits.unauthenticated_max_bulk {
                        return Err(ProtocolError::new("unauthenticated bulk length"));
                    }
                    if self.buf[cr + 1] != b'\n' {
                        return Err(invalid());
                    }
                    self.advance(cr + 2);
                    self.state = State::BulkPayload { remaining, len };
                }
                State::BulkPayload { remaining, len } => {
                    if self.buf.len() - self.cursor < len.saturating_add(2) {
                        return Ok(None);
                    }
                    let end = self.cursor + len;
                    if self.buf[end..end + 2] != *b"\r\n" {
                        return Err(ProtocolError::new("bulk payload not followed by CRLF"));
                    }
                    self.args.push(self.cursor - self.start..end - self.start);
                    if remaining > 1 {
                        self.advance(end + 2);
                        self.state = State::BulkHeader {
                            remaining: remaining - 1,
                        };
                        continue;
                    }
                    let command = &self.buf[self.start..end];
                    let args = self
                        .args
                        .iter()
                        .map(|r| command[r.clone()].to_vec())
                        .collect();
                    self.finish_command(end + 2);
                    return Ok(Some(args));
                }
            }
        }
    }

    /// Finds a `*`/`$` header line at the cursor: the index of its `\r` once the byte after
    /// it has arrived too, so the caller may look at `buf[cr + 1]`.
    fn header_line(&mut self, too_big: &str) -> Result<Option<usize>, ProtocolError> {
        Ok(self
            .find(b'\r', too_big)?
            .filter(|&cr| cr + 1 < self.buf.len()))
    }

    /// Finds the first `terminator` at or after the cursor, searching only bytes not searched
    /// before. At most [`Limits::max_inline_len`] bytes may precede it, else `too_big`.
    fn find(&mut self, terminator: u8, too_big: &str) -> Result<Option<usize>, ProtocolError> {
        let last = self.cursor.saturating_add(self.limits.max_inline_len);
        let end = self.buf.len().min(last.saturating_add(1));
        let unsearched = &self.buf[self.scanned..end];
        if let Some(offset) = unsearched.iter().position(|&b| b == terminator) {
            self.scanned += offset;
            return Ok(Some(self.scanned));
        }
        self.scanned = end;
        if self.buf.len() > last {
            return Err(ProtocolError::new(too_big));
        }
        Ok(None)
    }

    /// Moves the cursor to the next line or payload.
    fn advance(&mut self, to: usize) {
        self.cursor = to;
        self.scanned = to;
    }

    /// Ends the current command (returned or skipped); the next one starts at `next`.
    fn finish_command(&mut self, next: usize) {
        self.start = next;
        self.advance(next);
        self.args.clear();
        self.state = State::Idle;
    }

    /// Drops returned bytes from the front of the buffer once they are at least as many as
    /// the live ones, so every byte is moved at most once on average.
    fn compact(&mut self) {
        let live = self.buf.len() - self.start;
        if self.start == 0 || self.start < live {
            return;
        }
        self.buf.drain(..self.start);
        self.cursor -= self.start;
        self.scanned -= self.start;
        self.start = 0;
        if self.buf.capacity() > KEPT_CAPACITY && self.buf.len() < self.buf.capacity() / 4 {
            self.buf.shrink_to((2 * self.buf.len()).max(KEPT_CAPACITY));
        }
    }
}

/// Client bytes may hold passwords: show only sizes and the state.
impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("limits", &self.limits)
            .field("buffered", &self.buffered())
            .field("state", &self.state)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Parses a count or length as Redis' `string2ll` accepts a non-negative number: digits
/// only, no leading zero unless the number is `0`; `None` if not so or too big for `usize`.
fn parse_length(digits: &[u8]) -> Option<usize> {
    match digits {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => digits.iter().try_fold(0usize, |n, &d| {
            let digit = d.checked_sub(b'0').filter(|&d| d <= 9)?;
            n.checked_mul(10)?.checked_add(usize::from(digit))
        }),
    }
}

/// How Redis' `%c` shows a byte in an error reply, made valid UTF-8: `\r` and `\n` become
/// spaces as Redis' error sanitising makes them, other bytes outside printable ASCII `\xHH`.
fn printable(byte: u8) -> String {
    match byte {
        b'\r' | b'\n' => " ".to_string(),
        b' '..=b'~' => char::from(byte).to_string(),
        _ => format!("\\x{byte:02x}"),
    }
}

/// C `isspace`: what sdssplitargs skips between arguments and accepts after a closing quote.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Splits an inline line into arguments as Redis' `sdssplitargs` does; `None` if quotes are
/// unbalanced or a closing quote is followed by something other than a space.
///
/// Outside quotes an argument ends at space, tab, `\r` or `\n`, and a quote may start in the
/// middle of one (`a"b c"` is `ab c`). Inside double quotes `\n \r \t \b \a` and `\xHH` are
/// escapes and `\` before any other byte yields that byte; inside single quotes only `\'` is.
/// One difference: sdssplitargs works on C strings and stops at a NUL byte; here NUL is an
/// ordinary byte.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let mut quote = Quote::None;
        loop {
            match (quote, at(i)) {
                (Quote::Double | Quote::Single, None) => return None,
                (Quote::Double, Some(b'\\')) => {
                    let hex = (at(i + 2).and_then(hex_value), at(i + 3).and_then(hex_value));
                    match (at(i + 1)?, hex) {
                        (b'x', (Some(high), Some(low))) => {
                            arg.push(high << 4 | low);
                            i += 4;
                        }
                        (escaped, _) => {
                            arg.push(unescape(escaped));
                            i += 2;
                        }
                    }
                }
                (Quote::Single, Some(b'\\')) if at(i + 1) == Some(b'\'') => {
                    arg.push(b'\'');
                    i += 2;
                }
                (Quote::Double, Some(b'"')) | (Quote::Single, Some(b'\'')) => {
                    if at(i + 1).is_some_and(|b| !is_space(b)) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                (Quote::None, None) => break,
                (Quote::None, Some(b' ' | b'\t' | b'\r' | b'\n')) => {
                    i += 1;
                    break;
                }
                (Quote::None, Some(b'"')) => {
                    quote = Quote::Double;
                    i += 1;
                }
                (Quote::None, Some(b'\'')) => {
                    quote = Quote::Single;
                    i += 1;
                }
                (_, Some(byte)) => {
                    arg.push(byte);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

/// The byte a backslash escape inside double quotes stands for.
fn unescape(byte: u8) -> u8 {
    match byte {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Commands = Vec<Vec<Vec<u8>>>;

    fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn protocol_error(what: &str) -> ProtocolError {
        ProtocolError(format!("ERR Protocol error: {what}"))
    }

    /// Feeds `input` in one piece and drains every command, then the error if any.
    fn parse_with(
        limits: Limits,
        authenticated: bool,
        input: &[u8],
    ) -> (Commands, Option<ProtocolError>) {
        let mut parser = Parser::new(limits);
        if let Err(e) = parser.feed(input) {
            return (Vec::new(), Some(e));
        }
        drain(&mut parser, authenticated)
    }

    fn drain(parser: &mut Parser, authenticated: bool) -> (Commands, Option<ProtocolError>) {
        let mut commands = Vec::new();
        loop {
            match parser.next_command(authenticated) {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => return (commands, None),
                Err(e) => return (commands, Some(e)),
            }
        }
    }

    fn parse(input: &[u8]) -> (Commands, Option<ProtocolError>) {
        parse_with(Limits::default(), true, input)
    }

    /// The error `input` produces (authenticated, default limits), with no command before it.
    fn parse_error(input: &[u8]) -> ProtocolError {
        let (commands, error) = parse(input);
        assert!(commands.is_empty(), "{commands:?}");
        error.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)))
    }

    fn small_limits() -> Limits {
        Limits {
            max_bulk_len: 8,
            max_multibulk_len: 4,
            max_inline_len: 10,
            max_query_buffer: 64,
            unauthenticated_max_elements: 2,
            unauthenticated_max_bulk: 3,
        }
    }

    #[test]
    fn default_limits_are_redis_defaults() {
        let limits = Limits::default();
        assert_eq!(limits.max_bulk_len, 536_870_912);
        assert_eq!(limits.max_multibulk_len, 1_048_576);
        assert_eq!(limits.max_inline_len, 65_536);
        assert_eq!(limits.max_query_buffer, 1_073_741_824);
        assert_eq!(limits.unauthenticated_max_elements, 10);
        assert_eq!(limits.unauthenticated_max_bulk, 16_384);
    }

    #[test]
    fn multibulk_command() {
        let (commands, error) = parse(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        assert_eq!((commands, error), (vec![cmd(&["SET", "k", ""])], None));
    }

    #[test]
    fn multibulk_payload_is_binary() {
        let (commands, _) = parse(b"*1\r\n$6\r\n\r\n\0\xff*$\r\n");
        assert_eq!(commands, vec![vec![b"\r\n\0\xff*$".to_vec()]]);
    }

    #[test]
    fn inline_command_with_crlf_or_lf() {
        let (commands, error) = parse(b"PING\r\nECHO hi\nSET  a\tb \r\n");
        let expected = vec![
            cmd(&["PING"]),
            cmd(&["ECHO", "hi"]),
            cmd(&["SET", "a", "b"]),
        ];
        assert_eq!((commands, error), (expected, None));
    }

    #[test]
    fn incomplete_input_waits() {
        let mut parser = Parser::new(Limits::default());
        for piece in [&b"*2\r"[..], b"\n$3", b"\r\nGET\r", b"\n$1\r\n", b"k\r"] {
            parser.feed(piece).unwrap();
            assert_eq!(parser.next_command(true), Ok(None));
        }
        parser.feed(b"\nPIN").unwrap();
        assert_eq!(parser.next_command(true), Ok(Some(cmd(&["GET", "k"]))));
        assert_eq!(parser.next_command(true), Ok(None));
        assert_eq!(parser.buffered(), 3);
        parser.feed(b"G\r\n").unwrap();
        assert_eq!(parser.next_command(true), Ok(Some(cmd(&["PING"]))));
        assert_eq!(parser.buffered(), 0);
    }

    #[test]
    fn pipeline_in_one_feed() {
        let mut input = Vec::new();
        for i in 0..10_000 {
            if i % 2 == 0 {
                let key = format!("key{i}");
                input.extend_from_slice(
                    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
                );
            } else {
                input.extend_from_slice(format!("INCR n{i}\r\n").as_bytes());
            }
        }
        let (commands, error) = parse(&input);
        assert_eq!(error, None);
        assert_eq!(commands.len(), 10_000);
        assert_eq!(commands[9_998], cmd(&["GET", "key9998"]));
        assert_eq!(commands[9_999], cmd(&["INCR", "n9999"]));
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nPING\r\n*0\r\n\r\nSET k \"v w\"\n*1\r\n$4\r\nQUIT\r\n";
        let mut parser = Parser::new(Limits::default());
        let mut commands = Vec::new();
        for &byte in input {
            parser.feed(&[byte]).unwrap();
            while let Some(command) = parser.next_command(true).unwrap() {
                commands.push(command);
            }
        }
        let expected = vec![
            cmd(&["ECHO", "hello"]),
            cmd(&["PING"]),
            cmd(&["SET", "k", "v w"]),
            cmd(&["QUIT"]),
        ];
        assert_eq!(commands, expected);
        assert_eq!(parser.buffered(), 0);
    }

    #[test]
    fn empty_commands_are_skipped() {
        let (commands, error) = parse(b"*0\r\n*-1\r\n\r\n\n   \r\n \t\x0b\x0c\nPING\r\n*0\r\n");
        assert_eq!((commands, error), (vec![cmd(&["PING"])], None));
    }

    #[test]
    fn invalid_multibulk_length() {
        for input in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*-2\r\n",
            b"*-0\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*1x\r\n",
            b"*99999999999999999999999\r\n",
            b"*1048577\r\n",
            b"*1\rX",
        ] {
            assert_eq!(
                parse_error(input),
                protocol_error("invalid multibulk length"),
                "{input:?}"
            );
        }
        let limits = Limits {
            max_multibulk_len: 3,
            ..Limits::default()
        };
        let (commands, error) = parse_with(
            limits,
            true,
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n*4\r\n",
        );
        assert_eq!(commands, vec![cmd(&["a", "b", "c"])]);
        assert_eq!(error, Some(protocol_error("invalid multibulk length")));
    }

    #[test]
    fn largest_multibulk_count_allocates_nothing_up_front() {
        let mut parser = Parser::new(Limits::default());
        parser.feed(b"*1048576\r\n$1\r\na\r\n").unwrap();
        assert_eq!(parser.next_command(true), Ok(None));
        assert!(parser.args.capacity() <= PREALLOCATED_ARGS);
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(
            parse_error(b"*1\r\n:1\r\n"),
            protocol_error("expected '$', got ':'")
        );
        assert_eq!(
            parse_error(b"*1\r\nfoo\r\n"),
            protocol_error("expected '$', got 'f'")
        );
        assert_eq!(
            parse_error(b"*1\r\n\r\n"),
            protocol_error("expected '$', got ' '")
        );
        assert_eq!(
            parse_error(b"*1\r\n\x01\r\n"),
            protocol_error("expected '$', got '\\x01'")
        );
        assert_eq!(
            parse_error(b"*2\r\n$1\r\na\r\n*1\r\n"),
            protocol_error("expected '$', got '*'")
        );
    }

    #[test]
    fn invalid_bulk_length() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$01\r\n",
            b"*1\r\n$+1\r\n",
            b"*1\r\n$1 \r\n",
            b"*1\r\n$99999999999999999999999\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$1\r\r\n",
        ] {
            assert_eq!(
                parse_error(input),
                protocol_error("invalid bulk length"),
                "{input:?}"
            );
        }
        let limits = Limits {
            max_bulk_len: 4,
            ..Limits::default()
        };
        let (commands, error) = parse_with(limits, true, b"*1\r\n$4\r\nabcd\r\n*1\r\n$5\r\n");
        assert_eq!(commands, vec![cmd(&["abcd"])]);
        assert_eq!(error, Some(protocol_error("invalid bulk length")));
    }

    #[test]
    fn largest_bulk_length_is_accepted_without_allocating() {
        let mut parser = Parser::new(Limits::default());
        parser.feed(b"*1\r\n$536870912\r\nabc").unwrap();
        assert_eq!(parser.next_command(true), Ok(None));
        assert!(parser.buf.capacity() < 1024);
    }

    #[test]
    fn too_big_count_strings() {
        let limits = small_limits();
        // Ten bytes before the '\r' are allowed; eleven are not, with or without a terminator.
        let (_, error) = parse_with(limits, true, b"*000000000");
        assert_eq!(error, None);
        let (_, error) = parse_with(limits, true, b"*0000000000");
        assert_eq!(error, Some(protocol_error("too big mbulk count string")));
        let (_, error) = parse_with(limits, true, b"*0000000000\r\n");
        assert_eq!(error, Some(protocol_error("too big mbulk count string")));
        let (_, error) = parse_with(limits, true, b"*000000000\r\n");
        assert_eq!(error, Some(protocol_error("invalid multibulk length")));

        let (_, error) = parse_with(limits, true, b"*1\r\n$000000000");
        assert_eq!(error, None);
        let (_, error) = parse_with(limits, true, b"*1\r\n$0000000000");
        assert_eq!(error, Some(protocol_error("too big bulk count string")));
        let (_, error) = parse_with(limits, true, b"*1\r\nxxxxxxxxxxx");
        assert_eq!(error, Some(protocol_error("too big bulk count string")));

        let mut long = b"*".to_vec();
        long.resize(65_537, b'1');
        assert_eq!(
            parse_error(&long),
            protocol_error("too big mbulk count string")
        );
    }

    #[test]
    fn header_cr_must_be_followed_by_lf() {
        assert_eq!(
            parse_error(b"*1\r$1\r\na\r\n"),
            protocol_error("invalid multibulk length")
        );
        assert_eq!(
            parse_error(b"*1\r\n$1\rxa\r\n"),
            protocol_error("invalid bulk length")
        );
    }

    #[test]
    fn bulk_payload_not_followed_by_crlf() {
        for input in [
            &b"*1\r\n$1\r\nab\r\n"[..],
            b"*1\r\n$1\r\na\n\r",
            b"*1\r\n$2\r\na\r\n\r\n",
        ] {
            assert_eq!(
                parse_error(input),
                protocol_error("bulk payload not followed by CRLF"),
                "{input:?}"
            );
        }
    }

    #[test]
    fn too_big_inline_request() {
        let limits = small_limits();
        let (commands, error) = parse_with(limits, true, b"0123456789\n012345678\r\n");
        assert_eq!(
            (commands, error),
            (vec![cmd(&["0123456789"]), cmd(&["012345678"])], None)
        );
        let (_, error) = parse_with(limits, true, b"0123456789\r\n");
        assert_eq!(error, Some(protocol_error("too big inline request")));
        let (_, error) = parse_with(limits, true, b"01234567890");
        assert_eq!(error, Some(protocol_error("too big inline request")));

        let mut long = vec![b'a'; 65_536];
        long.push(b'\n');
        assert_eq!(parse(&long).0.len(), 1);
        long.insert(0, b'a');
        assert_eq!(parse_error(&long), protocol_error("too big inline request"));
    }

    #[test]
    fn inline_quoting_like_sdssplitargs() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"SET k \"a b\"", &[b"SET", b"k", b"a b"]),
            (b"\"\" ''", &[b"", b""]),
            (b"\"\\n\\r\\t\\b\\a\\\\\\\"\\q\"", &[b"\n\r\t\x08\x07\\\"q"]),
            (b"\"\\x41\\x6a\\xFf\\x4\\xzz\"", &[b"Aj\xffx4xzz"]),
            (b"'a\\'b\\n\"c'", &[b"a'b\\n\"c"]),
            (b"a\"b c\" d", &[b"ab c", b"d"]),
            (b"\"a\"\t\"b\"\x0b'c'", &[b"a", b"b", b"c"]),
            (b"a\x0bb", &[b"a\x0bb"]),
            (b"x\0y", &[b"x\0y"]),
            (b"a\rb", &[b"a", b"b"]),
        ];
        for (line, expected) in cases {
            let args: Vec<Vec<u8>> = expected.iter().map(|a| a.to_vec()).collect();
            assert_eq!(split_args(line), Some(args.clone()), "{line:?}");
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            assert_eq!(parse(&input), (vec![args], None), "{line:?}");
        }
    }

    #[test]
    fn unbalanced_quotes_in_request() {
        for line in [
            &b"SET k \"abc"[..],
            b"'abc",
            b"\"abc\\\"",
            b"\"abc\\",
            b"\"a\"b",
            b"'a'b",
            b"'a\\'",
        ] {
            let mut input = line.to_vec();
            input.push(b'\n');
            assert_eq!(
                parse_error(&input),
                protocol_error("unbalanced quotes in request"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn unauthenticated_limits() {
        let ten = b"*10\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n\
                    $1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n";
        assert_eq!(parse_with(Limits::default(), false, ten).0.len(), 1);
        let (_, error) = parse_with(Limits::default(), false, b"*11\r\n");
        assert_eq!(
            error,
            Some(protocol_error("unauthenticated multibulk length"))
        );
        assert_eq!(parse_with(Limits::default(), true, b"*11\r\n").1, None);

        let mut big = b"*1\r\n$16384\r\n".to_vec();
        big.extend_from_slice(&[b'x'; 16_384]);
        big.extend_from_slice(b"\r\n");
        assert_eq!(parse_with(Limits::default(), false, &big).0.len(), 1);
        let (_, error) = parse_with(Limits::default(), false, b"*1\r\n$16385\r\n");
        assert_eq!(error, Some(protocol_error("unauthenticated bulk length")));
        assert_eq!(
            parse_with(Limits::default(), true, b"*1\r\n$16385\r\n").1,
            None
        );
    }

    #[test]
    fn invalid_length_is_reported_before_unauthenticated() {
        let (_, error) = parse_with(small_limits(), false, b"*5\r\n");
        assert_eq!(error, Some(protocol_error("invalid multibulk length")));
        let (_, error) = parse_with(small_limits(), false, b"*1\r\n$9\r\n");
        assert_eq!(error, Some(protocol_error("invalid bulk length")));
    }

    #[test]
    fn authentication_applies_per_command() {
        let mut parser = Parser::new(Limits::default());
        let mut input = b"AUTH pw\r\n*1\r\n$20000\r\n".to_vec();
        input.extend_from_slice(&[b'v'; 20_000]);
        input.extend_from_slice(b"\r\n");
        parser.feed(&input).unwrap();
        assert_eq!(parser.next_command(false), Ok(Some(cmd(&["AUTH", "pw"]))));
        assert_eq!(parser.next_command(true).unwrap().unwrap()[0].len(), 20_000);
    }

    #[test]
    fn query_buffer_limit() {
        let mut parser = Parser::new(small_limits());
        parser.feed(&[b'*'; 0]).unwrap();
        parser.feed(b"*1\r\n$8\r\n").unwrap();
        assert_eq!(parser.next_command(true), Ok(None));
        parser.feed(&[b'a'; 56]).unwrap();
        assert_eq!(parser.buffered(), 64);
        assert_eq!(
            parser.feed(b"a"),
            Err(protocol_error("client query buffer limit exceeded"))
        );
        assert_eq!(parser.buffered(), 64);
    }

    #[test]
    fn query_buffer_limit_counts_only_unreturned_bytes() {
        let mut parser = Parser::new(small_limits());
        for _ in 0..100 {
            parser.feed(b"*1\r\n$8\r\n12345678\r\n").unwrap();
            assert_eq!(parser.next_command(true), Ok(Some(cmd(&["12345678"]))));
            assert_eq!(parser.buffered(), 0);
        }
        assert!(parser.buf.len() <= 64);
    }

    #[test]
    fn errors_are_sticky() {
        let mut parser = Parser::new(Limits::default());
        parser.feed(b"*x\r\nPING\r\n").unwrap();
        let first = parser.next_command(true).unwrap_err();
        assert_eq!(parser.next_command(true), Err(first.clone()));
        assert_eq!(parser.feed(b"PING\r\n"), Err(first));
    }

    #[test]
    fn display_is_the_redis_reply_text() {
        let error = parse_error(b"*1\r\n$x\r\n");
        assert_eq!(error.to_string(), "ERR Protocol error: invalid bulk length");
        assert_eq!(error.0, "ERR Protocol error: invalid bulk length");
    }

    #[test]
    fn debug_does_not_show_client_bytes() {
        let mut parser = Parser::new(Limits::default());
        parser.feed(b"AUTH secret-password").unwrap();
        assert!(!format!("{parser:?}").contains("secret"));
    }

    #[test]
    fn large_bulk_fed_one_byte_at_a_time() {
        const LEN: usize = 1024 * 1024;
        let mut input = format!("*2\r\n$3\r\nSET\r\n${LEN}\r\n").into_bytes();
        input.extend((0..LEN).map(|i| i as u8));
        input.extend_from_slice(b"\r\n");
        let mut parser = Parser::new(Limits::default());
        let mut commands = Vec::new();
        for byte in input.chunks(1) {
            parser.feed(byte).unwrap();
            if let Some(command) = parser.next_command(true).unwrap() {
                commands.push(command);
            }
        }
        assert_eq!(commands.len(), 1);
        assert_eq!(
            commands[0][1],
            input[input.len() - LEN - 2..input.len() - 2]
        );
        assert_eq!(parser.buffered(), 0);
    }

    #[test]
    fn buffer_is_released_after_a_large_command() {
        let mut parser = Parser::new(Limits::default());
        let mut input = b"*1\r\n$1000000\r\n".to_vec();
        input.resize(input.len() + 1_000_000, b'x');
        input.extend_from_slice(b"\r\n");
        parser.feed(&input).unwrap();
        assert_eq!(
            parser.next_command(true).unwrap().unwrap()[0].len(),
            1_000_000
        );
        parser.feed(b"PING\r\n").unwrap();
        assert!(parser.buf.capacity() <= KEPT_CAPACITY);
        assert_eq!(parser.next_command(true), Ok(Some(cmd(&["PING"]))));
    }
}
