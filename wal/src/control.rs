//! The control file `redo.ctl`: the few facts the log needs before it can read a block.
//!
//! ## Layout: two 512-byte slots (little-endian)
//!
//! ```text
//! file:   slot 0 [0, 512)  |  slot 1 [512, 1024)
//!
//! slot:
//! offset size field
//! 0      4    checksum        CRC-32 (IEEE) over bytes [4, 512) of the slot
//! 4      8    magic           "SBXREDO\0"
//! 12     4    format_version  1
//! 16     8    sequence        write counter; the valid slot with the larger one wins
//! 24     4    epoch           epoch of the latest open (module `log`, IV argument)
//! 28     4    flags           bit 0: encrypted; other bits zero
//! 32     8    segment_size    bytes per segment file
//! 40     8    checkpoint_lsn  recovery starts here
//! 48     52   wrapped_key     the log's data key wrapped under key id 1 (keyring `wrap`); zero if plain
//! 100    412  reserved        zero
//! ```
//!
//! **Why two slots.** An update writes the slot the current one is *not* in (slot
//! `sequence % 2`) and fsyncs it. A write torn by a crash leaves that slot invalid, and the
//! other slot — the previous state — wins. A slot is one 512-byte sector, so a torn write
//! damages at most the slot being written.
//!
//! **Creation** writes `redo.ctl.tmp`, fsyncs it, renames it to `redo.ctl` and fsyncs the
//! directory, so a crash during `Log::create` leaves either no log or a whole one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strongbox_keyring::wrap::WrappedKey;

use crate::error::{Result, WalError};
use crate::io::{FileIo, OpenMode, Vfs};
use crate::Lsn;

/// The control file's name in the log directory.
pub const CONTROL_FILE: &str = "redo.ctl";
const CONTROL_TMP: &str = "redo.ctl.tmp";

const SLOT_SIZE: usize = 512;
const MAGIC: [u8; 8] = *b"SBXREDO\0";
const FORMAT_VERSION: u32 = 1;
const FLAG_ENCRYPTED: u32 = 1;

const CHECKSUM_OFFSET: usize = 0;
const MAGIC_OFFSET: usize = CHECKSUM_OFFSET + 4;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const SEQUENCE_OFFSET: usize = VERSION_OFFSET + 4;
const EPOCH_OFFSET: usize = SEQUENCE_OFFSET + 8;
const FLAGS_OFFSET: usize = EPOCH_OFFSET + 4;
const SEGMENT_SIZE_OFFSET: usize = FLAGS_OFFSET + 4;
const CHECKPOINT_OFFSET: usize = SEGMENT_SIZE_OFFSET + 8;
const WRAPPED_KEY_OFFSET: usize = CHECKPOINT_OFFSET + 8;
const RESERVED_OFFSET: usize = WRAPPED_KEY_OFFSET + WrappedKey::ENCODED_LEN;

const _: () = assert!(RESERVED_OFFSET == 100 && RESERVED_OFFSET <= SLOT_SIZE);

/// The contents of one control slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub sequence: u64,
    pub epoch: u32,
    pub segment_size: u64,
    pub checkpoint_lsn: Lsn,
    /// The log's wrapped data key; `None` for a plain log.
    pub wrapped_key: Option<WrappedKey>,
}

/// What a slot holds.
enum Slot {
    Valid(Control),
    Invalid,
    /// The checksum and magic are right but the version is not one we read.
    OtherVersion(u32),
}

impl Control {
    fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut slot = [0u8; SLOT_SIZE];
        slot[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
        slot[VERSION_OFFSET..SEQUENCE_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        slot[SEQUENCE_OFFSET..EPOCH_OFFSET].copy_from_slice(&self.sequence.to_le_bytes());
        slot[EPOCH_OFFSET..FLAGS_OFFSET].copy_from_slice(&self.epoch.to_le_bytes());
        let flags = if self.wrapped_key.is_some() {
            FLAG_ENCRYPTED
        } else {
            0
        };
        slot[FLAGS_OFFSET..SEGMENT_SIZE_OFFSET].copy_from_slice(&flags.to_le_bytes());
        slot[SEGMENT_SIZE_OFFSET..CHECKPOINT_OFFSET]
            .copy_from_slice(&self.segment_size.to_le_bytes());
        slot[CHECKPOINT_OFFSET..WRAPPED_KEY_OFFSET]
            .copy_from_slice(&self.checkpoint_lsn.to_le_bytes());
        if let Some(key) = &self.wrapped_key {
            key.encode(&mut slot[WRAPPED_KEY_OFFSET..RESERVED_OFFSET]);
        }
        let crc = crc32fast::hash(&slot[MAGIC_OFFSET..]);
        slot[CHECKSUM_OFFSET..MAGIC_OFFSET].copy_from_slice(&crc.to_le_bytes());
        slot
    }

    fn decode(slot: &[u8]) -> Slot {
        let Some(slot) = slot.get(..SLOT_SIZE) else {
            return Slot::Invalid;
        };
        let u32_at = |o: usize| u32::from_le_bytes(slot[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(slot[o..o + 8].try_into().expect("8 bytes"));
        if crc32fast::hash(&slot[MAGIC_OFFSET..]) != u32_at(CHECKSUM_OFFSET)
            || slot[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC
        {
            return Slot::Invalid;
        }
        let version = u32_at(VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Slot::OtherVersion(version);
        }
        let flags = u32_at(FLAGS_OFFSET);
        let wrapped_key = match flags {
            0 => None,
            FLAG_ENCRYPTED => {
                match WrappedKey::decode(&slot[WRAPPED_KEY_OFFSET..RESERVED_OFFSET]) {
                    Ok(key) => Some(key),
                    Err(_) => return Slot::Invalid,
                }
            }
            _ => return Slot::Invalid,
        };
        if slot[RESERVED_OFFSET..].iter().any(|&b| b != 0) {
            return Slot::Invalid;
        }
        Slot::Valid(Control {
            sequence: u64_at(SEQUENCE_OFFSET),
            epoch: u32_at(EPOCH_OFFSET),
            segment_size: u64_at(SEGMENT_SIZE_OFFSET),
            checkpoint_lsn: u64_at(CHECKPOINT_OFFSET),
            wrapped_key,
        })
    }
}

/// The open control file and its latest contents.
#[derive(Debug)]
pub struct ControlFile {
    file: Arc<dyn FileIo>,
    path: PathBuf,
    current: Control,
}

impl ControlFile {
    /// Creates `dir/redo.ctl` holding `control` (atomically: temp file, fsync, rename,
    /// directory fsync). Fails if it exists.
    pub fn create(vfs: &dyn Vfs, dir: &Path, control: Control) -> Result<ControlFile> {
        let path = dir.join(CONTROL_FILE);
        let tmp = dir.join(CONTROL_TMP);
        if vfs.exists(&tmp) {
            vfs.remove(&tmp)
                .map_err(|e| WalError::io("remove", &tmp, e))?;
        }
        let file = vfs
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| WalError::io("create", &tmp, e))?;
        let slot = control.sequence % 2;
        file.write_at(&control.encode(), slot * SLOT_SIZE as u64)
            .map_err(|e| WalError::io("write", &tmp, e))?;
        file.sync().map_err(|e| WalError::io("fsync", &tmp, e))?;
        if vfs.exists(&path) {
            return Err(WalError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        vfs.rename(&tmp, &path)
            .map_err(|e| WalError::io("rename", &tmp, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync directory", dir, e))?;
        Ok(ControlFile {
            file,
            path,
            current: control,
        })
    }

    /// Opens `dir/redo.ctl` and picks the newer valid slot. Also returns the largest
    /// epoch in any valid slot (see `log`: a new epoch must exceed every one seen).
    pub fn open(vfs: &dyn Vfs, dir: &Path) -> Result<(ControlFile, u32)> {
        let path = dir.join(CONTROL_FILE);
        if !vfs.exists(&path) {
            return Err(WalError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let file = vfs
            .open(&path, OpenMode::Existing)
            .map_err(|e| WalError::io("open", &path, e))?;
        let len = file.size().map_err(|e| WalError::io("stat", &path, e))?;
        let mut bytes = vec![0u8; (len as usize).min(2 * SLOT_SIZE)];
        file.read_at(&mut bytes, 0)
            .map_err(|e| WalError::io("read", &path, e))?;
        let slots = [
            Control::decode(bytes.get(..SLOT_SIZE).unwrap_or(&[])),
            Control::decode(bytes.get(SLOT_SIZE..).unwrap_or(&[])),
        ];
        let mut best: Option<Control> = None;
        let mut max_epoch = 0;
        for slot in slots {
            match slot {
                Slot::Valid(control) => {
                    max_epoch = max_epoch.max(control.epoch);
                    if best.as_ref().is_none_or(|b| control.sequence > b.sequence) {
                        best = Some(control);
                    }
                }
                Slot::OtherVersion(version) => {
                    return Err(WalError::UnsupportedVersion { path, version })
                }
                Slot::Invalid => {}
            }
        }
        let current = best.ok_or_else(|| WalError::ControlCorrupt { path: path.clone() })?;
        Ok((
            ControlFile {
                file,
                path,
                current,
            },
            max_epoch,
        ))
    }

    /// The latest contents.
    pub fn current(&self) -> &Control {
        &self.current
    }

    /// Applies `change`, then writes and fsyncs the result into the other slot. On error
    /// the in-memory contents stay as they were.
    pub fn update(&mut self, change: impl FnOnce(&mut Control)) -> Result<()> {
        let mut next = self.current.clone();
        change(&mut next);
        next.sequence = self.current.sequence + 1;
        let offset = (next.sequence % 2) * SLOT_SIZE as u64;
        self.file
            .write_at(&next.encode(), offset)
            .map_err(|e| WalError::io("write", &self.path, e))?;
        self.file
            .sync()
            .map_err(|e| WalError::io("fsync", &self.path, e))?;
        self.current = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemVfs;
    use strongbox_keyring::provider::MemoryKeyProvider;
    use strongbox_keyring::wrap::new_data_key;

    fn control(wrapped_key: Option<WrappedKey>) -> Control {
        Control {
            sequence: 1,
            epoch: 1,
            segment_size: 65536,
            checkpoint_lsn: 24,
            wrapped_key,
        }
    }

    #[test]
    fn layout_and_round_trip() {
        let provider = MemoryKeyProvider::new();
        provider.add_random(1, 4, 256).unwrap();
        let (_, wrapped) = new_data_key(&provider, 1).unwrap();
        let c = control(Some(wrapped));
        let slot = c.encode();
        assert_eq!(&slot[4..12], b"SBXREDO\0");
        assert_eq!(&slot[12..16], &1u32.to_le_bytes());
        assert_eq!(&slot[28..32], &1u32.to_le_bytes());
        assert_eq!(&slot[32..40], &65536u64.to_le_bytes());
        assert_eq!(&slot[40..48], &24u64.to_le_bytes());
        assert_eq!(&slot[48..52], &1u32.to_le_bytes(), "wrapped key id");
        assert_eq!(&slot[52..56], &4u32.to_le_bytes(), "wrapped key version");
        assert!(matches!(Control::decode(&slot), Slot::Valid(d) if d == c));
    }

    #[test]
    fn a_torn_update_leaves_the_previous_state() {
        let vfs = MemVfs::new();
        let dir = Path::new("/log");
        let mut file = ControlFile::create(&vfs, dir, control(None)).unwrap();
        assert!(!vfs.exists(&dir.join(CONTROL_TMP)));
        file.update(|c| c.checkpoint_lsn = 1000).unwrap();
        file.update(|c| c.checkpoint_lsn = 2000).unwrap();
        let path = dir.join(CONTROL_FILE);
        let (reopened, _) = ControlFile::open(&vfs, dir).unwrap();
        assert_eq!(reopened.current().checkpoint_lsn, 2000);
        assert_eq!(reopened.current().sequence, 3);

        // Tear the slot the last update wrote (sequence 3 -> slot 1).
        let mut bytes = vfs.contents(&path).unwrap();
        bytes[SLOT_SIZE + 100] ^= 0xFF;
        vfs.set_contents(&path, bytes.clone());
        let (mut reopened, _) = ControlFile::open(&vfs, dir).unwrap();
        assert_eq!(reopened.current().checkpoint_lsn, 1000);
        // The next update goes to the damaged slot, not over the good one.
        reopened.update(|c| c.checkpoint_lsn = 3000).unwrap();
        assert_eq!(
            vfs.contents(&path).unwrap()[..SLOT_SIZE],
            bytes[..SLOT_SIZE]
        );
        assert_eq!(
            ControlFile::open(&vfs, dir)
                .unwrap()
                .0
                .current()
                .checkpoint_lsn,
            3000
        );

        // Both slots damaged: a clear error.
        vfs.set_contents(&path, vec![7; 2 * SLOT_SIZE]);
        assert!(matches!(
            ControlFile::open(&vfs, dir),
            Err(WalError::ControlCorrupt { .. })
        ));
    }

    #[test]
    fn other_versions_and_existing_files_are_refused() {
        let vfs = MemVfs::new();
        let dir = Path::new("/log");
        ControlFile::create(&vfs, dir, control(None)).unwrap();
        assert!(matches!(
            ControlFile::create(&vfs, dir, control(None)),
            Err(WalError::AlreadyExists { .. })
        ));
        let mut slot = control(None).encode();
        slot[VERSION_OFFSET] = 9;
        let crc = crc32fast::hash(&slot[4..]);
        slot[..4].copy_from_slice(&crc.to_le_bytes());
        vfs.set_contents(&dir.join(CONTROL_FILE), slot.to_vec());
        assert!(matches!(
            ControlFile::open(&vfs, dir),
            Err(WalError::UnsupportedVersion { version: 9, .. })
        ));
    }
}
