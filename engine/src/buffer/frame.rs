//! One frame of the pool, its pin, and the page guards handed to callers.
//!
//! A frame is a page-sized byte buffer behind a latch, plus three small pieces of state
//! that are read without the latch:
//!
//! | field   | what it says                                     | changed by                      |
//! |---------|--------------------------------------------------|---------------------------------|
//! | `state` | pin count (low 31 bits) and `ORPHANED` (bit 31)  | pin (under the shard lock), unpin, orphaning |
//! | `dirty` | the bytes differ from the page on disk           | `PageMut` sets, write-back clears |
//! | `page`  | which page the frame holds (a hint)              | the frame's owner only (rule 1) |
//!
//! The life of a frame:
//!
//! ```text
//!   FREE ──claim_frame──▶ OWNED ──publish (rule 3)──▶ LOADING ──read ok──▶ RESIDENT
//!    ▲ ▲                   │ ▲                           │                  │   │
//!    │ └─lost publish race─┘ └───── evict (rules 2, 6) ──┼──────────────────┘   │
//!    │                                                   │ read failed          │ discard_space
//!    │                                                   ▼ (rule 4)             │
//!    └──── last pin gone: try_claim_orphan ──────── ORPHANED ◀──────────────────┘
//! ```
//!
//! FREE frames are on the free list. An OWNED frame belongs to the one thread that claimed
//! it. A LOADING frame is mapped and its loader holds the write latch; RESIDENT frames are
//! mapped and anyone may pin them. An ORPHANED frame is unmapped but still pinned by
//! threads that must not use its bytes; the evictor may also claim it straight to OWNED.
//!
//! Everyone who takes a frame's latch pins the frame first and lets go of the latch first
//! (for guards: the field order in [`PageRef`] and [`PageMut`]). So nobody holds the latch
//! of an unpinned frame, and the thread that claims one can take its latch at once. (The
//! two exceptions are brief: the owner itself, and `discard_space` waiting out a write.)

use crate::page::PageId;
use parking_lot::{ArcRwLockReadGuard, ArcRwLockWriteGuard, Condvar, Mutex, RawRwLock, RwLock};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// Index of a frame in the pool.
pub(crate) type FrameId = usize;

/// The page bytes behind a frame's latch.
pub(super) type Latch = RwLock<Box<[u8]>>;
/// A shared latch that owns an `Arc` of the lock, so a guard does not borrow the pool.
pub(super) type ReadLatch = ArcRwLockReadGuard<RawRwLock, Box<[u8]>>;
/// An exclusive latch that owns an `Arc` of the lock.
pub(super) type WriteLatch = ArcRwLockWriteGuard<RawRwLock, Box<[u8]>>;

/// Bit 31 of `Frame::state`: the frame was unmapped while pinned (rule 4, `discard_space`).
const ORPHANED: u32 = 1 << 31;
/// The pin count: the other 31 bits of `Frame::state`.
const PIN_COUNT: u32 = ORPHANED - 1;

/// One page-sized buffer and the state the pool keeps about it.
pub(super) struct Frame {
    /// Guards the page bytes: shared by readers, held alone by a writer or by the loader
    /// filling the frame, held upgradable by a write-back (rule 7).
    pub(super) latch: Arc<Latch>,
    /// Pin count in the low 31 bits, `ORPHANED` in bit 31.
    state: AtomicU32,
    /// The bytes differ from the page on disk (rule 5).
    dirty: AtomicBool,
    /// Guards the id of the page the frame holds. A hint for the evictor and the page
    /// cleaner: only the frame's owner writes it, and readers check it against the page
    /// table under the shard lock (rule 1).
    page: Mutex<Option<PageId>>,
    /// Told when the pin count drops to zero; shared by every frame of one pool.
    unpinned: Arc<UnpinSignal>,
}

impl Frame {
    pub(super) fn new(page_size: usize, unpinned: Arc<UnpinSignal>) -> Frame {
        Frame {
            latch: Arc::new(RwLock::new(vec![0; page_size].into_boxed_slice())),
            state: AtomicU32::new(0),
            dirty: AtomicBool::new(false),
            page: Mutex::new(None),
            unpinned,
        }
    }

    /// Pins the frame. Callers hold the shard lock of the page the frame holds (rule 2),
    /// or own the frame.
    pub(super) fn pin(self: &Arc<Frame>) -> Pin {
        let before = self.state.fetch_add(1, SeqCst);
        debug_assert!(before & PIN_COUNT < PIN_COUNT, "pin count overflow");
        Pin {
            frame: Arc::clone(self),
        }
    }

    pub(super) fn pin_count(&self) -> u32 {
        self.state.load(SeqCst) & PIN_COUNT
    }

    /// Whether the frame was unmapped while pinned; its contents must not be used.
    pub(super) fn is_orphaned(&self) -> bool {
        self.state.load(SeqCst) & ORPHANED != 0
    }

    /// Marks the frame orphaned. The caller has just removed its mapping.
    pub(super) fn orphan(&self) {
        self.state.fetch_or(ORPHANED, SeqCst);
    }

    /// Takes ownership of an orphaned frame whose pins have all been released. Exactly one
    /// caller succeeds, so the frame is reused once.
    pub(super) fn try_claim_orphan(&self) -> bool {
        self.state
            .compare_exchange(ORPHANED, 0, SeqCst, SeqCst)
            .is_ok()
    }

    /// The page the frame holds, as last set by its owner.
    pub(super) fn page(&self) -> Option<PageId> {
        *self.page.lock()
    }

    pub(super) fn set_page(&self, id: Option<PageId>) {
        *self.page.lock() = id;
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty.load(SeqCst)
    }

    /// Sets the dirty flag; true if it was clear.
    pub(super) fn set_dirty(&self) -> bool {
        !self.dirty.swap(true, SeqCst)
    }

    /// Clears the dirty flag; true if it was set.
    pub(super) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, SeqCst)
    }
}

/// Wakes threads that wait for a frame to become unpinned (see `Core::claim_frame`).
///
/// A guard's drop must not touch contended pool-wide state, so the unpinning side only
/// *reads* `waiting` and notifies when someone waits. A wake-up that slips between a
/// waiter's check and its sleep is caught by the bounded wait.
pub(super) struct UnpinSignal {
    /// How many threads are waiting.
    waiting: AtomicUsize,
    /// Guards nothing; the condition variable needs a mutex to sleep on.
    lock: Mutex<()>,
    /// Signalled when a frame's pin count drops to zero or a frame is freed.
    condvar: Condvar,
}

impl UnpinSignal {
    pub(super) fn new() -> UnpinSignal {
        UnpinSignal {
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    /// Waits until told or until `timeout` passes.
    pub(super) fn wait(&self, timeout: Duration) {
        let mut guard = self.lock.lock();
        self.waiting.fetch_add(1, SeqCst);
        self.condvar.wait_for(&mut guard, timeout);
        self.waiting.fetch_sub(1, SeqCst);
    }

    pub(super) fn notify(&self) {
        if self.waiting.load(SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.condvar.notify_all();
        }
    }
}

/// One pin on a frame, released on drop. While a frame is pinned it cannot be evicted.
pub(super) struct Pin {
    frame: Arc<Frame>,
}

impl Pin {
    pub(super) fn frame(&self) -> &Frame {
        &self.frame
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let before = self.frame.state.fetch_sub(1, SeqCst);
        if before & PIN_COUNT == 1 {
            self.frame.unpinned.notify();
        }
    }
}

/// A page pinned in the pool and latched shared: any number of readers at once.
///
/// Dereferences to the whole frame (`page_size` bytes of plaintext). Dropping it releases
/// the latch and then the pin.
pub struct PageRef {
    id: PageId,
    // Field order matters: the latch is released before the pin.
    latch: ReadLatch,
    _pin: Pin,
}

impl PageRef {
    pub(super) fn new(id: PageId, latch: ReadLatch, pin: Pin) -> PageRef {
        PageRef {
            id,
            latch,
            _pin: pin,
        }
    }

    /// The page this guard holds.
    pub fn id(&self) -> PageId {
        self.id
    }
}

impl Deref for PageRef {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.latch
    }
}

impl fmt::Debug for PageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageRef").field("id", &self.id).finish()
    }
}

/// A page pinned in the pool and latched exclusively; the frame is dirty.
///
/// Dereferences mutably to the whole frame. Dropping it releases the latch and then the
/// pin; the page cleaner or an eviction writes the change later — unless the guard was
/// handed out by a mini-transaction ([`PageMut::kept_by`]): then dropping it gives the
/// latched page back to that mtr, which holds it until it commits (`mtr.rs`).
pub struct PageMut {
    id: PageId,
    /// The latch and the pin; `None` only while being handed to a keeper in `drop`. In a
    /// tuple the latch drops first, then the pin.
    held: Option<(WriteLatch, Pin)>,
    keeper: Option<Arc<dyn Keeper>>,
}

/// Whoever takes a [`PageMut`] back when it is dropped: a mini-transaction keeps the
/// latch of every page it changed until its redo is logged (`docs/durability.md` rule 2).
pub(crate) trait Keeper: Send + Sync {
    /// Takes the page, still latched (a guard with no keeper).
    fn keep(&self, page: PageMut);
}

impl PageMut {
    /// Wraps a latched frame; the caller has already marked it dirty (rule 5).
    pub(super) fn new(id: PageId, latch: WriteLatch, pin: Pin) -> PageMut {
        PageMut {
            id,
            held: Some((latch, pin)),
            keeper: None,
        }
    }

    /// Makes `keeper` receive this page when the guard is dropped.
    pub(crate) fn kept_by(mut self, keeper: Arc<dyn Keeper>) -> PageMut {
        self.keeper = Some(keeper);
        self
    }

    /// The page this guard holds.
    pub fn id(&self) -> PageId {
        self.id
    }

    pub(super) fn frame(&self) -> &Frame {
        self.held.as_ref().expect("held until dropped").1.frame()
    }
}

impl super::BufferPool {
    /// Marks `page` clean: its changes must never reach disk (an aborted mini-transaction's
    /// new page, which was never logged). The caller holds its latch.
    pub(crate) fn forget_changes(&self, page: &PageMut) {
        self.core.take_dirty(page.frame());
    }
}

impl Drop for PageMut {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.keep(PageMut {
                id: self.id,
                held: self.held.take(),
                keeper: None,
            });
        }
    }
}

impl Deref for PageMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.held.as_ref().expect("held until dropped").0
    }
}

impl DerefMut for PageMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.held.as_mut().expect("held until dropped").0
    }
}

impl fmt::Debug for PageMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageMut").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Arc<Frame> {
        Arc::new(Frame::new(64, Arc::new(UnpinSignal::new())))
    }

    #[test]
    fn guards_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PageRef>();
        assert_send::<PageMut>();
    }

    #[test]
    fn pins_count_up_and_down() {
        let f = frame();
        let a = f.pin();
        let b = f.pin();
        assert_eq!(f.pin_count(), 2);
        drop(a);
        assert_eq!(f.pin_count(), 1);
        drop(b);
        assert_eq!(f.pin_count(), 0);
    }

    #[test]
    fn an_orphan_is_claimed_once_and_only_after_its_last_unpin() {
        let f = frame();
        let pin = f.pin();
        f.orphan();
        assert!(f.is_orphaned());
        assert!(!f.try_claim_orphan(), "claimed while still pinned");
        drop(pin);
        assert!(f.try_claim_orphan());
        assert!(!f.try_claim_orphan(), "claimed twice");
        assert!(!f.is_orphaned());
        assert_eq!(f.pin_count(), 0);
    }

    #[test]
    fn dirty_flag_reports_transitions() {
        let f = frame();
        assert!(f.set_dirty());
        assert!(!f.set_dirty());
        assert!(f.take_dirty());
        assert!(!f.take_dirty());
    }
}
