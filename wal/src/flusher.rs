//! The background flusher of `flush_log_at_commit` 0 and 2 (STYLE §12): an owned thread
//! with a wake-up (a ticker every `flush_interval`) and a stop signal (its channel closing),
//! joined on close and on drop.

use std::sync::Arc;
use std::time::Duration;

use crate::writer::Writer;

/// The flusher thread's handle, owned by the `Log`. Each tick it makes everything appended
/// durable. A failed flush has already poisoned the writer (every caller sees it), and the
/// thread then exits.
pub(crate) struct Flusher {
    stop: Option<crossbeam::channel::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    pub fn start(writer: Arc<Writer>, interval: Duration) -> std::io::Result<Flusher> {
        let (stop, stopped) = crossbeam::channel::bounded::<()>(0);
        let ticker = crossbeam::channel::tick(interval);
        let handle = std::thread::Builder::new()
            .name("strongbox-log-flusher".into())
            .spawn(move || loop {
                crossbeam::channel::select! {
                    recv(stopped) -> _ => break,
                    recv(ticker) -> _ => {
                        if writer.flush_all().is_err() {
                            break;
                        }
                    }
                }
            })?;
        Ok(Flusher {
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Signals the thread and waits for it.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            // The loop has no panicking path; a panic would already have been printed.
            let _ = handle.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}
