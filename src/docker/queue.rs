//! Per-volume queues: requests for one volume wait their turn here, as
//! tasks, before they take a thread of the blocking pool.
//!
//! Every request that changes a volume (Create, Remove, Mount, Unmount)
//! takes the volume's file lock. Had each one waited for it on a blocking
//! thread, a volume stuck in a slow step (a huge mkfs, a hung device, an
//! operator's command holding the lock) would collect a thread per request
//! made for it until none is left for anyone else. Queued here, a volume
//! holds at most one thread however many requests wait for it.
//!
//! A request identical to the last one waiting in its volume's queue
//! (same endpoint, same body: dockerd retrying a Mount it gave up on)
//! joins it and gets its reply instead of queueing again: that run starts
//! after both arrived, and nothing queued between them, so the reply is
//! the one running it twice in a row would give. A request never joins
//! one that has started (its result may be older than the request), nor
//! one that another request was queued after (an Unmount between two
//! Mounts), nor a copy (it waits in two queues).
//!
//! Create and Remove also take the name table's lock, one for every
//! volume: at most half the pool runs them, so a name table held up
//! elsewhere leaves the other half to mounts. (A copy is not counted: it
//! holds that lock only at its start and may copy for long.)

use super::api::Reply;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Mutex as Turn, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// The queues of the volumes that have requests in flight; a volume with
/// none has no entry.
pub struct Queues {
    volumes: Mutex<HashMap<String, Slot>>,
    names: Arc<Semaphore>,
    /// How long a request waits for its turn (`rexray.lockTimeout`, as
    /// long as it would have waited for the lock itself).
    wait: Duration,
}

struct Slot {
    queue: Arc<Queue>,
    /// Requests holding `queue`: the entry goes with the last.
    users: usize,
}

/// One volume's queue.
#[derive(Default)]
struct Queue {
    turn: Arc<Turn<()>>,
    /// The last request queued, by endpoint and body, with where its
    /// reply will be, while it waits for its turn.
    last: Mutex<Option<(Vec<u8>, Pending)>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request's hold on a volume's queue entry.
struct User {
    queues: Arc<Queues>,
    name: String,
    queue: Arc<Queue>,
}

impl Drop for User {
    fn drop(&mut self) {
        let mut map = locked(&self.queues.volumes);
        if let Some(slot) = map.get_mut(&self.name) {
            slot.users -= 1;
            if slot.users == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// Where a queued request's reply will be (`None` until it is known).
type Pending = watch::Receiver<Option<Reply>>;

/// A request's place at the end of its queues, given up when it starts,
/// when another is queued after it, or when it is dropped (its client went
/// away).
struct Waiting<'a> {
    queues: Vec<&'a Queue>,
    rx: Pending,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        for q in &self.queues {
            let mut last = locked(&q.last);
            if last
                .as_ref()
                .is_some_and(|(_, rx)| rx.same_channel(&self.rx))
            {
                *last = None;
            }
        }
    }
}

/// What a queued request needs.
pub struct Ticket {
    /// The volumes whose turn it waits for, the one it is about first
    /// (a copy also waits for its source).
    pub names: Vec<String>,
    /// Whether it needs the name table's lock for all it does (Create,
    /// Remove; not a copy, which holds it only at its start).
    pub name_table: bool,
}

impl Queues {
    /// Queues that let a request wait `wait` for its turn.
    pub fn new(workers: usize, wait: Duration) -> Arc<Queues> {
        Arc::new(Queues {
            volumes: Mutex::new(HashMap::new()),
            names: Arc::new(Semaphore::new((workers / 2).max(1))),
            wait,
        })
    }

    /// Volumes with requests in flight.
    pub fn busy(&self) -> usize {
        locked(&self.volumes).len()
    }

    fn enter(self: &Arc<Self>, name: &str) -> User {
        let mut map = locked(&self.volumes);
        let slot = map.entry(name.to_string()).or_insert_with(|| Slot {
            queue: Arc::default(),
            users: 0,
        });
        slot.users += 1;
        User {
            queues: self.clone(),
            name: name.to_string(),
            queue: slot.queue.clone(),
        }
    }

    /// Run `work` on the blocking pool once it is the turn of `ticket`'s
    /// volumes, or share the reply of an identical request (`key`) that
    /// is still waiting. `busy` is the reply when the turn does not come
    /// within the wait. `work` is given a probe that says whether
    /// requests that joined this one still wait for its reply.
    pub async fn run<F>(
        self: &Arc<Self>,
        ticket: Ticket,
        key: Vec<u8>,
        busy: impl Fn(&str) -> Reply,
        work: F,
    ) -> Reply
    where
        F: FnOnce(&dyn Fn() -> bool) -> Reply + Send + 'static,
    {
        let mut names = ticket.names;
        let Some(first) = names.first().cloned() else {
            return blocking(move || work(&|| false)).await;
        };
        // Turns are taken in one order, so two copies between the same
        // volumes cannot each wait for the other.
        names.sort();
        names.dedup();
        let users: Vec<User> = names.iter().map(|n| self.enter(n)).collect();
        let queue = &users[names.iter().position(|n| *n == first).unwrap_or(0)].queue;
        let deadline = tokio::time::Instant::now() + self.wait;
        let share = users.len() == 1;
        let (tx, place) = loop {
            let joined = {
                let mut last = locked(&queue.last);
                match &*last {
                    // A leader dropped before it started leaves a closed
                    // channel: take its place.
                    Some((k, rx)) if share && *k == key && rx.has_changed().is_ok() => {
                        Some(rx.clone())
                    }
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        *last = Some((key.clone(), rx.clone()));
                        drop(last);
                        for u in &users {
                            *locked(&u.queue.last) = Some((key.clone(), rx.clone()));
                        }
                        let queues = users.iter().map(|u| &*u.queue).collect();
                        break (tx, Waiting { queues, rx });
                    }
                }
            };
            // The leader's wait is bounded as this one's, and it replies
            // or goes away.
            if let Some(mut rx) = joined {
                match rx.wait_for(Option::is_some).await {
                    Ok(r) => return r.clone().expect("a reply"),
                    // Its leader went away before it started: queue anew.
                    Err(_) => continue,
                }
            }
        };
        let mut turns: Vec<OwnedMutexGuard<()>> = Vec::with_capacity(users.len());
        for u in &users {
            match tokio::time::timeout_at(deadline, u.queue.turn.clone().lock_owned()).await {
                Ok(t) => turns.push(t),
                Err(_) => {
                    let r = busy(&u.name);
                    let _ = tx.send(Some(r.clone()));
                    return r;
                }
            }
        }
        let permit: Option<OwnedSemaphorePermit> = if ticket.name_table {
            match tokio::time::timeout_at(deadline, self.names.clone().acquire_owned()).await {
                Ok(Ok(p)) => Some(p),
                _ => {
                    let r = busy(&first);
                    let _ = tx.send(Some(r.clone()));
                    return r;
                }
            }
        } else {
            None
        };
        // Started: later requests queue behind this one.
        drop(place);
        // The turns go with the work, not with this task: a client that
        // goes away does not stop a mount half-way, and the next request
        // must not start beside it.
        let held = (users, turns, permit);
        blocking(move || {
            // Started, its place given up: only the requests that joined
            // it hold its reply's receivers now.
            let r = work(&|| tx.receiver_count() > 0);
            let _ = tx.send(Some(r.clone()));
            drop(held);
            r
        })
        .await
    }
}

async fn blocking<F: FnOnce() -> Reply + Send + 'static>(work: F) -> Reply {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => Reply {
            status: 500,
            body: format!(
                "{}\n",
                serde_json::json!({ "Err": format!("internal error: {e}") })
            )
            .into_bytes(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn reply(s: &str) -> Reply {
        Reply {
            status: 200,
            body: s.as_bytes().to_vec(),
        }
    }

    fn ticket(names: &[&str]) -> Ticket {
        Ticket {
            names: names.iter().map(|s| s.to_string()).collect(),
            name_table: false,
        }
    }

    /// One volume's requests run one at a time, on one thread, identical
    /// waiting ones run once, other volumes are not held up, and nothing
    /// is left behind.
    #[test]
    fn one_volume_holds_one_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let q = Queues::new(2, Duration::from_secs(60));
            let (release, held) = std::sync::mpsc::channel::<()>();
            let runs = Arc::new(AtomicUsize::new(0));
            // The first request for "slow" blocks until released.
            let first = {
                let q = q.clone();
                let runs = runs.clone();
                tokio::spawn(async move {
                    q.run(
                        ticket(&["slow"]),
                        b"a".to_vec(),
                        |_| reply("busy"),
                        move |_| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            held.recv().unwrap();
                            reply("first")
                        },
                    )
                    .await
                })
            };
            while runs.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut queued = Vec::new();
            for i in 0..21 {
                let q = q.clone();
                let runs = runs.clone();
                // Five distinct requests, four times each in a row, then
                // the first again: it comes after another one.
                let key = format!("k{}", (i / 4) % 5);
                queued.push(tokio::spawn(async move {
                    q.run(
                        ticket(&["slow"]),
                        key.clone().into_bytes(),
                        |_| reply("busy"),
                        move |_| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            reply(&key)
                        },
                    )
                    .await
                }));
            }
            // Every queued request reaches its place in the queue.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The pool has two threads: one is the stuck request's, the
            // other is free for another volume.
            let other = q
                .run(
                    ticket(&["other", "slow2"]),
                    b"o".to_vec(),
                    |_| reply("busy"),
                    |_| reply("other"),
                )
                .await;
            assert_eq!(other, reply("other"));
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            release.send(()).unwrap();
            assert_eq!(first.await.unwrap(), reply("first"));
            for (i, t) in queued.into_iter().enumerate() {
                assert_eq!(t.await.unwrap(), reply(&format!("k{}", (i / 4) % 5)));
            }
            // The first request, each distinct one once, and the
            // repeated first one again.
            assert_eq!(runs.load(Ordering::SeqCst), 7);
            assert_eq!(q.busy(), 0);
        });
    }

    /// A request whose turn does not come within the wait gets the busy
    /// reply, and so do the identical ones that joined it.
    #[test]
    fn the_wait_for_a_turn_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let q = Queues::new(4, Duration::from_millis(200));
            let (release, held) = std::sync::mpsc::channel::<()>();
            let started = Arc::new(AtomicUsize::new(0));
            let s = started.clone();
            let q1 = q.clone();
            let first = tokio::spawn(async move {
                q1.run(
                    ticket(&["v"]),
                    b"a".to_vec(),
                    |_| reply("busy"),
                    move |_| {
                        s.fetch_add(1, Ordering::SeqCst);
                        held.recv().unwrap();
                        reply("first")
                    },
                )
                .await
            });
            while started.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let a = q.run(ticket(&["v"]), b"b".to_vec(), reply, |_| reply("ran"));
            let b = q.run(ticket(&["v"]), b"b".to_vec(), reply, |_| reply("ran"));
            let (a, b) = tokio::join!(a, b);
            assert_eq!((a, b), (reply("v"), reply("v")));
            release.send(()).unwrap();
            assert_eq!(first.await.unwrap(), reply("first"));
            assert_eq!(q.busy(), 0);
        });
    }

    /// The work learns whether identical requests that joined it still
    /// wait for its reply (those whose client went are not counted).
    #[test]
    fn the_work_is_told_whether_joined_requests_wait() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for keep_joiner in [true, false] {
                let q = Queues::new(4, Duration::from_secs(60));
                let (release, held) = std::sync::mpsc::channel::<()>();
                let started = Arc::new(AtomicUsize::new(0));
                let s = started.clone();
                let q1 = q.clone();
                let blocker = tokio::spawn(async move {
                    q1.run(ticket(&["v"]), b"a".to_vec(), reply, move |_| {
                        s.fetch_add(1, Ordering::SeqCst);
                        held.recv().unwrap();
                        reply("blocker")
                    })
                    .await
                });
                while started.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let seen = Arc::new(AtomicUsize::new(0));
                let (q2, s2) = (q.clone(), seen.clone());
                let leader = tokio::spawn(async move {
                    q2.run(ticket(&["v"]), b"k".to_vec(), reply, move |joined| {
                        s2.store(if joined() { 2 } else { 1 }, Ordering::SeqCst);
                        reply("leader")
                    })
                    .await
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
                let q3 = q.clone();
                let joiner = tokio::spawn(async move {
                    q3.run(ticket(&["v"]), b"k".to_vec(), reply, |_| {
                        reply("joiner ran")
                    })
                    .await
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
                let joiner = if keep_joiner {
                    Some(joiner)
                } else {
                    joiner.abort();
                    let _ = joiner.await;
                    None
                };
                release.send(()).unwrap();
                assert_eq!(blocker.await.unwrap(), reply("blocker"));
                assert_eq!(leader.await.unwrap(), reply("leader"));
                let want = if keep_joiner { 2 } else { 1 };
                assert_eq!(
                    seen.load(Ordering::SeqCst),
                    want,
                    "keep_joiner={keep_joiner}"
                );
                if let Some(joiner) = joiner {
                    assert_eq!(joiner.await.unwrap(), reply("leader"), "shared");
                }
            }
        });
    }
}
