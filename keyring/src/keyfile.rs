//! The MariaDB `file_key_management` key file: parsing and writing its text.
//!
//! ## Format
//!
//! One key per line, in either of MariaDB's two forms:
//!
//! ```text
//! # comment lines start with '#'; blank lines are ignored
//! <id>;<hex key>                  version 1 (the old, unversioned form)
//! <id>;<version>;<hex key>        an explicit version (>= 1)
//! ```
//!
//! * `id` and `version` are decimal `u32`; id 0 and version 0 are reserved.
//! * The key is 32, 48 or 64 hex digits (a 128-, 192- or 256-bit AES key), either case.
//! * Lines may end in LF or CRLF; spaces and tabs around fields are ignored.
//! * The same (id, version) may appear only once.
//!
//! A file written by MariaDB users (`echo "1;$(openssl rand -hex 32)" >> keyfile`) loads
//! unchanged. [`KeyFile`] keeps every comment and blank line and the form of every key line
//! so that rotation (which appends a version) rewrites the file without losing anything.

use crate::error::{KeyringError, ParseProblem, Result};
use crate::secret::SecretBytes;
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// Key sizes a key file may hold, in bytes.
pub const KEY_LENGTHS: [usize; 3] = [16, 24, 32];

/// One parsed key line.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: u32,
    pub version: u32,
    pub(crate) key: SecretBytes,
    /// False for the unversioned `id;hex` form; preserved when the file is rewritten.
    explicit_version: bool,
}

impl KeyEntry {
    /// Key size in bits (safe to show).
    pub fn bits(&self) -> usize {
        self.key.bits()
    }
}

/// A line of the file, kept so the file can be written back as it was.
#[derive(Debug, Clone)]
enum Line {
    /// A comment or blank line, verbatim (without its line ending).
    Verbatim(String),
    /// An index into `KeyFile::entries`.
    Key(usize),
}

/// The contents of a key file: its keys plus everything needed to write it back.
#[derive(Debug, Clone, Default)]
pub struct KeyFile {
    lines: Vec<Line>,
    entries: Vec<KeyEntry>,
    /// Whether the file used CRLF line endings (kept on rewrite).
    crlf: bool,
}

impl KeyFile {
    /// Parses key-file text. `path` is used only to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<KeyFile> {
        let mut file = KeyFile {
            crlf: text.contains("\r\n"),
            ..KeyFile::default()
        };
        let mut first_seen: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Verbatim(raw.to_string()));
                continue;
            }
            let error = |problem| KeyringError::Parse {
                path: path.to_path_buf(),
                line: line_no,
                problem,
            };
            let entry = parse_key_line(trimmed).map_err(error)?;
            if let Some(&first_line) = first_seen.get(&(entry.id, entry.version)) {
                return Err(error(ParseProblem::Duplicate {
                    id: entry.id,
                    version: entry.version,
                    first_line,
                }));
            }
            first_seen.insert((entry.id, entry.version), line_no);
            file.lines.push(Line::Key(file.entries.len()));
            file.entries.push(entry);
        }
        Ok(file)
    }

    /// Every key, in file order.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// The highest version of `id`, if the file has that id.
    pub fn latest_version(&self, id: u32) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.id == id)
            .map(|e| e.version)
            .max()
    }

    /// The entry for (id, version).
    pub fn get(&self, id: u32, version: u32) -> Option<&KeyEntry> {
        self.entries
            .iter()
            .find(|e| e.id == id && e.version == version)
    }

    /// A new file with one random key per id (version 1), `bits` long.
    /// With `with_versions` the lines use the explicit `id;1;hex` form.
    pub fn generate(ids: &[u32], bits: usize, with_versions: bool) -> Result<KeyFile> {
        let len = key_len_for_bits(bits)?;
        if ids.is_empty() {
            return Err(KeyringError::InvalidRequest(
                "no key ids given; pass at least one, e.g. --ids 1,2".into(),
            ));
        }
        let mut file = KeyFile::default();
        file.lines.push(Line::Verbatim(
            "# Strongbox key file (MariaDB file_key_management format): id;[version;]hexkey".into(),
        ));
        for (position, &id) in ids.iter().enumerate() {
            if id == 0 {
                return Err(KeyringError::InvalidRequest(
                    "key id 0 is reserved; ids start at 1".into(),
                ));
            }
            if ids[..position].contains(&id) {
                return Err(KeyringError::InvalidRequest(format!(
                    "key id {id} is listed twice"
                )));
            }
            file.push_entry(KeyEntry {
                id,
                version: 1,
                key: SecretBytes::random(len),
                explicit_version: with_versions,
            });
        }
        Ok(file)
    }

    /// Adds a new random version of `id` after that id's last line and returns its number.
    /// The new key has the length of the id's latest key unless `bits` says otherwise.
    pub fn add_version(&mut self, id: u32, bits: Option<usize>) -> Result<u32> {
        let latest = self
            .latest_version(id)
            .ok_or(KeyringError::MissingKeyId { id })?;
        let len = match bits {
            Some(bits) => key_len_for_bits(bits)?,
            None => self.get(id, latest).map(|e| e.key.len()).unwrap_or(32),
        };
        let version = latest.checked_add(1).ok_or_else(|| {
            KeyringError::InvalidRequest(format!("key id {id} already has the largest version"))
        })?;
        let entry = KeyEntry {
            id,
            version,
            key: SecretBytes::random(len),
            explicit_version: true,
        };
        let last_line_of_id = self
            .lines
            .iter()
            .rposition(|line| matches!(line, Line::Key(i) if self.entries[*i].id == id));
        let index = self.entries.len();
        self.entries.push(entry);
        match last_line_of_id {
            Some(position) => self.lines.insert(position + 1, Line::Key(index)),
            None => self.lines.push(Line::Key(index)),
        }
        Ok(version)
    }

    /// Removes (id, version) from the file; true if it was there.
    pub fn remove_version(&mut self, id: u32, version: u32) -> bool {
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.id == id && e.version == version)
        else {
            return false;
        };
        self.lines
            .retain(|line| !matches!(line, Line::Key(i) if *i == index));
        self.entries.remove(index);
        for line in &mut self.lines {
            if let Line::Key(i) = line {
                if *i > index {
                    *i -= 1;
                }
            }
        }
        true
    }

    /// The file's text. It contains key material, so it is returned in a buffer that is
    /// zeroized when dropped.
    pub fn render(&self) -> Zeroizing<String> {
        let newline = if self.crlf { "\r\n" } else { "\n" };
        let mut text = Zeroizing::new(String::new());
        for line in &self.lines {
            match line {
                Line::Verbatim(raw) => text.push_str(raw),
                Line::Key(index) => {
                    let entry = &self.entries[*index];
                    text.push_str(&entry.id.to_string());
                    text.push(';');
                    if entry.explicit_version {
                        text.push_str(&entry.version.to_string());
                        text.push(';');
                    }
                    push_hex(&mut text, entry.key.expose());
                }
            }
            text.push_str(newline);
        }
        text
    }

    fn push_entry(&mut self, entry: KeyEntry) {
        self.lines.push(Line::Key(self.entries.len()));
        self.entries.push(entry);
    }
}

fn key_len_for_bits(bits: usize) -> Result<usize> {
    match bits {
        128 | 192 | 256 => Ok(bits / 8),
        _ => Err(KeyringError::InvalidKeyLength { bits }),
    }
}

fn parse_key_line(line: &str) -> std::result::Result<KeyEntry, ParseProblem> {
    // At most 4 pieces: 3 fields and the rest, so a line of a million ';' is not split
    // into a million slices (16 bytes each) only to be refused as garbage.
    let fields: Vec<&str> = line.splitn(4, ';').map(str::trim).collect();
    let (id_text, version_text, hex) = match fields.as_slice() {
        [id, hex] => (*id, None, *hex),
        [id, version, hex] => (*id, Some(*version), *hex),
        _ => return Err(ParseProblem::Garbage),
    };
    let id = parse_id(id_text)?;
    let version = match version_text {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(v) if v >= 1 && text.bytes().all(|b| b.is_ascii_digit()) => v,
            _ => return Err(ParseProblem::BadVersion(excerpt(text))),
        },
    };
    let key = decode_hex(hex)?;
    if !KEY_LENGTHS.contains(&key.len()) {
        return Err(ParseProblem::BadKeyLength {
            bits: key.len() * 8,
        });
    }
    Ok(KeyEntry {
        id,
        version,
        key,
        explicit_version: version_text.is_some(),
    })
}

fn parse_id(text: &str) -> std::result::Result<u32, ParseProblem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseProblem::BadId(excerpt(text)));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(ParseProblem::IdZero),
        Ok(id) => Ok(id),
        Err(_) => Err(ParseProblem::IdOutOfRange(excerpt(text))),
    }
}

/// Characters of a bad id or version field an error repeats; a longer field is cut, so an
/// absurd line gives a short message.
const EXCERPT_CHARS: usize = 32;

/// `text`, cut to [`EXCERPT_CHARS`] characters and marked with `…` when longer.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Decodes hex into a secret; the error never echoes the text (it is key material).
fn decode_hex(hex: &str) -> std::result::Result<SecretBytes, ParseProblem> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(ParseProblem::BadHex);
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for pair in digits.chunks_exact(2) {
        let high = hex_value(pair[0]).ok_or(ParseProblem::BadHex)?;
        let low = hex_value(pair[1]).ok_or(ParseProblem::BadHex)?;
        bytes.push(high << 4 | low);
    }
    Ok(SecretBytes::new(std::mem::take(&mut *bytes)))
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K128: &str = "00112233445566778899aabbccddeeff";
    const K256: &str = "a7addd9adea9978fda19f21e6be987880e68ac92632ca052e5bb42b1a506939a";

    fn parse(text: &str) -> Result<KeyFile> {
        KeyFile::parse(text, Path::new("keys.txt"))
    }

    fn problem(text: &str) -> (usize, ParseProblem) {
        match parse(text) {
            Err(KeyringError::Parse { line, problem, .. }) => (line, problem),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn mariadb_documentation_examples_load() {
        let file = parse(&format!(
            "1;1;{K256}\n2;1;49c16acc2dffe616710c9ba9a10b94944a737de1beccb52dc1560abfdd67388b\n\
             100;2;8db1ee74580e7e93ab8cf157f02656d356c2f437d548d5bf16bf2a56932954a3\n"
        ))
        .unwrap();
        let ids: Vec<(u32, u32)> = file.entries().iter().map(|e| (e.id, e.version)).collect();
        assert_eq!(ids, vec![(1, 1), (2, 1), (100, 2)]);
        let old_form = parse(&format!("1;{K256}\n100;{K128}\n")).unwrap();
        assert_eq!(old_form.get(100, 1).unwrap().bits(), 128);
        assert_eq!(old_form.latest_version(1), Some(1));
    }

    #[test]
    fn comments_blank_lines_crlf_and_spaces_are_accepted() {
        let text = format!(
            "# keys\r\n\r\n  1 ; {K128} \r\n#2;zz\r\n3;7;{}\r\n",
            K256.to_uppercase()
        );
        let file = parse(&text).unwrap();
        assert_eq!(file.entries().len(), 2);
        assert_eq!(file.get(3, 7).unwrap().bits(), 256);
        assert_eq!(
            file.render().as_str(),
            format!("# keys\r\n\r\n1;{K128}\r\n#2;zz\r\n3;7;{K256}\r\n")
        );
    }

    #[test]
    fn every_key_size_loads() {
        let k192 = "000102030405060708090a0b0c0d0e0f1011121314151617";
        let file = parse(&format!("1;{K128}\n2;{k192}\n3;{K256}\n")).unwrap();
        let bits: Vec<usize> = file.entries().iter().map(KeyEntry::bits).collect();
        assert_eq!(bits, vec![128, 192, 256]);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        assert_eq!(
            problem(&format!("1;{K128}\n2;xyz{}\n", &K128[3..])),
            (2, ParseProblem::BadHex)
        );
        assert_eq!(
            problem(&format!("1;{}\n", &K128[1..])),
            (1, ParseProblem::BadHex)
        );
        assert_eq!(
            problem("1;00112233\n"),
            (1, ParseProblem::BadKeyLength { bits: 32 })
        );
        assert_eq!(problem(&format!("0;{K128}\n")), (1, ParseProblem::IdZero));
        assert_eq!(
            problem(&format!("4294967296;{K128}\n")),
            (1, ParseProblem::IdOutOfRange("4294967296".into()))
        );
        assert_eq!(
            problem(&format!("-1;{K128}\n")),
            (1, ParseProblem::BadId("-1".into()))
        );
        assert_eq!(
            problem(&format!("1;0;{K128}\n")),
            (1, ParseProblem::BadVersion("0".into()))
        );
        assert_eq!(
            problem(&format!("1;+2;{K128}\n")),
            (1, ParseProblem::BadVersion("+2".into()))
        );
        assert_eq!(problem("hello world\n"), (1, ParseProblem::Garbage));
        assert_eq!(
            problem(&format!("1;2;3;{K128}\n")),
            (1, ParseProblem::Garbage)
        );
        assert_eq!(
            problem(&format!("# c\n1;{K128}\n1;1;{K256}\n")),
            (
                3,
                ParseProblem::Duplicate {
                    id: 1,
                    version: 1,
                    first_line: 2
                }
            )
        );
    }

    #[test]
    fn errors_never_echo_key_material() {
        let text = format!("1;{}zz\n", &K256[..62]);
        let shown = parse(&text).unwrap_err().to_string();
        assert!(!shown.contains(&K256[..16]), "{shown}");
    }

    #[test]
    fn generate_then_parse_round_trips() {
        let file = KeyFile::generate(&[1, 2, 100], 256, false).unwrap();
        let again = parse(&file.render()).unwrap();
        assert_eq!(again.entries().len(), 3);
        for (a, b) in file.entries().iter().zip(again.entries()) {
            assert_eq!(
                (a.id, a.version, a.key.expose()),
                (b.id, b.version, b.key.expose())
            );
        }
        assert!(file.render().lines().nth(1).unwrap().starts_with("1;"));
        let versioned = KeyFile::generate(&[5], 128, true).unwrap();
        assert!(versioned.render().contains("\n5;1;"));
        assert!(KeyFile::generate(&[1, 1], 256, false).is_err());
        assert!(KeyFile::generate(&[0], 256, false).is_err());
        assert!(KeyFile::generate(&[1], 100, false).is_err());
    }

    #[test]
    fn add_version_keeps_comments_and_places_the_key_after_its_id() {
        let mut file = parse(&format!("# top\n1;{K128}\n# mid\n2;{K256}\n")).unwrap();
        assert_eq!(file.add_version(1, None).unwrap(), 2);
        assert_eq!(file.add_version(1, Some(256)).unwrap(), 3);
        let text = file.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# top");
        assert_eq!(lines[1], format!("1;{K128}"));
        assert!(lines[2].starts_with("1;2;") && lines[2].len() == 4 + 32);
        assert!(lines[3].starts_with("1;3;") && lines[3].len() == 4 + 64);
        assert_eq!(lines[4], "# mid");
        assert!(matches!(
            file.add_version(9, None),
            Err(KeyringError::MissingKeyId { id: 9 })
        ));
    }

    #[test]
    fn remove_version_keeps_the_rest() {
        let mut file = parse(&format!("1;{K128}\n1;2;{K256}\n2;{K128}\n")).unwrap();
        assert!(file.remove_version(1, 1));
        assert!(!file.remove_version(1, 1));
        assert_eq!(file.render().as_str(), format!("1;2;{K256}\n2;{K128}\n"));
    }
}
