//! What a guest may reach beyond its own memory: nothing unless granted.

use std::path::PathBuf;

/// Opt-in capabilities of a guest. The default grants nothing: no
/// directories, no environment variables (and, always, no arguments and no
/// sockets).
///
/// ```
/// use asyncer::Capabilities;
///
/// let caps = Capabilities::none()
///     .read_only_dir("/srv/data", "/data")
///     .env("MODE", "fast");
/// assert_eq!(caps.dirs().len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    dirs: Vec<DirGrant>,
    env: Vec<(String, String)>,
}

/// One host directory made visible to a guest.
///
/// # Examples
/// ```
/// use asyncer::Capabilities;
/// let caps = Capabilities::none().read_write_dir("/tmp/out", "/out");
/// let grant = &caps.dirs()[0];
/// assert_eq!((grant.host.to_str(), grant.guest.as_str(), grant.writable), (Some("/tmp/out"), "/out", true));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// The path the guest opens it by.
    pub guest: String,
    /// Whether the guest may create, change and delete files in it.
    pub writable: bool,
}

impl Capabilities {
    /// No capability at all (the default).
    ///
    /// # Examples
    /// ```
    /// use asyncer::Capabilities;
    /// let caps = Capabilities::none();
    /// assert!(caps.dirs().is_empty() && caps.env_vars().is_empty());
    /// ```
    pub fn none() -> Self {
        Capabilities::default()
    }

    /// Lets the guest read (not change) `host` under the path `guest`.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Capabilities;
    /// let caps = Capabilities::none().read_only_dir("/srv/data", "/data");
    /// assert!(!caps.dirs()[0].writable);
    /// assert_eq!(caps.dirs()[0].guest, "/data");
    /// ```
    pub fn read_only_dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            writable: false,
        });
        self
    }

    /// Lets the guest read and change `host` under the path `guest`.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Capabilities;
    /// let caps = Capabilities::none().read_write_dir("/tmp/scratch", "/scratch");
    /// assert!(caps.dirs()[0].writable);
    /// ```
    pub fn read_write_dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            writable: true,
        });
        self
    }

    /// Sets environment variable `key` for the guest.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Capabilities;
    /// let caps = Capabilities::none().env("LANG", "C");
    /// assert_eq!(caps.env_vars(), [("LANG".to_string(), "C".to_string())]);
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// These capabilities with `env` added, each variable replacing one of
    /// the same name.
    pub(crate) fn overriding_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env
            .retain(|(key, _)| !env.iter().any(|(k, _)| k == key));
        self.env.extend(env);
        self
    }

    /// The directories granted.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Capabilities;
    /// let caps = Capabilities::none().read_only_dir("/a", "/a").read_only_dir("/b", "/b");
    /// assert_eq!(caps.dirs().len(), 2);
    /// ```
    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    /// The environment variables granted.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Capabilities;
    /// assert!(Capabilities::default().env_vars().is_empty());
    /// ```
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    pub(crate) fn to_wire(&self) -> asyncer_protocol::Capabilities {
        asyncer_protocol::Capabilities {
            dirs: self
                .dirs
                .iter()
                .map(|d| asyncer_protocol::DirGrant {
                    host: d.host.display().to_string(),
                    guest: d.guest.clone(),
                    writable: d.writable,
                })
                .collect(),
            env: self.env.clone(),
        }
    }
}
