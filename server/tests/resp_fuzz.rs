//! Property tests of the RESP request parser (`strongbox_server::resp`):
//!
//! 1. valid commands, each encoded as multibulk, plain inline or quoted inline, with empty
//!    requests mixed in, come back exactly however the bytes are split;
//! 2. arbitrary bytes never panic, give the same commands and error however they are split,
//!    and never hold more than the query buffer limit;
//! 3. valid pipelines with one byte changed, cut, or a count or length set huge
//!    (structure-aware, issue 8 §5) behave the same however they are split;
//! 4. hostile counts and lengths (`*2147483647`, `$4294967295`, ...) give a prompt protocol
//!    error, or wait for their bytes, without reserving what they claim.
//!
//! The default run is short (proptest's 256 cases, or `PROPTEST_CASES`). The long run
//! (also in `scripts/fuzz`):
//! `PROPTEST_CASES=200000 cargo test --release -p strongbox-server --test resp_fuzz`.

use proptest::prelude::*;
use strongbox_server::resp::{Limits, Parser, ProtocolError};

type Command = Vec<Vec<u8>>;

/// What a parser made of some input: the commands, then the error that stopped it, if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    commands: Vec<Command>,
    error: Option<ProtocolError>,
}

/// Feeds `input` in pieces whose sizes cycle through `sizes`, taking every complete command
/// after each piece, and checks the memory bound as it goes.
fn run(limits: Limits, authenticated: bool, input: &[u8], sizes: &[usize]) -> Outcome {
    let mut parser = Parser::new(limits);
    let mut outcome = Outcome {
        commands: Vec::new(),
        error: None,
    };
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        if let Err(error) = parser.feed(piece) {
            outcome.error = Some(error);
            return outcome;
        }
        assert!(parser.buffered() <= limits.max_query_buffer);
        loop {
            match parser.next_command(authenticated) {
                Ok(Some(command)) => outcome.commands.push(command),
                Ok(None) => break,
                Err(error) => {
                    outcome.error = Some(error);
                    return outcome;
                }
            }
        }
    }
    outcome
}

/// How one command is written on the wire.
#[derive(Debug, Clone, Copy)]
enum Form {
    Multibulk,
    /// Arguments as they are, separated by blanks (only for arguments without special bytes).
    Plain,
    /// Every argument in double quotes, escaped.
    Quoted,
}

/// An empty request, which the parser skips.
const EMPTY_REQUESTS: &[&[u8]] = &[b"*0\r\n", b"*-1\r\n", b"\r\n", b"\n", b" \t \r\n"];

fn encode(command: &Command, form: Form, blank: &[u8], lf_only: bool, out: &mut Vec<u8>) {
    let plain = command.iter().all(|arg| {
        !arg.is_empty()
            && arg
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:{}".contains(b))
    });
    match form {
        Form::Plain if plain => {
            for (i, arg) in command.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(blank);
                }
                out.extend_from_slice(arg);
            }
        }
        Form::Quoted | Form::Plain => {
            for (i, arg) in command.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(blank);
                }
                out.push(b'"');
                for &byte in arg {
                    match byte {
                        b'"' | b'\\' => out.extend_from_slice(&[b'\\', byte]),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b' '..=b'~' => out.push(byte),
                        _ => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
                    }
                }
                out.push(b'"');
            }
        }
        Form::Multibulk => {
            out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
            return;
        }
    }
    out.extend_from_slice(if lf_only { b"\n" } else { b"\r\n" });
}

fn arg_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(proptest::sample::select(b"abcXYZ019-_.:{}".to_vec()), 1..12),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A command with its encoding choices.
fn request_strategy() -> impl Strategy<Value = (Command, Form, Vec<u8>, bool, Option<usize>)> {
    (
        proptest::collection::vec(arg_strategy(), 1..8),
        prop_oneof![Just(Form::Multibulk), Just(Form::Plain), Just(Form::Quoted)],
        proptest::sample::select(vec![
            b" ".to_vec(),
            b"  ".to_vec(),
            b"\t".to_vec(),
            b" \t ".to_vec(),
        ]),
        any::<bool>(),
        proptest::option::weighted(0.2, 0..EMPTY_REQUESTS.len()),
    )
}

/// Bytes that look like requests often enough to reach every rule.
fn protocol_soup() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&[u8]] = &[
        b"*",
        b"$",
        b"\r\n",
        b"\r",
        b"\n",
        b"0",
        b"1",
        b"2",
        b"3",
        b"-1",
        b"9",
        b"10",
        b" ",
        b"\"",
        b"'",
        b"\\",
        b"x",
        b"4f",
        b"a",
        b"*2\r\n",
        b"$3\r\nfoo\r\n",
        b"$0\r\n\r\n",
        b"PING",
        b"*1\r\n$1\r\n",
        b"*5\r\n",
        b"$9\r\n",
        b"\0",
        b"\xff",
    ];
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..120)
        .prop_map(|tokens| tokens.concat())
}

/// Small limits, so that every limit is reached by short inputs.
fn small_limits(max_query_buffer: usize) -> Limits {
    Limits {
        max_bulk_len: 12,
        max_multibulk_len: 6,
        max_inline_len: 24,
        max_query_buffer,
        unauthenticated_max_elements: 3,
        unauthenticated_max_bulk: 5,
    }
}

proptest! {
    #[test]
    fn valid_commands_round_trip_however_split(
        requests in proptest::collection::vec(request_strategy(), 0..24),
        sizes in proptest::collection::vec(1usize..48, 1..8),
        authenticated in any::<bool>(),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (command, form, blank, lf_only, empty) in &requests {
            if let Some(empty) = empty {
                input.extend_from_slice(EMPTY_REQUESTS[*empty]);
            }
            encode(command, *form, blank, *lf_only, &mut input);
            expected.push(command.clone());
        }
        let expected = Outcome { commands: expected, error: None };
        prop_assert_eq!(&run(Limits::default(), authenticated, &input, &sizes), &expected);
        prop_assert_eq!(&run(Limits::default(), authenticated, &input, &[1]), &expected);
    }

    #[test]
    fn random_bytes_give_the_same_outcome_however_split(
        input in prop_oneof![proptest::collection::vec(any::<u8>(), 0..400), protocol_soup()],
        sizes in proptest::collection::vec(1usize..32, 1..8),
        authenticated in any::<bool>(),
    ) {
        let limits = small_limits(1 << 20);
        let whole = run(limits, authenticated, &input, &[input.len()]);
        prop_assert_eq!(&run(limits, authenticated, &input, &sizes), &whole);
        prop_assert_eq!(&run(limits, authenticated, &input, &[1]), &whole);
        for command in &whole.commands {
            prop_assert!(!command.is_empty());
            let longest = limits.max_bulk_len.max(limits.max_inline_len);
            prop_assert!(command.iter().all(|arg| arg.len() <= longest));
        }
        if let Some(error) = &whole.error {
            prop_assert!(error.0.starts_with("ERR Protocol error: "));
        }
    }

    #[test]
    fn random_bytes_stay_within_the_query_buffer(
        input in prop_oneof![proptest::collection::vec(any::<u8>(), 0..400), protocol_soup()],
        sizes in proptest::collection::vec(1usize..32, 1..8),
        max_query_buffer in 1usize..64,
        authenticated in any::<bool>(),
    ) {
        // `run` asserts the bound after every feed.
        let outcome = run(small_limits(max_query_buffer), authenticated, &input, &sizes);
        if let Some(error) = outcome.error {
            prop_assert!(error.0.starts_with("ERR Protocol error: "));
        }
    }
}

/// A change to a valid pipeline: a byte, a cut, or a huge count or length spliced in.
#[derive(Debug, Clone)]
enum Damage {
    Byte(usize, u8),
    Cut(usize),
    Splice(usize, &'static [u8]),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Byte(at, b)),
        any::<usize>().prop_map(Damage::Cut),
        (
            any::<usize>(),
            proptest::sample::select(vec![
                &b"*2147483647\r\n"[..],
                b"$4294967295\r\n",
                b"*1048577\r\n",
                b"$536870913\r\n",
                b"*18446744073709551616\r\n",
                b"$99999999999999999999999\r\n",
                b"*-2\r\n",
                b"$-1\r\n",
                b"\r\n",
                b"\"",
            ])
        )
            .prop_map(|(at, s)| Damage::Splice(at, s)),
    ]
}

proptest! {
    #[test]
    fn fuzz_resp_damaged_pipelines(
        requests in proptest::collection::vec(request_strategy(), 1..8),
        damage in damage_strategy(),
        sizes in proptest::collection::vec(1usize..32, 1..8),
        authenticated in any::<bool>(),
        small in any::<bool>(),
    ) {
        let mut input = Vec::new();
        for (command, form, blank, lf_only, _) in &requests {
            encode(command, *form, blank, *lf_only, &mut input);
        }
        match damage {
            Damage::Byte(at, b) => {
                let i = at % input.len();
                input[i] = b;
            }
            Damage::Cut(at) => input.truncate(at % input.len()),
            Damage::Splice(at, s) => {
                let i = at % (input.len() + 1);
                input.splice(i..i, s.iter().copied());
            }
        }
        let limits = if small { small_limits(1 << 20) } else { Limits::default() };
        let whole = run(limits, authenticated, &input, &[input.len()]);
        prop_assert_eq!(&run(limits, authenticated, &input, &sizes), &whole);
        if let Some(error) = &whole.error {
            prop_assert!(error.0.starts_with("ERR Protocol error: "));
        }
    }
}

// ---- hostile counts and lengths --------------------------------------------------------

#[path = "../../test-support/reservation.rs"]
mod reservation;
use reservation::without_large_reservation;

/// Feeds `input` whole and returns the first thing `next_command` says.
fn first(
    limits: Limits,
    authenticated: bool,
    input: &[u8],
) -> Result<Option<Command>, ProtocolError> {
    let mut parser = Parser::new(limits);
    parser.feed(input)?;
    parser.next_command(authenticated)
}

fn protocol_error(what: &str) -> Result<Option<Command>, ProtocolError> {
    Err(ProtocolError(format!("ERR Protocol error: {what}")))
}

#[test]
fn counts_and_lengths_beyond_the_limits_are_refused_at_once() {
    let cases: [(&[u8], &str); 6] = [
        (b"*2147483647\r\n", "invalid multibulk length"),
        (b"*18446744073709551616\r\n", "invalid multibulk length"),
        (b"*1048577\r\n", "invalid multibulk length"),
        (b"*1\r\n$4294967295\r\n", "invalid bulk length"),
        (b"*1\r\n$536870913\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
    ];
    for (input, what) in cases {
        let result = without_large_reservation(what, || first(Limits::default(), true, input));
        assert_eq!(
            result,
            protocol_error(what),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    // Before authentication the limits are far lower.
    assert_eq!(
        first(Limits::default(), false, b"*11\r\n"),
        protocol_error("unauthenticated multibulk length")
    );
    assert_eq!(
        first(Limits::default(), false, b"*1\r\n$16385\r\n"),
        protocol_error("unauthenticated bulk length")
    );
}

/// With the limits lifted, huge claims are accepted but nothing is reserved for them: the
/// parser waits for the bytes.
#[test]
fn huge_claims_within_the_limits_reserve_nothing() {
    let unlimited = Limits {
        max_bulk_len: usize::MAX,
        max_multibulk_len: usize::MAX,
        max_query_buffer: usize::MAX,
        ..Limits::default()
    };
    for input in [
        &b"*2147483647\r\n"[..],
        b"*4294967295\r\n$1\r\na\r\n",
        b"*1\r\n$4294967295\r\n",
        b"*2\r\n$9223372036854775807\r\nabc",
    ] {
        let result = without_large_reservation("huge claim", || first(unlimited, true, input));
        assert_eq!(result, Ok(None), "{}", String::from_utf8_lossy(input));
    }
    // A length that would overflow with its CRLF is still only waited for.
    let input = format!("*1\r\n${}\r\n", usize::MAX);
    assert_eq!(first(unlimited, true, input.as_bytes()), Ok(None));
}

#[test]
fn an_endless_header_or_inline_line_is_refused_at_the_line_limit() {
    let limits = Limits::default();
    let digits = vec![b'1'; limits.max_inline_len + 1];
    for prefix in [&b"*"[..], b"*1\r\n$", b"PING "] {
        let input = [prefix, &digits].concat();
        let result = first(limits, true, &input);
        assert!(
            matches!(&result, Err(e) if e.0.contains("too big")),
            "{}: {result:?}",
            String::from_utf8_lossy(prefix)
        );
    }
}
