//! Group commit — many writes, one commit: concurrent callers' items share one transaction, so
//! one commit (one flush to disk, one hold of the outbox's append lock) serves them all.
//!
//! A caller [submits](GroupCommit::submit) an item and waits for its answer. If no committer
//! is running, the submission starts one: a spawned task (not the caller's future, which a
//! disconnecting client could drop) that takes everything queued (at most [`MAX_GROUP`]),
//! writes it through the caller-supplied [`GroupWrite`] in one transaction, commits and
//! answers each item, then takes what queued up meanwhile, until the queue is empty. An idle
//! system therefore commits a lone item at once, and a busy one commits larger groups. An item
//! is only answered after the commit that holds it: durability is that of a single write.
//!
//! If a group's transaction fails, each of its items is retried in a transaction of its own,
//! so one bad item fails alone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{ModuleDb, StorageError, Tx};

/// The most items one transaction takes.
pub const MAX_GROUP: usize = 64;

/// The write a [`GroupCommit`] runs for a group of items, inside the group's transaction.
#[async_trait]
pub trait GroupWrite: Send + Sync + 'static {
    /// One caller's unit of work.
    type Item: Send + Sync + 'static;
    /// What a write fails with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `items` through `tx`; the committer commits it afterwards. An error rolls back the
    /// whole group, whose items are then written again one per transaction.
    async fn write(&self, tx: &mut Tx, items: &[Self::Item]) -> Result<(), Self::Error>;
}

/// Why a submitted item was not committed.
#[derive(Debug, thiserror::Error)]
pub enum GroupCommitError<E> {
    /// The write of the item (alone in its transaction) failed.
    #[error(transparent)]
    Write(E),
    /// The transaction could not begin or commit.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The committer ended (a panic) before answering.
    #[error("the group committer stopped")]
    Stopped,
}

/// Answers one submitter.
type Answer<E> = oneshot::Sender<Result<(), GroupCommitError<E>>>;

/// A queue of items committed in groups by one spawned committer at a time (see the module
/// documentation). Cloning gives another handle to the same queue.
pub struct GroupCommit<W: GroupWrite> {
    inner: Arc<Inner<W>>,
}

impl<W: GroupWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: GroupWrite> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("GroupCommit")
            .field("metric", &self.inner.metric)
            .field("pending", &state.pending.len())
            .field("committing", &state.committing)
            .finish_non_exhaustive()
    }
}

struct Inner<W: GroupWrite> {
    db: ModuleDb,
    write: W,
    /// The histogram of group sizes.
    metric: &'static str,
    state: Mutex<State<W>>,
}

/// The items waiting for a commit, and whether a committer is running.
struct State<W: GroupWrite> {
    pending: Vec<(W::Item, Answer<W::Error>)>,
    committing: bool,
}

impl<W: GroupWrite> GroupCommit<W> {
    /// A queue committing through `db` with `write`, recording each group's size in the
    /// histogram `metric`.
    pub fn new(db: ModuleDb, write: W, metric: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                write,
                metric,
                state: Mutex::new(State {
                    pending: Vec::new(),
                    committing: false,
                }),
            }),
        }
    }

    /// Writes `item` in the next group commit, and returns once that commit is durable.
    ///
    /// # Errors
    /// [`GroupCommitError::Write`] when the item's write fails (alone in its transaction),
    /// [`GroupCommitError::Storage`] when its transaction cannot begin or commit,
    /// [`GroupCommitError::Stopped`] when the committer ended without answering.
    pub async fn submit(&self, item: W::Item) -> Result<(), GroupCommitError<W::Error>> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut state = self.inner.lock();
            state.pending.push((item, done));
            !std::mem::replace(&mut state.committing, true)
        };
        if start {
            let inner = Arc::clone(&self.inner);
            tokio::spawn(async move { inner.run_committer().await });
        }
        answer.await.unwrap_or(Err(GroupCommitError::Stopped))
    }
}

/// Ends a committer: whatever way it ends, the next submission can start another, and if it
/// ended early (a panic) the items it held or left queued are answered with an error, not left
/// hanging.
struct CommitterGuard<W: GroupWrite> {
    inner: Arc<Inner<W>>,
    /// The answers of the group being committed, in the group's order.
    held: VecDeque<Answer<W::Error>>,
}

impl<W: GroupWrite> Drop for CommitterGuard<W> {
    fn drop(&mut self) {
        {
            let mut state = self.inner.lock();
            state.committing = false;
            // Dropping their senders answers the waiters with `Stopped`.
            state.pending.clear();
        }
        // Answered only now that a submission starts a new committer: one that a waiter makes
        // on its answer is not queued behind this ended one.
        self.held.clear();
    }
}

impl<W: GroupWrite> Inner<W> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run_committer(self: Arc<Self>) {
        let mut guard = CommitterGuard {
            inner: Arc::clone(&self),
            held: VecDeque::new(),
        };
        loop {
            let items: Vec<W::Item> = {
                let mut state = self.lock();
                if state.pending.is_empty() {
                    state.committing = false;
                    return;
                }
                let take = state.pending.len().min(MAX_GROUP);
                let (items, answers) = state.pending.drain(..take).unzip();
                guard.held = answers;
                items
            };
            metrics::histogram!(self.metric).record(items.len() as f64);
            match self.commit(&items).await {
                Ok(()) => {
                    for answer in guard.held.drain(..) {
                        let _ = answer.send(Ok(()));
                    }
                }
                Err(error) if items.len() == 1 => {
                    if let Some(answer) = guard.held.pop_front() {
                        let _ = answer.send(Err(error));
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, items = items.len(), metric = self.metric, "A group commit failed; committing each item alone.");
                    for item in &items {
                        let alone = self.commit(std::slice::from_ref(item)).await;
                        if let Some(answer) = guard.held.pop_front() {
                            let _ = answer.send(alone);
                        }
                    }
                }
            }
        }
    }

    /// Writes `items` in one transaction and commits it.
    async fn commit(&self, items: &[W::Item]) -> Result<(), GroupCommitError<W::Error>> {
        let mut tx = self.db.begin_keyed().await?;
        self.write
            .write(&mut tx, items)
            .await
            .map_err(GroupCommitError::Write)?;
        tx.commit().await.map_err(|e| self.db.classify(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;
    use crate::storage::testing::ScratchDb;
    use crate::{with_reader, with_tx};

    /// An item whose write panics.
    const PANICS: i64 = 13;

    /// Inserts each item into `numbers` (which refuses negative numbers), recording the size of
    /// every write; the first write waits, once it has begun, until the test releases it.
    struct Numbers {
        writes: Arc<Mutex<Vec<usize>>>,
        gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    }

    #[async_trait]
    impl GroupWrite for Numbers {
        type Item = i64;
        type Error = sqlx::Error;

        async fn write(&self, tx: &mut Tx, items: &[i64]) -> Result<(), sqlx::Error> {
            self.writes.lock().unwrap().push(items.len());
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, release)) = gate {
                entered.send(()).unwrap();
                release.await.unwrap();
            }
            assert!(!items.contains(&PANICS), "the write of {PANICS} panics");
            for n in items {
                with_tx!(tx, |conn| {
                    sqlx::query("INSERT INTO numbers (n) VALUES ($1)")
                        .bind(n)
                        .execute(conn)
                        .await
                        .map(drop)
                })?;
            }
            Ok(())
        }
    }

    type Submitted = Pin<Box<dyn Future<Output = (i64, Result<bool, String>)> + Send>>;

    /// A queue over a fresh `numbers` table whose first write is held: the test gets it once
    /// the first write has begun (holding item 0 alone), the writes' sizes, and the release.
    struct Held {
        queue: GroupCommit<Numbers>,
        writes: Arc<Mutex<Vec<usize>>>,
        first: tokio::task::JoinHandle<(i64, Result<bool, String>)>,
        release: oneshot::Sender<()>,
    }

    impl Held {
        async fn new(scratch: &ScratchDb) -> Self {
            scratch
                .execute("CREATE TABLE numbers (n BIGINT PRIMARY KEY CHECK (n >= 0))")
                .await;
            let (entered, has_entered) = oneshot::channel();
            let (release, released) = oneshot::channel();
            let writes = Arc::new(Mutex::new(Vec::new()));
            let numbers = Numbers {
                writes: Arc::clone(&writes),
                gate: Mutex::new(Some((entered, released))),
            };
            let queue = GroupCommit::new(scratch.db.clone(), numbers, "test_group_size");
            let first = tokio::spawn(submit(queue.clone(), scratch.db.clone(), 0));
            has_entered.await.unwrap();
            Self {
                queue,
                writes,
                first,
                release,
            }
        }

        /// Queues `items` behind the held write (each submission polled once, so it is in
        /// the queue), releases the write, and returns every answer, the held one first.
        async fn queue_and_release(
            self,
            db: &ModuleDb,
            items: &[i64],
        ) -> (Vec<(i64, Result<bool, String>)>, Vec<usize>) {
            let mut queued: Vec<Submitted> = Vec::new();
            for &n in items {
                let mut submitted: Submitted = Box::pin(submit(self.queue.clone(), db.clone(), n));
                assert!(futures::poll!(submitted.as_mut()).is_pending());
                queued.push(submitted);
            }
            self.release.send(()).unwrap();
            let mut answers = vec![self.first.await.unwrap()];
            answers.extend(futures::future::join_all(queued).await);
            let writes = self.writes.lock().unwrap().clone();
            (answers, writes)
        }
    }

    /// Submits `n`; once answered, whether a reader (another connection) sees it committed.
    async fn submit(
        queue: GroupCommit<Numbers>,
        db: ModuleDb,
        n: i64,
    ) -> (i64, Result<bool, String>) {
        let answer = match queue.submit(n).await {
            Ok(()) => Ok(stored(&db).await.contains(&n)),
            Err(error) => Err(format!("{error:#}")),
        };
        (n, answer)
    }

    async fn stored(db: &ModuleDb) -> Vec<i64> {
        with_reader!(db.reader().unwrap(), |pool| {
            sqlx::query_scalar("SELECT n FROM numbers ORDER BY n")
                .fetch_all(pool)
                .await
        })
        .unwrap()
    }

    crate::both_backends! {
        async fn concurrent_submissions_share_a_commit_and_are_answered_after_it(scratch: ScratchDb) {
            let held = Held::new(&scratch).await;
            let (answers, writes) = held.queue_and_release(&scratch.db, &[1, 2, 3, 4, 5]).await;
            // Every answer is a success its submitter can already read from another connection.
            for (n, answer) in answers {
                assert_eq!(answer, Ok(true), "item {n}");
            }
            // The lone first item, then everything queued meanwhile in one transaction.
            assert_eq!(writes, [1, 5]);
            assert_eq!(stored(&scratch.db).await, [0, 1, 2, 3, 4, 5]);
        }

        async fn a_failing_item_fails_alone(scratch: ScratchDb) {
            let held = Held::new(&scratch).await;
            let (answers, writes) = held.queue_and_release(&scratch.db, &[1, -1, 2]).await;
            assert_eq!(answers[..2], [(0, Ok(true)), (1, Ok(true))]);
            let (n, failed) = &answers[2];
            assert_eq!(*n, -1);
            // SQLite: "CHECK constraint failed"; Postgres: "violates check constraint".
            assert!(failed.as_ref().is_err_and(|e| e.to_lowercase().contains("check constraint")), "{failed:?}");
            assert_eq!(answers[3], (2, Ok(true)));
            // The group of three failed as a whole; each was then written alone.
            assert_eq!(writes, [1, 3, 1, 1, 1]);
            assert_eq!(stored(&scratch.db).await, [0, 1, 2]);
        }

        async fn a_committer_that_dies_answers_its_waiters_and_the_next_submission_starts_another(scratch: ScratchDb) {
            let held = Held::new(&scratch).await;
            let queue = held.queue.clone();
            let (answers, writes) = held.queue_and_release(&scratch.db, &[PANICS, 1]).await;
            let stopped = Err(GroupCommitError::<sqlx::Error>::Stopped.to_string());
            assert_eq!(answers, [(0, Ok(true)), (PANICS, stopped.clone()), (1, stopped)]);
            assert_eq!(writes, [1, 2]);
            assert_eq!(submit(queue, scratch.db.clone(), 2).await, (2, Ok(true)));
            assert_eq!(stored(&scratch.db).await, [0, 2]);
        }
    }
}
