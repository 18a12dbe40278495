//! Epoch deadlines: one thread per process increments an engine's epoch when
//! a task's timeout passes, so that the guest's deadline callback runs.
//!
//! The thread is started by the first deadline armed, which comes after the
//! worker locked itself down: it inherits the worker's Landlock domain and
//! seccomp filter, and a task without a timeout (most fresh processes)
//! never starts it. Should it exist before a lock-down, it is locked down
//! with the worker ([`run_on_ticker`]): Landlock applies to one thread at a
//! time.

use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// A deadline's place in the ticker's schedule (ordered by time).
type Key = (Instant, u64);

enum Command {
    Arm(Key, Engine),
    Disarm(Key),
    Run(Box<dyn FnOnce() + Send>),
}

struct Ticker {
    commands: Mutex<mpsc::Sender<Command>>,
    next_id: std::sync::atomic::AtomicU64,
}

static TICKER: OnceLock<Ticker> = OnceLock::new();

fn ticker() -> &'static Ticker {
    TICKER.get_or_init(|| {
        let (commands, received) = mpsc::channel();
        std::thread::Builder::new()
            .name("asyncer-deadlines".into())
            .spawn(move || tick(&received))
            .expect("cannot start the deadline thread");
        Ticker {
            commands: Mutex::new(commands),
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    })
}

fn send(command: Command) {
    // The thread lives as long as the process; a failed send cannot happen.
    let _ = ticker()
        .commands
        .lock()
        .expect("ticker poisoned")
        .send(command);
}

/// The ticker thread: sleeps until the earliest deadline or the next command.
fn tick(commands: &mpsc::Receiver<Command>) {
    let mut armed: BTreeMap<Key, Engine> = BTreeMap::new();
    loop {
        let command = match armed.keys().next() {
            Some((at, _)) => {
                match commands.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match commands.recv() {
                Ok(command) => Some(command),
                Err(_) => return,
            },
        };
        match command {
            Some(Command::Arm(key, engine)) => {
                armed.insert(key, engine);
            }
            Some(Command::Disarm(key)) => {
                armed.remove(&key);
            }
            Some(Command::Run(job)) => job(),
            None => {}
        }
        let now = Instant::now();
        while let Some(entry) = armed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove().increment_epoch();
        }
    }
}

/// Whether the ticker thread exists.
pub(crate) fn running() -> bool {
    TICKER.get().is_some()
}

/// Runs `job` on the ticker thread and returns its result.
pub(crate) fn run_on_ticker<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, result) = mpsc::sync_channel(1);
    send(Command::Run(Box::new(move || {
        let _ = done.send(job());
    })));
    result.recv().expect("the deadline thread runs every job")
}

/// Increments the engine's epoch once `timeout` passes, unless dropped first.
pub(crate) struct EpochDeadline {
    key: Key,
}

impl EpochDeadline {
    pub(crate) fn arm(engine: &Engine, timeout: Duration) -> Self {
        let id = ticker()
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = (Instant::now() + timeout, id);
        send(Command::Arm(key, engine.clone()));
        EpochDeadline { key }
    }
}

impl Drop for EpochDeadline {
    fn drop(&mut self) {
        send(Command::Disarm(self.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_deadline_interrupts_a_spinning_guest() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(
            &engine,
            wat::parse_str(r#"(module (func (export "spin") (loop br 0)))"#).unwrap(),
        )
        .unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let _armed = EpochDeadline::arm(&engine, Duration::from_millis(20));
        let trap = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        let ticker = run_on_ticker(|| std::thread::current().name().map(str::to_owned));
        assert_eq!(ticker.as_deref(), Some("asyncer-deadlines"));
    }
}
