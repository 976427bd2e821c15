//! Fuzz tests, on stable, of the two key-file readers (issue 8 §5): the MariaDB key-file
//! text (`keyfile`) and the `openssl enc` container around it (`openssl_enc`), both as
//! `KeyFileSource::load` runs them (`KeyFileSource::parse_bytes`).
//!
//! 1. Arbitrary bytes never panic; whatever parses renders back to the same keys.
//! 2. Structure-aware: valid files (comments, blank lines, both key forms, LF or CRLF) come
//!    back exactly; the same files with a byte changed, a cut, a field set huge or a line
//!    doubled never panic.
//! 3. Encrypted: seal → damage → decrypt → parse never panics; undamaged, it gives the
//!    keys the plaintext holds.
//! 4. Hostile sizes: absurd lines, huge numbers, and padding that claims more bytes than
//!    there are give a prompt, short error and no large reservation.
//!
//! The default run is short. The long run (also in `scripts/fuzz`):
//! `PROPTEST_CASES=200000 cargo test --release -p strongbox-keyring --test fuzz_keyfile`.

use std::path::Path;

use proptest::prelude::*;
use strongbox_keyring::keyfile::KeyFile;
use strongbox_keyring::openssl_enc::{self, Digest, EncSettings, Kdf, OpenError};
use strongbox_keyring::source::{FileKey, KeyFileSource};
use strongbox_keyring::{KeyringError, ParseProblem};

/// Cases per property: `PROPTEST_CASES` if set, else a short default.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PASSPHRASE: &str = "fuzz-file-key";
const SALT: [u8; 8] = *b"fuzzsalt";

type Keys = Vec<(u32, u32, usize)>;

fn keys(file: &KeyFile) -> Keys {
    file.entries()
        .iter()
        .map(|e| (e.id, e.version, e.bits()))
        .collect()
}

/// `load` on the bytes of a plain key file.
fn load_plain(bytes: &[u8]) -> Result<KeyFile, KeyringError> {
    KeyFileSource::plain("keys.txt").parse_bytes(bytes, &mut Vec::new())
}

/// `load` on the bytes of an encrypted key file.
fn load_encrypted(bytes: &[u8], settings: EncSettings) -> Result<KeyFile, KeyringError> {
    let file_key = FileKey::parse(PASSPHRASE).unwrap();
    KeyFileSource::encrypted("keys.enc", file_key, settings).parse_bytes(bytes, &mut Vec::new())
}

/// Every digest with `EVP_BytesToKey` or PBKDF2 with 1 or 2 iterations (few, to stay fast).
fn any_settings() -> impl Strategy<Value = EncSettings> {
    (
        prop::sample::select(vec![Digest::Sha1, Digest::Sha256, Digest::Sha512]),
        prop_oneof![
            Just(Kdf::EvpBytesToKey),
            (1u32..3).prop_map(|iterations| Kdf::Pbkdf2 { iterations }),
        ],
    )
        .prop_map(|(digest, kdf)| EncSettings { digest, kdf })
}

/// One line of a key file, and the key it holds if any.
#[derive(Debug, Clone)]
enum Line {
    Comment(String),
    Blank(String),
    Key {
        id: u32,
        version: Option<u32>,
        hex: String,
        pad: String,
    },
}

fn line_strategy() -> impl Strategy<Value = Line> {
    let key = (
        1u32..=u32::MAX,
        prop::option::of(1u32..=u32::MAX),
        prop::sample::select(vec![16usize, 24, 32]),
        any::<bool>(),
        prop::sample::select(vec!["", " ", "\t", "  "]),
    )
        .prop_flat_map(|(id, version, len, upper, pad)| {
            prop::collection::vec(any::<u8>(), len).prop_map(move |bytes| {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                Line::Key {
                    id,
                    version,
                    hex: if upper { hex.to_uppercase() } else { hex },
                    pad: pad.to_string(),
                }
            })
        });
    prop_oneof![
        "#[ -~]{0,40}".prop_map(Line::Comment),
        "[ \t]{0,3}".prop_map(Line::Blank),
        key.clone(),
        key,
    ]
}

/// A valid key file (ids made unique) and the keys it holds, in order.
fn key_file_strategy() -> impl Strategy<Value = (String, Keys)> {
    (prop::collection::vec(line_strategy(), 0..12), any::<bool>()).prop_map(|(lines, crlf)| {
        let mut text = String::new();
        let mut expected = Vec::new();
        for line in lines {
            match line {
                Line::Comment(s) | Line::Blank(s) => text.push_str(&s),
                Line::Key {
                    id,
                    version,
                    hex,
                    pad,
                } => {
                    if expected
                        .iter()
                        .any(|&(i, v, _)| (i, v) == (id, version.unwrap_or(1)))
                    {
                        continue;
                    }
                    expected.push((id, version.unwrap_or(1), hex.len() * 4));
                    text.push_str(&format!("{pad}{id}{pad};"));
                    if let Some(version) = version {
                        text.push_str(&format!("{version};{pad}"));
                    }
                    text.push_str(&hex);
                    text.push_str(&pad);
                }
            }
            text.push_str(if crlf { "\r\n" } else { "\n" });
        }
        (text, expected)
    })
}

/// A way to damage a valid file.
#[derive(Debug, Clone)]
enum Damage {
    SetByte(usize, u8),
    Cut(usize),
    Insert(usize, &'static str),
    DoubleLine(usize),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::SetByte(at, b)),
        any::<usize>().prop_map(Damage::Cut),
        (
            any::<usize>(),
            prop::sample::select(vec![
                ";",
                ";;",
                "#",
                "\r",
                "\n",
                "0",
                "99999999999999999999",
                "4294967296",
                "-",
                "\u{fffd}",
                "zz",
            ])
        )
            .prop_map(|(at, s)| Damage::Insert(at, s)),
        any::<usize>().prop_map(Damage::DoubleLine),
    ]
}

fn apply(text: &str, damage: &Damage) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    match *damage {
        Damage::SetByte(at, b) if !bytes.is_empty() => {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        Damage::SetByte(..) => {}
        Damage::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
        Damage::Insert(at, s) => {
            let i = at % (bytes.len() + 1);
            bytes.splice(i..i, s.bytes());
        }
        Damage::DoubleLine(at) => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            if !lines.is_empty() {
                let i = at % lines.len();
                let mut doubled = lines[..=i].concat();
                doubled.push_str(lines[i]);
                doubled.push_str(&lines[i + 1..].concat());
                bytes = doubled.into_bytes();
            }
        }
    }
    bytes
}

/// Whatever parses renders to text that parses to the same keys.
fn check_round_trip(file: &KeyFile) {
    let again = KeyFile::parse(&file.render(), Path::new("rendered")).unwrap();
    assert_eq!(keys(file), keys(&again));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_keyfile_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(file) = load_plain(&bytes) {
            check_round_trip(&file);
        }
    }

    #[test]
    fn fuzz_keyfile_text_soup(text in "[0-9a-fA-F;#\r\n \t-]{0,300}") {
        if let Ok(file) = load_plain(text.as_bytes()) {
            check_round_trip(&file);
        }
    }

    #[test]
    fn fuzz_keyfile_valid_files_load(case in key_file_strategy()) {
        let (text, expected) = case;
        let file = load_plain(text.as_bytes()).unwrap();
        prop_assert_eq!(keys(&file), expected);
        check_round_trip(&file);
    }

    #[test]
    fn fuzz_keyfile_damaged_files(case in key_file_strategy(), damage in damage_strategy()) {
        let bytes = apply(&case.0, &damage);
        match load_plain(&bytes) {
            Ok(file) => check_round_trip(&file),
            Err(error) => prop_assert!(error.to_string().len() < 200, "{}", error),
        }
    }

    #[test]
    fn fuzz_enc_arbitrary_containers(
        body in prop::collection::vec(any::<u8>(), 0..200),
        salted in any::<bool>(),
        settings in any_settings(),
    ) {
        let mut file = if salted { openssl_enc::MAGIC.to_vec() } else { Vec::new() };
        file.extend_from_slice(&body);
        if let Ok(plain) = openssl_enc::open(&file, PASSPHRASE.as_bytes(), &settings) {
            prop_assert!(plain.len() + 16 < file.len());
        }
        let _ = load_encrypted(&file, settings);
    }

    #[test]
    fn fuzz_enc_sealed_then_damaged(
        case in key_file_strategy(),
        settings in any_settings(),
        damage in prop::option::of((any::<usize>(), 0u8..3, any::<u8>())),
    ) {
        let (text, expected) = case;
        let mut file = openssl_enc::seal_with_salt(
            text.as_bytes(), PASSPHRASE.as_bytes(), &SALT, &settings);
        match damage {
            None => {
                let file = load_encrypted(&file, settings).unwrap();
                prop_assert_eq!(keys(&file), expected);
            }
            Some((at, how, byte)) => {
                let len = file.len();
                match how {
                    0 => file[at % len] ^= byte | 1,
                    1 => file.truncate(at % len),
                    _ => file.extend(std::iter::repeat_n(byte, 1 + at % 40)),
                }
                // A damaged container fails, or (without a MAC, rarely) decrypts to
                // something that parses; either way, no panic.
                let _ = load_encrypted(&file, settings);
            }
        }
    }
}

// ---- hostile sizes ----------------------------------------------------------------------

#[path = "../../test-support/reservation.rs"]
mod reservation;
use reservation::without_large_reservation;

fn parse_problem(bytes: &[u8]) -> (usize, ParseProblem) {
    match load_plain(bytes) {
        Err(KeyringError::Parse { line, problem, .. }) => (line, problem),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

const K128: &str = "00112233445566778899aabbccddeeff";

#[test]
fn a_line_of_a_million_semicolons_is_garbage() {
    let line = ";".repeat(1 << 20);
    let (line_no, problem) = without_large_reservation("semicolons", || {
        parse_problem(format!("1;{K128}\n{line}\n").as_bytes())
    });
    assert_eq!((line_no, problem), (2, ParseProblem::Garbage));
}

#[test]
fn a_key_of_a_million_hex_digits_is_a_bad_length() {
    let hex = "ab".repeat(1 << 19);
    let (_, problem) = parse_problem(format!("1;{hex}\n").as_bytes());
    assert_eq!(problem, ParseProblem::BadKeyLength { bits: 1 << 22 });
}

#[test]
fn huge_ids_and_versions_are_refused_with_a_short_message() {
    let digits = "9".repeat(1 << 20);
    for text in [
        format!("{digits};{K128}\n"),
        format!("x{digits};{K128}\n"),
        format!("1;{digits};{K128}\n"),
    ] {
        let error = load_plain(text.as_bytes()).unwrap_err();
        let shown = error.to_string();
        let start: String = shown.chars().take(100).collect();
        assert!(shown.len() < 200, "{} bytes: {start}...", shown.len());
        assert!(shown.contains("99999999") && shown.contains('…'), "{shown}");
    }
    assert_eq!(
        parse_problem(format!("4294967296;{K128}\n").as_bytes()).1,
        ParseProblem::IdOutOfRange("4294967296".into())
    );
}

#[test]
fn millions_of_comment_and_blank_lines_load() {
    let text = "#\n\n".repeat(1 << 19) + &format!("7;{K128}\n");
    let file = load_plain(text.as_bytes()).unwrap();
    assert_eq!(keys(&file), vec![(7, 1, 128)]);
}

/// The container has no length field; the one size it claims is the PKCS#7 padding
/// length in its last byte. Claims beyond a block or beyond the data are refused.
#[test]
fn padding_that_claims_too_much_is_refused() {
    let settings = EncSettings::default();
    let seal = |plaintext: &[u8]| {
        openssl_enc::seal_with_salt(plaintext, PASSPHRASE.as_bytes(), &SALT, &settings)
    };
    let open = |file: &[u8]| openssl_enc::open(file, PASSPHRASE.as_bytes(), &settings);
    // Sealing 16 bytes adds a whole block of padding; dropping that block leaves a file
    // whose last decrypted byte is the plaintext's last byte, i.e. a padding claim we pick.
    for (claim, expected) in [
        (0xFF, Err(OpenError("padding check failed"))),
        (0x11, Err(OpenError("padding check failed"))),
        (0x00, Err(OpenError("padding check failed"))),
    ] {
        let mut plaintext = [0x41u8; 16];
        plaintext[15] = claim;
        let file = seal(&plaintext);
        let cut = &file[..file.len() - 16];
        assert_eq!(open(cut).map(|p| p.len()), expected, "claim {claim:#x}");
    }
    // A whole block of 0x10 claims exactly the block: valid, empty.
    let file = seal(&[0x10; 16]);
    assert_eq!(open(&file[..file.len() - 16]).map(|p| p.len()), Ok(0));
}

#[test]
fn a_large_salted_file_fails_promptly() {
    let mut file = openssl_enc::MAGIC.to_vec();
    file.resize(16 + (16 << 20), 0x5A);
    let result = without_large_reservation("16 MiB container", || {
        load_encrypted(&file, EncSettings::default()).map(|f| f.entries().len())
    });
    assert!(result.is_err());
}
