//! The worker process's own sandbox (the second wall, behind wasmtime): which
//! layers the executor asks for, and how each stands in a worker.
//!
//! The executor passes [`SandboxSettings`] to the worker program on its
//! command line ([`SandboxSettings::to_args`]); a worker puts the
//! [`SandboxStatus`] it reached in each reply.

use serde::{Deserialize, Serialize};

/// One layer of the worker's own sandbox.
///
/// # Examples
/// ```
/// use asyncer_protocol::SandboxLayer;
/// assert_eq!(SandboxLayer::ALL.len(), 4);
/// assert_eq!(SandboxLayer::Seccomp.as_str(), "seccomp");
/// assert_eq!("landlock".parse::<SandboxLayer>(), Ok(SandboxLayer::Landlock));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SandboxLayer {
    /// seccomp-bpf: an allow-list of system calls, installed before any
    /// guest code runs; a forbidden call kills the worker.
    Seccomp,
    /// Landlock: the worker reads only its artifact and writes nothing but
    /// the directories granted to its task; no TCP, no signals outside.
    Landlock,
    /// New user, network, PID and IPC namespaces: no network at all, no
    /// other process in sight.
    Namespaces,
    /// Resource limits: no new processes, few file descriptors, no core
    /// dumps, no file writes unless a read-write directory is granted.
    Rlimits,
}

impl SandboxLayer {
    /// Every layer, in the order a worker applies them.
    pub const ALL: [SandboxLayer; 4] = [
        SandboxLayer::Namespaces,
        SandboxLayer::Rlimits,
        SandboxLayer::Landlock,
        SandboxLayer::Seccomp,
    ];

    /// The layer's stable name: `seccomp`, `landlock`, `namespaces`,
    /// `rlimits`.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxLayer::Seccomp => "seccomp",
            SandboxLayer::Landlock => "landlock",
            SandboxLayer::Namespaces => "namespaces",
            SandboxLayer::Rlimits => "rlimits",
        }
    }
}

impl std::fmt::Display for SandboxLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SandboxLayer {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        SandboxLayer::ALL
            .into_iter()
            .find(|layer| layer.as_str() == name)
            .ok_or_else(|| {
                format!("no sandbox layer `{name}` (seccomp, landlock, namespaces, rlimits)")
            })
    }
}

/// Which layers of the worker's own sandbox to apply: every one by default.
/// Turning one off is for debugging and unusual kernels; a layer the kernel
/// lacks is skipped and reported whatever the settings say.
///
/// # Examples
/// ```
/// use asyncer_protocol::{SandboxLayer, SandboxSettings};
/// let settings = SandboxSettings::default().without(SandboxLayer::Seccomp);
/// assert!(!settings.wants(SandboxLayer::Seccomp));
/// assert!(settings.wants(SandboxLayer::Landlock));
/// let args = settings.to_args();
/// assert_eq!(args, ["--sandbox-off", "seccomp"]);
/// assert_eq!(SandboxSettings::from_args(args.iter().map(String::as_str)), Ok(settings));
/// assert!(SandboxSettings::default().to_args().is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SandboxSettings {
    off: [bool; 4],
}

impl Default for SandboxSettings {
    /// Every layer on.
    fn default() -> Self {
        SandboxSettings { off: [false; 4] }
    }
}

impl SandboxSettings {
    /// Every layer off: the worker relies on wasmtime alone.
    pub fn none() -> Self {
        SandboxSettings { off: [true; 4] }
    }

    fn index(layer: SandboxLayer) -> usize {
        SandboxLayer::ALL
            .iter()
            .position(|l| *l == layer)
            .expect("every layer is in ALL")
    }

    /// These settings with `layer` turned off.
    pub fn without(mut self, layer: SandboxLayer) -> Self {
        self.off[Self::index(layer)] = true;
        self
    }

    /// These settings with `layer` turned on.
    pub fn with(mut self, layer: SandboxLayer) -> Self {
        self.off[Self::index(layer)] = false;
        self
    }

    /// Whether `layer` is asked for.
    pub fn wants(&self, layer: SandboxLayer) -> bool {
        !self.off[Self::index(layer)]
    }

    /// The worker program's arguments for these settings: `--sandbox-off
    /// LAYER,...`, or nothing when every layer is on.
    pub fn to_args(&self) -> Vec<String> {
        let off: Vec<&str> = SandboxLayer::ALL
            .into_iter()
            .filter(|layer| !self.wants(*layer))
            .map(SandboxLayer::as_str)
            .collect();
        if off.is_empty() {
            Vec::new()
        } else {
            vec!["--sandbox-off".to_string(), off.join(",")]
        }
    }

    /// The settings named by a worker's arguments (see
    /// [`SandboxSettings::to_args`]); other arguments are ignored.
    ///
    /// # Errors
    /// A layer name that does not exist.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut settings = SandboxSettings::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--sandbox-off" {
                for name in args.next().unwrap_or_default().split(',') {
                    settings = settings.without(name.parse()?);
                }
            }
        }
        Ok(settings)
    }
}

/// How one layer stands in a worker process.
///
/// # Examples
/// ```
/// use asyncer_protocol::LayerState;
/// assert!(LayerState::Active.is_active());
/// assert!(!LayerState::Unavailable("no Landlock in this kernel".into()).is_active());
/// assert_eq!(LayerState::Off.to_string(), "off");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerState {
    /// In force, completely.
    Active,
    /// In force, but this kernel lacks part of it (what is missing).
    Partial(String),
    /// Turned off by the executor's settings.
    Off,
    /// Asked for, but this machine does not allow it (why).
    Unavailable(String),
}

impl LayerState {
    /// In force, completely or in part.
    pub fn is_active(&self) -> bool {
        matches!(self, LayerState::Active | LayerState::Partial(_))
    }
}

impl std::fmt::Display for LayerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerState::Active => f.write_str("active"),
            LayerState::Partial(missing) => write!(f, "partial: {missing}"),
            LayerState::Off => f.write_str("off"),
            LayerState::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

/// How every layer stands in one worker process.
///
/// # Examples
/// ```
/// use asyncer_protocol::{LayerState, SandboxLayer, SandboxStatus};
/// let mut status = SandboxStatus::default();
/// status.set(SandboxLayer::Seccomp, LayerState::Active);
/// assert_eq!(status.get(SandboxLayer::Seccomp), &LayerState::Active);
/// assert_eq!(status.missing().count(), 3); // the others were never applied
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    layers: [LayerState; 4],
}

impl Default for SandboxStatus {
    /// Nothing applied yet: every layer `Off`.
    fn default() -> Self {
        SandboxStatus {
            layers: std::array::from_fn(|_| LayerState::Off),
        }
    }
}

impl SandboxStatus {
    /// How `layer` stands.
    pub fn get(&self, layer: SandboxLayer) -> &LayerState {
        &self.layers[SandboxSettings::index(layer)]
    }

    /// Records how `layer` stands.
    pub fn set(&mut self, layer: SandboxLayer, state: LayerState) {
        self.layers[SandboxSettings::index(layer)] = state;
    }

    /// Every layer with its state, in [`SandboxLayer::ALL`] order.
    pub fn layers(&self) -> impl Iterator<Item = (SandboxLayer, &LayerState)> {
        SandboxLayer::ALL.into_iter().zip(&self.layers)
    }

    /// The layers not completely in force, for whatever reason.
    pub fn missing(&self) -> impl Iterator<Item = (SandboxLayer, &LayerState)> {
        self.layers()
            .filter(|(_, state)| !matches!(state, LayerState::Active))
    }
}

impl std::fmt::Display for SandboxStatus {
    /// One line per layer: `seccomp: active`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (layer, state) in self.layers() {
            writeln!(f, "{layer}: {state}")?;
        }
        Ok(())
    }
}
