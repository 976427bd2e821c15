//! The doublewrite buffer: a page goes first to a slot of `doublewrite.dbw`, synced, and only
//! then to its home in a tablespace, so that a page torn by a crash can be rewritten whole
//! at start-up.
//!
//! # Why
//!
//! A page is 4 to 64 KiB, but a disk promises atomic writes of at most one sector (512 B or
//! 4 KiB). A crash in the middle of a page write can leave the home page half new and half
//! old. Its checksum then fails, and redo cannot help: redo applies changes *to* an intact
//! page. The doublewrite copy is that intact page.
//!
//! # What a slot holds
//!
//! A STORED page image: exactly the bytes that go home, already checksummed and, for an
//! encrypted tablespace, already encrypted by the page codec under the tablespace's key.
//! So the doublewrite file never holds plaintext of an encrypted page (DESIGN §3). The slot
//! header adds only the space id and page number (which the stored page header carries in
//! the clear anyway) and a batch number. A page of an unencrypted tablespace is stored here
//! just as it is stored at home.
//!
//! # The file `doublewrite.dbw`
//!
//! It lives in the data directory. The extension is `.dbw`, not `.sbd`, so tools that scan
//! for tablespaces (`*.sbd`) skip it. Integers are little-endian, as everywhere in Strongbox.
//!
//! ```text
//! [0, 4096)                           file header, written once when the file is created
//! 4096 + i × (24 + page_size)         slot i, for i in 0..slots
//!
//! file header:
//! offset  size  field
//! 0       4     checksum        CRC-32 (crc32fast) over bytes [4, 4096)
//! 4       8     magic           "SBXDBLWR"
//! 12      4     format_version  1
//! 16      4     page_size       bytes per page image
//! 20      4     slots           number of slots, fixed when the file is created
//! 24      4072  zero
//!
//! slot:
//! offset  size  field
//! 0       4     checksum        CRC-32 over bytes [4, 24 + page_size) of the slot
//! 4       4     space_id        where the image goes home
//! 8       4     page_no
//! 12      4     reserved        0
//! 16      8     batch           batch number, 1 or more (0: never written)
//! 24      ps    image           the stored page, byte for byte what is written home
//! ```
//!
//! The file header fills a whole 4 KiB block, so no slot write ever shares a sector with it.
//! A slot whose bytes are all zero was never written (*empty*). A slot that is not all zero
//! and fails its checksum is *torn*, and it is never trusted. A new file is written as
//! `doublewrite.dbw.tmp`, synced, and renamed into place (then the directory is synced), so
//! a crash while it is being created leaves either no file or a whole one.
//!
//! # The ordering protocol
//!
//! [`Doublewrite::write_batch`] cuts its pages into *batches* of at most `slots` pages. Each
//! batch gets the next batch number and goes through these steps, in this order:
//!
//! 1. write the batch's images into slots `0..n` (one write);
//! 2. sync `doublewrite.dbw`;
//! 3. the caller's `write_home` writes each image to its home location;
//! 4. `write_home` syncs every file it wrote, and only then returns `Ok`;
//! 5. only now may the next batch (of this call or of a later one) overwrite the slots.
//!
//! Recovery relies on three rules that follow from this:
//!
//! * **R1.** A home page is written only after its slot copy is durable (step 2 before 3).
//! * **R2.** A slot is overwritten only after the home write of the image it held is durable
//!   (step 4 before the next batch's step 1).
//! * **R3.** Batch numbers only grow, also across restarts: [`Doublewrite::recover`]
//!   continues after the highest number in the file.
//!
//! Hence, after a crash, only the *last batch* (the highest batch number among valid slots)
//! can have home writes that did not finish. Every valid slot of an older batch is a copy
//! whose home write is known to be durable.
//!
//! **Why a callback.** Steps 3 and 4 run inside `write_batch`, under the lock that guards
//! the slots, so the caller cannot overwrite slots too early and has no token to forget.
//! It also lets a call with more pages than slots proceed batch by batch, which needs the
//! home writes of one batch to be synced before the next batch begins.
//!
//! The states of the slots (`Reuse`), with the function behind each transition:
//!
//! ```text
//!  open_or_create (new file) ──────► Free ◄─────────────────────────┐
//!                                    │  ▲                           │
//!    write_batch: steps 1, 2 done    │  │  write_home returned Ok   │
//!                                    ▼  │                           │ recover
//!                              HomeWritesPending ───────────────────┤
//!                              (stays there if write_home fails)    │
//!  open_or_create (existing file) ─► NotRecovered ──────────────────┘
//! ```
//!
//! `write_batch` refuses with [`Error::Poisoned`] in every state but `Free`.
//!
//! # Recovery
//!
//! [`Doublewrite::recover`] runs at start-up, before redo (docs/durability.md §3, phase A):
//!
//! 1. It reads every slot and counts the empty and the torn ones.
//! 2. Among the valid slots, the highest batch number marks the last batch. Valid slots of
//!    older batches are *superseded*: by R2 their home writes were durable, so they are
//!    ignored. Restoring one could roll a page back to an older version.
//! 3. For each page of the last batch it asks the caller about the home page
//!    ([`HomeState`]). If the page is intact, it is left alone: it is the old or the new
//!    image, whole, and redo brings it forward. If it is corrupt, `repair` writes the slot
//!    copy home and syncs it. If the page is gone (its tablespace was dropped), it is
//!    skipped.
//! 4. The slots may then be reused, and the next batch number is one above the last.
//!
//! If the slot write of the last batch was torn, its home writes had not started (R1), so
//! its homes are intact. Under this protocol a crash cannot leave a corrupt home page
//! without a copy in the last batch. A page corrupted some other way (bit rot, a disk that
//! acknowledged a sync it did not do) is not in scope for recovery. Reading that page fails
//! with [`PageError::Corrupt`] naming the file and page, and it is never returned as data.
//!
//! # Where the engine uses it
//!
//! * **Writing.** [`BufferPool::attach_doublewrite`](crate::buffer::BufferPool::attach_doublewrite)
//!   routes every page write of the pool through [`Doublewrite::write_batch`]: the page
//!   cleaner's pass and `flush_all`'s pass collect up to `slots` dirty frames (at most half
//!   the pool), an eviction sends its one dirty victim alone. Each frame is encoded by the
//!   tablespace layer (`PageIo::encode_page`, which also enforces the WAL rule) while the
//!   pool holds it pinned and latched against writers, and `write_home` writes each image
//!   with `PageIo::write_stored` and syncs every space it wrote (`PageIo::sync_space`).
//!   The frames are released only after `write_home` returned, so no newer image of a page
//!   can overtake an older one. A failure re-dirties the frames and poisons the pool
//!   (`buffer` module doc, rules 7, 9, 10, 11).
//! * **Recovery.** `repair_torn_pages` runs `recover` over the open tablespaces: the home
//!   page is read as stored ([`SpaceFile::read_stored`](crate::space::SpaceFile::read_stored),
//!   no key needed), a page past the end of its file is `Corrupt`, a page of a space that
//!   is not open is `Gone`, and a repair writes the slot image home and syncs the file.
//!
//! Page 0 of each tablespace does not go through the buffer pool and so not through the
//! doublewrite either.
//!
//! # `doublewrite = false`
//!
//! That setting skips this module (the caller's business, meant for benchmarks). Cost: the
//! doublewrite writes every page twice and adds one sync per batch. Risk: without the
//! doublewrite, a torn page write (first half new, second half old) **cannot be repaired**.
//! The page fails its checksum, and redo has no intact page to apply changes to. The page is
//! reported as corruption naming the file and page (never returned as data) and stays
//! unreadable until it is restored from a backup.

use crate::error::{Error, Result};
use crate::io::{FileIo, OpenMode, Vfs};
use crate::page::{self, PageError, PageHeader, PageId, PageSize};
use crate::space::SpaceSet;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The doublewrite file's name in the data directory.
pub const DOUBLEWRITE_FILE: &str = "doublewrite.dbw";
/// The name a new doublewrite file is built under before it is renamed into place.
const DOUBLEWRITE_TMP: &str = "doublewrite.dbw.tmp";

/// Slots in a new file when nothing else is asked for (a batch of up to 64 pages).
pub const DEFAULT_SLOTS: u32 = 64;
/// The most slots a file may have. A batch's write buffer is `slots × (24 + page_size)`
/// bytes, and 4096 slots of 64 KiB pages is already 256 MiB.
pub const MAX_SLOTS: u32 = 4096;

const MAGIC: [u8; 8] = *b"SBXDBLWR";
const FORMAT_VERSION: u32 = 1;

// File header. Each offset is the previous one plus its size; see the table above.
const HEADER_CHECKSUM_OFFSET: usize = 0;
const HEADER_CHECKSUM_LEN: usize = 4;
const MAGIC_OFFSET: usize = HEADER_CHECKSUM_OFFSET + HEADER_CHECKSUM_LEN;
const MAGIC_LEN: usize = MAGIC.len();
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC_LEN;
const VERSION_LEN: usize = 4;
const PAGE_SIZE_OFFSET: usize = VERSION_OFFSET + VERSION_LEN;
const PAGE_SIZE_LEN: usize = 4;
const SLOTS_OFFSET: usize = PAGE_SIZE_OFFSET + PAGE_SIZE_LEN;
const SLOTS_LEN: usize = 4;
const HEADER_FIELDS_END: usize = SLOTS_OFFSET + SLOTS_LEN;
/// The file header block: the largest sector size, so slot writes never touch its sector.
const FILE_HEADER_LEN: usize = 4096;

// Slot header.
const SLOT_CHECKSUM_OFFSET: usize = 0;
const SLOT_CHECKSUM_LEN: usize = 4;
const SLOT_SPACE_ID_OFFSET: usize = SLOT_CHECKSUM_OFFSET + SLOT_CHECKSUM_LEN;
const SLOT_SPACE_ID_LEN: usize = 4;
const SLOT_PAGE_NO_OFFSET: usize = SLOT_SPACE_ID_OFFSET + SLOT_SPACE_ID_LEN;
const SLOT_PAGE_NO_LEN: usize = 4;
const SLOT_RESERVED_OFFSET: usize = SLOT_PAGE_NO_OFFSET + SLOT_PAGE_NO_LEN;
const SLOT_RESERVED_LEN: usize = 4;
const SLOT_BATCH_OFFSET: usize = SLOT_RESERVED_OFFSET + SLOT_RESERVED_LEN;
const SLOT_BATCH_LEN: usize = 8;
/// Bytes before the image in a slot.
const SLOT_HEADER_LEN: usize = SLOT_BATCH_OFFSET + SLOT_BATCH_LEN;

const _: () = assert!(HEADER_FIELDS_END == 24 && HEADER_FIELDS_END <= FILE_HEADER_LEN);
const _: () = assert!(SLOT_HEADER_LEN == 24, "the module doc's table says 24");

/// A page on its way home: where it goes, and its stored image (checksummed and, for an
/// encrypted tablespace, encrypted).
pub type StoredPage<'a> = (PageId, &'a [u8]);

/// What the caller found at a page's home location, asked by [`Doublewrite::recover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeState {
    /// The stored page passes its checksum. It is left alone, even if it is older than the
    /// slot copy (redo brings it forward).
    Intact,
    /// The stored page fails its checksum (torn), or lies past the end of its file (its
    /// write was lost). It is restored from the slot copy.
    Corrupt,
    /// The page has no home any more (its tablespace was dropped). The copy is skipped.
    Gone,
}

impl HomeState {
    /// [`Intact`](HomeState::Intact) when `stored` passes its checksum, else
    /// [`Corrupt`](HomeState::Corrupt). Needs no key.
    pub fn of(stored: &[u8]) -> HomeState {
        if stored_checksum_ok(stored) {
            HomeState::Intact
        } else {
            HomeState::Corrupt
        }
    }
}

/// True when a stored page's checksum matches its bytes: the CRC-32 at bytes `[0, 4)`
/// (little-endian) equals the CRC-32 of bytes `[4, len)`. This is the page codec's first
/// check (FORMAT.md §2.1). It covers the stored (for encrypted spaces, encrypted) bytes and
/// so needs no key. An all-zero page (never written) fails it.
pub fn stored_checksum_ok(stored: &[u8]) -> bool {
    page::stored_checksums(stored).is_some_and(|(recorded, computed)| recorded == computed)
}

/// What [`Doublewrite::recover`] found and did. The first four counts add up to
/// `slots_examined` together with the pages of the last batch (intact, gone and repaired).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Every slot of the file.
    pub slots_examined: u32,
    /// Slots that were never written.
    pub slots_empty: u32,
    /// Slots that were written but fail their checksum. Ignored: a slot torn by a crash
    /// belongs to a batch whose home writes had not started (R1).
    pub slots_torn: u32,
    /// Valid copies from batches before the last, whose home writes were durable (R2).
    /// Ignored.
    pub slots_superseded: u32,
    /// Pages of the last batch whose home page was intact (left alone).
    pub pages_intact: u32,
    /// Pages of the last batch that have no home any more (skipped).
    pub pages_gone: u32,
    /// Pages of the last batch whose home page was corrupt and was rewritten from the slot
    /// copy, in slot order.
    pub pages_repaired: Vec<PageId>,
}

/// Whether the slots may be overwritten (see the state drawing in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Every image in the slots is durable at home, or was never sent home.
    Free,
    /// The file existed when it was opened: until `recover` has run, a slot may hold the
    /// only intact copy of a page torn by the last crash.
    NotRecovered,
    /// The home writes of this batch did not complete: its slots hold the only sure copies.
    HomeWritesPending { batch: u64 },
}

#[derive(Debug)]
struct State {
    /// The number the next batch gets. Once recovered, it is above every batch in the file.
    next_batch: u64,
    reuse: Reuse,
    /// Why the home writes of a `HomeWritesPending` batch failed: the refusals name it, so
    /// the first failure is what every later caller sees, whoever reports first.
    home_failure: Option<String>,
}

/// One decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Torn,
    Valid { page: PageId, batch: u64 },
}

/// The doublewrite file of a data directory; see the module doc for the protocol.
#[derive(Debug)]
pub struct Doublewrite {
    path: PathBuf,
    file: Arc<dyn FileIo>,
    page_size: PageSize,
    slots: u32,
    /// Guards the slots and the batch counter. `write_batch` holds it from a batch's slot
    /// write until its home writes are durable, and `recover` holds it throughout, so a slot
    /// is never overwritten while the home write of the image it holds may be unfinished (R2).
    state: Mutex<State>,
}

impl Doublewrite {
    /// Opens `dir/doublewrite.dbw`, or creates it with `slots` empty slots for pages of
    /// `page_size`. An existing file must have been created with the same page size and
    /// slot count ([`Error::Incompatible`] otherwise). It must go through
    /// [`recover`](Self::recover) before `write_batch` may reuse its slots. A new file
    /// needs no recovery.
    pub fn open_or_create(
        vfs: &dyn Vfs,
        dir: &Path,
        page_size: PageSize,
        slots: u32,
    ) -> Result<Doublewrite> {
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(Error::InvalidOption {
                name: "doublewrite slots",
                problem: format!("{slots} is not between 1 and {MAX_SLOTS}"),
            });
        }
        let path = dir.join(DOUBLEWRITE_FILE);
        let (file, reuse) = if vfs.exists(&path) {
            let file = vfs
                .open(&path, OpenMode::Existing)
                .map_err(|e| Error::io("open", &path, e))?;
            check_existing(file.as_ref(), &path, page_size, slots)?;
            (file, Reuse::NotRecovered)
        } else {
            (create(vfs, dir, &path, page_size, slots)?, Reuse::Free)
        };
        Ok(Doublewrite {
            path,
            file,
            page_size,
            slots,
            state: Mutex::new(State {
                next_batch: 1,
                reuse,
                home_failure: None,
            }),
        })
    }

    /// The doublewrite file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many pages one batch holds.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// Writes `pages` (stored images and where each goes) through the doublewrite file and
    /// home. For each batch of at most [`slots`](Self::slots) pages it writes the slots and
    /// syncs them, then calls `write_home` with that batch. `write_home` must write every
    /// image of the batch to its home location and **sync** every file it wrote before it
    /// returns `Ok` (steps 3 and 4 of the protocol). It must not call back into this
    /// doublewrite, which is locked meanwhile.
    ///
    /// Each image must be a stored page of this page size whose header names its page and
    /// whose checksum is right. A plaintext frame, for example, is refused with
    /// [`Error::Page`] before anything is written. A page listed more than once is written
    /// once, with its last image: two copies in one batch would leave recovery unable to
    /// tell which one is newer.
    ///
    /// If `write_home` fails (or panics), the slots keep the only sure copies of that batch.
    /// This doublewrite then refuses every later batch with [`Error::Poisoned`] until
    /// [`recover`](Self::recover) has run. It refuses the same way on a file that existed
    /// when it was opened and has not been recovered yet.
    pub fn write_batch(
        &self,
        pages: &[StoredPage<'_>],
        write_home: &mut dyn FnMut(&[StoredPage<'_>]) -> Result<()>,
    ) -> Result<()> {
        for &(page, image) in pages {
            self.check_image(page, image)?;
        }
        let pages = last_image_of_each(pages);
        let mut state = self.state.lock();
        self.check_reusable(&state)?;
        for batch in pages.chunks(self.slots as usize) {
            let number = state.next_batch;
            state.next_batch += 1;
            self.write_slots(number, batch)?;
            state.reuse = Reuse::HomeWritesPending { batch: number };
            if let Err(error) = write_home(batch) {
                state.home_failure = Some(error.to_string());
                return Err(error);
            }
            state.reuse = Reuse::Free;
        }
        Ok(())
    }

    /// Restores torn home pages from the last batch's slot copies (see "Recovery" in the
    /// module doc). `home(page)` reports the state of a page's home, normally
    /// `HomeState::of(&stored_bytes)`, or `Corrupt` for a page past the end of its file.
    /// `repair(page, image)` must write `image` to the page's home **and sync it** before
    /// returning `Ok`. Recovery writes nothing to the doublewrite file, so if it fails or
    /// crashes it can simply be run again.
    ///
    /// Afterwards the slots may be reused, and batch numbers continue above the last one in
    /// the file (R3).
    pub fn recover(
        &self,
        home: &mut dyn FnMut(PageId) -> Result<HomeState>,
        repair: &mut dyn FnMut(PageId, &[u8]) -> Result<()>,
    ) -> Result<RecoveryReport> {
        let mut state = self.state.lock();
        let mut report = RecoveryReport {
            slots_examined: self.slots,
            ..RecoveryReport::default()
        };
        // The valid slots of the highest batch seen so far: (page, whole slot bytes).
        let mut last_batch = 0;
        let mut last: Vec<(PageId, Vec<u8>)> = Vec::new();
        for index in 0..self.slots {
            let mut slot = vec![0u8; self.slot_len()];
            self.file
                .read_at(&mut slot, slot_offset(index, self.page_size))
                .map_err(|e| Error::io("read slot of", &self.path, e))?;
            match decode_slot(&slot) {
                Slot::Empty => report.slots_empty += 1,
                Slot::Torn => report.slots_torn += 1,
                Slot::Valid { page, batch } => {
                    if batch < last_batch {
                        report.slots_superseded += 1;
                        continue;
                    }
                    if batch > last_batch {
                        report.slots_superseded += count(last.len());
                        last.clear();
                        last_batch = batch;
                    }
                    last.push((page, slot));
                }
            }
        }
        for (page, slot) in &last {
            match home(*page)? {
                HomeState::Intact => report.pages_intact += 1,
                HomeState::Gone => report.pages_gone += 1,
                HomeState::Corrupt => {
                    repair(*page, &slot[SLOT_HEADER_LEN..])?;
                    report.pages_repaired.push(*page);
                }
            }
        }
        state.next_batch = state.next_batch.max(last_batch + 1);
        state.reuse = Reuse::Free;
        state.home_failure = None;
        Ok(report)
    }

    /// Empties every slot (zeros, synced). For a database opened with `doublewrite = off`
    /// after [`recover`](Self::recover): pages now go home without a copy here, so the
    /// copies left from an earlier session are older than their homes and must never be
    /// "restored" by a later recovery.
    pub fn clear_slots(&self) -> Result<()> {
        let state = self.state.lock();
        self.check_reusable(&state)?;
        let zeros = vec![0u8; self.slots as usize * self.slot_len()];
        self.file
            .write_at(&zeros, slot_offset(0, self.page_size))
            .map_err(|e| Error::io("clear slots of", &self.path, e))?;
        self.file
            .sync()
            .map_err(|e| Error::io("sync", &self.path, e))
    }

    fn slot_len(&self) -> usize {
        SLOT_HEADER_LEN + self.page_size.len()
    }

    /// Steps 1 and 2: the batch's slots in one write, then a sync.
    fn write_slots(&self, batch: u64, pages: &[StoredPage<'_>]) -> Result<()> {
        let slot_len = self.slot_len();
        let mut slots = vec![0u8; pages.len() * slot_len];
        for (&(page, image), slot) in pages.iter().zip(slots.chunks_exact_mut(slot_len)) {
            encode_slot(page, batch, image, slot);
        }
        self.file
            .write_at(&slots, slot_offset(0, self.page_size))
            .map_err(|e| Error::io("write slots of", &self.path, e))?;
        self.file
            .sync()
            .map_err(|e| Error::io("sync", &self.path, e))
    }

    fn check_reusable(&self, state: &State) -> Result<()> {
        let why = match state.reuse {
            Reuse::Free => return Ok(()),
            Reuse::NotRecovered => "has not been recovered since it was opened".to_string(),
            Reuse::HomeWritesPending { batch } => match &state.home_failure {
                Some(failure) => {
                    format!("holds batch {batch}, whose home writes failed ({failure})")
                }
                None => format!("holds batch {batch}, whose home writes did not complete"),
            },
        };
        Err(Error::Poisoned(format!(
            "{} {why}: its slots may hold the only intact copy of a page, so they are not \
             reused until Doublewrite::recover runs (reopen the database)",
            self.path.display()
        )))
    }

    /// Refuses anything that is not a stored page of this size naming `page`.
    fn check_image(&self, page: PageId, image: &[u8]) -> Result<()> {
        let refuse = |source| Error::Page {
            path: self.path.clone(),
            source,
        };
        if image.len() != self.page_size.len() {
            return Err(refuse(PageError::SizeMismatch {
                expected: self.page_size.len(),
                got: image.len(),
            }));
        }
        if let Some((stored, computed)) = page::stored_checksums(image).filter(|(s, c)| s != c) {
            return Err(refuse(PageError::Corrupt {
                page,
                stored,
                computed,
            }));
        }
        let found = PageHeader::read(image).map_err(refuse)?.page_id();
        if found != page {
            return Err(refuse(PageError::Misplaced {
                expected: page,
                found,
            }));
        }
        Ok(())
    }
}

/// Phase A of recovery (docs/durability.md §3): [`Doublewrite::recover`] over the open
/// tablespaces `spaces`. Run it after opening every space and before redo. A home page is
/// judged by its stored bytes ([`HomeState::of`], no key needed); a page past the end of
/// its file is `Corrupt`, a page of a space that is not open is `Gone`. A repair writes the
/// slot image home and syncs the space file.
pub(crate) fn repair_torn_pages(dw: &Doublewrite, spaces: &SpaceSet) -> Result<RecoveryReport> {
    dw.recover(
        &mut |page| {
            let Some(space) = spaces.find(page.space_id) else {
                return Ok(HomeState::Gone);
            };
            Ok(match space.read_stored(page.page_no)? {
                Some(stored) => HomeState::of(&stored),
                None => HomeState::Corrupt,
            })
        },
        &mut |page, image| {
            let space = spaces.get(page.space_id)?;
            space.write_stored(page.page_no, image)?;
            space.sync()
        },
    )
}

/// `pages` with only the last entry for each page, in the order of those last entries.
fn last_image_of_each<'a>(pages: &[StoredPage<'a>]) -> Vec<StoredPage<'a>> {
    let mut seen = HashSet::new();
    let mut kept: Vec<_> = pages
        .iter()
        .rev()
        .filter(|(page, _)| seen.insert(*page))
        .copied()
        .collect();
    kept.reverse();
    kept
}

/// A slot count as the report's `u32`; there are at most [`MAX_SLOTS`] slots.
fn count(slots: usize) -> u32 {
    u32::try_from(slots).expect("at most MAX_SLOTS slots")
}

fn slot_offset(index: u32, page_size: PageSize) -> u64 {
    let slot_len = (SLOT_HEADER_LEN + page_size.len()) as u64;
    FILE_HEADER_LEN as u64 + u64::from(index) * slot_len
}

fn file_len(page_size: PageSize, slots: u32) -> u64 {
    slot_offset(slots, page_size)
}

/// Builds a new file under the temporary name and renames it into place (see the module doc).
fn create(
    vfs: &dyn Vfs,
    dir: &Path,
    path: &Path,
    page_size: PageSize,
    slots: u32,
) -> Result<Arc<dyn FileIo>> {
    let tmp = dir.join(DOUBLEWRITE_TMP);
    if vfs.exists(&tmp) {
        vfs.remove(&tmp)
            .map_err(|e| Error::io("remove leftover", &tmp, e))?;
    }
    let file = vfs
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.set_len(file_len(page_size, slots))
        .map_err(|e| Error::io("size", &tmp, e))?;
    file.write_at(&encode_header(page_size, slots), 0)
        .map_err(|e| Error::io("write header of", &tmp, e))?;
    file.sync().map_err(|e| Error::io("sync", &tmp, e))?;
    vfs.rename(&tmp, path)
        .map_err(|e| Error::io("rename into place", &tmp, e))?;
    vfs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(file)
}

fn encode_header(page_size: PageSize, slots: u32) -> Vec<u8> {
    let mut header = vec![0u8; FILE_HEADER_LEN];
    header[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
    put_u32(&mut header, VERSION_OFFSET, FORMAT_VERSION);
    put_u32(&mut header, PAGE_SIZE_OFFSET, page_size.get());
    put_u32(&mut header, SLOTS_OFFSET, slots);
    let checksum = crc32fast::hash(&header[MAGIC_OFFSET..]);
    put_u32(&mut header, HEADER_CHECKSUM_OFFSET, checksum);
    header
}

/// Checks an existing file's header and length against the settings it is opened with.
fn check_existing(file: &dyn FileIo, path: &Path, page_size: PageSize, slots: u32) -> Result<()> {
    let corrupt = |problem: String| Error::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    let incompatible = |problem: String| Error::Incompatible {
        path: path.to_path_buf(),
        problem,
    };
    let mut header = vec![0u8; FILE_HEADER_LEN];
    file.read_at(&mut header, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("file is shorter than its header".into()),
        _ => Error::io("read header of", path, e),
    })?;
    let recorded = get_u32(&header, HEADER_CHECKSUM_OFFSET);
    if header[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC
        || recorded != crc32fast::hash(&header[MAGIC_OFFSET..])
    {
        return Err(corrupt(
            "not a doublewrite file, or its header is damaged".into(),
        ));
    }
    let version = get_u32(&header, VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(incompatible(format!(
            "doublewrite format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    let (file_page_size, file_slots) = (
        get_u32(&header, PAGE_SIZE_OFFSET),
        get_u32(&header, SLOTS_OFFSET),
    );
    if file_page_size != page_size.get() {
        return Err(incompatible(format!(
            "written with page_size {file_page_size}, opened with page_size {page_size}"
        )));
    }
    if file_slots != slots {
        return Err(incompatible(format!(
            "has {file_slots} slots but {slots} were asked for; the slot count is fixed when \
             the file is created (after a clean shutdown, remove the file to change it)"
        )));
    }
    let len = file.size().map_err(|e| Error::io("size of", path, e))?;
    let expected = file_len(page_size, slots);
    if len != expected {
        return Err(corrupt(format!(
            "file is {len} bytes; {slots} slots of {page_size}-byte pages take {expected}"
        )));
    }
    Ok(())
}

/// Fills `slot` (header and image) for `image` of `page` in batch `batch`.
fn encode_slot(page: PageId, batch: u64, image: &[u8], slot: &mut [u8]) {
    put_u32(slot, SLOT_SPACE_ID_OFFSET, page.space_id);
    put_u32(slot, SLOT_PAGE_NO_OFFSET, page.page_no);
    put_u32(slot, SLOT_RESERVED_OFFSET, 0);
    slot[SLOT_BATCH_OFFSET..SLOT_HEADER_LEN].copy_from_slice(&batch.to_le_bytes());
    slot[SLOT_HEADER_LEN..].copy_from_slice(image);
    let checksum = crc32fast::hash(&slot[SLOT_SPACE_ID_OFFSET..]);
    put_u32(slot, SLOT_CHECKSUM_OFFSET, checksum);
}

fn decode_slot(slot: &[u8]) -> Slot {
    if crate::page::is_all_zero(slot) {
        return Slot::Empty;
    }
    let recorded = get_u32(slot, SLOT_CHECKSUM_OFFSET);
    let mut batch = [0u8; SLOT_BATCH_LEN];
    batch.copy_from_slice(&slot[SLOT_BATCH_OFFSET..SLOT_HEADER_LEN]);
    let batch = u64::from_le_bytes(batch);
    if recorded != crc32fast::hash(&slot[SLOT_SPACE_ID_OFFSET..])
        || batch == 0
        || get_u32(slot, SLOT_RESERVED_OFFSET) != 0
    {
        return Slot::Torn;
    }
    Slot::Valid {
        page: PageId::new(
            get_u32(slot, SLOT_SPACE_ID_OFFSET),
            get_u32(slot, SLOT_PAGE_NO_OFFSET),
        ),
        batch,
    }
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut field = [0u8; 4];
    field.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Damage, MemVfs, SimVfs};
    use crate::page::{PageType, Seal};
    use crate::space::{NewSpace, SpaceEncryption, SpaceFile, SpaceKind};
    use std::io;
    use strongbox_keyring::provider::MemoryKeyProvider;
    use strongbox_keyring::{Algorithm, DataKey};

    const HOME: &str = "/db/space-1.sbd";

    fn dir() -> &'static Path {
        Path::new("/db")
    }

    /// The smallest page size keeps the sweep quick.
    fn ps() -> PageSize {
        PageSize::ALL[0]
    }

    fn id(page_no: u32) -> PageId {
        PageId::new(1, page_no)
    }

    fn open(vfs: &SimVfs, slots: u32) -> Doublewrite {
        Doublewrite::open_or_create(vfs, dir(), ps(), slots).unwrap()
    }

    /// A stored (plain) image of `page` at `version`. Every body byte differs between two
    /// versions, so two versions differ in every sector.
    fn image(page: PageId, version: u8) -> Vec<u8> {
        let mut frame = vec![0u8; ps().len()];
        page::init_frame(&mut frame, PageType::Overflow, page, u64::from(version));
        for (i, byte) in frame[ps().body()].iter_mut().enumerate() {
            *byte = ((i * 7) as u8 ^ page.page_no as u8).wrapping_add(version);
        }
        let mut stored = vec![0u8; ps().len()];
        page::encode(&frame, Seal::Plain, &mut stored).unwrap();
        stored
    }

    fn borrowed(images: &[(PageId, Vec<u8>)]) -> Vec<StoredPage<'_>> {
        images
            .iter()
            .map(|(page, bytes)| (*page, &bytes[..]))
            .collect()
    }

    /// The version of `page`'s image that `bytes` hold in full, if any.
    fn version_of(page: PageId, bytes: &[u8]) -> Option<u8> {
        (0..=9).find(|&version| bytes == image(page, version))
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    /// A tablespace file as the caller of the doublewrite would use it: page n at n × ps.
    struct Home(Arc<dyn FileIo>);

    impl Home {
        /// A durable file with pages 1..=pages at `version` (page 0 unused, zero).
        fn create(vfs: &SimVfs, pages: u32, version: u8) -> Home {
            let home = Home(vfs.open(Path::new(HOME), OpenMode::CreateNew).unwrap());
            home.0.set_len(Home::offset(id(pages + 1))).unwrap();
            for n in 1..=pages {
                home.write(id(n), &image(id(n), version)).unwrap();
            }
            home.sync().unwrap();
            vfs.sync_dir(dir()).unwrap();
            home
        }

        fn open(vfs: &SimVfs) -> Home {
            Home(vfs.open(Path::new(HOME), OpenMode::Existing).unwrap())
        }

        fn offset(page: PageId) -> u64 {
            u64::from(page.page_no) * ps().len() as u64
        }

        fn read(&self, page: PageId) -> Vec<u8> {
            let mut bytes = vec![0u8; ps().len()];
            self.0.read_at(&mut bytes, Home::offset(page)).unwrap();
            bytes
        }

        fn write(&self, page: PageId, bytes: &[u8]) -> Result<()> {
            self.0
                .write_at(bytes, Home::offset(page))
                .map_err(|e| Error::io("write", HOME, e))
        }

        fn sync(&self) -> Result<()> {
            self.0.sync().map_err(|e| Error::io("sync", HOME, e))
        }

        /// A correct `write_home`: every image, then one sync.
        fn write_all(&self, pages: &[StoredPage<'_>]) -> Result<()> {
            for &(page, image) in pages {
                self.write(page, image)?;
            }
            self.sync()
        }

        fn state(&self, page: PageId) -> Result<HomeState> {
            Ok(HomeState::of(&self.read(page)))
        }

        fn repair(&self, page: PageId, image: &[u8]) -> Result<()> {
            self.write(page, image)?;
            self.sync()
        }
    }

    fn recover(dw: &Doublewrite, home: &Home) -> RecoveryReport {
        dw.recover(&mut |page| home.state(page), &mut |page, image| {
            home.repair(page, image)
        })
        .unwrap()
    }

    /// A `write_home` that writes the first half of one page's new image over its old one,
    /// then fails as a crash would: the torn page of issue 4 §5.
    fn tear(home: &Home, page: PageId, pages: &[StoredPage<'_>]) -> Result<()> {
        for &(p, image) in pages {
            if p == page {
                home.write(p, &image[..image.len() / 2])?;
                home.sync()?;
                return Err(Error::io("write", HOME, io::Error::other("power lost")));
            }
            home.write(p, image)?;
        }
        home.sync()
    }

    #[test]
    fn a_batch_round_trips_and_intact_homes_are_left_alone() {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, 5, 0);
        let dw = open(&vfs, 3);
        let images: Vec<_> = (1..=5).map(|n| (id(n), image(id(n), 1))).collect();
        let mut calls = Vec::new();
        dw.write_batch(&borrowed(&images), &mut |batch| {
            calls.push(batch.iter().map(|(p, _)| p.page_no).collect::<Vec<_>>());
            home.write_all(batch)
        })
        .unwrap();
        assert_eq!(calls, [vec![1, 2, 3], vec![4, 5]], "batches of at most 3");
        drop(dw);

        let dw = open(&vfs, 3);
        let report = dw
            .recover(&mut |page| home.state(page), &mut |page, _| {
                panic!("{page} repaired although intact")
            })
            .unwrap();
        assert_eq!(
            report,
            RecoveryReport {
                slots_examined: 3,
                slots_empty: 0,
                slots_torn: 0,
                slots_superseded: 1,
                pages_intact: 2,
                pages_gone: 0,
                pages_repaired: vec![],
            }
        );
        for (page, bytes) in &images {
            assert_eq!(&home.read(*page), bytes);
        }
        let file = vfs.contents(dw.path()).unwrap();
        let slot_image = |i: u32| {
            let at = slot_offset(i, ps()) as usize + SLOT_HEADER_LEN;
            file[at..at + ps().len()].to_vec()
        };
        assert_eq!(
            [slot_image(0), slot_image(1), slot_image(2)],
            [image(id(4), 1), image(id(5), 1), image(id(3), 1)],
            "the slots hold the stored bytes exactly"
        );
    }

    #[test]
    fn a_torn_home_page_is_repaired_from_its_slot() {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, 3, 1);
        let dw = open(&vfs, 4);
        let (old, new) = (image(id(2), 1), image(id(2), 2));
        let images: Vec<_> = (1..=3).map(|n| (id(n), image(id(n), 2))).collect();
        let error = dw
            .write_batch(&borrowed(&images), &mut |batch| tear(&home, id(2), batch))
            .unwrap_err();
        assert!(error.to_string().contains("power lost"), "{error}");
        let half = ps().len() / 2;
        let torn = home.read(id(2));
        assert_eq!((&torn[..half], &torn[half..]), (&new[..half], &old[half..]));
        assert!(
            !stored_checksum_ok(&torn),
            "the test must build a torn page"
        );

        // Until recovery, this handle refuses to overwrite the slots that hold the copy.
        let next = image(id(2), 3);
        let refused = dw.write_batch(&[(id(2), &next)], &mut |_| panic!("home written"));
        assert!(
            matches!(&refused, Err(Error::Poisoned(why)) if why.contains("batch 1")),
            "{refused:?}"
        );
        drop(dw);

        let dw = open(&vfs, 4);
        let report = dw
            .recover(
                &mut |page| match page.page_no {
                    3 => Ok(HomeState::Gone),
                    _ => home.state(page),
                },
                &mut |page, image| home.repair(page, image),
            )
            .unwrap();
        assert_eq!(report.pages_repaired, [id(2)]);
        assert_eq!((report.pages_intact, report.pages_gone), (1, 1));
        assert_eq!(home.read(id(2)), new, "repaired to the new image, whole");
        assert_eq!(home.read(id(1)), image(id(1), 2));
        assert_eq!(
            home.read(id(3)),
            image(id(3), 1),
            "a gone page is not written"
        );

        dw.write_batch(&[(id(2), &next)], &mut |batch| home.write_all(batch))
            .unwrap();
        assert_eq!(home.read(id(2)), next, "usable again after recovery");
    }

    #[test]
    fn a_torn_slot_is_ignored_and_its_home_left_alone() {
        for sector in [512, 4096] {
            let mut torn = 0;
            for seed in 0..8 {
                let vfs = SimVfs::new();
                let home = Home::create(&vfs, 1, 1);
                let dw = open(&vfs, 2);
                let old = image(id(1), 2);
                dw.write_batch(&[(id(1), &old)], &mut |batch| home.write_all(batch))
                    .unwrap();
                // Power fails after the next operation, the slot write of the next batch.
                vfs.power_fail_after(vfs.ops() + 1);
                let result = dw.write_batch(&[(id(1), &image(id(1), 3))], &mut |_| {
                    panic!("home written before its slot was durable")
                });
                assert!(result.is_err());
                let disk = vfs.crash(Damage::Torn { seed, sector });
                let home = Home::open(&disk);
                let dw = open(&disk, 2);
                let mut asked = Vec::new();
                let report = dw
                    .recover(
                        &mut |page| {
                            asked.push(page);
                            home.state(page)
                        },
                        &mut |page, _| panic!("{page} repaired, but its home is intact"),
                    )
                    .unwrap();
                if report.slots_torn == 1 {
                    torn += 1;
                    assert!(asked.is_empty(), "a torn slot's page was looked up");
                } else {
                    // The crash dropped the slot write whole: the old copy is still valid.
                    assert_eq!((report.slots_torn, report.pages_intact), (0, 1));
                }
                assert_eq!(home.read(id(1)), old, "the intact old home is left alone");
            }
            assert!(torn > 0, "sector {sector}: no seed tore the slot");
        }
    }

    /// The sweep's workload: batches of (pages, version) through two slots, so some calls
    /// take two batches.
    const SWEEP: [(&[u32], u8); 4] = [(&[1, 2, 3], 1), (&[2, 4], 2), (&[1, 3, 4], 3), (&[2], 4)];
    const SWEEP_PAGES: u32 = 4;

    /// A data directory with a durable home file at version 0 and no doublewrite file.
    fn sweep_setup() -> (SimVfs, Home) {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, SWEEP_PAGES, 0);
        (vfs, home)
    }

    /// Runs the workload until an operation fails. Returns, per page number, the version
    /// whose home write `write_home` made durable.
    fn sweep_workload(vfs: &SimVfs, home: &Home) -> [u8; SWEEP_PAGES as usize + 1] {
        let mut durable = [0; SWEEP_PAGES as usize + 1];
        let Ok(dw) = Doublewrite::open_or_create(vfs, dir(), ps(), 2) else {
            return durable;
        };
        for (pages, version) in SWEEP {
            let images: Vec<_> = pages
                .iter()
                .map(|&n| (id(n), image(id(n), version)))
                .collect();
            let result = dw.write_batch(&borrowed(&images), &mut |batch| {
                home.write_all(batch)?;
                for (page, _) in batch {
                    durable[page.page_no as usize] = version;
                }
                Ok(())
            });
            if result.is_err() {
                break;
            }
        }
        durable
    }

    /// Crashes the workload after every operation with every damage, then (if `recover`)
    /// recovers. Every home page must hold one version in full, and at least the version
    /// acknowledged as durable. Returns how many torn home pages were seen.
    fn sweep(recover_after_crash: bool) -> usize {
        let total = {
            let (vfs, home) = sweep_setup();
            let base = vfs.ops();
            sweep_workload(&vfs, &home);
            vfs.ops() - base
        };
        let mut torn = 0;
        for k in 0..=total {
            for seed in 0..4 {
                for damage in Damage::variants(seed) {
                    let (vfs, home) = sweep_setup();
                    vfs.power_fail_after(vfs.ops() + k);
                    let durable = sweep_workload(&vfs, &home);
                    let disk = vfs.crash(damage);
                    let home = Home::open(&disk);
                    let dw = recover_after_crash.then(|| {
                        let dw = open(&disk, 2);
                        recover(&dw, &home);
                        dw
                    });
                    for n in 1..=SWEEP_PAGES {
                        match version_of(id(n), &home.read(id(n))) {
                            Some(version) => assert!(
                                version >= durable[n as usize],
                                "k {k} {damage:?}: page {n} at version {version}, \
                                 but version {} was durable",
                                durable[n as usize]
                            ),
                            None if recover_after_crash => {
                                panic!("k {k} {damage:?}: page {n} torn after recovery")
                            }
                            None => torn += 1,
                        }
                    }
                    if let Some(dw) = dw {
                        let next = image(id(1), 9);
                        dw.write_batch(&[(id(1), &next)], &mut |batch| home.write_all(batch))
                            .unwrap();
                        assert_eq!(home.read(id(1)), next, "k {k} {damage:?}");
                    }
                }
            }
        }
        torn
    }

    #[test]
    fn every_crash_point_recovers_every_page_whole() {
        assert_eq!(sweep(true), 0);
    }

    /// The control: the same crashes without recovery do leave torn pages, so the sweep
    /// does exercise torn home writes, and recovery is what repairs them.
    #[test]
    fn the_sweep_without_recovery_finds_torn_pages() {
        assert!(sweep(false) > 0);
    }

    #[test]
    fn encrypted_pages_reach_the_doublewrite_file_only_as_ciphertext() {
        const MARKER: &[u8] = b"PLAINTEXT-MARKER";
        let key = DataKey::generate(256).unwrap();
        let frame = |page: PageId| {
            let mut frame = vec![0u8; ps().len()];
            page::init_frame(&mut frame, PageType::Overflow, page, 1);
            for chunk in frame[ps().body()].chunks_mut(MARKER.len()) {
                chunk.copy_from_slice(&MARKER[..chunk.len()]);
            }
            frame
        };
        // `None` is the control: a plain page must show the marker, proving the scan works.
        for algorithm in Algorithm::ALL.map(Some).into_iter().chain([None]) {
            let vfs = SimVfs::new();
            let dw = open(&vfs, 4);
            let images: Vec<_> = (1..=3)
                .map(|n| {
                    let seal = match algorithm {
                        None => Seal::Plain,
                        Some(algorithm) => Seal::Encrypted {
                            key: &key,
                            algorithm,
                            key_id: 1,
                            key_version: 1,
                            write_nonce: u64::from(n),
                        },
                    };
                    let mut stored = vec![0u8; ps().len()];
                    page::encode(&frame(id(n)), seal, &mut stored).unwrap();
                    (id(n), stored)
                })
                .collect();
            dw.write_batch(&borrowed(&images), &mut |_| Ok(())).unwrap();
            let file = vfs.contents(dw.path()).unwrap();
            assert_eq!(
                contains(&file, MARKER),
                algorithm.is_none(),
                "{algorithm:?}"
            );
            for (page, stored) in &images {
                assert!(contains(&file, stored), "{algorithm:?}: image of {page}");
            }
        }
    }

    #[test]
    fn copies_from_earlier_batches_are_never_restored() {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, 3, 0);
        let dw = open(&vfs, 2);
        for batch in [
            vec![(id(1), image(id(1), 1)), (id(2), image(id(2), 1))],
            vec![(id(3), image(id(3), 2))],
        ] {
            dw.write_batch(&borrowed(&batch), &mut |b| home.write_all(b))
                .unwrap();
        }
        // Slot 0: page 3 (batch 2); slot 1: page 2 (batch 1). Page 2 then rots at home. Its
        // copy comes from a batch whose home write was durable, and in general may be older
        // than what the home held, so restoring it could silently roll the page back.
        home.write(id(2), &vec![0xEE; ps().len()]).unwrap();
        drop(dw);
        let dw = open(&vfs, 2);
        let report = dw
            .recover(&mut |page| home.state(page), &mut |page, _| {
                panic!("{page} restored from a superseded copy")
            })
            .unwrap();
        assert_eq!((report.slots_superseded, report.pages_intact), (1, 1));
    }

    #[test]
    fn batch_numbers_continue_across_reopen() {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, 3, 0);
        let dw = open(&vfs, 2);
        dw.write_batch(&[(id(1), &image(id(1), 1))], &mut |b| home.write_all(b))
            .unwrap();
        let two = [(id(2), image(id(2), 1)), (id(3), image(id(3), 1))];
        dw.write_batch(&borrowed(&two), &mut |b| home.write_all(b))
            .unwrap();
        drop(dw);
        // Slots: page 2 and page 3, both batch 2.
        let dw = open(&vfs, 2);
        assert!(recover(&dw, &home).pages_repaired.is_empty());
        let new = image(id(1), 2);
        dw.write_batch(&[(id(1), &new)], &mut |b| tear(&home, id(1), b))
            .unwrap_err();
        drop(dw);
        // Had numbering restarted at 1, slot 0 would rank below slot 1's batch 2, and the
        // torn page would not be repaired.
        let dw = open(&vfs, 2);
        assert_eq!(recover(&dw, &home).pages_repaired, [id(1)]);
        assert_eq!(home.read(id(1)), new);
    }

    #[test]
    fn an_existing_file_is_not_reused_before_recovery() {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, 1, 0);
        drop(open(&vfs, 2));
        let dw = open(&vfs, 2);
        let new = image(id(1), 1);
        let refused = dw.write_batch(&[(id(1), &new)], &mut |_| panic!("home written"));
        assert!(
            matches!(&refused, Err(Error::Poisoned(why)) if why.contains("not been recovered")),
            "{refused:?}"
        );
        assert_eq!(recover(&dw, &home).slots_empty, 2);
        dw.write_batch(&[(id(1), &new)], &mut |b| home.write_all(b))
            .unwrap();
        assert_eq!(home.read(id(1)), new);
    }

    #[test]
    fn only_stored_images_of_the_named_page_are_accepted() {
        let vfs = SimVfs::new();
        let dw = open(&vfs, 2);
        let before = vfs.contents(dw.path()).unwrap();
        let mut frame = vec![0u8; ps().len()];
        page::init_frame(&mut frame, PageType::Overflow, id(1), 1);
        let other = image(id(2), 1);
        let short = &other[..1024];
        type Expected = fn(&PageError) -> bool;
        let cases: [(&[u8], Expected); 3] = [
            (&frame, |e| matches!(e, PageError::Corrupt { .. })),
            (&other, |e| {
                *e == PageError::Misplaced {
                    expected: id(1),
                    found: id(2),
                }
            }),
            (short, |e| {
                matches!(e, PageError::SizeMismatch { got: 1024, .. })
            }),
        ];
        for (bytes, expected) in cases {
            let result = dw.write_batch(&[(id(1), bytes)], &mut |_| panic!("home written"));
            match result {
                Err(Error::Page { source, .. }) if expected(&source) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(vfs.contents(dw.path()).unwrap(), before, "nothing written");
    }

    #[test]
    fn a_page_given_twice_in_one_call_is_written_once_with_its_last_image() {
        let vfs = SimVfs::new();
        let home = Home::create(&vfs, 2, 0);
        let dw = open(&vfs, 4);
        let images = [
            (id(1), image(id(1), 1)),
            (id(2), image(id(2), 1)),
            (id(1), image(id(1), 2)),
        ];
        let mut sent = Vec::new();
        dw.write_batch(&borrowed(&images), &mut |batch| {
            sent.extend(
                batch
                    .iter()
                    .map(|(page, bytes)| (*page, version_of(*page, bytes))),
            );
            home.write_all(batch)
        })
        .unwrap();
        assert_eq!(sent, [(id(2), Some(1)), (id(1), Some(2))]);
        assert_eq!(home.read(id(1)), image(id(1), 2));
    }

    #[test]
    fn other_settings_a_damaged_header_or_a_short_file_are_refused() {
        let vfs = SimVfs::new();
        let path = open(&vfs, 2).path().to_path_buf();
        let error = |page_size: PageSize, slots| {
            Doublewrite::open_or_create(&vfs, dir(), page_size, slots).unwrap_err()
        };
        let bigger = PageSize::ALL[1];
        for (result, words) in [
            (
                error(bigger, 2),
                "page_size 4096, opened with page_size 8192",
            ),
            (error(ps(), 3), "has 2 slots but 3 were asked for"),
        ] {
            assert!(
                matches!(&result, Error::Incompatible { problem, .. } if problem.contains(words)),
                "{result}"
            );
        }
        assert!(matches!(error(ps(), 0), Error::InvalidOption { .. }));
        assert!(matches!(
            error(ps(), MAX_SLOTS + 1),
            Error::InvalidOption { .. }
        ));

        let good = vfs.contents(&path).unwrap();
        let mut damaged = good.clone();
        damaged[SLOTS_OFFSET] ^= 1;
        vfs.set_contents(&path, damaged);
        assert!(matches!(
            error(ps(), 2),
            Error::Corrupt { problem, .. } if problem.contains("header is damaged")
        ));
        vfs.set_contents(&path, good[..good.len() - 1].to_vec());
        assert!(matches!(
            error(ps(), 2),
            Error::Corrupt { problem, .. } if problem.contains("bytes")
        ));
    }

    #[test]
    fn stored_checksum_ok_agrees_with_the_codec() {
        let stored = image(id(1), 1);
        assert!(stored_checksum_ok(&stored));
        assert_eq!(HomeState::of(&stored), HomeState::Intact);
        let mut decoded = stored.clone();
        page::decode_in_place(&mut decoded, id(1), &page::NoKeys).unwrap();
        for at in [0, 3, 4, 47, 48, ps().len() / 2, ps().len() - 1] {
            let mut damaged = stored.clone();
            damaged[at] ^= 1;
            assert!(!stored_checksum_ok(&damaged), "byte {at}");
            assert_eq!(HomeState::of(&damaged), HomeState::Corrupt);
            assert!(matches!(
                page::decode_in_place(&mut damaged, id(1), &page::NoKeys),
                Err(PageError::Corrupt { .. })
            ));
        }
        assert!(!stored_checksum_ok(&vec![0u8; ps().len()]), "never written");
        assert!(!stored_checksum_ok(&[1, 2, 3]));
    }

    /// A tablespace as `repair_torn_pages` sees it: space 5 on a `MemVfs`, encrypted, with
    /// `pages` data pages written at version 1 (the file ends after the last one).
    fn open_space(vfs: &MemVfs, keys: &MemoryKeyProvider, pages: u32) -> Arc<SpaceFile> {
        let spec = NewSpace {
            id: 5,
            kind: SpaceKind::Table,
            page_size: ps(),
            encryption: Some(SpaceEncryption {
                key_id: 1,
                algorithm: Algorithm::AesGcm,
            }),
        };
        let space = SpaceFile::create(vfs, Path::new(SPACE5), spec, Some(keys), Default::default())
            .unwrap();
        space.update_header(|header| header.page_count = 10);
        for n in 1..=pages {
            space.write_page(n, &space_frame(n, 1)).unwrap();
        }
        space.sync().unwrap();
        Arc::new(space)
    }

    const SPACE5: &str = "/db/space-5.sbd";

    /// A plaintext frame of page `n` of space 5 at `version` (every body byte).
    fn space_frame(n: u32, version: u8) -> Vec<u8> {
        let mut frame = vec![0u8; ps().len()];
        page::init_frame(&mut frame, PageType::Overflow, PageId::new(5, n), 0);
        frame[ps().body()].fill(version);
        frame
    }

    #[test]
    fn repair_torn_pages_restores_a_half_overwritten_home_from_its_slot() {
        let vfs = MemVfs::new();
        let keys = MemoryKeyProvider::new();
        keys.add_random(1, 1, 256).unwrap();
        let space = open_space(&vfs, &keys, 3);
        let spaces = SpaceSet::new();
        spaces.insert(Arc::clone(&space));
        // The last batch: page 1 (written whole), page 2 (torn), page 4 (past the end of
        // the file: never written) and page 1 of space 9, which is not open.
        let mut images: Vec<_> = [1, 2, 4]
            .map(|n| {
                (
                    PageId::new(5, n),
                    space.encode_page(n, &space_frame(n, 2)).unwrap(),
                )
            })
            .into();
        let mut gone = vec![0u8; ps().len()];
        let mut frame = vec![0u8; ps().len()];
        page::init_frame(&mut frame, PageType::Overflow, PageId::new(9, 1), 0);
        page::encode(&frame, Seal::Plain, &mut gone).unwrap();
        images.push((PageId::new(9, 1), gone));
        let dw = Doublewrite::open_or_create(&vfs, dir(), ps(), 4).unwrap();
        let crashed = dw.write_batch(&borrowed(&images), &mut |batch| {
            space.write_stored(1, batch[0].1)?;
            // Power fails half-way through page 2: its first half new, its second half old.
            let (offset, half) = (2 * ps().len(), ps().len() / 2);
            let mut file = vfs.contents(Path::new(SPACE5)).unwrap();
            file[offset..offset + half].copy_from_slice(&batch[1].1[..half]);
            vfs.set_contents(Path::new(SPACE5), file);
            Err(Error::io("write", SPACE5, io::Error::other("power lost")))
        });
        assert!(crashed.is_err());
        drop(dw);

        let mut read = vec![0u8; ps().len()];
        assert!(
            matches!(
                space.read_page(2, &mut read),
                Err(Error::Page {
                    source: PageError::Corrupt { .. },
                    ..
                })
            ),
            "page 2 must be torn before the repair"
        );
        let dw = Doublewrite::open_or_create(&vfs, dir(), ps(), 4).unwrap();
        let report = repair_torn_pages(&dw, &spaces).unwrap();
        assert_eq!(
            report.pages_repaired,
            [PageId::new(5, 2), PageId::new(5, 4)]
        );
        assert_eq!((report.pages_intact, report.pages_gone), (1, 1));
        for (n, version) in [(1, 2), (2, 2), (3, 1), (4, 2)] {
            space.read_page(n, &mut read).unwrap();
            assert_eq!(
                read[ps().body()],
                space_frame(n, version)[ps().body()],
                "page {n}"
            );
        }
        // Recovered: the slots may be reused.
        let next = space.encode_page(2, &space_frame(2, 3)).unwrap();
        dw.write_batch(&[(PageId::new(5, 2), &next)], &mut |_| Ok(()))
            .unwrap();
    }

    /// Pins the byte layout to the table in the module doc, with literal offsets.
    #[test]
    fn the_file_layout_matches_the_table() {
        let vfs = SimVfs::new();
        let dw = open(&vfs, 2);
        let stored = image(id(7), 1);
        dw.write_batch(&[(id(7), &stored)], &mut |_| Ok(()))
            .unwrap();
        let file = vfs.contents(dw.path()).unwrap();
        let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        assert_eq!(dw.path(), Path::new("/db/doublewrite.dbw"));
        assert_eq!(file.len(), 4096 + 2 * (24 + 4096));
        assert_eq!(u32_at(0), crc32fast::hash(&file[4..4096]));
        assert_eq!(&file[4..12], b"SBXDBLWR");
        assert_eq!((u32_at(12), u32_at(16), u32_at(20)), (1, 4096, 2));
        assert!(file[24..4096].iter().all(|&b| b == 0));
        let slot = 4096;
        assert_eq!(
            u32_at(slot),
            crc32fast::hash(&file[slot + 4..slot + 24 + 4096])
        );
        assert_eq!(
            (u32_at(slot + 4), u32_at(slot + 8), u32_at(slot + 12)),
            (1, 7, 0)
        );
        assert_eq!(file[slot + 16..slot + 24], 1u64.to_le_bytes());
        assert_eq!(file[slot + 24..slot + 24 + 4096], stored);
        assert!(
            file[slot + 24 + 4096..].iter().all(|&b| b == 0),
            "slot 1 empty"
        );
    }
}
