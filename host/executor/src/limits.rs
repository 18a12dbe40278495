//! Per-task limits.

use std::time::Duration;

/// Limits on one task. Set executor-wide defaults with
/// [`ExecutorBuilder::limits`](crate::ExecutorBuilder::limits) and override
/// them per task with [`TaskOptions::limits`](crate::TaskOptions::limits).
///
/// ```
/// use asyncer::Limits;
/// use std::time::Duration;
///
/// let limits = Limits::default()
///     .with_timeout(Duration::from_secs(2))
///     .with_max_memory_bytes(64 << 20);
/// assert_eq!(limits.timeout(), Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    timeout: Option<Duration>,
    fuel: Option<u64>,
    max_memory_bytes: Option<u64>,
    max_input_bytes: u64,
    max_output_bytes: u64,
    max_log_bytes: u64,
    max_wasm_stack: Option<u64>,
}

impl Default for Limits {
    /// No timeout, no fuel metering, no memory cap beyond wasm's 4 GiB,
    /// 64 MiB of input and of output, 64 KiB of stdout and of stderr kept,
    /// a 1 MiB wasm stack.
    fn default() -> Self {
        // The wire defaults are the one source of truth for the worker side.
        let wire = asyncer_protocol::Limits::default();
        Limits {
            timeout: wire.timeout,
            fuel: wire.fuel,
            max_memory_bytes: wire.max_memory_bytes,
            // The input limit is the host's own; it defaults to the output one.
            max_input_bytes: wire.max_output_bytes,
            max_output_bytes: wire.max_output_bytes,
            max_log_bytes: wire.max_log_bytes,
            max_wasm_stack: wire.max_wasm_stack,
        }
    }
}

impl Limits {
    /// Wall-clock limit: an epoch deadline inside the worker and a kill from
    /// the host. Turning it on compiles the module with epoch checks.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_timeout(Duration::from_millis(250));
    /// assert_eq!(limits.timeout(), Some(Duration::from_millis(250)));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Fuel budget (wasm instructions, roughly). Metering costs speed, so it
    /// is off unless set.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_fuel(1_000_000);
    /// assert_eq!(limits.fuel(), Some(1_000_000));
    /// ```
    pub fn with_fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Largest linear memory the guest may grow to.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_max_memory_bytes(64 << 20);
    /// assert_eq!(limits.max_memory_bytes(), Some(64 << 20));
    /// ```
    pub fn with_max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = Some(bytes);
        self
    }

    /// Largest input accepted by `submit`.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_max_input_bytes(1 << 20);
    /// assert_eq!(limits.max_input_bytes(), 1 << 20);
    /// ```
    pub fn with_max_input_bytes(mut self, bytes: u64) -> Self {
        self.max_input_bytes = bytes;
        self
    }

    /// Largest output a task may return.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_max_output_bytes(4096);
    /// assert_eq!(limits.max_output_bytes(), 4096);
    /// ```
    pub fn with_max_output_bytes(mut self, bytes: u64) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// How much of the guest's stdout, of its stderr, and of its log records
    /// (`asyncer_guest::info!` and siblings) is kept, each.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_max_log_bytes(1024);
    /// assert_eq!(limits.max_log_bytes(), 1024);
    /// ```
    pub fn with_max_log_bytes(mut self, bytes: u64) -> Self {
        self.max_log_bytes = bytes;
        self
    }

    /// Largest wasm stack; deeper recursion traps with `StackOverflow`
    /// (default 1 MiB).
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// let limits = Limits::default().with_max_wasm_stack(256 << 10);
    /// assert_eq!(limits.max_wasm_stack(), Some(256 << 10));
    /// ```
    pub fn with_max_wasm_stack(mut self, bytes: u64) -> Self {
        self.max_wasm_stack = Some(bytes);
        self
    }

    /// The timeout, if any.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().timeout(), None);
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The fuel budget, if metered.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().fuel(), None); // not metered
    /// ```
    pub fn fuel(&self) -> Option<u64> {
        self.fuel
    }

    /// The largest input accepted.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().max_input_bytes(), 64 << 20);
    /// ```
    pub fn max_input_bytes(&self) -> u64 {
        self.max_input_bytes
    }

    /// The largest linear memory, if capped.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().max_memory_bytes(), None);
    /// ```
    pub fn max_memory_bytes(&self) -> Option<u64> {
        self.max_memory_bytes
    }

    /// The largest output.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().max_output_bytes(), 64 << 20);
    /// ```
    pub fn max_output_bytes(&self) -> u64 {
        self.max_output_bytes
    }

    /// How much of stdout, of stderr and of log records is kept.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().max_log_bytes(), 64 << 10);
    /// ```
    pub fn max_log_bytes(&self) -> u64 {
        self.max_log_bytes
    }

    /// The largest wasm stack, if set (the engine default, 1 MiB, otherwise).
    ///
    /// # Examples
    /// ```
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// assert_eq!(Limits::default().max_wasm_stack(), None);
    /// ```
    pub fn max_wasm_stack(&self) -> Option<u64> {
        self.max_wasm_stack
    }

    /// The engine settings these limits need compiled in.
    pub(crate) fn flavor(&self) -> asyncer_protocol::EngineFlavor {
        asyncer_protocol::EngineFlavor {
            fuel: self.fuel.is_some(),
            epoch: self.timeout.is_some(),
        }
    }

    /// What the worker enforces.
    pub(crate) fn to_wire(&self) -> asyncer_protocol::Limits {
        asyncer_protocol::Limits {
            timeout: self.timeout,
            fuel: self.fuel,
            max_memory_bytes: self.max_memory_bytes,
            max_output_bytes: self.max_output_bytes,
            max_log_bytes: self.max_log_bytes,
            max_wasm_stack: self.max_wasm_stack,
        }
    }
}
