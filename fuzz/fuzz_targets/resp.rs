//! Fuzz target `resp`: the RESP request parser. The input is fed whole and in pieces (sizes
//! from the first byte); both must give the same commands and the same error, every
//! command has at least one argument, and no more than the query-buffer limit is held.
//! Bit 0x80 of the first byte selects small limits (every limit reachable by short inputs),
//! else Redis' defaults; bit 0x40 the unauthenticated limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_fuzz::Input;
use strongbox_server::resp::{Limits, Parser, ProtocolError};

fn run(
    limits: Limits,
    authenticated: bool,
    input: &[u8],
    piece: usize,
) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut parser = Parser::new(limits);
    let mut commands = Vec::new();
    for chunk in input.chunks(piece.max(1)) {
        if let Err(error) = parser.feed(chunk) {
            return (commands, Some(error));
        }
        assert!(parser.buffered() <= limits.max_query_buffer);
        loop {
            match parser.next_command(authenticated) {
                Ok(Some(command)) => {
                    assert!(!command.is_empty());
                    commands.push(command);
                }
                Ok(None) => break,
                Err(error) => {
                    assert!(error.0.starts_with("ERR Protocol error: "));
                    return (commands, Some(error));
                }
            }
        }
    }
    (commands, None)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.byte();
    let bytes = input.rest();
    let limits = if control & 0x80 != 0 {
        Limits {
            max_bulk_len: 12,
            max_multibulk_len: 6,
            max_inline_len: 24,
            max_query_buffer: 1 << 20,
            unauthenticated_max_elements: 3,
            unauthenticated_max_bulk: 5,
        }
    } else {
        Limits::default()
    };
    let authenticated = control & 0x40 == 0;
    let whole = run(limits, authenticated, bytes, bytes.len());
    let split = run(
        limits,
        authenticated,
        bytes,
        usize::from(control & 0x1f) + 1,
    );
    assert_eq!(
        whole, split,
        "the outcome depends on how the bytes were split"
    );
});
