//! Group commit: events authorized by the pipeline are written by one task, which puts every
//! event waiting at that moment (across rooms) into one transaction. Under load a commit (and
//! on SQLite, the write lock and the WAL pages) is shared by many events instead of paid by
//! each; with nothing else waiting, an event is written alone, at once.
//!
//! Events of one room never share a batch: the appender's room lock travels with its event and
//! is released only once the event is committed and published. Positions are still handed out
//! inside the transaction from the locked counter row, so no reader sees position N+1 before N.
//!
//! What follows a commit (cache invalidation, waking readers) runs in the writer task, so a
//! client that hangs up mid-send cannot leave an event written but never announced.

use tokio::sync::{mpsc, oneshot};

use super::error::{EventError, EventResult};
use crate::storage::{NewEvent, Storage, StorageError};

/// Events written per transaction at most.
const MAX_BATCH: usize = 256;

/// Runs once the event is committed, with its position, before the sender hears back.
pub type AfterCommit = Box<dyn FnOnce(i64) + Send>;

struct Job {
    event: NewEvent,
    after_commit: AfterCommit,
    done: oneshot::Sender<Result<i64, StorageError>>,
}

/// The handle appenders write through.
pub struct Persister {
    jobs: mpsc::Sender<Job>,
}

impl Persister {
    /// Starts the writer task (it ends when the handle is dropped). Needs a Tokio runtime.
    pub fn start(storage: Storage) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(storage, receiver));
        Self { jobs }
    }

    /// Writes the event (in some batch), runs `after_commit`, and returns its stream position.
    /// Once the event is handed over it is written even if this future is dropped.
    pub async fn persist(&self, event: NewEvent, after_commit: AfterCommit) -> EventResult<i64> {
        let (done, result) = oneshot::channel();
        let job = Job {
            event,
            after_commit,
            done,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        Ok(result.await.map_err(|_| stopped())??)
    }
}

fn stopped() -> EventError {
    tracing::error!("the event writer has stopped");
    EventError::Internal("the event writer has stopped")
}

async fn write_batches(storage: Storage, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<&NewEvent> = batch.iter().map(|job| &job.event).collect();
        match write(&storage, &events).await {
            Ok(positions) => {
                for (job, position) in batch.drain(..).zip(positions) {
                    job.finish(Ok(position));
                }
            }
            Err(error) => {
                // One bad event must not fail the others: write each on its own.
                if batch.len() > 1 {
                    tracing::warn!(%error, count = batch.len(), "a batch of events failed; writing them one by one");
                }
                for job in batch.drain(..) {
                    let result = write(&storage, &[&job.event]).await.map(|positions| positions[0]);
                    job.finish(result);
                }
            }
        }
    }
}

impl Job {
    fn finish(self, result: Result<i64, StorageError>) {
        if let Ok(position) = result {
            // A bug there must not end the writer (and with it every later send).
            let after_commit = self.after_commit;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || after_commit(position))).is_err() {
                tracing::error!(position, "publishing a written event panicked");
            }
        }
        let _ = self.done.send(result);
    }
}

async fn write(storage: &Storage, events: &[&NewEvent]) -> Result<Vec<i64>, StorageError> {
    let mut tx = storage.begin_write().await?;
    let mut positions = Vec::with_capacity(events.len());
    for event in events {
        positions.push(Storage::persist_event(&mut tx, event).await?.position);
    }
    tx.commit().await?;
    Ok(positions)
}
