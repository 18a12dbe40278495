//! Connecting to a NATS server with JetStream, and making sure the stream,
//! the result bucket and the module store exist.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use crate::wire::{
    queue_filter, queue_name, LEGACY_CONSUMER, MODULE_STORE, RESULT_BUCKET, TASK_STREAM,
};

/// Why the cluster cannot be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The server could not be reached, or refused the credentials, within
    /// the connect timeout.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The server asked for.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answers but has no JetStream (start it with `-js`).
    #[error("the NATS server at {url} has no JetStream: {message}")]
    NoJetStream {
        /// The server asked for.
        url: String,
        /// The server's answer.
        message: String,
    },
    /// The stream, the result bucket, the module store or the consumer
    /// could not be made.
    #[error("cannot set up {what}: {message}")]
    Setup {
        /// Which of them.
        what: &'static str,
        /// The server's answer.
        message: String,
    },
}

/// How to reach the cluster, and its settings.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let options = asyncer_cluster::ClusterOptions::new("nats://127.0.0.1:4222")
///     .tenant("acme")
///     .ack_wait(Duration::from_secs(10))
///     .max_deliver(3);
/// assert_eq!(options.url(), "nats://127.0.0.1:4222");
/// ```
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub(crate) url: String,
    pub(crate) tenant: String,
    pub(crate) credentials_file: Option<PathBuf>,
    pub(crate) user_password: Option<(String, String)>,
    pub(crate) token: Option<String>,
    pub(crate) require_tls: bool,
    pub(crate) root_certificates: Option<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) replicas: usize,
}

impl ClusterOptions {
    /// Options for the server at `url` (`nats://host:port`, or several
    /// servers of one cluster, comma-separated), tenant
    /// `default`, 5 s to connect, a 30 s lease, 5 deliveries at most, one
    /// replica.
    pub fn new(url: impl Into<String>) -> Self {
        ClusterOptions {
            url: url.into(),
            tenant: "default".into(),
            credentials_file: None,
            user_password: None,
            token: None,
            require_tls: false,
            root_certificates: None,
            connect_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            replicas: 1,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The tenant tasks are submitted under (letters, digits, `-`, `_`).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// A NATS credentials file (JWT and nkey seed).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// User and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// An authentication token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Require TLS, trusting the CA certificates in `root_certificates`
    /// (PEM) besides the system's.
    pub fn tls(mut self, root_certificates: Option<PathBuf>) -> Self {
        self.require_tls = true;
        self.root_certificates = root_certificates;
        self
    }

    /// How long connecting may take before it is an error.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A worker host's lease on a task: without an in-progress
    /// acknowledgement for this long, the task is delivered again.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Deliveries of a task before it ends in `worker_lost`.
    pub fn max_deliver(mut self, deliveries: i64) -> Self {
        self.max_deliver = deliveries;
        self
    }

    /// Replicas of the stream, the bucket and the store (a JetStream
    /// cluster of at least that many servers).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
}

/// A live connection to the cluster, with its stream, result bucket and
/// module store.
#[derive(Clone)]
pub struct Connection {
    pub(crate) options: ClusterOptions,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: stream::Stream,
    pub(crate) results: kv::Store,
    pub(crate) modules: object_store::ObjectStore,
    /// The priorities whose queue (of this connection's tenant) is known to
    /// exist.
    queues: Arc<Mutex<HashSet<i32>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.options.url)
            .field("tenant", &self.options.tenant)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects within the options' timeout, checks that the server has
    /// JetStream, and makes the stream, bucket and store if missing.
    ///
    /// # Errors
    /// [`ClusterError`]: unreachable, refused, no JetStream, or setup
    /// failed; never a hang past the connect timeout.
    pub async fn connect(options: ClusterOptions) -> Result<Connection, ClusterError> {
        let url = options.url.clone();
        let connect_error = |message: String| ClusterError::Connect {
            url: url.clone(),
            message,
        };
        let mut nats = async_nats::ConnectOptions::new()
            .connection_timeout(options.connect_timeout)
            .name("asyncer");
        if let Some(path) = &options.credentials_file {
            nats = nats
                .credentials_file(path)
                .await
                .map_err(|e| connect_error(format!("credentials file {}: {e}", path.display())))?;
        }
        if let Some((user, password)) = &options.user_password {
            nats = nats.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &options.token {
            nats = nats.token(token.clone());
        }
        if options.require_tls {
            nats = nats.require_tls(true);
            if let Some(roots) = &options.root_certificates {
                nats = nats.add_root_certificates(roots.clone());
            }
        }
        // Several servers of one cluster may be given, comma-separated.
        let addrs = url
            .split(',')
            .map(|one| one.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_error(format!("not a server address: {e}")))?;
        let client = tokio::time::timeout(options.connect_timeout, nats.connect(addrs))
            .await
            .map_err(|_| connect_error(format!("no answer within {:?}", options.connect_timeout)))?
            .map_err(|e| connect_error(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(options.connect_timeout);
        let setup = |what: &'static str| {
            move |e: &dyn std::fmt::Display| ClusterError::Setup {
                what,
                message: e.to_string(),
            }
        };
        // Hosts and submitters starting together all make the stream and
        // buckets if missing: a create that loses that race fails ("subjects
        // overlap", "name already in use") while the winner's now exists, so
        // each is looked up again, a few times, before giving up.
        let no_jetstream = |e: &async_nats::jetstream::context::CreateStreamError| {
            use async_nats::jetstream::context::CreateStreamErrorKind;
            matches!(
                e.kind(),
                CreateStreamErrorKind::JetStreamUnavailable | CreateStreamErrorKind::TimedOut
            )
        };
        let stream = retry_setup(no_jetstream, || {
            js.get_or_create_stream(stream::Config {
                name: TASK_STREAM.into(),
                subjects: vec!["asyncer.task.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
        })
        .await
        .map_err(|e| {
            use async_nats::jetstream::context::CreateStreamErrorKind;
            // Without JetStream, nobody answers its API.
            match e.kind() {
                CreateStreamErrorKind::JetStreamUnavailable | CreateStreamErrorKind::TimedOut => {
                    ClusterError::NoJetStream {
                        url: url.clone(),
                        message: e.to_string(),
                    }
                }
                _ => setup("the task stream")(&e),
            }
        })?;
        // The bucket's stream is made by hand, as the key-value convention
        // (ADR-8) describes it: `create_key_value` first reads the account
        // info, whose 2.10 fields a 2.9 server (Debian 12's) does not send.
        retry_setup(no_jetstream, || {
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{RESULT_BUCKET}"),
                subjects: vec![format!("$KV.{RESULT_BUCKET}.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: options.replicas,
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
        })
        .await
        .map_err(|e| setup("the result bucket")(&e))?;
        let results = js
            .get_key_value(RESULT_BUCKET)
            .await
            .map_err(|e| setup("the result bucket")(&e))?;
        let modules = retry_setup(
            |_| false,
            || async {
                match js.get_object_store(MODULE_STORE).await {
                    Ok(store) => Ok(store),
                    Err(_) => {
                        js.create_object_store(object_store::Config {
                            bucket: MODULE_STORE.into(),
                            storage: stream::StorageType::File,
                            num_replicas: options.replicas,
                            ..Default::default()
                        })
                        .await
                    }
                }
            },
        )
        .await
        .map_err(|e| setup("the module store")(&e))?;
        // Earlier versions' one FIFO consumer would overlap the queues
        // (a work queue refuses that): its tasks stay in the stream, and the
        // queues deliver them.
        let _ = stream.delete_consumer(LEGACY_CONSUMER).await;
        Ok(Connection {
            options,
            client,
            js,
            stream,
            results,
            modules,
            queues: Arc::default(),
        })
    }

    /// Makes the queue of this connection's tenant's tasks of `priority`
    /// if it is missing (once per connection). It exists before its first
    /// task is published, so no task waits where no host looks.
    pub(crate) async fn ensure_queue(&self, priority: i32) -> Result<(), ClusterError> {
        if self.queues.lock().expect("queues").contains(&priority) {
            return Ok(());
        }
        self.make_queue(self.tenant(), priority).await?;
        self.queues.lock().expect("queues").insert(priority);
        Ok(())
    }

    /// Gets or makes `tenant`'s queue of `priority`: a durable pull
    /// consumer with this connection's ack wait and deliveries.
    pub(crate) async fn make_queue(
        &self,
        tenant: &str,
        priority: i32,
    ) -> Result<consumer::PullConsumer, ClusterError> {
        let name = queue_name(tenant, priority);
        // Several may make it at once: the loser finds the winner's.
        retry_setup(
            |_| false,
            || {
                self.stream.get_or_create_consumer(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.options.ack_wait,
                        max_deliver: self.options.max_deliver,
                        filter_subject: queue_filter(tenant, priority),
                        ..Default::default()
                    },
                )
            },
        )
        .await
        .map_err(|e| ClusterError::Setup {
            what: "a task queue",
            message: e.to_string(),
        })
    }

    /// The tenant this connection submits under.
    pub fn tenant(&self) -> &str {
        &self.options.tenant
    }

    /// Tasks waiting in the queue or running (not yet acknowledged), all
    /// tenants.
    ///
    /// # Errors
    /// When the server cannot be asked.
    pub async fn pending_tasks(&self) -> Result<u64, ClusterError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| ClusterError::Setup {
            what: "the task stream's state",
            message: e.to_string(),
        })?;
        Ok(info.state.messages)
    }

    /// Every tenant's queues (one per priority in use) with what waits in
    /// them and what hosts have taken, highest priority first within a
    /// tenant.
    ///
    /// # Errors
    /// When the server cannot be asked.
    pub async fn queues(&self) -> Result<Vec<crate::QueueState>, ClusterError> {
        crate::queues::queue_states(self)
            .await
            .map_err(|message| ClusterError::Setup {
                what: "the task queues' state",
                message,
            })
    }

    /// The name of the server that leads the task stream (in a JetStream
    /// cluster), if the server says.
    pub async fn stream_leader(&self) -> Option<String> {
        let mut stream = self.stream.clone();
        stream.info().await.ok()?.cluster.clone()?.leader
    }

    /// The largest message the server takes.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

/// Runs a get-or-create step up to 4 times, 100 ms apart, while it fails
/// (but not with an error `hopeless` says no retry can mend): a create that
/// lost a race to another process finds the winner's on the next look.
async fn retry_setup<T, E, F, Fut>(hopeless: impl Fn(&E) -> bool, mut step: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 1;
    loop {
        match step().await {
            Err(e) if tries < 4 && !hopeless(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done => return done,
        }
    }
}
