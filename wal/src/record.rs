//! Redo records: what the engine logs, and their byte encoding.
//!
//! A record is a typed [`Record`]; the log stores it as a *frame*:
//!
//! ```text
//! frame  = head (varint) | body          head = body_len << 1 | last_in_batch
//!                                         body_len in 1..=MAX_RECORD_LEN
//! body   = kind (1 byte) | fields of that kind, in order
//! varint = unsigned LEB128, minimal (no trailing 0x80 groups), at most 10 bytes
//! bytes  = len (varint) | len bytes
//! ```
//!
//! | kind | record        | fields                                                       |
//! |------|---------------|--------------------------------------------------------------|
//! | 1    | `PageDelta`   | space_id, page_no, count, count × (offset varint, bytes)     |
//! | 2    | `PageImage`   | space_id, page_no, image bytes                               |
//! | 3    | `SpaceHeader` | space_id, image bytes (the page-0 body)                      |
//! | 4    | `CreateSpace` | space_id, payload bytes                                      |
//! | 5    | `DropSpace`   | space_id                                                     |
//! | 6    | `Commit`      | txn_id                                                       |
//! | 7    | `Rollback`    | txn_id                                                       |
//! | 8    | `Checkpoint`  | lsn                                                          |
//!
//! `space_id`, `page_no` and `offset` are varints that must fit in a u32; `txn_id` and
//! `lsn` are u64 varints. A body must be consumed exactly. `last_in_batch` is set on the
//! last record of each `Log::append` call, so recovery can return a batch (an engine
//! mini-transaction) whole or not at all.
//!
//! A commit record takes 3–11 bytes with its frame; a page delta of one 100-byte range,
//! about 110. The encoding is canonical — [`Record::decode`] accepts only bytes that
//! [`Record::encode`] could have written — so `encode(decode(b)) == b` whenever decoding
//! succeeds (a property test checks it).
//!
//! **Decoding never trusts a length.** A length or count is checked against the bytes that
//! remain before anything is allocated or sliced, so garbage can neither panic nor make
//! the decoder allocate more than the input's size.

use crate::Lsn;

/// The largest record body, in bytes (1 MiB). Large enough for a 64 KiB page image with
/// room to spare; keeps a corrupt length from asking for gigabytes.
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// One redo record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Physical redo of a plaintext page frame: write each `(offset, bytes)` range.
    PageDelta {
        space_id: u32,
        page_no: u32,
        ranges: Vec<(u32, Vec<u8>)>,
    },
    /// A whole plaintext page frame (first change after a checkpoint, or a new page).
    PageImage {
        space_id: u32,
        page_no: u32,
        image: Vec<u8>,
    },
    /// The body of a tablespace's page 0.
    SpaceHeader { space_id: u32, image: Vec<u8> },
    /// A tablespace was created; `payload` is whatever the engine needs to recreate it.
    CreateSpace { space_id: u32, payload: Vec<u8> },
    /// A tablespace was dropped.
    DropSpace { space_id: u32 },
    /// Transaction `txn_id` committed.
    Commit { txn_id: u64 },
    /// Transaction `txn_id` finished rolling back.
    Rollback { txn_id: u64 },
    /// A marker the engine may write when it takes a checkpoint at `lsn`.
    Checkpoint { lsn: Lsn },
}

const KIND_PAGE_DELTA: u8 = 1;
const KIND_PAGE_IMAGE: u8 = 2;
const KIND_SPACE_HEADER: u8 = 3;
const KIND_CREATE_SPACE: u8 = 4;
const KIND_DROP_SPACE: u8 = 5;
const KIND_COMMIT: u8 = 6;
const KIND_ROLLBACK: u8 = 7;
const KIND_CHECKPOINT: u8 = 8;

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A field or length runs past the end of the bytes.
    #[error("record truncated")]
    Truncated,
    /// The kind byte names no record type.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A varint is longer than 10 bytes, overflows, or is not minimal.
    #[error("malformed varint")]
    BadVarint,
    /// A field that must fit in a u32 does not.
    #[error("field out of range")]
    OutOfRange,
    /// Bytes remain after the last field.
    #[error("{0} unexpected bytes after the record")]
    TrailingBytes(usize),
    /// A frame's body length is 0 or above [`MAX_RECORD_LEN`].
    #[error("record length {0} out of range")]
    BadLength(u64),
}

impl Record {
    /// Appends the body encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::PageDelta {
                space_id,
                page_no,
                ranges,
            } => {
                out.push(KIND_PAGE_DELTA);
                put_varint(out, u64::from(*space_id));
                put_varint(out, u64::from(*page_no));
                put_varint(out, ranges.len() as u64);
                for (offset, bytes) in ranges {
                    put_varint(out, u64::from(*offset));
                    put_bytes(out, bytes);
                }
            }
            Record::PageImage {
                space_id,
                page_no,
                image,
            } => {
                out.push(KIND_PAGE_IMAGE);
                put_varint(out, u64::from(*space_id));
                put_varint(out, u64::from(*page_no));
                put_bytes(out, image);
            }
            Record::SpaceHeader { space_id, image } => {
                out.push(KIND_SPACE_HEADER);
                put_varint(out, u64::from(*space_id));
                put_bytes(out, image);
            }
            Record::CreateSpace { space_id, payload } => {
                out.push(KIND_CREATE_SPACE);
                put_varint(out, u64::from(*space_id));
                put_bytes(out, payload);
            }
            Record::DropSpace { space_id } => {
                out.push(KIND_DROP_SPACE);
                put_varint(out, u64::from(*space_id));
            }
            Record::Commit { txn_id } => {
                out.push(KIND_COMMIT);
                put_varint(out, *txn_id);
            }
            Record::Rollback { txn_id } => {
                out.push(KIND_ROLLBACK);
                put_varint(out, *txn_id);
            }
            Record::Checkpoint { lsn } => {
                out.push(KIND_CHECKPOINT);
                put_varint(out, *lsn);
            }
        }
    }

    /// The body encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one body, which must be consumed exactly.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader { bytes };
        let record = match r.u8()? {
            KIND_PAGE_DELTA => {
                let space_id = r.u32()?;
                let page_no = r.u32()?;
                let count = r.varint()?;
                // Each range takes at least two bytes (offset, length), so a count larger
                // than that is garbage; checked before the loop, and nothing is reserved.
                if count > (r.bytes.len() / 2) as u64 {
                    return Err(RecordError::Truncated);
                }
                let mut ranges = Vec::new();
                for _ in 0..count {
                    let offset = r.u32()?;
                    ranges.push((offset, r.bytes()?.to_vec()));
                }
                Record::PageDelta {
                    space_id,
                    page_no,
                    ranges,
                }
            }
            KIND_PAGE_IMAGE => Record::PageImage {
                space_id: r.u32()?,
                page_no: r.u32()?,
                image: r.bytes()?.to_vec(),
            },
            KIND_SPACE_HEADER => Record::SpaceHeader {
                space_id: r.u32()?,
                image: r.bytes()?.to_vec(),
            },
            KIND_CREATE_SPACE => Record::CreateSpace {
                space_id: r.u32()?,
                payload: r.bytes()?.to_vec(),
            },
            KIND_DROP_SPACE => Record::DropSpace { space_id: r.u32()? },
            KIND_COMMIT => Record::Commit {
                txn_id: r.varint()?,
            },
            KIND_ROLLBACK => Record::Rollback {
                txn_id: r.varint()?,
            },
            KIND_CHECKPOINT => Record::Checkpoint { lsn: r.varint()? },
            kind => return Err(RecordError::UnknownKind(kind)),
        };
        match r.bytes.len() {
            0 => Ok(record),
            extra => Err(RecordError::TrailingBytes(extra)),
        }
    }

    /// Appends the frame (head + body) to `out`; returns the body's and the frame's length.
    pub(crate) fn encode_frame(&self, out: &mut Vec<u8>, last_in_batch: bool) -> (usize, usize) {
        let body = self.to_bytes();
        let start = out.len();
        put_varint(out, (body.len() as u64) << 1 | u64::from(last_in_batch));
        out.extend_from_slice(&body);
        (body.len(), out.len() - start)
    }
}

/// Appends `value` as a minimal unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Decodes a varint at the start of `bytes`: `Ok(Some((value, len)))`, `Ok(None)` if the
/// bytes end inside it (more may follow in the next block), or an error if it is malformed.
pub(crate) fn read_varint(bytes: &[u8]) -> Result<Option<(u64, usize)>, RecordError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let group = u64::from(byte & 0x7F);
        if i == 9 && byte > 1 {
            return Err(RecordError::BadVarint);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(RecordError::BadVarint);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 10 {
        Err(RecordError::BadVarint)
    } else {
        Ok(None)
    }
}

/// A cursor over a record body; every read checks what remains first.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, RecordError> {
        let (&first, rest) = self.bytes.split_first().ok_or(RecordError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let (value, len) = read_varint(self.bytes)?.ok_or(RecordError::Truncated)?;
        self.bytes = &self.bytes[len..];
        Ok(value)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        u32::try_from(self.varint()?).map_err(|_| RecordError::OutOfRange)
    }

    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.varint()?;
        if len > self.bytes.len() as u64 {
            return Err(RecordError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(len as usize);
        self.bytes = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..300)
    }

    pub(crate) fn record_strategy() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec((any::<u32>(), bytes_strategy()), 0..5)
            )
                .prop_map(|(space_id, page_no, ranges)| Record::PageDelta {
                    space_id,
                    page_no,
                    ranges
                }),
            (any::<u32>(), any::<u32>(), bytes_strategy()).prop_map(
                |(space_id, page_no, image)| Record::PageImage {
                    space_id,
                    page_no,
                    image
                }
            ),
            (any::<u32>(), bytes_strategy())
                .prop_map(|(space_id, image)| Record::SpaceHeader { space_id, image }),
            (any::<u32>(), bytes_strategy())
                .prop_map(|(space_id, payload)| Record::CreateSpace { space_id, payload }),
            any::<u32>().prop_map(|space_id| Record::DropSpace { space_id }),
            any::<u64>().prop_map(|txn_id| Record::Commit { txn_id }),
            any::<u64>().prop_map(|txn_id| Record::Rollback { txn_id }),
            any::<u64>().prop_map(|lsn| Record::Checkpoint { lsn }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(record in record_strategy()) {
            let bytes = record.to_bytes();
            prop_assert_eq!(Record::decode(&bytes), Ok(record.clone()));
            // Every strict prefix is rejected, never misread.
            for cut in 0..bytes.len() {
                prop_assert!(Record::decode(&bytes[..cut]).is_err());
            }
            for last in [false, true] {
                let mut framed = Vec::new();
                let (body_len, len) = record.encode_frame(&mut framed, last);
                prop_assert_eq!((body_len, len), (bytes.len(), framed.len()));
                let (head, head_len) = read_varint(&framed).unwrap().unwrap();
                prop_assert_eq!(head, (bytes.len() as u64) << 1 | u64::from(last));
                prop_assert_eq!(&framed[head_len..], &bytes[..]);
            }
        }

        #[test]
        fn garbage_never_panics_and_decodes_canonically(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(record) = Record::decode(&bytes) {
                prop_assert_eq!(record.to_bytes(), bytes);
            }
        }

        #[test]
        fn garbage_after_a_valid_kind_never_panics(kind in 0u8..10, rest in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&rest);
            if let Ok(record) = Record::decode(&bytes) {
                prop_assert_eq!(record.to_bytes(), bytes);
            }
        }

        #[test]
        fn varints_round_trip(value in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(read_varint(&out), Ok(Some((value, out.len()))));
            prop_assert_eq!(read_varint(&out[..out.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn huge_lengths_and_counts_are_refused_without_allocating() {
        // Were any of these lengths trusted, the allocation would abort the test process.
        let mut image = vec![KIND_PAGE_IMAGE, 1, 1];
        put_varint(&mut image, u64::MAX >> 1);
        assert_eq!(Record::decode(&image), Err(RecordError::Truncated));

        let mut delta = vec![KIND_PAGE_DELTA, 1, 1];
        put_varint(&mut delta, 1 << 60);
        delta.extend_from_slice(&[0; 8]);
        assert_eq!(Record::decode(&delta), Err(RecordError::Truncated));

        let mut ranges = vec![KIND_PAGE_DELTA, 1, 1, 1, 0];
        put_varint(&mut ranges, 1 << 40);
        assert_eq!(Record::decode(&ranges), Err(RecordError::Truncated));
    }

    #[test]
    fn malformed_varints_and_fields() {
        // Non-minimal: 0x80 0x00 encodes 0 in two bytes.
        assert_eq!(
            Record::decode(&[KIND_DROP_SPACE, 0x80, 0x00]),
            Err(RecordError::BadVarint)
        );
        // Eleven bytes, or a tenth byte above 1, overflow a u64.
        assert_eq!(read_varint(&[0xFF; 11]), Err(RecordError::BadVarint));
        let mut overflow = vec![0xFF; 9];
        overflow.push(0x02);
        assert_eq!(read_varint(&overflow), Err(RecordError::BadVarint));
        // space_id must fit in a u32.
        let mut big = vec![KIND_DROP_SPACE];
        put_varint(&mut big, u64::from(u32::MAX) + 1);
        assert_eq!(Record::decode(&big), Err(RecordError::OutOfRange));
        assert_eq!(Record::decode(&[]), Err(RecordError::Truncated));
        assert_eq!(Record::decode(&[0]), Err(RecordError::UnknownKind(0)));
        assert_eq!(
            Record::decode(&[KIND_COMMIT, 5, 9]),
            Err(RecordError::TrailingBytes(1))
        );
    }

    #[test]
    fn encodings_are_compact_and_stable() {
        assert_eq!(Record::Commit { txn_id: 300 }.to_bytes(), [6, 0xAC, 0x02]);
        let delta = Record::PageDelta {
            space_id: 7,
            page_no: 129,
            ranges: vec![(48, b"ab".to_vec())],
        };
        assert_eq!(delta.to_bytes(), [1, 7, 0x81, 0x01, 1, 48, 2, b'a', b'b']);
    }
}
