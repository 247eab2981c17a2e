//! [`StoreHandle`]: the store on a thread of its own, reached by sending it
//! work. Async code awaits the answer without blocking a worker; the
//! gateway's session hooks, which run on its own threads, block for it.

use store::Store;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// A handle to the store's thread; cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Moves `store` onto a thread of its own, which ends when the last
    /// handle is dropped.
    pub fn spawn(mut store: Store) -> std::io::Result<StoreHandle> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("store".into()).spawn(move || {
            for job in queue {
                job(&mut store);
            }
        })?;
        Ok(StoreHandle { jobs })
    }

    /// Runs `f` on the store and awaits its answer.
    pub async fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> T + Send + 'static) -> T {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.send(Box::new(move |store| {
            let _ = answer.send(f(store));
        }));
        answered.await.expect("the store thread answers every job")
    }

    /// Runs `f` on the store and blocks this thread until it answers: for
    /// threads that are not async workers.
    pub fn call_blocking<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> T + Send + 'static) -> T {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.send(Box::new(move |store| {
            let _ = answer.send(f(store));
        }));
        answered.recv().expect("the store thread answers every job")
    }

    fn send(&self, job: Job) {
        // The thread only ends once every handle is gone, and a job that
        // panics takes the process's store with it: a programmer error.
        self.jobs.send(job).expect("the store thread runs while handles exist");
    }
}
