//! The server's tasks: every operation on a service runs as one, as in the
//! original. A request waits `libstorage.server.tasks.exeTimeout` for its
//! task, then is answered 408 with the task while it runs on; `?async`
//! answers 202 with the task at once. Finished tasks stay listed under
//! `/tasks` for `libstorage.server.tasks.logTimeout` (0: not at all).

use super::wire::Task;
use crate::docker::api::Reply;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tasks of a server.
pub struct Tasks {
    keep: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    tasks: BTreeMap<u64, (Task, Option<Instant>)>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Tasks {
    /// Tasks kept `keep` after they finish.
    pub fn new(keep: Duration) -> Tasks {
        Tasks {
            keep,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop the finished tasks kept long enough.
    fn expire(&self, inner: &mut Inner) {
        let keep = self.keep;
        inner
            .tasks
            .retain(|_, (_, done)| done.is_none_or(|d| d.elapsed() < keep));
    }

    /// A new queued task; returns its id.
    pub fn queue(&self) -> u64 {
        let mut g = self.lock();
        g.next += 1;
        let id = g.next;
        g.tasks.insert(
            id,
            (
                Task {
                    id,
                    user: String::new(),
                    complete_time: 0,
                    queue_time: now_secs(),
                    start_time: 0,
                    state: "queued".into(),
                    result: None,
                    error: None,
                },
                None,
            ),
        );
        id
    }

    /// The task started.
    pub fn start(&self, id: u64) {
        if let Some((t, _)) = self.lock().tasks.get_mut(&id) {
            t.state = "running".into();
            t.start_time = now_secs();
        }
    }

    /// The task finished with `reply`: its body is the result (success)
    /// or the error.
    pub fn finish(&self, id: u64, reply: &Reply) {
        let mut g = self.lock();
        if self.keep.is_zero() {
            // Not listed once finished: the result (a whole volume list,
            // maybe) need not be parsed just to be dropped.
            g.tasks.remove(&id);
            return;
        }
        if let Some((t, done)) = g.tasks.get_mut(&id) {
            let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
            if reply.status < 300 {
                t.state = "success".into();
                t.result = body;
            } else {
                t.state = "error".into();
                t.error = body;
            }
            if t.start_time == 0 {
                t.start_time = now_secs();
            }
            t.complete_time = now_secs();
            *done = Some(Instant::now());
        }
        self.expire(&mut g);
    }

    /// One task, if it is (still) listed.
    pub fn get(&self, id: u64) -> Option<Task> {
        let mut g = self.lock();
        self.expire(&mut g);
        g.tasks.get(&id).map(|(t, _)| t.clone())
    }

    /// Every listed task, by id.
    pub fn all(&self) -> BTreeMap<String, Task> {
        let mut g = self.lock();
        self.expire(&mut g);
        g.tasks
            .iter()
            .map(|(id, (t, _))| (id.to_string(), t.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_and_expire() {
        let t = Tasks::new(Duration::ZERO);
        let a = t.queue();
        let b = t.queue();
        assert_eq!(t.get(a).unwrap().state, "queued");
        t.start(a);
        assert_eq!(t.get(a).unwrap().state, "running");
        t.finish(
            a,
            &Reply {
                status: 200,
                body: b"{\"x\":1}".to_vec(),
            },
        );
        // Kept for no time: gone; the other one is still listed.
        assert!(t.get(a).is_none());
        assert_eq!(t.all().len(), 1);
        let kept = Tasks::new(Duration::from_secs(60));
        let c = kept.queue();
        kept.finish(
            c,
            &Reply {
                status: 500,
                body: b"{\"message\":\"m\",\"status\":500}".to_vec(),
            },
        );
        let task = kept.get(c).unwrap();
        assert_eq!(task.state, "error");
        assert_eq!(task.error.unwrap()["message"], "m");
        assert!(task.complete_time >= task.queue_time);
        let _ = b;
    }
}
