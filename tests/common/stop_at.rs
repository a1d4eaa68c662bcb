//! An observer that sets the trainer's stop flag at one batch of one epoch, as a
//! Ctrl-C handler would (tests/train.rs, tests/gpu_engine.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct StopAt {
    epoch: usize,
    batch: usize,
    current: usize,
    pub flag: Arc<AtomicBool>,
}

impl StopAt {
    /// Stop after batch `batch` (1-based) of epoch `epoch`.
    pub fn new(epoch: usize, batch: usize) -> Self {
        Self { epoch, batch, current: 0, flag: Arc::new(AtomicBool::new(false)) }
    }
}

impl lenet::trainer::Observer for StopAt {
    fn epoch_start(&mut self, epoch: usize, _epochs: usize, _batches: usize) {
        self.current = epoch;
    }
    fn batch_end(&mut self, batch: usize) {
        if (self.current, batch) == (self.epoch, self.batch) {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}
